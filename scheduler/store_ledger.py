"""A ``UsageLedger`` over a ``StateStore``: the core's ledger when state must survive and be shared.

Every call goes to the store, so two head replicas on one Redis see each other's
reservations, and ``reserve`` confirms the limits atomically in the store.
"""

from __future__ import annotations

from scheduler.ledger import Cost, ReserveResult, Standing, period_of
from scheduler.state_store import StateStore


class StoreLedger:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def reserve(self, task_id: str, coop_id: str, member: str, cost: Cost, now: float,
                limits: Cost | None = None) -> ReserveResult:
        return self.store.reserve(task_id, coop_id, member, period_of(now), cost, limits)

    def settle(self, task_id: str, coop_id: str, member: str, measured: Cost, ended_at: float) -> bool:
        return self.store.settle(task_id, coop_id, member, period_of(ended_at), measured)

    def release(self, task_id: str) -> bool:
        return self.store.release(task_id)

    def standing(self, coop_id: str, member: str, now: float) -> Standing:
        period = period_of(now)
        used, held, completed = self.store.standing(coop_id, member, period)
        return Standing(period, used, held, completed)

    def coop_standing(self, coop_id: str, now: float) -> Standing:
        period = period_of(now)
        used, held, completed = self.store.coop_standing(coop_id, period)
        return Standing(period, used, held, completed)

    def reset(self, coop_id: str, member: str, now: float) -> None:
        self.store.set_usage(coop_id, member, period_of(now), Cost(), completed=0)
