"""Shadow evaluation: what a proposed policy would have decided for a coop's recent jobs.

``coopsched policy set FILE --dry-run`` replays the coop's last N jobs, each at its
original submission time, through two scratch cores over the same executors — one with
the active policy, one with the proposed one — and reports every job whose outcome
changes: now refused, now admitted, or placed on another executor. The scratch cores
start with each member's real usage this month, and what their jobs outside the replay
still hold (the reservations of queued and running jobs older than the replayed ones); a
replayed job still open for real keeps holding its projection for the jobs after it; and
each replayed job is released right after placement so the fleet stays idle: the comparison
isolates the policy change from the load of the moment. Nothing real is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies import plugins
from policies.model import CoopPolicy
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorSpec
from scheduler.ledger import Cost
from scheduler.tasks import TaskSpec


@dataclass(frozen=True)
class ShadowOutcome:
    task_id: str
    member: str
    before: str   # "placed on X", "admitted (waits)" or "refused: <rule>"
    after: str
    change: str   # unchanged | now refused | now admitted | placed elsewhere

    def as_dict(self) -> dict:
        return {"task_id": self.task_id, "member": self.member, "before": self.before, "after": self.after,
                "change": self.change}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scratch(policy: CoopPolicy | None, executors: list[ExecutorSpec], usage: dict[str, Cost],
             held: dict[str, Cost], coop_id: str, clock: _Clock, now: float) -> SchedulerCore:
    core = SchedulerCore(clock=clock, executor_capacity=max(16, len(executors)))
    if policy is not None:  # plug-ins of its own: a replay must not count in the live plug-ins' state
        core.set_policy(plugins.detached(policy))
    for spec in executors:
        core.register_executor(spec)
    for member, used in usage.items():
        core.ledger.settle(f"shadow-seed:{member}", coop_id, member, used, now)  # in this month, not the
        # month of the oldest replayed job
    for member, cost in held.items():  # open reservations of jobs not replayed: they count until they settle
        core.ledger.reserve(f"shadow-held:{member}", coop_id, member, cost, now)
    return core


def _outcome(core: SchedulerCore, task: TaskSpec, still_open: bool = False) -> tuple[str, str | None]:
    decision = core.submit(task)
    if not decision.admitted:
        reason = decision.reasons[0]
        return f"refused: {reason.source}: {reason.message}", None
    reservation = core.ledger.reservation(task.task_id)
    placed = [p for p in core.schedule() if p.task_id == task.task_id]
    if not placed:
        core.cancel(task.task_id)
        outcome: tuple[str, str | None] = ("admitted (would wait)", "")
    else:
        executor = placed[0].executor_id
        core.complete({"task_id": task.task_id, "executor_id": executor, "coop_id": task.coop_id,
                       "member": task.member, "started_at": core.clock(), "ended_at": core.clock(), "cpu_seconds": 0.0})
        outcome = (f"placed on {executor}", executor)
    if still_open and reservation is not None:  # it still runs (or waits) for real: what it holds counts for
        # the jobs after it, as it did when they were submitted (the fleet stays idle: only the quota)
        core.ledger.reserve(f"shadow-open:{task.task_id}", task.coop_id, task.member, reservation.cost, core.clock())
    return outcome


def shadow_evaluate(active: CoopPolicy | None, proposed: CoopPolicy, executors: list[ExecutorSpec],
                    tasks: list[tuple[float, TaskSpec]], usage: dict[str, Cost],
                    now: float | None = None, held: dict[str, Cost] | None = None,
                    still_open: set[str] | frozenset[str] = frozenset()) -> list[ShadowOutcome]:
    """Replay ``tasks`` (submission time, spec), oldest first, under both policies. ``usage`` is each
    member's use in the month of ``now`` (default: the newest job's time), ``held`` what each member's
    open jobs outside ``tasks`` have reserved in that month, ``still_open`` the replayed jobs not finished
    for real (what each is admitted with keeps counting after it, as their reservations do); jobs of an
    earlier month are judged against what the replay itself used in that month."""
    ordered = sorted(tasks, key=lambda t: t[0])
    now = now if now is not None else (ordered[-1][0] if ordered else 0.0)
    start = ordered[0][0] if ordered else 0.0
    clocks = (_Clock(), _Clock())
    for c in clocks:
        c.now = start
    held = held or {}
    before_core = _scratch(active, executors, usage, held, proposed.coop_id, clocks[0], now)
    after_core = _scratch(proposed, executors, usage, held, proposed.coop_id, clocks[1], now)
    out = []
    for submitted_at, task in ordered:
        for c in clocks:
            c.now = max(c.now, submitted_at)
        is_open = task.task_id in still_open
        (before, b_exec), (after, a_exec) = _outcome(before_core, task, is_open), _outcome(after_core, task, is_open)
        if (b_exec is None) != (a_exec is None):
            change = "now refused" if a_exec is None else "now admitted"
        elif b_exec and a_exec and b_exec != a_exec:
            change = "placed elsewhere"
        else:
            change = "unchanged"
        out.append(ShadowOutcome(task.task_id, task.member, before, after, change))
    return out
