"""When each executor was last heard from, and when the scheduler gave up on it (pure: no Ray, no store).

``SchedulerCore`` marks an executor offline when it has been silent too long, or lost when its
worker died, and takes it back when it reports again. A heartbeat carries ``sent_at``, the time on
the executor's own clock when it was made: one made before the executor was given up on, delivered
late (a busy head, a slow network), is no sign of life since and must not bring it back. The
executor's clock may run behind or ahead of the scheduler's, so ``sent_at`` is shifted by the offset
its earlier heartbeats showed (which also counts their delivery time) before it is compared.
"""

from __future__ import annotations


class Liveness:
    def __init__(self) -> None:
        self.last_seen: dict[str, float] = {}
        self._given_up_at: dict[str, float] = {}  # when each was last declared offline or lost
        self._skew: dict[str, float] = {}  # the scheduler's clock minus the executor's, at its last heartbeat

    def heard(self, executor_id: str, now: float, sent_at: float | None, was_offline: bool) -> None:
        """A heartbeat taken (see ``is_late``); the clock offset is learned from an active executor's."""
        self.last_seen[executor_id] = now
        if sent_at is not None and not was_offline:
            self._skew[executor_id] = now - sent_at

    def is_late(self, executor_id: str, sent_at: float | None) -> bool:
        """Whether a heartbeat was made before the executor was last given up on (a worker of an earlier
        release sends no ``sent_at``: taken as fresh)."""
        return sent_at is not None and \
            sent_at + self._skew.get(executor_id, 0.0) < self._given_up_at.get(executor_id, 0.0)

    def silent_for(self, executor_id: str, now: float) -> float:
        """Seconds since it was last heard from (0 for one never heard from since this core started)."""
        return now - self.last_seen.get(executor_id, now)

    def give_up(self, executor_id: str, now: float) -> None:
        self._given_up_at[executor_id] = now

    def forget(self, executor_id: str) -> None:
        for held in (self.last_seen, self._given_up_at, self._skew):
            held.pop(executor_id, None)

    def carry_over(self, previous: Liveness) -> None:
        """Keep when executors were given up on, and their clocks' offsets, across a rebuild of the core
        (a late heartbeat stays late); when they were last heard from starts afresh, as on a restart."""
        self._given_up_at, self._skew = dict(previous._given_up_at), dict(previous._skew)
