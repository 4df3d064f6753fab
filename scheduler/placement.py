"""Choosing an executor: compile requirements, mask, score, pick.

Filtering (which executors *may* run a task) is separate from choosing (which one
*should*), as in Dask's ``decide_worker``. Both are whole-column numpy operations over
the ``ExecutorTable``; the objective (the weights) is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from policies.reasons import Reason, rejected
from policies.rules import Constraint
from policies.validation import trusted
from policies.versions import version_key
from scheduler.dearest import Allowed, dearest
from scheduler.executor_table import EMPTY as EMPTY_ROW, SHIFT, ExecutorTable
from scheduler.free_masks import EPS
from scheduler.tasks import Hints, Resources, TaskSpec

FEATURES = ("trust", "capacity", "queue", "rtt", "data", "hints")


@dataclass(frozen=True)
class Requirements:
    """Everything that decides which executors may run a task, with the rule behind each part."""

    coop_id: str
    resources: Resources
    regions: frozenset[str] | None = None
    region_sources: tuple[str, ...] = ()
    capabilities: tuple[tuple[str, str | None, str], ...] = ()
    allow: frozenset[str] | None = None
    allow_sources: tuple[str, ...] = ()
    deny: frozenset[str] = frozenset()
    deny_sources: tuple[str, ...] = ()
    signature: tuple = field(default=(), compare=False)
    static_key: tuple = field(default=(), compare=False)   # the table's cache keys for this signature
    summary_key: tuple = field(default=(), compare=False)
    own_key: tuple = field(default=(), compare=False)  # the static mask narrowed to the task's own coop
    amounts: tuple = field(default=(), compare=False)  # (cpus, gpus, memory_mb, gpu_memory_mb) of ``resources``

    def __post_init__(self) -> None:
        if not self.amounts:
            object.__setattr__(self, "amounts", _amounts(self.resources))
        if not self.signature:  # the table's cache keys, from the constraints (copies share them: with_resources)
            signature = (self.coop_id, self.regions, tuple((n, v) for n, v, _ in self.capabilities), self.allow,
                         self.deny)
            for name, key in (("signature", signature), ("static_key", ("static",) + signature),
                              ("summary_key", ("summary",) + signature), ("own_key", ("own",) + signature)):
                object.__setattr__(self, name, key)

    def with_resources(self, resources: Resources) -> Requirements:
        """The same constraints for another request (a cheap copy: this is on the hot path)."""
        other = object.__new__(Requirements)
        d = other.__dict__
        d.update(self.__dict__)
        d["resources"], d["amounts"] = resources, _amounts(resources)
        return other

    def unconstrained(self) -> Requirements:
        """The same task with every policy constraint dropped, its own capabilities kept (the fallback of a
        policy that is not strict)."""
        own = {name: version for name, version, source in self.capabilities if source == "task"}
        loose = compile_requirements(self.coop_id, self.resources, (), own)
        assert isinstance(loose, Requirements)  # (no constraints: nothing can conflict)
        return loose

    @property
    def policy_sources(self) -> tuple[str, ...]:
        """The rules behind the constraints, sorted: what dropping them relaxes."""
        return tuple(sorted(set(self.region_sources + self.allow_sources + self.deny_sources
                                + tuple(source for _, _, source in self.capabilities if source != "task"))))


def _amounts(r: Resources) -> tuple:
    """A request's amounts as a plain tuple, read once (pydantic field reads are slow)."""
    return (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb)


def compile_requirements(coop_id: str, resources: Resources, constraints: Sequence[Constraint],
                         task_capabilities: dict[str, str | None]) -> Requirements | Reason:
    """Intersect the rules' constraints; an empty region intersection is a rejection naming both rules."""
    regions: frozenset[str] | None = None
    region_sources: list[str] = []
    caps: list[tuple[str, str | None, str]] = [(n, v, "task") for n, v in sorted(task_capabilities.items())]
    allow: frozenset[str] | None = None
    allow_sources: list[str] = []
    deny: set[str] = set()
    deny_sources: list[str] = []
    for c in constraints:
        if c.regions is not None:
            narrowed = c.regions if regions is None else regions & c.regions
            if not narrowed:
                return rejected(c.source, f"region rules conflict: {' and '.join(region_sources)} allow only "
                                f"{_names(regions)} but {c.source} allows only {_names(c.regions)}; no region "
                                "satisfies both, so this task can never run; ask a coop admin to reconcile them")
            regions = narrowed
            region_sources.append(c.source)
        caps.extend((name, version, c.source) for name, version in c.capabilities)
        if c.allow is not None:
            allow = c.allow if allow is None else allow & c.allow
            allow_sources.append(c.source)
        if c.deny:
            deny |= c.deny
            deny_sources.append(c.source)
    return _requirements(coop_id, resources, regions, tuple(region_sources), tuple(caps), allow,
                         tuple(allow_sources), frozenset(deny), tuple(deny_sources))


