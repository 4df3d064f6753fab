"""An executor's own queue: start what fits beside the running tasks, keep the rest in arrival order.

The head may hand an executor more than it can run at once (``ExecutorSpec.dispatch_ahead``).
Both kinds of executor, the Ray worker actor (``executors.worker``) and the simulated one
(``executors.simulated``), keep what they were handed here: a task starts when it fits what
the running tasks leave of the executor's resources (always, with nothing running, so a task
that fits the executor at all never waits forever); first come, first started, so a large task
at the front is not passed by smaller ones behind it. Pure: no Ray, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
Amounts = tuple[float, float, float, float]  # cpus, gpus, memory MB, GPU memory MB
_EPS = 1e-9


class LocalQueue(Generic[T]):
    """Running amounts and waiting items of one executor; ``capacity`` None starts everything."""

    def __init__(self, capacity: Amounts | None = None) -> None:
        self.capacity = capacity
        self.running = 0
        self._in_use = [0.0, 0.0, 0.0, 0.0]
        self._waiting: dict[Hashable, tuple[Amounts, T]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiting

    def keys(self) -> list:
        """The waiting items' keys, oldest first."""
        return list(self._waiting)

    def offer(self, key: Hashable, amounts: Amounts, item: T) -> bool:
        """True: start ``item`` now (counted as running); False: it waits (see ``ready``)."""
        if self._waiting or not self._fits(amounts):
            self._waiting[key] = (amounts, item)
            return False
        self._take(amounts)
        return True

    def ended(self, amounts: Amounts) -> None:
        """A running task with these amounts ended."""
        self.running = max(0, self.running - 1)
        used = self._in_use
        for i, a in enumerate(amounts):
            used[i] = max(0.0, used[i] - a)

    def ready(self) -> list[T]:
        """The waiting items that fit now, oldest first, each counted as running from here on."""
        out: list[T] = []
        waiting = self._waiting
        while waiting:
            key = next(iter(waiting))
            amounts, item = waiting[key]
            if not self._fits(amounts):
                break
            del waiting[key]
            self._take(amounts)
            out.append(item)
        return out

    def remove(self, key: Hashable) -> T | None:
        """Take a waiting item out (a cancel); None if it is not waiting."""
        entry = self._waiting.pop(key, None)
        return None if entry is None else entry[1]

    def _fits(self, amounts: Amounts) -> bool:
        if self.capacity is None or not self.running:
            return True
        return all(u + a <= c + _EPS for u, a, c in zip(self._in_use, amounts, self.capacity))

    def _take(self, amounts: Amounts) -> None:
        self.running += 1
        used = self._in_use
        for i, a in enumerate(amounts):
            used[i] += a
