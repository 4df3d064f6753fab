"""Admitted tasks waiting for an executor, in the order they should get one.

Order: effective priority (highest first), then the member's fair-share standing (the
member who has used the smallest share of their quota this month first), then
submission time. A task that cannot start (its member is at ``max_concurrent_tasks``,
its time window is closed, or nothing fits right now) keeps its place and carries the
reason in ``waiting_for``; the tasks behind it may start (best-effort ordering, like
Kueue's BestEffortFIFO), so one large task does not block small ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.ledger import Cost
from scheduler.placement import Requirements
from scheduler.tasks import Resources, TaskSpec


@dataclass(slots=True)
class QueuedTask:
    task: TaskSpec
    requirements: Requirements
    cost: Cost
    effective_priority: float
    submitted_at: float
    seq: int
    not_before: float | None = None
    attempt: int = 1
    relaxed: tuple[str, ...] = ()
    waiting_for: str = "a free executor"
    avoid: frozenset[str] = frozenset()  # executors earlier attempts were lost on
    shape: tuple = field(default=(), compare=False)
    # the task's fields the scheduler reads on every pass, copied once (pydantic attribute reads are slow)
    task_id: str = field(default="", compare=False)
    coop_id: str = field(default="", compare=False)
    member: str = field(default="", compare=False)
    member_key: tuple[str, str] = field(default=("", ""), compare=False)
    gate_key: tuple = field(default=(), compare=False)  # what start gates depend on: coop, priority, tags
    resources: Resources | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        task, requirements = self.task, self.requirements
        self.resources = requirements.resources
        self.shape = (requirements.signature, *requirements.amounts)
        if not self.task_id:  # (admission passes the ids it has read already: model reads are slow)
            self.task_id, self.coop_id, self.member = task.task_id, task.coop_id, task.member
        self.member_key = (self.coop_id, self.member)
        self.gate_key = (self.coop_id, task.priority, task.tags)


ORDER_TTL_S = 1.0
"""How long a computed queue order is reused while nothing is added: the fair-share standings that
order it are refreshed at most once a second (as Slurm's multifactor priority is recomputed every
``PriorityCalcPeriod``), so a deep queue of many members is not re-sorted on every completion."""


class TaskQueue:
    def __init__(self) -> None:
        self._entries: dict[str, QueuedTask] = {}
        self._order: list[QueuedTask] | None = None
        self._ordered_at = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._entries

    def add(self, entry: QueuedTask) -> None:
        self._entries[entry.task_id] = entry
        self._order = None

    def remove(self, task_id: str) -> QueuedTask | None:
        return self._entries.pop(task_id, None)

    def get(self, task_id: str) -> QueuedTask | None:
        return self._entries.get(task_id)

    def earliest_hold(self, now: float) -> float | None:
        """The soonest time a deferred entry becomes eligible, if any is held past ``now``."""
        holds = [e.not_before for e in self._entries.values() if e.not_before is not None and e.not_before > now]
        return min(holds, default=None)

    def depth_by_coop(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self._entries.values():
            out[e.coop_id] = out.get(e.coop_id, 0) + 1
        return out

    def ordered(self, fair_share: Callable[[str, str], float], now: float | None = None) -> list[QueuedTask]:
        """Entries in scheduling order; ``fair_share(coop, member)`` is asked once per member.

        With ``now``, the order is reused for ``ORDER_TTL_S`` while nothing is added: a deep
        queue is then not re-sorted on every completion. A reused order may hold entries that
        have left the queue since; callers skip those (``entry.task.task_id in queue``).
        """
        if now is not None and self._order is not None and 0.0 <= now - self._ordered_at < ORDER_TTL_S:
            return self._order  # (a clock stepped back makes the order stale, not fresh until it catches up)
        entries = list(self._entries.values())
        if len(entries) <= 1:  # nothing to compare: no standing to look up
            self._order = entries
        else:
            members = {e.member_key for e in entries}
            if len(members) == 1:  # one member's standing orders nobody: skip the ledger
                self._order = sorted(entries, key=lambda e: (-e.effective_priority, e.submitted_at, e.seq))
            else:
                standing = {key: fair_share(*key) for key in members}
                self._order = sorted(entries, key=lambda e: (
                    -e.effective_priority, standing[e.member_key], e.submitted_at, e.seq))
        self._ordered_at = now if now is not None else 0.0
        return self._order