def _requirements(coop_id: str, resources: Resources, regions: frozenset[str] | None, region_sources: tuple,
                  caps: tuple, allow: frozenset[str] | None, allow_sources: tuple, deny: frozenset[str],
                  deny_sources: tuple) -> Requirements:
    return Requirements(coop_id, resources, regions, region_sources, caps, allow, allow_sources, deny,
                        deny_sources)  # (its signature and cache keys: __post_init__)


def requirements_record(req: Requirements) -> dict:
    """``req``'s constraints as JSON-ready data (a job's store record keeps them, so a restarted head
    places it under the constraints it was admitted with, whatever the policy says by then)."""
    return {"regions": sorted(req.regions) if req.regions is not None else None,
            "region_sources": list(req.region_sources), "capabilities": [list(c) for c in req.capabilities],
            "allow": sorted(req.allow) if req.allow is not None else None, "allow_sources": list(req.allow_sources),
            "deny": sorted(req.deny), "deny_sources": list(req.deny_sources)}


def requirements_from_record(coop_id: str, resources: Resources, record: dict) -> Requirements:
    """What ``requirements_record`` wrote, as the Requirements of a task asking for ``resources``."""
    regions, allow = record.get("regions"), record.get("allow")
    return _requirements(coop_id, resources, frozenset(regions) if regions is not None else None,
                         tuple(record.get("region_sources", ())),
                         tuple((n, v, src) for n, v, src in record.get("capabilities", ())),
                         frozenset(allow) if allow is not None else None, tuple(record.get("allow_sources", ())),
                         frozenset(record.get("deny", ())), tuple(record.get("deny_sources", ())))


def _names(regions: frozenset[str] | None) -> str:
    return "{" + ", ".join(sorted(regions or ())) + "}"


# ----------------------------------------------------------------------------- masks
def _static(table: ExecutorTable, req: Requirements) -> np.ndarray:
    cached = table.cached_static(req.static_key)  # the usual case: no closure to build
    if cached is not None:
        return cached

    def build(t: ExecutorTable) -> np.ndarray:  # the active ones among those that could ever run it: one AND
        return _registered(t, req) & t.usable_mask()
    return table.static_mask(req.static_key, build)


def _static_own(table: ExecutorTable, req: Requirements) -> np.ndarray:
    """``_static`` of the task's own coop's executors only."""
    cached = table.cached_static(req.own_key)
    if cached is not None:
        return cached
    return table.static_mask(req.own_key, lambda t: _static(t, req) & t.own_mask(req.coop_id))


def allowed_candidates(table: ExecutorTable, req: Requirements) -> np.ndarray:
    """The active executors the task's constraints and coop access allow, free or not (where its coop's running
    tasks of lower priority may be stopped for it: ``SchedulingRound._preempt_within``). The table's cached
    mask: read it, do not change it."""
    return _static(table, req)


def own_candidates(table: ExecutorTable, req: Requirements) -> np.ndarray:
    """The task's own coop's active executors its constraints allow, free or not (what its coop may reclaim
    from borrowers: ``SchedulingRound._reclaim``). The table's cached mask: read it, do not change it."""
    return _static_own(table, req)


def _registered(table: ExecutorTable, req: Requirements) -> np.ndarray:
    """The registered executors (active or not: drained, offline) the task's constraints allow: whether it
    could ever run, as admission and the scheduler both judge it."""
    key = ("registered",) + req.static_key
    cached = table.cached_static(key)
    if cached is not None:
        return cached
    return table.static_mask(key, lambda t: _constrained(t, req, t.status[: t.n] != EMPTY_ROW))


def _constrained(t: ExecutorTable, req: Requirements, base: np.ndarray) -> np.ndarray:
    n = t.n
    m = base & t.access_mask(req.coop_id)
    if req.regions is not None:
        m &= t.in_regions(req.regions)
    for name, version, _ in req.capabilities:
        m &= t.capability_column(name) >= version_key(version)
    if req.allow is not None:
        allowed = np.zeros(n, dtype=bool)
        allowed[[t.rows[e] for e in req.allow if e in t.rows]] = True
        m &= allowed
    for e in req.deny:
        row = t.rows.get(e)
        if row is not None:
            m[row] = False
    return m


