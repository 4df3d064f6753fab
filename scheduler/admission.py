"""Admission: a coop's policy judges one task against the ledger and the executor table.

``evaluate`` returns a ``Verdict``: every violation found (the enforcement mode decides
what they mean), the hard reasons no mode can override (no policy, conflicting region
rules, no executor that could ever run it), the compiled placement requirements, the
projected cost to reserve and the priority adjustments. It changes nothing; the core
commits an admitted verdict (reserve in the ledger, rule reservations, queue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.model import CoopPolicy, CoopQuota, EnforcementMode, MemberQuota, Reclaim, SharingLimit, WithinCoop
from policies.rules import RateLimit, TimeWindow
from policies.plugins import PluginRule, attach_all
from policies.reasons import Reason, error, rejected, unavailable
from policies.rules import BUILTIN_RULES, RateBuckets, RuleContext
from scheduler.executor_table import ExecutorTable
from scheduler.ledger import UNLIMITED, Cost, UsageLedger, from_units, next_period_start, to_units
from scheduler.placement import Requirements, compile_requirements, explain_no_fit, static_fit
from scheduler.tasks import TaskSpec


_STRICT = EnforcementMode.STRICT  # read per admission: a global is much faster than EnumType.__getattr__


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy with its rules sorted by the phases they take part in (built once per version)."""

    policy: CoopPolicy
    checks: tuple = ()
    constrainers: tuple = ()
    adjusters: tuple = ()
    deferrals: tuple = ()
    gates: tuple = ()
    reservers: tuple = ()
    builtin_constraints: bool = True
    weights: tuple[float, ...] = ()  # the scoring weights as placement takes them
    mode: EnforcementMode = EnforcementMode.STRICT  # the policy's, read on every admission
    quota_whitelist: frozenset[str] = frozenset()
    gates_by_minute: bool = False  # every start gate is a built-in TimeWindow: its answer holds for a minute
    # (rule, its phase as a callable) per phase: built-in rules bind their fields once (``bound_<phase>``)
    check_calls: tuple = ()
    adjust_calls: tuple = ()
    deferral_calls: tuple = ()
    reserve_calls: tuple = ()
    requirements_cache: dict = field(default_factory=dict, compare=False, repr=False)
    limits_cache: dict = field(default_factory=dict, compare=False, repr=False)
    gate_cache: dict = field(default_factory=dict, compare=False, repr=False)
    quota_cache: dict = field(default_factory=dict, compare=False, repr=False)
    reclaim: Reclaim = Reclaim.NEVER  # the policy's, read when a task misses its own coop's executors
    preempts: bool = False  # its preempt_within_coop is lower_priority, read when a task fits no executor now
    lending_limit: SharingLimit | None = None  # the policy's (scheduler.sharing_limits), read once a round
    borrowing_limit: SharingLimit | None = None
    coop_limits: Cost | None = None  # its coop_quota in ledger units (UNLIMITED where it has none); None: no quota

    @classmethod
    def of(cls, policy: CoopPolicy, extra_rules: tuple = ()) -> CompiledPolicy:
        # A plug-in rule is configuration: here, where a policy is installed, its plug-in is resolved
        # and made (InvalidRequest at rules[i].plugin.uri / .parameters if it cannot be), and bound:
        # only the phases it implements, each call within the rule's time budget (policies.plugins).
        # Expression rules were compiled, once per expression, when the policy was validated.
        attach_all(policy, tuple(extra_rules))
        rules = tuple(r.bound() if isinstance(r, PluginRule) else r
                      for r in _one_per_bucket(tuple(policy.rules) + tuple(extra_rules)))
        gates = tuple(r for r in rules if hasattr(r, "closed_until"))
        checks, adjusters, deferrals, reservers = (tuple(r for r in rules if hasattr(r, phase))
                                                   for phase in ("check", "adjust", "hold_until", "reserve"))
        return cls(policy, checks,
                   tuple(r for r in rules if hasattr(r, "constrain")),
                   adjusters, deferrals, gates, reservers,
                   all(type(r) in BUILTIN_RULES for r in rules if hasattr(r, "constrain")),
                   policy.weights.as_tuple(),
                   policy.enforcement_mode,
                   frozenset(policy.quota_whitelist),
                   all(type(r) is TimeWindow for r in gates),
                   _calls(checks, "check"), _calls(adjusters, "adjust"), _calls(deferrals, "hold_until"),
                   _calls(reservers, "reserve"), reclaim=policy.reclaim,
                   preempts=policy.preempt_within_coop is WithinCoop.LOWER_PRIORITY,
                   lending_limit=policy.lending_limit, borrowing_limit=policy.borrowing_limit,
                   coop_limits=None if policy.coop_quota is None else _units(policy.coop_quota))

    def member_terms(self, member: str) -> tuple[MemberQuota, int, float, int, Cost]:
        """(quota, max priority rank, default max runtime, max concurrent tasks, limits in ledger units)
        of ``member``, remembered per member (the policy is immutable; its fields are slow to read)."""
        terms = self.quota_cache.get(member)
        if terms is None:
            if len(self.quota_cache) >= 65536:
                self.quota_cache.clear()
            quota = self.policy.quota_for(member)
            terms = self.quota_cache[member] = (quota, quota.max_priority.rank, quota.default_max_runtime_s,
                                                quota.max_concurrent_tasks, self.limit_units(quota))
        return terms

    def quota_for(self, member: str) -> MemberQuota:
        return self.member_terms(member)[0]

    def concurrency_limit(self, member: str) -> int:
        return self.member_terms(member)[3]

    def limit_units(self, quota: MemberQuota) -> Cost:
        """``quota``'s monthly limits in ledger units, ``UNLIMITED`` where it has none (once per quota:
        the policy, and so its quota objects, is immutable)."""
        limits = self.limits_cache.get(id(quota))
        if limits is None:
            limits = self.limits_cache[id(quota)] = _units(quota)
        return limits


