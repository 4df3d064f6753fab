"""A plain reference scheduler: the core's decisions, made the seed's way.

The cooperative design (seed 002) admits with ``PolicyManager.check_submission`` (one
pass over the policy's rules, matching on the rule type), then ``filter_executors``
(keep the executors every rule allows) and scores each remaining offer on its own.
``ReferenceScheduler`` does exactly that in plain Python: the executors are a list of
dicts in registration order, every check is a Python comparison per executor, every
score is a scalar sum per executor, and nothing is cached between calls.

It decides what ``scheduler.core.SchedulerCore`` decides for one submitted task:

- admission: the ``max_priority`` cap, the rules' own ``check()``, the placement
  constraints (``DataSovereignty``, ``RequireCapability`` and ``ExecutorFilter``, with
  the region intersection and its conflict), whether one executor the rules allow holds
  the whole request and the request priced at the dearest of those (the projected
  credits), the quota on projected usage (used + reserved + this task, in
  millionths like the ledger), ``MemberPriority`` multipliers and ``TimeWindow``
  deferral; the enforcement mode decides what a violation means;
- placement: status, coop access (own coop, ``open_to`` a coop or ``*``), region,
  capabilities with minimum versions (``policies.versions.version_key``), allow and
  deny lists, free resources; the score is the same weighted sum as
  ``scheduler.placement`` over the same features as ``scheduler.executor_table``
  (trust; capacity = mean free fraction of cpu, memory and, when present, GPUs;
  queue = 1 / (1 + running + reported queue); rtt = 1 / (1 + rtt_ms / 50); data
  locality; hints); the highest score wins and a tie goes to the executor registered
  first (the core's lowest row).

It is a yardstick for the benchmark and its agreement check, not a second scheduler:
it keeps only the state those decisions read (free resources, running counts, the
month's usage and reservations, rate-limit buckets).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from policies.model import DEFAULT_WEIGHTS, CoopPolicy, EnforcementMode
from policies.rules import (DataSovereignty, ExecutorFilter, MemberPriority, RateBuckets, RateLimit,
                            RequireCapability, RuleContext, TaskLimits, TimeWindow)
from policies.versions import version_key
from scheduler.executor_spec import ExecutorSpec
from scheduler.tasks import Resources, TaskSpec

EPS = 1e-9
RTT_SCALE_MS = 50.0
SCALE = 1_000_000  # quota amounts in millionths, as the ledger keeps them


def units(x: float) -> int:
    return int(round(x * SCALE))


def units_up(x: float) -> int:
    """A projection's units: rounded up, as ``Cost.projected`` (float noise on a whole number is that number)."""
    nearest = round(x * SCALE)
    return int(nearest) if abs(x * SCALE - nearest) <= 1e-9 * max(1.0, abs(x * SCALE)) else int(math.ceil(x * SCALE))


def period_of(t: float) -> str:
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return f"{d.year:04d}-{d.month:02d}"


def executor_record(spec: ExecutorSpec) -> dict:
    """One executor as the seed keeps it: a dict of what it registered, plus its current load."""
    r = spec.resources
    return {
        "id": spec.executor_id, "node": spec.node_id or spec.executor_id, "coop": spec.coop_id,
        "open_to": tuple(spec.open_to), "region": spec.region, "capabilities": dict(spec.capabilities),
        "trust": spec.trust, "rtt_ms": spec.rtt_ms, "price_cpu": spec.price_cpu_hour,
        "price_gpu": spec.price_gpu_hour, "status": "active",
        "total_cpus": r.cpus, "free_cpus": r.cpus, "total_gpus": r.gpus, "free_gpus": r.gpus,
        "total_mem": float(r.memory_mb), "free_mem": float(r.memory_mb),
        "total_gmem": float(r.gpu_memory_mb), "free_gmem": float(r.gpu_memory_mb),
        "running": 0.0, "reported_queue": 0.0,
    }


@dataclass
class RefRequirements:
    regions: frozenset[str] | None = None
    capabilities: list[tuple[str, str | None]] = field(default_factory=list)
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    constrained: bool = False  # a policy rule (not only the task) asked something


@dataclass
class RefAdmission:
    """What ``check_submission`` found: the same facts ``scheduler.admission.Verdict`` carries."""

    task: TaskSpec
    admitted: bool
    violations: list[str]          # rule sources, e.g. "quota:cpu", "gdpr"
    hard: list[str]
    requirements: RefRequirements
    cost: tuple[int, int, int]     # cpu, gpu, credits in millionths
    effective_priority: float
    not_before: float | None
    fit_count: int
    max_price: float