def fit_mask(table: ExecutorTable, req: Requirements, own: bool = False) -> np.ndarray:
    """Executors that may run the task and have the resources free right now; with ``own``, only those of
    the task's own coop (the owners-first pass of a round: no extra pass over the rows, the static part
    is kept narrowed).

    The answer is the table's scratch buffer (``live_fit``): read it before the next call.
    """
    cpus, gpus, memory_mb, gpu_memory_mb = req.amounts
    free = table.free_masks
    cpu_mask, gpu_mask, mem_mask, gmem_mask = free.views
    # (the views in hand when the amount was asked before: at_least's call costs more than the lookup)
    m = np.logical_and(cpu_mask[cpus] if cpus in cpu_mask else free.at_least(0, cpus),
                       _static_own(table, req) if own else _static(table, req), out=table.live_fit)
    if gpus > 0:
        m &= gpu_mask[gpus] if gpus in gpu_mask else free.at_least(1, gpus)
    if memory_mb > 0:
        m &= mem_mask[memory_mb] if memory_mb in mem_mask else free.at_least(2, memory_mb)
    if gpu_memory_mb > 0:
        m &= gmem_mask[gpu_memory_mb] if gpu_memory_mb in gmem_mask else free.at_least(3, gpu_memory_mb)
    if table.ahead:  # an executor taking work ahead has more "free" than it has: the task must fit it too
        m &= _fits_resources(table, req.amounts)
    return m


def _fits_resources(table: ExecutorTable, amounts: tuple) -> np.ndarray:
    """Rows whose registered resources (not their dispatch-ahead ceilings) hold ``amounts``."""
    def build(t: ExecutorTable) -> np.ndarray:
        n = t.n
        cpus, gpus, mem, gmem = amounts
        m = t.total_cpus[:n] >= cpus - EPS
        for column, amount in ((t.total_gpus, gpus), (t.total_mem, mem), (t.total_gmem, gmem)):
            if amount > 0:
                m &= column[:n] >= amount - EPS
        return m
    return table.static_mask(("resources",) + tuple(amounts), build)


class StaticFit(NamedTuple):
    """What admission needs to know about the executors a task may use (ignoring current load).

    ``possible``: some registered executor the rules allow (active, draining or offline) holds the
    whole request on its own. ``max_cost_per_hour``: the request priced at the dearest of those
    executors (its CPU and GPU prices together), so the credit projection is what the dearest
    executor that could run the task would charge, never less than any of them would.
    """

    count: int
    possible: bool
    max_cost_per_hour: float


def static_fit(table: ExecutorTable, req: Requirements) -> StaticFit:
    """O(1) after the first task with the same constraints and amounts (per table shape).

    Admission hands the same ``Requirements`` object to every task with the same constraints and
    amounts, so the answer is also kept per object until the shape changes (the memo holds the
    object, so its id cannot be reused while the entry lives).
    """
    memo = table.fit_memo.get(id(req))
    if memo is not None and memo[0] is req:
        return memo[1]
    allowed = _allowed(table, req)
    answer = dearest(table, allowed, req.amounts)
    fit = StaticFit(allowed.count, answer.possible, answer.price_per_hour)
    if len(table.fit_memo) >= _MAX_FIT_MEMO:
        table.fit_memo.clear()
    table.fit_memo[id(req)] = (req, fit)
    return fit


_MAX_FIT_MEMO = 4096


def _allowed(table: ExecutorTable, req: Requirements) -> Allowed:
    """The registered executors ``req``'s constraint signature allows, with its priced requests (kept per
    table shape)."""
    cached = table.cached_static(req.summary_key)
    if cached is not None:
        return cached
    return table.static_mask(req.summary_key, lambda t: Allowed.of(t, _registered(t, req)))