def _units(quota: MemberQuota | CoopQuota) -> Cost:
    """A quota's monthly limits in ledger units, ``UNLIMITED`` where it has none."""
    return Cost(*(to_units(lim) if lim is not None else UNLIMITED
                  for lim in (quota.cpu_hours_per_month, quota.gpu_hours_per_month, quota.credits_per_month)))


def _one_per_bucket(rules: tuple) -> tuple:
    """``rules`` without RateLimits identical to an earlier one: they would share one bucket and take a
    token each from it on every admission (two identical limits are one limit)."""
    seen: set = set()
    out = []
    for r in rules:
        if type(r) is RateLimit:
            if r._bucket() in seen:
                continue
            seen.add(r._bucket())
        out.append(r)
    return tuple(out)


def _calls(rules: tuple, phase: str) -> tuple:
    """Each rule with its ``phase`` as a callable: a built-in rule's ``bound_<phase>()`` (its fields read
    once, not on every call: pydantic attribute reads are slow), any other rule's own method."""
    return tuple((r, getattr(r, f"bound_{phase}")() if type(r) in BUILTIN_RULES and hasattr(r, f"bound_{phase}")
                  else getattr(r, phase)) for r in rules)


@dataclass(slots=True)
class Verdict:
    task: TaskSpec
    mode: EnforcementMode
    quota: MemberQuota | None
    runtime_s: float
    rank: int  # the priority's rank, as requested
    violations: list[Reason] = field(default_factory=list)
    hard: list[Reason] = field(default_factory=list)
    requirements: Requirements | None = None
    relaxed: tuple[str, ...] = ()
    cost: Cost = Cost()
    limits: Cost | None = None  # what the ledger must confirm at reservation (strict quota only)
    multiplier: float = 1.0
    not_before: float | None = None
    context: RuleContext | None = None  # what the rules saw (the core hands it to their reserve phase)

    @property
    def admitted(self) -> bool:
        if self.hard:
            return False
        return not self.violations or self.mode is not EnforcementMode.STRICT

    @property
    def effective_priority(self) -> float:
        return self.rank * self.multiplier


def _failed(phase: str, rule, exc: Exception) -> Reason:
    return error(getattr(rule, "label", type(rule).__name__), f"rule failed in {phase}: {type(exc).__name__}: {exc}")


