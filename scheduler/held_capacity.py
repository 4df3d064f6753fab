"""Resources held on an executor for a placed job the head could not take back from the store.

A restarted head skips a job record it cannot restore (``Head._recover``: written by another release,
refused by this one's checks). If that job was placed, its attempt may still run on its executor, and
forgetting it would hand its resources to the next task there. Kubernetes counts a pod it finds bound to
a node as using that node's resources until the kubelet says the pod is gone; likewise the core keeps what
it can still read of such a record — where the attempt was placed and what it asked for — and holds that
on the executor's row, so placement cannot give it out again. When what it asked for cannot be read
either, the most one attempt can use there is held: all the executor's own resources; when where it was
placed cannot be read, it is held as a damaged record's job is (``held_anywhere``, below).

A hold ends when that executor's worker says it neither runs nor queues the attempt (the head's watchdog
asks ``running()``: an attempt that ended but whose report is still on its way no longer uses anything;
its report settles nothing, as the head holds no such job), or when the executor is lost or removed (its
attempts are gone then, as the core assumes for the jobs it did restore). A head rebuilt from the store
takes the hold again from the record and the watchdog's next round confirms or ends it: an extra round
of waiting, never a double booking. Cancelling such a job asks the worker of every executor it is held on
to cancel that task id (``Head._cancel_unrestored``): the one that runs it stops it, and that hold ends
at the watchdog's round after it has. The job's reservation in the ledger is not touched: it stays held in
its month, as the record stays in the store as it was.

A record whose JSON is damaged (``scheduler.damaged_records``) no longer says where its attempt was placed,
nor what it asked for; what the store keeps beside it still says its state. A job that never started
(queued or deferred) or finished holds nothing. Any other may run on any registered executor, and the
worker of each is the only one that can tell: all of every executor's own resources are held
(``held_anywhere``), one hold per executor, so nothing is placed anywhere before the workers are asked;
the watchdog's next round asks each one ``running()`` and ends the holds of those that do not run it
(the one that does keeps all of itself held, as for a task whose resources cannot be read), and an
executor whose worker cannot answer is lost, its holds ending with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.executor_table import ExecutorTable
from scheduler.tasks import JobState, Resources

_PLACED_NOTHING = frozenset({JobState.QUEUED, JobState.DEFERRED})  # (a retry waiting keeps its old placement)


@dataclass(frozen=True)
class HeldAttempt:
    """What an unrestorable record still says: the attempt of ``task_id`` may use ``resources`` on
    ``executor_id``; ``whole`` when the task's own resources could not be read (the executor's are held)."""

    task_id: str
    executor_id: str
    resources: Resources
    whole: bool = False

    def describe(self) -> str:
        """What is held, for the log: "1 CPU, 4096 MB", or "all of e1 (2 CPU)" when the task's were unreadable."""
        r = self.resources
        amounts = ", ".join([f"{r.cpus:g} CPU"] + [f"{v:g} {unit}" for v, unit in (
            (r.gpus, "GPU"), (r.memory_mb, "MB"), (r.gpu_memory_mb, "MB GPU memory")) if v])
        return f"all of {self.executor_id} ({amounts})" if self.whole else amounts


def held_attempts(record: Any, table: ExecutorTable) -> list[HeldAttempt]:
    """What of a job record the core could not restore may still use executors' resources: ``held_attempt``
    where its placement can be read; where it cannot (missing, or of another shape), what a damaged record's
    job holds (``held_anywhere``: every executor, unless its state says it never started or finished), as
    the record no longer says where its attempt runs. Never raises."""
    if not isinstance(record, dict) or not isinstance(record.get("task_id"), str):
        return []
    placement = record.get("placement")
    if not isinstance(placement.get("executor_id") if isinstance(placement, dict) else None, str):
        return held_anywhere(record["task_id"], record.get("state"), table)
    attempt = held_attempt(record, table)
    return [attempt] if attempt is not None else []