# ----------------------------------------------------------------------------- scoring
def choose(table: ExecutorTable, mask: np.ndarray, weights: tuple[float, ...], hints: Hints,
           data_fractions: dict[str, float] | None, top: int = 4) -> list[tuple[int, float]]:
    """The best ``top`` rows among ``mask`` as (row, score), best first; ties go to the lower row.

    Scores are kept shifted by +1 (every real score is >= 0), so an infeasible row is simply
    0: one multiply by the boolean mask (True is 1.0) instead of a branchy ``np.where`` —
    several times faster on 100,000 executors.
    """
    scores = table.live_scores
    np.multiply(mask, table.live_base_score(weights), out=scores)
    if data_fractions or hints.regions or hints.executors:  # most tasks bring neither data nor hints
        _add_extras(table, scores, mask, weights, hints, data_fractions)
    picked: list[tuple[int, float]] = []
    argmax, item = scores.argmax, scores.item
    for _ in range(top):
        row = int(argmax())
        shifted = item(row)
        if shifted <= 0.0:
            break
        picked.append((row, shifted - SHIFT))
        scores[row] = 0.0
    return picked


def _add_extras(table: ExecutorTable, scores: np.ndarray, mask: np.ndarray, weights: tuple[float, ...],
                hints: Hints, data_fractions: dict[str, float] | None) -> None:
    """Add the task-specific features (data locality, hints) to the feasible rows' scores."""
    if data_fractions and weights[4]:
        for node, fraction in data_fractions.items():
            for row in table.node_rows.get(node, ()):
                if scores[row] > 0.0:
                    scores[row] += weights[4] * fraction
    kinds = int(bool(hints.regions)) + int(bool(hints.executors))
    if not kinds or not weights[5]:
        return
    coef = weights[5] / kinds
    if hints.regions:
        regions = tuple(sorted(set(hints.regions)))
        weighted = table.static_mask(("region hint", regions, coef), lambda t: coef * t.region_indicator(regions))
        bonus = table.scratch(2, len(scores))  # feasible rows only; two plain ufuncs beat one `where=`
        np.multiply(weighted, mask, out=bonus)
        np.add(scores, bonus, out=scores)
    for e in hints.executors:
        row = table.rows.get(e)
        if row is not None and scores[row] > 0.0:
            scores[row] += coef


def _task_specific(table: ExecutorTable, row: int, weights: tuple[float, ...], hints: Hints,
                   data_fractions: dict[str, float] | None) -> tuple[float, float]:
    """The weighted data-locality and hint contributions to one row's score (as ``_add_extras``)."""
    spec = table.specs[row]
    assert spec is not None
    data = data_fractions.get(spec.node_id or spec.executor_id, 0.0) if data_fractions else 0.0
    kinds = (1 if hints.regions else 0) + (1 if hints.executors else 0)
    hint = ((spec.region in hints.regions) + (spec.executor_id in hints.executors)) / kinds if kinds else 0.0
    return weights[4] * data, weights[5] * hint


_MAX_CACHED_OFFERS = 4096


def offers(table: ExecutorTable, picked: list[tuple[int, float]], weights: tuple[float, ...], hints: Hints,
           data_fractions: dict[str, float] | None) -> list[Offer]:
    """The scored offer (executor, score, per-feature breakdown) of each picked row, best first.

    A row's offer depends only on its facts, the weights and the task's own contributions to
    it (data locality, hints), and the best rows recur from one decision to the next: an offer
    is reused while the row's facts, score and those contributions are unchanged (the cache
    is dropped when the table's shape changes). Offers are frozen and their breakdowns are
    shared read-only.
    """
    specs = table.specs
    specific = bool(hints.regions or hints.executors or data_fractions)
    cache = table.offer_cache.get(weights)
    if cache is None or len(cache) >= _MAX_CACHED_OFFERS:
        cache = table.offer_cache[weights] = {}
    facts = table.row_facts
    w0, w1, w2, w3 = weights[:4]
    out = []
    for row, score in picked:
        fact = facts[row]
        if specific:
            data, hint = _task_specific(table, row, weights, hints, data_fractions)
            key: tuple | int = (row, data, hint)
        else:  # the row alone: no tuple of floats to build and hash
            data = hint = 0.0
            key = row
        hit = cache.get(key)
        if hit is not None and hit[0] == fact and hit[1] == score:
            out.append(hit[2])
            continue
        trust, capacity, depth, rtt = fact
        offer = trusted(Offer, executor_id=specs[row].executor_id, score=score,  # type: ignore[union-attr]
                        breakdown={"trust": w0 * trust, "capacity": w1 * capacity, "queue": w2 / (1.0 + depth),
                                   "rtt": w3 * rtt, "data": data, "hints": hint})
        cache[key] = (fact, score, offer)
        out.append(offer)
    return out


