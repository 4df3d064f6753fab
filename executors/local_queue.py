"""An executor's own queue: start what fits beside the running tasks, keep the rest in arrival
order, and backfill behind a task that must wait only when that cannot delay it.

The head may hand an executor more than it can run at once (``ExecutorSpec.dispatch_ahead``).
Both kinds of executor, the Ray worker actor (``executors.worker``) and the simulated one
(``executors.simulated``), keep what they were handed here. A task starts when it fits what the
running tasks leave of the executor's resources (always, with nothing running, so a task that
fits the executor at all never waits forever), oldest first.

When the oldest waiting task (the front) does not fit yet, later ones may pass it, as in
Slurm's EASY backfill: the front gets a reservation at its *shadow time*, the moment enough
running tasks will have ended for it to fit, reckoned from each running task's start plus its
runtime limit (``max_runtime_s``, which the worker enforces, so the bound holds). A later task
that fits now starts at once if it will end by the shadow time, or if it only uses what will
still be spare beside the front at that moment. So the front starts by its reservation
(when tasks run to their limits, no later than first come first started; when they end
early, EASY can start it later than first come first started would have), and small tasks do
not idle the resources a large one is waiting for. Only the front holds a reservation (EASY,
not conservative backfill); a task without a runtime limit may use only the spare part, and
while one runs nothing is backfilled (it may end at any moment, so there is no reservation to
keep). Whoever changes ``capacity`` calls ``ready`` next. Pure: no Ray, no clock (callers pass
``now``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
Amounts = tuple[float, float, float, float]  # cpus, gpus, memory MB, GPU memory MB
_EPS = 1e-9
_NONE: Amounts = (0.0, 0.0, 0.0, 0.0)


class LocalQueue(Generic[T]):
    """Running amounts and waiting items of one executor; ``capacity`` None starts everything."""

    def __init__(self, capacity: Amounts | None = None) -> None:
        self.capacity = capacity
        self._in_use = [0.0, 0.0, 0.0, 0.0]
        self._running: dict[Hashable, tuple[Amounts, float]] = {}  # key -> (amounts, ends by)
        self._waiting: dict[Hashable, tuple[Amounts, float, T]] = {}  # key -> (amounts, runtime limit, item)
        self.backfilled = 0  # tasks started ahead of an older one that had to wait

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiting

    @property
    def running(self) -> int:
        return len(self._running)

    def keys(self) -> list:
        """The waiting items' keys, oldest first."""
        return list(self._waiting)

    def offer(self, key: Hashable, amounts: Amounts, item: T, now: float = 0.0,
              limit_s: float | None = None) -> bool:
        """True: start ``item`` now (counted as running until ``ended(key)``); False: it waits (see
        ``ready``). ``limit_s``: its runtime limit (None: none), which backfilling relies on."""
        limit = math.inf if limit_s is None else float(limit_s)
        waiting = self._waiting
        if waiting and self._fits(next(iter(waiting.values()))[0]):  # the front fits (capacity grew, ready()
            waiting[key] = (amounts, limit, item)  # not called yet): it starts first
            return False
        if self._fits(amounts) and (not waiting or self._may_backfill() and
                                    self._backfills(amounts, now + limit, self._shadow())):
            self.backfilled += bool(self._waiting)
            self._take(key, amounts, now + limit)
            return True
        self._waiting[key] = (amounts, limit, item)
        return False

    def ended(self, key: Hashable) -> None:
        """The running task ``key`` ended (call ``ready`` next)."""
        entry = self._running.pop(key, None)
        if entry is None:
            return
        used = self._in_use
        for i, a in enumerate(entry[0]):
            used[i] = max(0.0, used[i] - a)

    def ready(self, now: float = 0.0) -> list[T]:
        """The waiting items to start now, each counted as running from here on: the oldest while they
        fit, then those that may pass the oldest still waiting (see the module notes)."""
        out: list[T] = []
        waiting = self._waiting
        while waiting:
            key = next(iter(waiting))
            amounts, limit, item = waiting[key]
            if not self._fits(amounts):
                break
            del waiting[key]
            self._take(key, amounts, now + limit)
            out.append(item)
        if len(waiting) > 1 and self.capacity is not None and self._may_backfill():
            shadow = self._shadow()
            for key in list(waiting)[1:]:
                amounts, limit, item = waiting[key]
                if self._fits(amounts) and self._backfills(amounts, now + limit, shadow):
                    del waiting[key]
                    self._take(key, amounts, now + limit)
                    self.backfilled += 1
                    out.append(item)
        return out

    def remove(self, key: Hashable) -> T | None:
        """Take a waiting item out (a cancel); None if it is not waiting."""
        entry = self._waiting.pop(key, None)
        return None if entry is None else entry[2]

    def _may_backfill(self) -> bool:
        """No reservation can be kept while a task without a runtime limit runs: it may end any moment."""
        return all(not math.isinf(ends_by) for _, ends_by in self._running.values())

    def _fits(self, amounts: Amounts) -> bool:
        if self.capacity is None or not self._running:
            return True
        return all(u + a <= c + _EPS for u, a, c in zip(self._in_use, amounts, self.capacity))

    def _take(self, key: Hashable, amounts: Amounts, ends_by: float) -> None:
        self._running[key] = (amounts, ends_by)
        used = self._in_use
        for i, a in enumerate(amounts):
            used[i] += a

    def _shadow(self) -> list:
        """[shadow time, spare amounts then] of the front: when it will fit, running tasks ending by
        their limits in order, and what it leaves of the executor then. A front larger than the
        executor starts once nothing runs, taking everything."""
        amounts = next(iter(self._waiting.values()))[0]
        capacity = self.capacity or _NONE
        free = [c - u for c, u in zip(capacity, self._in_use)]
        ends = sorted(self._running.values(), key=lambda entry: entry[1])
        for i, (freed, ends_by) in enumerate(ends):
            for r, a in enumerate(freed):
                free[r] += a
            if i == len(ends) - 1:
                break
            if all(f + _EPS >= a for f, a in zip(free, amounts)):
                return [ends_by, [f - a for f, a in zip(free, amounts)]]
        last = ends[-1][1] if ends else 0.0
        spare = [f - a for f, a in zip(free, amounts)]
        return [last, spare if all(s >= -_EPS for s in spare) else list(_NONE)]

    @staticmethod
    def _backfills(amounts: Amounts, ends_by: float, shadow: list) -> bool:
        """Whether a task may start ahead of the front: it ends by the front's shadow time, or it fits
        in what stays spare then (which it then takes)."""
        shadow_time, spare = shadow
        if ends_by <= shadow_time + _EPS:
            return True
        if all(a <= s + _EPS for a, s in zip(amounts, spare)):
            for i, a in enumerate(amounts):
                spare[i] -= a
            return True
        return False
