"""An executor's own queue: start what fits beside the running tasks, keep the rest in arrival
order, and backfill behind a task that must wait only when that cannot delay it.

The head may hand an executor more than it can run at once (``ExecutorSpec.dispatch_ahead``).
Both kinds of executor, the Ray worker actor (``executors.worker``) and the simulated one
(``executors.simulated``), keep what they were handed here. A task starts when it fits what the
running tasks leave of the executor's resources (always, with nothing running, so a task that
fits the executor at all never waits forever), oldest first.

When a waiting task does not fit yet, later ones may pass it, as in Slurm's conservative
backfill: every waiting task, oldest first, gets a reservation, the earliest moment it fits for
its whole runtime limit beside the running tasks and the reservations of those older than it,
reckoned from each running task's start plus its runtime limit (``max_runtime_s``, which the
worker enforces, so the bound holds). A task whose reservation is now starts now. So no task
starts later than its reservation (when tasks run to their limits, no later than first come
first started would start it; when they end early, the plan is made again from what runs), and
small tasks do not idle the resources larger ones are waiting for. A waiting task without a
runtime limit reserves its amounts for ever from its start; while a *running* task without one
runs, nothing passes an older waiting task (it may end at any moment, so no reservation can be
kept). A task larger than the executor starts once nothing runs, taking everything; it reserves
everything from the moment all that is running or reserved before it has ended. Whoever changes
``capacity`` calls ``ready`` next. Pure: no Ray, no clock (callers pass ``now``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
Amounts = tuple[float, float, float, float]  # cpus, gpus, memory MB, GPU memory MB
_EPS = 1e-9
BACKFILL_DEPTH = 32
"""Waiting tasks given reservations, oldest first: only these may pass an older one (as Slurm's
``bf_max_job_test``), so a long queue costs each offer and each end a bounded look."""


class LocalQueue(Generic[T]):
    """Running amounts and waiting items of one executor; ``capacity`` None starts everything."""

    def __init__(self, capacity: Amounts | None = None) -> None:
        self.capacity = capacity
        self.backfill = True  # False: first come first started (a baseline for tests)
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
        ``ready``). ``limit_s``: its runtime limit (None: none), which backfilling relies on. An older
        waiting task that may start now (capacity grew, ``ready`` not called yet) starts first: the new
        one waits then."""
        limit = math.inf if limit_s is None else float(limit_s)
        waiting = self._waiting
        fits = self._fits(amounts)
        waiting[key] = (amounts, limit, item)
        if len(waiting) == 1 or self.capacity is None:  # nothing older waits: it starts if it fits now
            if fits:
                self._start(key, now, behind=False)
            return fits
        if not fits or len(waiting) > BACKFILL_DEPTH or not self._may_backfill():
            return False  # (it waits in order)
        if self._plan(now) != [key]:  # an older one may start now (ready starts it), or this one would delay one
            return False
        self._start(key, now, behind=True)
        return True

    def ended(self, key: Hashable) -> None:
        """The running task ``key`` ended (call ``ready`` next)."""
        entry = self._running.pop(key, None)
        if entry is None:
            return
        used = self._in_use
        for i, a in enumerate(entry[0]):
            used[i] = max(0.0, used[i] - a)

    def ready(self, now: float = 0.0) -> list[T]:
        """The waiting items to start now, each counted as running from here on: those whose reservation
        is now (see the module notes), oldest first."""
        out: list[T] = []
        waiting = self._waiting
        while waiting:  # the oldest while they fit: nothing older waits, so its reservation is now
            key = next(iter(waiting))
            if not self._fits(waiting[key][0]):
                break
            out.append(self._start(key, now, behind=False))
        if len(waiting) > 1 and self.capacity is not None and self._may_backfill() and any(
                self._fits(amounts) for amounts, _, _ in itertools.islice(waiting.values(), 1, BACKFILL_DEPTH)):
            out.extend(self._start(key, now, behind=True) for key in self._plan(now))
        return out

    def remove(self, key: Hashable) -> T | None:
        """Take a waiting item out (a cancel); None if it is not waiting."""
        entry = self._waiting.pop(key, None)
        return None if entry is None else entry[2]

    def _may_backfill(self) -> bool:
        """No reservation can be kept while a task without a runtime limit runs: it may end any moment."""
        return self.backfill and all(not math.isinf(ends_by) for _, ends_by in self._running.values())

    def _fits(self, amounts: Amounts) -> bool:
        if self.capacity is None or not self._running:
            return True
        return all(u + a <= c + _EPS for u, a, c in zip(self._in_use, amounts, self.capacity))

    def _start(self, key: Hashable, now: float, behind: bool) -> T:
        amounts, limit, item = self._waiting.pop(key)
        self.backfilled += behind
        self._running[key] = (amounts, now + limit)
        used = self._in_use
        for i, a in enumerate(amounts):
            used[i] += a
        return item

    def _plan(self, now: float) -> list:
        """The waiting keys that start now, oldest first: each waiting task in turn gets the earliest
        reservation the running tasks and the older ones' reservations leave it; those reserved now start."""
        waiting = self._waiting
        if self.capacity is None:
            return list(waiting)
        if not self._running:  # with nothing running the oldest starts, whatever it asks
            first = next(iter(waiting), None)
            if first is None:
                return []
            profile = _Profile(now, list(self.capacity), [])
            amounts, limit, _ = waiting[first]
            profile.reserve(0, limit, amounts)  # (larger than the executor: nothing else fits beside it)
            plan, rest = [first], list(itertools.islice(waiting.items(), 1, BACKFILL_DEPTH))
        else:
            profile = _Profile(now, [c - u for c, u in zip(self.capacity, self._in_use)],
                               [(ends_by, amounts) for amounts, ends_by in self._running.values()])
            plan, rest = [], list(itertools.islice(waiting.items(), BACKFILL_DEPTH))
        may_pass = self._may_backfill()
        older_waits = False
        for key, (amounts, limit, _) in rest:
            step = profile.earliest(amounts, limit)
            if step == 0:  # it fits now, for its whole limit, beside every older one's reservation
                if older_waits and not may_pass:
                    break
                plan.append(key)
                profile.reserve(0, limit, amounts)
                continue
            older_waits = True
            if not may_pass:
                break
            if step is None:  # larger than what ever frees: it takes everything once all before it has ended
                profile.take_all_from(len(profile.times) - 1)
            else:
                profile.reserve(step, limit, amounts)
        return plan


