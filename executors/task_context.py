"""Which Coopsched task this process runs now: ``current_task()``, set by the worker's task around the call.

The worker launches each attempt as a Ray task (``executors.measure.run_measured``) with a ``TaskContext``:
the task's id, its attempt, the head that admitted it (name and namespace) and the attempt's checkpoint
token, the capability that lets this attempt, and no other caller, save and load the task's checkpoint
(``scheduler.checkpoint``). It is a module-level value, not a context variable, so threads the task starts
see it too: Ray runs one task at a time in a worker process. This module does not import Ray.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskContext", "current_task", "running_as"]


@dataclass(frozen=True)
class TaskContext:
    """The Coopsched task this process runs: ``task_id``, ``attempt`` (1 for the first run, more for retries),
    and what its checkpoint calls need (``head``, ``namespace``, ``token``)."""

    task_id: str
    attempt: int
    head: str
    namespace: str
    token: str

    def __repr__(self) -> str:  # the token is a capability: it is not printed
        return f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt}, head={self.head!r})"

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> TaskContext:
        return cls(str(fields["task_id"]), int(fields["attempt"]), str(fields["head"]), str(fields["namespace"]),
                   str(fields["token"]))


_current: TaskContext | None = None


def current_task() -> TaskContext | None:
    """The Coopsched task this process runs now, or None (outside one: a driver, a test, a plain Ray task)."""
    return _current


@contextmanager
def running_as(context: TaskContext | None) -> Iterator[None]:
    """``current_task()`` is ``context`` inside the block, what it was before after it."""
    global _current
    before, _current = _current, context
    try:
        yield
    finally:
        _current = before