def held_attempt(record: Any, table: ExecutorTable) -> HeldAttempt | None:
    """What of a job record the core could not restore may still use an executor's resources: None unless
    the job was placed (running, or in a state this release does not know, which may mean placed) on an
    executor that is registered. Reads leniently and never raises: the record already failed the strict read."""
    if not isinstance(record, dict):
        return None
    placement, task_id = record.get("placement"), record.get("task_id")
    executor_id = placement.get("executor_id") if isinstance(placement, dict) else None
    if not isinstance(task_id, str) or not isinstance(executor_id, str) or executor_id not in table:
        return None
    try:
        state = JobState(record.get("state"))
    except ValueError:  # unknown (another release's) or missing: perhaps placed, so held
        state = None
    if state in _PLACED_NOTHING or (state is not None and state.finished):
        return None
    task = record.get("task")
    try:
        if not isinstance(task, dict) or not isinstance(task.get("resources"), dict):  # (a missing field is not
            raise TypeError("no task resources")  # the default 1 CPU: a record always keeps what its task asked)
        return HeldAttempt(task_id, executor_id, Resources.model_validate(task["resources"]))
    except (TypeError, ValueError):  # (pydantic's ValidationError is a ValueError)
        return HeldAttempt(task_id, executor_id, table.spec(executor_id).resources, whole=True)


def held_anywhere(task_id: str, stored_state: Any, table: ExecutorTable) -> list[HeldAttempt]:
    """What a job whose record is damaged may use, from the state the store keeps beside it: nothing if it
    never started or finished; else all of every registered executor (where it was placed cannot be read,
    and an attempt on any of them would be double-booked by placing into what it uses), each hold ended
    when that executor's worker says it does not run the attempt."""
    try:
        state = JobState(stored_state)
    except ValueError:  # unknown (another release's) or not kept: perhaps placed, so held
        state = None
    if state in _PLACED_NOTHING or (state is not None and state.finished):
        return []
    return [HeldAttempt(task_id, e, table.spec(e).resources, whole=True) for e in sorted(table.ids())]


class HeldCapacity:
    """The holds on an ``ExecutorTable``'s rows, by task id and executor (a damaged record's job is held on
    every executor until their workers are asked). ``hold`` reserves on the row, ``release`` gives back;
    both are idempotent by task id and executor."""

    def __init__(self, table: ExecutorTable) -> None:
        self._table = table
        self._holds: dict[str, dict[str, HeldAttempt]] = {}  # task id -> executor id -> hold

    def __len__(self) -> int:
        """Jobs whose attempts hold something."""
        return len(self._holds)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._holds

    def hold(self, attempt: HeldAttempt) -> bool:
        if attempt.executor_id in self._holds.get(attempt.task_id, ()) or attempt.executor_id not in self._table:
            return False
        self._table.reserve(self._table.rows[attempt.executor_id], attempt.resources)
        self._holds.setdefault(attempt.task_id, {})[attempt.executor_id] = attempt
        return True

    def release(self, task_id: str, executor_id: str | None = None) -> bool:
        """End the task's hold on ``executor_id`` (every hold of it, if None); False if there was none."""
        holds = self._holds.get(task_id, {})
        ended = [e for e in holds if executor_id is None or e == executor_id]
        for e in ended:
            attempt = holds.pop(e)
            if e in self._table:
                self._table.release(self._table.rows[e], attempt.resources)
        if not holds:
            self._holds.pop(task_id, None)
        return bool(ended)

    def executors(self, task_id: str) -> list[str]:
        """Executors the task's attempt is held on (where it may run), sorted."""
        return sorted(self._holds.get(task_id, ()))

    def on(self, executor_id: str) -> set[str]:
        """Task ids whose attempts are held on ``executor_id``."""
        return {t for t, holds in self._holds.items() if executor_id in holds}

    def release_executor(self, executor_id: str) -> list[str]:
        """End every hold on ``executor_id`` (lost or removed); their task ids."""
        ended = sorted(self.on(executor_id))
        for task_id in ended:
            self.release(task_id, executor_id)
        return ended