@dataclass
class RefChoice:
    admission: RefAdmission
    index: int | None = None       # the executor's position in registration order
    executor_id: str | None = None
    score: float | None = None
    placed: bool = False


class ReferenceScheduler:
    """Plain-Python admission and placement over a list of executor dicts."""

    def __init__(self, policies: Iterable[CoopPolicy] = (), data: dict[str, dict[str, int]] | None = None) -> None:
        self.policies: dict[str, CoopPolicy] = {p.coop_id: p for p in policies}
        self.executors: list[dict] = []
        self.index: dict[str, int] = {}  # executor id -> position, for bookkeeping by id (not on the decision path)
        self.data: dict[str, dict[str, int]] = {k: dict(v) for k, v in (data or {}).items()}
        self.buckets = RateBuckets()
        self.used: dict[tuple[str, str, str], list[int]] = {}
        self.reserved: dict[tuple[str, str, str], list[int]] = {}
        self.reservations: dict[str, tuple[tuple[str, str, str], tuple[int, int, int]]] = {}
        self.running: dict[tuple[str, str], int] = {}
        self.placed_on: dict[str, tuple[int, Resources]] = {}  # task id -> (index, resources)

    # ------------------------------------------------------------------ fleet
    def add_executor(self, spec: ExecutorSpec) -> None:
        self.index[spec.executor_id] = len(self.executors)
        self.executors.append(executor_record(spec))

    def find(self, executor_id: str) -> int:
        return self.index[executor_id]

    def heartbeat(self, executor_id: str, queue_depth: int) -> None:
        self.executors[self.find(executor_id)]["reported_queue"] = float(queue_depth)

    def drain(self, executor_id: str) -> None:
        self.executors[self.find(executor_id)]["status"] = "draining"

    # ------------------------------------------------------------------ admission
    def check_submission(self, task: TaskSpec, now: float,
                         fit_cache: dict | None = None) -> RefAdmission:
        """Every admission check for one task, in plain Python, per call.

        The projected credits need the price of the dearest executor that could ever run
        the task, so this scans the fleet; pass ``fit_cache`` (a dict) to reuse scans
        across calls, the way the core caches that fact per requirement signature.
        """
        policy = self.policies.get(task.coop_id)
        empty = RefRequirements()
        if policy is None:
            return RefAdmission(task, False, [], ["policy"], empty, (0, 0, 0), 0.0, None, 0, 0.0)
        quota = policy.quota_for(task.member)
        runtime = task.max_runtime_s or quota.default_max_runtime_s
        ctx = RuleContext(now=now, runtime_s=runtime, buckets=self.buckets)
        violations: list[str] = []
        hard: list[str] = []
        if task.priority.rank > quota.max_priority.rank:
            violations.append("quota:priority")
        req, multiplier, not_before = self._apply_rules(task, policy, ctx, violations)

        # could any registered executor ever run it, and what does the dearest one charge?
        count, price = self._static_fit(task.coop_id, task.resources, req, fit_cache)
        if count == 0 and req.constrained and policy.enforcement_mode is not EnforcementMode.STRICT:
            loose = RefRequirements(capabilities=[(n, v) for n, v in sorted(task.capabilities.items())])
            loose_count, loose_price = self._static_fit(task.coop_id, task.resources, loose, fit_cache)
            if loose_count:
                violations.append("placement")
                req, count, price = loose, loose_count, loose_price
        if count == 0:
            hard.append("placement")

        # quota on projected usage: used + reserved + this task, in millionths
        hours = runtime / 3600.0
        r = task.resources
        cost = (units_up(r.cpus * hours), units_up(r.gpus * hours), units_up(price * hours))
        if task.member not in policy.quota_whitelist:
            key = (task.coop_id, task.member, period_of(now))
            used = self.used.get(key, [0, 0, 0])
            held = self.reserved.get(key, [0, 0, 0])
            limits = (quota.cpu_hours_per_month, quota.gpu_hours_per_month, quota.credits_per_month)
            for i, (name, limit) in enumerate(zip(("cpu", "gpu", "credits"), limits)):
                if limit is None or cost[i] == 0:
                    continue
                if used[i] + held[i] + cost[i] > units(limit):
                    violations.append(f"quota:{name}")

        admitted = not hard and (not violations or policy.enforcement_mode is not EnforcementMode.STRICT)
        return RefAdmission(task, admitted, violations, hard, req, cost, task.priority.rank * multiplier,
                            not_before, count, price)

    def requirements(self, task: TaskSpec, now: float) -> RefRequirements:
        """Only the placement constraints the policy puts on ``task`` (no admission checks counted)."""
        policy = self.policies[task.coop_id]
        runtime = task.max_runtime_s or policy.quota_for(task.member).default_max_runtime_s
        return self._apply_rules(task, policy, RuleContext(now=now, runtime_s=runtime, buckets=self.buckets), [])[0]

    def _apply_rules(self, task: TaskSpec, policy: CoopPolicy, ctx: RuleContext,
                     violations: list[str]) -> tuple[RefRequirements, float, float | None]:
        """One pass over the policy's rules, matched on their type (the seed's ``check_submission``
        and ``extract_placement_constraints``): appends violations, returns the placement
        requirements, the priority multiplier and the time a deferred task is held until."""
        regions: frozenset[str] | None = None
        region_conflict = False
        caps: list[tuple[str, str | None]] = [(n, v) for n, v in sorted(task.capabilities.items())]
        allow: frozenset[str] | None = None
        deny: set[str] = set()
        constrained = False
        multiplier = 1.0
        not_before: float | None = None
        for rule in policy.rules:
            if isinstance(rule, (TimeWindow, RateLimit, TaskLimits)):
                reason = rule.check(task, ctx)
                if reason is not None:
                    violations.append(reason.source)
                if isinstance(rule, TimeWindow):
                    held = rule.hold_until(task, ctx)
                    if held is not None and held > ctx.now:
                        not_before = held if not_before is None else max(not_before, held)
            elif isinstance(rule, DataSovereignty):
                if not rule.tags or any(t in task.tags for t in rule.tags):
                    constrained = True
                    allowed = rule.regions if regions is None else regions & rule.regions
                    if not allowed:
                        region_conflict = True
                        violations.append(rule.label)
                    else:
                        regions = allowed
            elif isinstance(rule, RequireCapability):
                if not rule.tags or any(t in task.tags for t in rule.tags):
                    constrained = True
                    caps.append((rule.capability, rule.min_version))
            elif isinstance(rule, ExecutorFilter):
                if rule.whitelist or rule.blacklist:
                    constrained = True
                    if rule.whitelist:
                        allow = frozenset(rule.whitelist) if allow is None else allow & frozenset(rule.whitelist)
                    deny.update(rule.blacklist)
            elif isinstance(rule, MemberPriority):
                if task.member == rule.member:
                    multiplier *= rule.multiplier
        if region_conflict:  # the constraints cannot all hold: keep only the task's own needs
            req = RefRequirements(capabilities=[(n, v) for n, v in sorted(task.capabilities.items())])
        else:
            req = RefRequirements(regions, caps, allow, frozenset(deny), constrained)
        return req, multiplier, not_before

    def _static_fit(self, coop: str, r: Resources, req: RefRequirements, cache: dict | None) -> tuple[int, float]:
        """Like ``scheduler.placement.static_fit``: among the registered executors the rules allow (active,
        drained or offline: whether the task could ever run), those whose resources hold the whole
        request, and the request priced at the dearest of them. Returns (count of allowed executors if
        one of them holds it, else 0; price per hour)."""
        key = None
        if cache is not None:
            key = (coop, r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb, req.regions, tuple(req.capabilities),
                   req.allow, req.deny)
            if key in cache:
                return cache[key]
        count, holders, price = 0, 0, 0.0
        for e in self.executors:
            if not self._allowed(e, req, coop, any_status=True):
                continue
            count += 1
            if (r.cpus <= e["total_cpus"] + EPS and r.gpus <= e["total_gpus"] + EPS
                    and r.memory_mb <= e["total_mem"] + EPS and r.gpu_memory_mb <= e["total_gmem"] + EPS):
                holders += 1
                price = max(price, r.cpus * e["price_cpu"] + r.gpus * e["price_gpu"])
        result = (count, price) if holders else (0, 0.0)
        if key is not None:
            cache[key] = result
        return result

    # ------------------------------------------------------------------ filtering
    def _allowed(self, e: dict, req: RefRequirements, coop: str, any_status: bool = False) -> bool:
        """Everything but load: status (unless ``any_status``), coop access, region, capabilities,
        allow/deny lists."""
        if e["status"] != "active" and not any_status:
            return False
        if e["coop"] != coop and "*" not in e["open_to"] and coop not in e["open_to"]:
            return False
        if req.regions is not None and e["region"] not in req.regions:
            return False
        for name, min_version in req.capabilities:
            have = e["capabilities"].get(name)
            if have is None or version_key(have) < version_key(min_version):
                return False
        if req.allow is not None and e["id"] not in req.allow:
            return False
        if e["id"] in req.deny:
            return False
        return True

    def filter_executors(self, task: TaskSpec, req: RefRequirements) -> list[int]:
        """Positions of the executors that may run ``task`` and have its resources free now."""
        r = task.resources
        coop = task.coop_id
        out = []
        for i, e in enumerate(self.executors):
            if e["free_cpus"] < r.cpus - EPS:
                continue
            if r.gpus > 0 and e["free_gpus"] < r.gpus - EPS:
                continue
            if r.memory_mb > 0 and e["free_mem"] < r.memory_mb - EPS:
                continue
            if r.gpu_memory_mb > 0 and e["free_gmem"] < r.gpu_memory_mb - EPS:
                continue
            if self._allowed(e, req, coop):
                out.append(i)
        return out

    # ------------------------------------------------------------------ scoring
    def data_fractions(self, keys: tuple[str, ...]) -> dict[str, float]:
        total = 0
        local: dict[str, int] = {}
        for key in keys:
            copies = self.data.get(key)
            if not copies:
                continue
            size = max(copies.values())
            total += size
            for node, held in copies.items():
                local[node] = local.get(node, 0) + min(held, size)
        if total <= 0:
            return {}
        return {node: held / total for node, held in local.items()}

    def score(self, e: dict, weights: tuple[float, ...], task: TaskSpec,
              fractions: dict[str, float] | None, hinted: Counter | None) -> float:
        """One executor's score: the weighted features, summed in the core's order."""
        parts = [e["free_cpus"] / e["total_cpus"] if e["total_cpus"] > 0 else 0.0]
        if e["total_mem"] > 0:
            parts.append(e["free_mem"] / e["total_mem"])
        if e["total_gpus"] > 0:
            parts.append(e["free_gpus"] / e["total_gpus"])
        capacity = max(0.0, sum(parts) / len(parts))
        queue = 1.0 / (1.0 + (e["running"] + e["reported_queue"]))
        rtt = 1.0 / (1.0 + e["rtt_ms"] / RTT_SCALE_MS)
        base = weights[0] * e["trust"] + weights[1] * capacity + weights[2] * queue + weights[3] * rtt
        hints = task.hints
        if not (hints.regions or hints.executors or fractions):
            return base
        extra = 0.0
        if fractions and weights[4]:
            extra += weights[4] * fractions.get(e["node"], 0.0)
        if (hints.regions or hints.executors) and weights[5]:
            kinds = int(bool(hints.regions)) + int(bool(hints.executors))
            match = 0.0
            if hints.regions and e["region"] in hints.regions:
                match += 1.0
            if hinted:
                match += hinted.get(e["id"], 0)
            extra += weights[5] * (match / kinds)
        return base + extra

    def choose(self, task: TaskSpec, req: RefRequirements) -> tuple[int, float] | None:
        """The best fitting executor as (position, score): of the task's own coop if one fits (owners
        first), else of all; ties go to the one registered first."""
        policy = self.policies.get(task.coop_id)
        weights = (policy.weights if policy else DEFAULT_WEIGHTS).as_tuple()
        fractions = self.data_fractions(task.hints.data) if task.hints.data else None
        hinted = Counter(task.hints.executors) if task.hints.executors else None
        best: tuple[int, float] | None = None
        best_own: tuple[int, float] | None = None
        for i in self.filter_executors(task, req):
            e = self.executors[i]
            s = self.score(e, weights, task, fractions, hinted)
            if best is None or s > best[1]:
                best = (i, s)
            if e["coop"] == task.coop_id and (best_own is None or s > best_own[1]):
                best_own = (i, s)
        return best_own or best

    def score_of(self, task: TaskSpec, index: int) -> float:
        """The score ``choose`` gives the executor at ``index`` (for checking ties)."""
        policy = self.policies.get(task.coop_id)
        weights = (policy.weights if policy else DEFAULT_WEIGHTS).as_tuple()
        fractions = self.data_fractions(task.hints.data) if task.hints.data else None
        hinted = Counter(task.hints.executors) if task.hints.executors else None
        return self.score(self.executors[index], weights, task, fractions, hinted)

    # ------------------------------------------------------------------ one decision
    def decide(self, task: TaskSpec, now: float, fit_cache: dict | None = None) -> RefChoice:
        """Admit ``task`` and, when it may start now, pick its executor. Changes nothing."""
        return self.decide_placement(task, self.check_submission(task, now, fit_cache), now)

    def decide_placement(self, task: TaskSpec, adm: RefAdmission, now: float) -> RefChoice:
        """After admission: whether the task may start now, and on which executor. Changes nothing."""
        choice = RefChoice(adm)
        if not adm.admitted or (adm.not_before is not None and now < adm.not_before):
            return choice
        policy = self.policies[task.coop_id]
        limit = policy.quota_for(task.member).max_concurrent_tasks
        if self.running.get((task.coop_id, task.member), 0) >= limit:
            return choice
        best = self.choose(task, adm.requirements)
        if best is not None:
            choice.index, choice.score = best
            choice.executor_id = self.executors[best[0]]["id"]
        return choice

    def commit(self, task: TaskSpec, choice: RefChoice, now: float) -> None:
        """Record a decision: reserve the quota, take a rate token, hold the executor's resources."""
        if choice.admission.admitted:
            self.admit(task, choice.admission.cost, now)
            if choice.index is not None:
                self.place(task, choice.index)
                choice.placed = True

    def submit(self, task: TaskSpec, now: float, fit_cache: dict | None = None) -> RefChoice:
        """``decide``, then ``commit``: one submission handled end to end."""
        choice = self.decide(task, now, fit_cache)
        self.commit(task, choice, now)
        return choice

    # ------------------------------------------------------------------ bookkeeping
    def admit(self, task: TaskSpec, cost: tuple[int, int, int], now: float) -> None:
        key = (task.coop_id, task.member, period_of(now))
        self.reservations[task.task_id] = (key, cost)
        held = self.reserved.setdefault(key, [0, 0, 0])
        for i in range(3):
            held[i] += cost[i]
        policy = self.policies[task.coop_id]
        quota = policy.quota_for(task.member)
        ctx = RuleContext(now=now, runtime_s=task.max_runtime_s or quota.default_max_runtime_s, buckets=self.buckets)
        for rule in policy.rules:
            if isinstance(rule, RateLimit):
                rule.reserve(task, ctx)

    def place(self, task: TaskSpec, index: int) -> None:
        e = self.executors[index]
        r = task.resources
        e["free_cpus"] -= r.cpus
        e["free_gpus"] -= r.gpus
        e["free_mem"] -= r.memory_mb
        e["free_gmem"] -= r.gpu_memory_mb
        e["running"] += 1
        key = (task.coop_id, task.member)
        self.running[key] = self.running.get(key, 0) + 1
        self.placed_on[task.task_id] = (index, r)

    def unplace(self, task: TaskSpec) -> None:
        index, r = self.placed_on.pop(task.task_id)
        e = self.executors[index]
        e["free_cpus"] = min(e["total_cpus"], e["free_cpus"] + r.cpus)
        e["free_gpus"] = min(e["total_gpus"], e["free_gpus"] + r.gpus)
        e["free_mem"] = min(e["total_mem"], e["free_mem"] + r.memory_mb)
        e["free_gmem"] = min(e["total_gmem"], e["free_gmem"] + r.gpu_memory_mb)
        e["running"] = max(0.0, e["running"] - 1)
        key = (task.coop_id, task.member)
        self.running[key] = max(0, self.running.get(key, 0) - 1)

    def release(self, task_id: str) -> None:
        """Drop an open reservation (the task was cancelled before it ran)."""
        entry = self.reservations.pop(task_id, None)
        if entry is not None:
            key, cost = entry
            held = self.reserved[key]
            for i in range(3):
                held[i] -= cost[i]

    def complete(self, task: TaskSpec, cpu_seconds: float, gpu_seconds: float, ended_at: float,
                 credits: float | None = None) -> None:
        """The task finished: free its executor and charge the measured usage instead of the reservation."""
        index, _ = self.placed_on[task.task_id]
        e = self.executors[index]
        cpu_h, gpu_h = cpu_seconds / 3600.0, gpu_seconds / 3600.0
        if credits is None:
            credits = cpu_h * e["price_cpu"] + gpu_h * e["price_gpu"]
        measured = (units(cpu_h), units(gpu_h), units(credits))
        entry = self.reservations.pop(task.task_id, None)
        if entry is not None:
            key, cost = entry
            measured = tuple(min(m, c) for m, c in zip(measured, cost))  # never more than reserved
            held = self.reserved[key]
            for i in range(3):
                held[i] -= cost[i]
        else:
            key = (task.coop_id, task.member, period_of(ended_at))
        used = self.used.setdefault(key, [0, 0, 0])
        for i in range(3):
            used[i] += measured[i]
        self.unplace(task)
