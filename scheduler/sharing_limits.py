"""Lending and borrowing limits: how much of each other's executors coops may hold at once.

``open_to`` says which coops may use an executor at all; two policy fields bound how much, as Kueue's
``lendingLimit`` and ``borrowingLimit`` bound what a ClusterQueue lends to and borrows from its cohort:

* ``lending_limit`` (the owner's): other coops' tasks may hold at most that fraction of the CPUs and of the
  GPUs of the coop's active executors, together;
* ``borrowing_limit`` (the borrower's): the coop's tasks may hold at most that fraction of the fleet's CPUs
  and of its GPUs (every coop's active executors) on executors of other coops, together.

Either may instead be amounts per resource (``policies.model.ResourceAmounts``, ``{"cpus": 16, "gpus": 2}``),
as Kueue's limits are quantities: then it bounds what is held to those amounts, whatever the coop owns or the
fleet holds, and a resource it does not name is not bounded by it. A fraction follows the fleet as executors
join and leave; amounts say "at most two of our GPUs, however many we have".

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

from policies.model import ResourceAmounts
from scheduler.fair_borrowing import Amounts, dominant_share
from scheduler.tasks import JobState

if TYPE_CHECKING:
    from scheduler.executor_table import ExecutorTable

EPS = 1e-9
Limit = float | ResourceAmounts  # a policy's lending_limit or borrowing_limit (policies.model.SharingLimit)


class SharingLimits:
    """One round's account of what coops hold of other coops' executors, against their limits."""

    def __init__(self, table: ExecutorTable, lending: Mapping[str, Limit], borrowing: Mapping[str, Limit],
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
            return others, [f"coop {coop} may hold at most {_text(limit)} on other coops' executors (its "
                            f"borrowing_limit) and holds {_held_text(self.held.get(coop), self.fleet, limit)} now"]
        closed: list[int] = []
        why: list[str] = []
        for owner, limit in self.lending.items():
            if owner != coop and owner in table.coop_codes and self._lending_past(owner, amounts):
                closed.append(table.coop_codes[owner])
                why.append(f"coop {owner} lends at most {_text(limit, 'of its executors')} (its lending_limit) "
                           f"and lends {_held_text(self.lent.get(owner), self.owned(owner), limit)} now")
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
        return limit is not None and _past(_less(self.held.get(coop), freed), amounts, caps(limit, self.fleet))

    def _lending_past(self, owner: str, amounts: Amounts, freed: Amounts = (0.0, 0.0)) -> bool:
        return _past(_less(self.lent.get(owner), freed), amounts, caps(self.lending[owner], self.owned(owner)))


def caps(limit: Limit, total: Amounts) -> Amounts:
    """The CPUs and GPUs ``limit`` allows of ``total``: a fraction of each, or its amounts (``inf`` for a
    resource it does not name)."""
    if isinstance(limit, ResourceAmounts):
        return limit.caps()
    return (limit * total[0], limit * total[1])


def limit_json(limit: Limit | None) -> float | dict[str, float] | None:
    """A limit as the status shows it: the fraction, or the amounts it names."""
    return limit.model_dump(exclude_none=True) if isinstance(limit, ResourceAmounts) else limit


def amounts_text(amounts: Amounts, named: ResourceAmounts | None = None) -> str:
    """``12 CPUs and 1 GPU`` (only the resources ``named`` names, when given)."""
    parts = [f"{value:g} {unit}{'' if value == 1 else 's'}"
             for value, unit, shown in zip(amounts, ("CPU", "GPU"),
                                           (named is None or named.cpus is not None,
                                            named is None or named.gpus is not None)) if shown]
    return " and ".join(parts)


def _text(limit: Limit, of: str = "of the fleet") -> str:
    return amounts_text(limit.caps(), limit) if isinstance(limit, ResourceAmounts) else f"{limit:.0%} {of}"


def _held_text(held: Amounts | None, total: Amounts, limit: Limit) -> str:
    held = held or (0.0, 0.0)
    return amounts_text(held, limit) if isinstance(limit, ResourceAmounts) else f"{dominant_share(held, total):.0%}"


def _less(held: Amounts | None, freed: Amounts) -> Amounts:
    held = held or (0.0, 0.0)
    return (held[0] - freed[0], held[1] - freed[1])


def _past(held: Amounts, amounts: Amounts, cap: Amounts) -> bool:
    """Whether holding ``amounts`` more than ``held`` passes ``cap`` in CPUs or in GPUs (a fraction of a
    resource the total lacks allows none of it: any amount of it passes)."""
    for have, ask, most in zip(held, amounts, cap):
        if ask > 0 and have + ask > most + EPS:
            return True
    return False
