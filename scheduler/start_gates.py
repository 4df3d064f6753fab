"""Start gates: whether a queued task may start now, or when the windows governing it open again.

A gate is a rule with ``closed_until`` (the built-in ``TimeWindow``): windows govern starts,
so the scheduler asks before each start, not only at admission. A task's gates depend on its
coop, priority and tags only; the scheduler keeps one answer per such shape for a round.
"""

from __future__ import annotations

from policies.model import EnforcementMode
from policies.rules import RateBuckets, RuleContext
from scheduler.admission import CompiledPolicy
from scheduler.queue import QueuedTask
from scheduler.tasks import TaskSpec

_NOT_CACHED = object()
_GATE_CACHE_SIZE = 1024


def closed_until(compiled: CompiledPolicy | None, entry: QueuedTask, now: float,
                 buckets: RateBuckets) -> float | None:
    """When a closed start gate governing the queued task opens again; None: it may start now."""
    if compiled is None or not compiled.gates:
        return None
    if not compiled.gates_by_minute:
        return _gates_closed_until(compiled, entry.task, now, buckets)
    # Built-in time windows read the clock by the minute and the task by its priority only,
    # and a window closed now opens at a later quarter hour: one answer serves the minute.
    minute_key = (entry.gate_key[1], int(now // 60))
    hold = compiled.gate_cache.get(minute_key, _NOT_CACHED)
    if hold is _NOT_CACHED:
        if len(compiled.gate_cache) >= _GATE_CACHE_SIZE:
            compiled.gate_cache.clear()
        hold = compiled.gate_cache[minute_key] = _gates_closed_until(compiled, entry.task, now, buckets)
    return hold


def _gates_closed_until(compiled: CompiledPolicy, task: TaskSpec, now: float, buckets: RateBuckets) -> float | None:
    hold = None
    ctx = RuleContext(now=now, runtime_s=0.0, buckets=buckets)
    strict = compiled.mode is EnforcementMode.STRICT
    for rule in compiled.gates:
        if not strict and getattr(rule, "action", "defer") != "defer":
            continue  # a non-strict policy already let this violation through
        try:
            t = rule.closed_until(task, ctx)
        except Exception:  # a broken gate must not stop the scheduler; it gates nothing
            t = None
        if t is not None and t > now:
            hold = t if hold is None else max(hold, t)
    return hold
