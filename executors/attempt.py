"""One attempt a worker launched: what it holds while it runs and after, how it ended, and how the
worker stops it (``executors.worker`` keeps the attempts; this module holds no state of its own).

Ray's cancel is best effort (a cancel that arrives while the task is being handed to its worker
process can be lost), so :func:`kill` cancels again every ``CANCEL_RETRY_S`` until Ray has ended
the task or its time is up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray

from executors.launch_spec import LaunchSpec
from executors.measure import truncate_error
from scheduler.usage import Outcome

_log = logging.getLogger("coopsched.worker")
T = TypeVar("T")

CANCEL_RETRY_S = 0.5
"""How often a kill that has not landed yet is sent again (see ``kill``)."""


@dataclass
class Attempt:
    """One launched attempt, while it runs and after it ended (until forgotten); the references are
    None for a task cancelled in the worker's queue, before it was launched."""

    spec: LaunchSpec
    value_ref: ray.ObjectRef | None
    metrics_ref: ray.ObjectRef | None
    launched_at: float
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    grace_s: float = 0.0  # stopped to make room with a grace: asked to end first, killed after (``ask_to_stop``)
    watcher: asyncio.Task[None] | None = None
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class End:
    """How an attempt ended, before it becomes a UsageReport."""

    outcome: Outcome
    started_at: float
    ended_at: float
    cpu_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    error: str | None = None


def ended_by_itself(attempt: Attempt, metrics: asyncio.Future[Any]) -> End:
    """The end of a task that returned (a value or a TaskError) or that Ray failed."""
    err = metrics.exception()
    if err is not None:
        return End(Outcome.FAILED, attempt.launched_at, time.time(),
                    error=truncate_error(f"{type(err).__name__}: {err}"))
    m = metrics.result()
    return End(Outcome.FAILED if m["error"] else Outcome.SUCCEEDED, m["started_at"], m["ended_at"],
                cpu_time_s=m["cpu_time_s"], peak_memory_mb=m["peak_memory_mb"], error=m["error"])


async def kill(attempt: Attempt, metrics: asyncio.Future[Any], within_s: float) -> None:
    """``ray.cancel(force=True)`` the attempt's task, again every ``CANCEL_RETRY_S``, until Ray has
    ended it or ``within_s`` passed.

    Ray's cancel is best effort: one that arrives while the task is being handed to its worker
    process can be lost and the task then runs to its end (ray-project/ray#24359; seen here on a
    loaded machine). Cancelling a task again, or one that has ended, is harmless.
    """
    deadline = time.monotonic() + within_s
    while not metrics.done():
        try:
            ray.cancel(attempt.value_ref, force=True)  # both refs are the same task's returns
        except Exception:  # noqa: BLE001  # still report the attempt as ended by the worker
            _log.exception("ray.cancel of task %s failed", attempt.spec.task_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.wait({metrics}, timeout=min(CANCEL_RETRY_S, remaining))


async def ask_to_stop(attempt: Attempt, metrics: asyncio.Future[Any]) -> bool:
    """Ask the attempt's task to end (``ray.cancel(force=False)``: inside the task it sets
    ``executors.task_context.stop_requested``, ``run_measured`` having taken SIGINT for it) and wait up to its
    grace (its ``stop_grace_s``, perhaps capped by the executor's owner) for it to: True if it ended in time."""
    try:
        ray.cancel(attempt.value_ref, force=False)
    except Exception:  # noqa: BLE001  # it is killed after the grace all the same
        _log.exception("ray.cancel(force=False) of task %s failed", attempt.spec.task_id)
    await asyncio.wait({metrics}, timeout=attempt.grace_s)
    return metrics.done()


async def await_ref(ref: Awaitable[T]) -> T:
    """Await an ObjectRef as a coroutine (``asyncio.wait`` and ``ensure_future`` want one)."""
    return await ref
