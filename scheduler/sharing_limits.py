"""Lending and borrowing limits: how much of each other's executors coops may hold at once.

``open_to`` says which coops may use an executor at all; two policy fields bound how much, as Kueue's
``lendingLimit`` and ``borrowingLimit`` bound what a ClusterQueue lends to and borrows from its cohort:

* ``lending_limit`` (the owner's): other coops' tasks may hold at most that fraction of the CPUs and of the
  GPUs of the coop's active executors, together;
* ``borrowing_limit`` (the borrower's): the coop's tasks may hold at most that fraction of the fleet's CPUs
  and of its GPUs (every coop's active executors) on executors of other coops, together.

What a coop holds is its running tasks' resources (those handed ahead to an executor's queue too: they hold
their place there), counted when a round first asks and kept current as the round places tasks, so one round
cannot place past a limit; a task the round stops (reclaimed or preempted) stops counting there. A task whose
placement would pass a limit is placed elsewhere (its own coop's executors stay open to it) or waits, its
reason naming the limit; a preemption within a coop stops nothing for a task that a limit would still keep
off that executor once the stopped tasks no longer count. Limits bound new placements only: lowering one stops
nothing that runs (``reclaim`` does that).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from scheduler.fair_borrowing import Amounts, dominant_share
from scheduler.tasks import JobState

if TYPE_CHECKING:
    from scheduler.executor_table import ExecutorTable

EPS = 1e-9


class SharingLimits:
    """One round's account of what coops hold of other coops' executors, against their limits."""

    def __init__(self, table: ExecutorTable, lending: Mapping[str, float], borrowing: Mapping[str, float],
                 borrowed: Mapping[str, list[Any]]) -> None:
        """``lending`` / ``borrowing``: the coops whose policies set the limit, and its value; ``borrowed``: per
        executor, the running jobs of coops other than its owner on it (``MakingRoom._borrowed``)."""
        self.table, self.lending, self.borrowing = table, dict(lending), dict(borrowing)
        self.held: dict[str, Amounts] = {}  # per borrowing coop, on other coops' executors
        self.lent: dict[str, Amounts] = {}  # per owner, what other coops' tasks hold on its executors
        for executor_id, jobs in borrowed.items():
            owner = table.spec(executor_id).coop_id
            for job in jobs:
                if job.state is JobState.RUNNING:
                    r = job.task.resources
                    self.placed(job.task.coop_id, owner, (r.cpus, r.gpus))
        self.fleet = table.active_totals()
        self._owned: dict[str, Amounts] = {}  # per owner asked of, its active executors' totals

    def owned(self, owner: str) -> Amounts:
        """The CPUs and GPUs of ``owner``'s active executors."""
        known = self._owned.get(owner)
        if known is None:
            table = self.table
            code = table.coop_codes.get(owner)
            rows = (table.usable_mask() & (table.coop[: table.n] == code) if code is not None
                    else np.zeros(table.n, dtype=bool))
            known = self._owned[owner] = (float(table.total_cpus[: table.n][rows].sum()),
                                          float(table.total_gpus[: table.n][rows].sum()))
        return known

    def lent_share(self, owner: str) -> float:
        """The dominant share of ``owner``'s active executors that other coops' tasks hold now."""
        return dominant_share(self.lent.get(owner, (0.0, 0.0)), self.owned(owner))

    def placed(self, coop: str, owner: str, amounts: Amounts) -> None:
        """``coop``'s task of ``amounts`` (CPUs, GPUs) now holds them on an executor of ``owner``."""
        if coop == owner:
            return
        was = self.held.get(coop, (0.0, 0.0))
        self.held[coop] = (was[0] + amounts[0], was[1] + amounts[1])
        was = self.lent.get(owner, (0.0, 0.0))
        self.lent[owner] = (was[0] + amounts[0], was[1] + amounts[1])

    def released(self, coop: str, owner: str, amounts: Amounts) -> None:
        """``coop``'s task of ``amounts`` on an executor of ``owner`` was stopped (reclaimed, preempted) this round."""
        self.placed(coop, owner, (-amounts[0], -amounts[1]))

    def closed(self, coop: str, amounts: Amounts) -> tuple[np.ndarray | None, list[str]]:
        """The rows a task of ``coop`` asking ``amounts`` may not be placed on for the limits (None: none), and
        why, one phrase per limit that closes some."""
        table = self.table
        if self._borrowing_past(coop, amounts):
            own = table.coop_codes.get(coop)
            others = table.coop[: table.n] != own if own is not None else np.ones(table.n, dtype=bool)
            limit = self.borrowing[coop]
            return others, [f"coop {coop} may hold at most {limit:.0%} of the fleet on other coops' executors "
                            f"(its borrowing_limit) and holds {self._share(self.held.get(coop), self.fleet)} now"]
        closed: list[int] = []
        why: list[str] = []
        for owner, limit in self.lending.items():
            if owner != coop and owner in table.coop_codes and self._lending_past(owner, amounts):
                closed.append(table.coop_codes[owner])
                why.append(f"coop {owner} lends at most {limit:.0%} of its executors (its lending_limit) and lends "
                           f"{self._share(self.lent.get(owner), self.owned(owner))} now")
        if not closed:
            return None, []
        return np.isin(table.coop[: table.n], closed), why

    def closed_to(self, coop: str, owner: str, amounts: Amounts, freed: Amounts = (0.0, 0.0)) -> bool:
        """Whether a limit keeps a task of ``coop`` asking ``amounts`` off ``owner``'s executors once ``coop``'s
        tasks holding ``freed`` there have stopped (a preemption within the coop)."""
        if coop == owner:
            return False
        return self._borrowing_past(coop, amounts, freed) or (owner in self.lending
                                                              and self._lending_past(owner, amounts, freed))

    def _borrowing_past(self, coop: str, amounts: Amounts, freed: Amounts = (0.0, 0.0)) -> bool:
        limit = self.borrowing.get(coop)
        return limit is not None and _past(_less(self.held.get(coop), freed), amounts, self.fleet, limit)

    def _lending_past(self, owner: str, amounts: Amounts, freed: Amounts = (0.0, 0.0)) -> bool:
        return _past(_less(self.lent.get(owner), freed), amounts, self.owned(owner), self.lending[owner])

    @staticmethod
    def _share(held: Amounts | None, total: Amounts) -> str:
        return f"{dominant_share(held or (0.0, 0.0), total):.0%}"


def _less(held: Amounts | None, freed: Amounts) -> Amounts:
    held = held or (0.0, 0.0)
    return (held[0] - freed[0], held[1] - freed[1])


def _past(held: Amounts, amounts: Amounts, total: Amounts, limit: float) -> bool:
    """Whether holding ``amounts`` more than ``held`` passes ``limit`` of ``total`` in CPUs or in GPUs (a
    resource the total lacks cannot be lent: any amount of it passes)."""
    for have, ask, of in zip(held, amounts, total):
        if ask > 0 and have + ask > limit * of + EPS:
            return True
    return False
