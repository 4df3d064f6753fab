"""Which Coopsched task this process runs now: ``current_task()``, set by the worker's task around the call.

The worker launches each attempt as a Ray task (``executors.measure.run_measured``) with a ``TaskContext``:
the task's id, its attempt, the head that admitted it (name and namespace) and the attempt's checkpoint
token, the capability that lets this attempt, and no other caller, save and load the task's checkpoint
(``scheduler.checkpoint``). It is a module-level value, not a context variable, so threads the task starts
see it too: Ray runs one task at a time in a worker process. This module does not import Ray.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskContext", "current_task", "running_as", "stop_requested"]


@dataclass(frozen=True)
class TaskContext:
    """The Coopsched task this process runs: ``task_id``, ``attempt`` (1 for the first run, more for retries),
    and what its checkpoint calls need (``head``, ``namespace``, ``token``)."""

    task_id: str
    attempt: int
    head: str
    namespace: str
    token: str
    stop_grace_s: float = 0.0

    def __repr__(self) -> str:  # the token is a capability: it is not printed
        return f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt}, head={self.head!r})"

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> TaskContext:
        return cls(str(fields["task_id"]), int(fields["attempt"]), str(fields["head"]), str(fields["namespace"]),
                   str(fields["token"]), float(fields.get("stop_grace_s") or 0.0))


_current: TaskContext | None = None
_stop = threading.Event()


def current_task() -> TaskContext | None:
    """The Coopsched task this process runs now, or None (outside one: a driver, a test, a plain Ray task)."""
    return _current


def stop_requested() -> bool:
    """Whether this task was asked to end: it is being stopped to make room (a reclaim, a preemption) and has
    its ``stop_grace_s`` to save a checkpoint and return (or raise) before it is killed. Always False for a
    task without a grace, and outside a task."""
    return _stop.is_set()


@contextmanager
def running_as(context: TaskContext | None) -> Iterator[None]:
    """``current_task()`` is ``context`` inside the block, what it was before after it. For a task with a
    ``stop_grace_s``, SIGINT (how Ray's ``cancel(force=False)`` reaches a running task: ``_thread.interrupt_main``)
    sets ``stop_requested()`` instead of raising ``KeyboardInterrupt``, so the task ends in its own time; its
    worker kills it when the grace is over. (Only in the main thread, where Ray runs a task and Python takes
    signal handlers; elsewhere a stop is never seen, and the task is killed after the grace.)"""
    global _current
    before, _current = _current, context
    _stop.clear()
    taken = None
    if context is not None and context.stop_grace_s > 0 and threading.current_thread() is threading.main_thread():
        taken = signal.signal(signal.SIGINT, lambda signum, frame: _stop.set())
    try:
        yield
    finally:
        if taken is not None:
            signal.signal(signal.SIGINT, taken)
        _current = before
        _stop.clear()