class _Profile:
    """What stays free of an executor over time: ``free[i]`` from ``times[i]`` until ``times[i + 1]``
    (the last for ever), as running tasks end by their limits and reservations hold their amounts.
    Step 0 is what is free right now; a running task past its limit (not ended yet) frees in a step
    of its own at ``now``, after it: a reservation may begin there, a start now may not."""

    def __init__(self, now: float, free_now: list, ends: list) -> None:
        self.times = [now]
        self.free = [list(free_now)]
        current = list(free_now)
        for ends_by, amounts in sorted(ends, key=lambda e: e[0]):
            if math.isinf(ends_by):
                continue  # (never frees)
            current = [f + a for f, a in zip(current, amounts)]
            at = max(ends_by, now)
            if at == self.times[-1] and len(self.times) > 1:
                self.free[-1] = list(current)
            else:
                self.times.append(at)
                self.free.append(list(current))

    def earliest(self, amounts: Amounts, limit: float) -> int | None:
        """The first step from whose start ``amounts`` fit for ``limit`` seconds (0: now); None: none."""
        times, free, n = self.times, self.free, len(self.times)
        c, g, m, gm = (a - _EPS for a in amounts)
        short = [f[0] < c or f[1] < g or f[2] < m or f[3] < gm for f in free]  # per step: too little free
        for i, start in enumerate(times):
            if short[i]:
                continue
            end = start + limit - _EPS
            j = i + 1
            while j < n and times[j] < end and not short[j]:
                j += 1
            if j == n or times[j] >= end:
                return i
        return None

    def reserve(self, step: int, limit: float, amounts: Amounts) -> None:
        """Hold ``amounts`` from the start of ``step`` for ``limit`` seconds (for ever if it is infinite)."""
        end = self.times[step] + limit
        k = self._split(end, step + 1) if not math.isinf(end) else len(self.times)
        for j in range(step, k):
            self.free[j] = [f - a for f, a in zip(self.free[j], amounts)]

    def take_all_from(self, step: int) -> None:
        for j in range(step, len(self.times)):
            self.free[j] = [min(f, 0.0) for f in self.free[j]]

    def _split(self, at: float, first: int) -> int:
        """The index (``first`` or later) of the step starting at ``at``, made by splitting the one holding it."""
        times = self.times
        for i in range(first, len(times)):
            if abs(times[i] - at) <= _EPS:
                return i
            if times[i] > at:
                times.insert(i, at)
                self.free.insert(i, list(self.free[i - 1]))
                return i
        times.append(at)
        self.free.append(list(self.free[-1]))
        return len(times) - 1