def evaluate(task: TaskSpec, compiled: CompiledPolicy | None, ledger: UsageLedger, table: ExecutorTable,
             buckets: RateBuckets, now: float) -> Verdict:
    if compiled is None:
        v = Verdict(task, EnforcementMode.STRICT, None, task.max_runtime_s or 0.0, task.priority.rank)
        v.hard.append(rejected("policy", f"coop {task.coop_id} has no scheduling policy; a coop admin sets one "
                               f"with `coopsched policy set FILE` (a policy file whose coop_id is {task.coop_id})"))
        return v
    member, resources, mode = task.member, task.resources, compiled.mode
    quota, max_rank, default_runtime, _, limits = compiled.member_terms(member)
    runtime = task.max_runtime_s or default_runtime
    v = Verdict(task, mode, quota, runtime, task.priority.rank)
    ctx = v.context = RuleContext(now, runtime, buckets)

    # 1. priority cap, on the priority as requested (multipliers come later)
    if v.rank > max_rank:
        v.violations.append(rejected("quota:priority", f"priority {task.priority.value} exceeds the limit "
                                     f"{quota.max_priority.value} for member {task.member} in coop {task.coop_id}; "
                                     f"submit at {quota.max_priority.value} or ask a coop admin to raise it"))
    # 2. the rules' admission checks (a rule that raises is an ``error`` reason, never a crash)
    for rule, check in compiled.check_calls:
        try:
            reason = check(task, ctx)
        except Exception as exc:
            reason = _failed("check", rule, exc)
        if reason is not None:
            v.violations.append(reason)
    # 3. placement constraints, and whether any registered executor could ever run the task
    constraints, req = _requirements(task, compiled, ctx, v.violations)
    if not isinstance(req, Requirements):  # a Reason (a plain class check: pydantic's isinstance is slower)
        v.violations.append(req)
        req = compile_requirements(task.coop_id, task.resources, (), task.capabilities)
        assert isinstance(req, Requirements)
        v.relaxed = tuple(c.source for c in constraints)
    fit = static_fit(table, req)
    if not fit.possible and constraints and mode is not EnforcementMode.STRICT:
        loose = req.unconstrained()
        loose_fit = static_fit(table, loose)
        if loose_fit.possible:
            message, _ = explain_no_fit(table, req)
            v.violations.append(unavailable("placement", f"policy constraints exclude every executor ({message}); "
                                            "placed without them because the policy is not strict"))
            v.relaxed = tuple(c.source for c in constraints)
            req, fit = loose, loose_fit
    if not fit.possible:
        message, _ = explain_no_fit(table, req)
        v.hard.append(unavailable("placement", f"no registered executor can ever run this task: {message}; "
                                  "ask for less, or wait for a suitable executor to join"))
    v.requirements = req

    # 4. quota on projected usage: used + reserved + this task's projected cost
    hours = runtime / 3600.0
    v.cost = Cost.projected(resources.cpus * hours, resources.gpus * hours, fit.max_cost_per_hour * hours)
    if member not in compiled.quota_whitelist:
        _check_quota(v, ledger, now, limits)
        if mode is _STRICT:
            v.limits = limits
        if compiled.coop_limits is not None:  # all members together (checked on what the ledger says now: the
            # store confirms member quotas as it reserves, not this one; see README, known gaps)
            _check_coop_quota(v, ledger, now, compiled.coop_limits, compiled.policy.coop_quota)

    # 5. priority multipliers and deferral
    for rule, adjust in compiled.adjust_calls:
        try:
            v.multiplier *= adjust(task, ctx)
        except Exception as exc:
            v.violations.append(_failed("adjust", rule, exc))
    for rule, hold_until in compiled.deferral_calls:
        try:
            t = hold_until(task, ctx)
        except Exception as exc:
            v.violations.append(_failed("hold_until", rule, exc))
            continue
        if t is not None and t > now:
            v.not_before = t if v.not_before is None else max(v.not_before, t)
    return v


def _requirements(task: TaskSpec, compiled: CompiledPolicy, ctx: RuleContext,
                  violations: list[Reason]) -> tuple[list, Requirements | Reason]:
    """The rules' constraints compiled for this task. Built-in rules constrain by the task's
    tags and capabilities only, so their result is kept per (tags, capabilities) for the
    policy version; plug-in rules are asked every time. Tasks asking for the same amounts
    share one (immutable) Requirements: made once, and kept once per job, not per task."""
    caps, coop_id = task.capabilities, task.coop_id
    key = (task.tags, tuple(sorted(caps.items())) if caps else (), coop_id) if compiled.builtin_constraints \
        else None
    cached = compiled.requirements_cache.get(key) if key is not None else None
    if cached is not None:
        constraints, req, by_amounts = cached
        if not isinstance(req, Requirements):
            return constraints, req
        resources = task.resources
        amounts = (resources.cpus, resources.gpus, resources.memory_mb, resources.gpu_memory_mb)
        same = by_amounts.get(amounts)
        if same is None:
            if len(by_amounts) >= 256:
                by_amounts.clear()
            same = by_amounts[amounts] = req.with_resources(resources)
        return constraints, same
    constraints = []
    for rule in compiled.constrainers:
        try:
            c = rule.constrain(task, ctx)
        except Exception as exc:
            violations.append(_failed("constrain", rule, exc))
            continue
        if c is not None:
            constraints.append(c)
    req = compile_requirements(coop_id, task.resources, constraints, caps)
    if key is not None:
        if len(compiled.requirements_cache) > 4096:
            compiled.requirements_cache.clear()
        compiled.requirements_cache[key] = (constraints, req, {})
    return constraints, req