# ----------------------------------------------------------------------------- explanation
def explain_no_fit(table: ExecutorTable, req: Requirements) -> tuple[str, bool]:
    """Why no executor fits, counting what each filter removed (in order).

    Returns (message, could_ever): ``could_ever`` is False when no registered executor,
    whatever its status or load, could ever run the task as submitted.
    """
    n = table.n
    alive = table.status[:n] != 3
    total = int(alive.sum())
    steps: list[tuple[str, np.ndarray]] = [
        ("not active (draining or offline)", table.usable_mask()),
        (f"not open to coop {req.coop_id}", table.access_mask(req.coop_id)),
    ]
    if req.regions is not None:
        codes = [table.region_codes[r] for r in req.regions if r in table.region_codes]
        steps.append((f"outside region {'/'.join(sorted(req.regions))} (rule {', '.join(req.region_sources)})",
                      np.isin(table.region[:n], codes)))
    for name, version, source in req.capabilities:
        need = f"{name}>={version}" if version else name
        steps.append((f"lack capability {need} ({'task' if source == 'task' else 'rule ' + source})",
                      table.capability_column(name) >= version_key(version)))
    if req.allow is not None:
        allowed = np.zeros(n, dtype=bool)
        allowed[[table.rows[e] for e in req.allow if e in table.rows]] = True
        steps.append((f"not on the allow list (rule {', '.join(req.allow_sources)})", allowed))
    if req.deny:
        denied = np.ones(n, dtype=bool)
        denied[[table.rows[e] for e in req.deny if e in table.rows]] = False
        steps.append((f"on the deny list (rule {', '.join(req.deny_sources)})", denied))
    r = req.resources
    steps.append((f"too small for {_ask(r)}", _fits(table, r, total=True)))
    static_steps = len(steps)
    steps.append((f"busy: not enough free for {_ask(r)} right now", _fits(table, r, total=False)))
    remaining = alive.copy()
    ever = alive.copy()
    parts = []
    for i, (label, keep) in enumerate(steps):
        removed = int((remaining & ~keep).sum())
        remaining &= keep
        if 0 < i < static_steps:  # every static filter but the status: could it ever run here?
            ever &= keep
        if removed:
            parts.append(f"{removed} {label}")
    fits = int(remaining.sum())
    head = f"{fits} of {total} executor{'s' if total != 1 else ''} fit"
    return (head + (": " + ", ".join(parts) if parts else "")), bool(ever.any())


def _fits(table: ExecutorTable, r: Resources, total: bool) -> np.ndarray:
    """Rows with at least what ``r`` asks, of each resource it asks any of (as ``fit_mask`` judges: a
    resource it asks none of never stops it, even where more of it is held than an executor now has)."""
    n = table.n
    columns = ((table.total_cpus, table.total_gpus, table.total_mem, table.total_gmem) if total
               else (table.free_cpus, table.free_gpus, table.free_mem, table.free_gmem))
    mask = np.ones(n, dtype=bool)
    for column, want in zip(columns, (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb)):
        if want > 0:
            mask &= column[:n] >= want - EPS
    return mask


def _ask(r: Resources) -> str:
    parts = [f"{r.cpus:g} CPU"]
    if r.gpus:
        parts.append(f"{r.gpus:g} GPU")
    if r.memory_mb:
        parts.append(f"{r.memory_mb} MB")
    if r.gpu_memory_mb:
        parts.append(f"{r.gpu_memory_mb} MB GPU memory")
    return " + ".join(parts)


# ----------------------------------------------------------------------------- the result
class Offer(BaseModel):
    """One scored executor for a task."""

    model_config = ConfigDict(frozen=True)

    executor_id: str
    score: float
    breakdown: dict[str, float]


class Placement(BaseModel):
    """Where a task goes, and why: the chosen offer's per-feature breakdown and the runners-up."""

    model_config = ConfigDict(frozen=True)

    task: TaskSpec
    executor_id: str
    node_id: str
    score: float
    breakdown: dict[str, float]
    runners_up: tuple[Offer, ...] = ()
    placed_at: float
    attempt: int = 1
    relaxed: tuple[str, ...] = ()  # policy constraints dropped by a non-strict policy to place it

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def explain(self) -> str:
        top = sorted(self.breakdown.items(), key=lambda kv: -kv[1])
        head = f"{self.task_id} -> {self.executor_id} (score {self.score:.3f}: " + \
            ", ".join(f"{k} {v:.3f}" for k, v in top if v) + ")"
        rest = "; ".join(f"{o.executor_id} {o.score:.3f}" for o in self.runners_up)
        return head + (f"; runners-up: {rest}" if rest else "")