def requirements_for(task: TaskSpec, compiled: CompiledPolicy | None, table: ExecutorTable, now: float,
                     relaxed: bool = False) -> Requirements:
    """The placement requirements of an admitted task, rebuilt (after a restart) from the policy."""
    req: Requirements | Reason = compile_requirements(task.coop_id, task.resources, (), task.capabilities)
    if compiled is not None and not relaxed:
        ctx = RuleContext(now=now, runtime_s=task.max_runtime_s or 0.0, buckets=RateBuckets())
        _, constrained = _requirements(task, compiled, ctx, [])
        if isinstance(constrained, Requirements):  # a region conflict was relaxed at admission
            req = constrained
    assert isinstance(req, Requirements)
    return req


_QUOTA_KINDS = (("cpu", "CPU", "CPU-hours", "cpu_hours_per_month"),
                ("gpu", "GPU", "GPU-hours", "gpu_hours_per_month"),
                ("credits", "credit", "credits", "credits_per_month"))


def _check_quota(v: Verdict, ledger: UsageLedger, now: float, limits: Cost) -> None:
    """Projected usage (used + reserved + this task) against ``limits`` (the quota in ledger units)."""
    task, cost = v.task, v.cost
    standing = ledger.standing(task.coop_id, task.member, now)
    used, held = standing.used, standing.reserved
    if _within(used, held, cost, limits):
        return  # the common case, without building a message
    assert v.quota is not None
    _over_quota(v, now, used, held, v.quota, "quota", "quota", f"coop {task.coop_id}, member {task.member}",
                "ask a coop admin to raise it")


def _check_coop_quota(v: Verdict, ledger: UsageLedger, now: float, limits: Cost, quota: CoopQuota) -> None:
    """Every member's projected usage together, with this task's, against the policy's ``coop_quota``."""
    standing = ledger.coop_standing(v.task.coop_id, now)
    if not _within(standing.used, standing.reserved, v.cost, limits):
        _over_quota(v, now, standing.used, standing.reserved, quota, "coop_quota", "budget",
                    f"all members of coop {v.task.coop_id} together", "ask a coop admin to raise its coop_quota")


def _within(used: Cost, held: Cost, cost: Cost, limits: Cost) -> bool:
    return ((limits.cpu == UNLIMITED or not cost.cpu or used.cpu + held.cpu + cost.cpu <= limits.cpu)
            and (limits.gpu == UNLIMITED or not cost.gpu or used.gpu + held.gpu + cost.gpu <= limits.gpu)
            and (limits.credits == UNLIMITED or not cost.credits
                 or used.credits + held.credits + cost.credits <= limits.credits))


def _over_quota(v: Verdict, now: float, used: Cost, held: Cost, quota: MemberQuota | CoopQuota, source: str,
                kind: str, who: str, raise_it: str) -> None:
    """A violation per dimension (CPU, GPU, credits) whose projected usage passes ``quota`` (a member's
    ``quota``, or the coop's ``budget``): ``rejected`` if this task alone passes it, ``unavailable`` otherwise."""
    for attr, label, unit, limit_field in _QUOTA_KINDS:
        limit = getattr(quota, limit_field)
        need = getattr(v.cost, attr)
        if limit is None or need == 0:
            continue
        used_units, held_units, cap = getattr(used, attr), getattr(held, attr), to_units(limit)
        if used_units + held_units + need <= cap:
            continue
        if need > cap:
            v.violations.append(rejected(f"{source}:{attr}", (
                f"this task alone projects {from_units(need):.4g} {unit}, more than the monthly {label} {kind} of "
                f"{limit:g} {unit} ({who}); ask for fewer resources or a shorter max_runtime_s")))
        else:
            v.violations.append(unavailable(f"{source}:{attr}", (
                f"monthly {label} {kind} exceeded: {from_units(used_units):.4g} used + "
                f"{from_units(held_units):.4g} reserved + "
                f"{from_units(need):.4g} projected > {limit:g} {unit} ({who}); {raise_it} "
                f"or wait for {next_period_start(now)}")))
