"""Which executors have at least a given amount of one resource free: a mask per amount asked, kept current.

Placement asks, for every task, which rows have the CPUs (GPUs, memory, GPU memory) it wants
free. Comparing whole free columns per task was about half of the filtering's cost; instead each
amount that tasks ask for keeps its own boolean column, and a row whose free amount moves
flips only the masks whose amount lies between its old and new values. Tasks ask for far less
than an executor holds, so a reservation or a release usually flips none.

A mask's bit is exactly ``free >= amount - EPS``, the comparison the columns would give: the
table reports every change of a row's free resources (``moved``), and a row that is added,
removed or re-registered is recomputed whole (``reset_row``).
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

EPS = 1e-9  # resource comparisons tolerate this much float error
MAX_AMOUNTS = 64  # distinct amounts kept per resource; past that, the resource's masks start afresh


class FreeMasks:
    """Per resource (0 CPUs, 1 GPUs, 2 memory, 3 GPU memory): amount -> mask of rows with that much free."""

    def __init__(self, columns: tuple[np.ndarray, ...], n: int) -> None:
        self._columns = columns  # the table's full-capacity free columns, in resource order
        self._n = n
        self._cutoffs: list[list[float]] = [[] for _ in columns]  # ``amount - EPS``, ascending
        self._masks: list[list[np.ndarray]] = [[] for _ in columns]  # full capacity, in cutoff order
        self._asked: list[list[float]] = [[] for _ in columns]  # the amounts, in cutoff order
        self._amounts: list[dict[float, np.ndarray]] = [{} for _ in columns]  # amount -> its full mask
        self.views: list[dict[float, np.ndarray]] = [{} for _ in columns]  # amount -> mask[:n] (the hot path's)
        # per resource, the largest cutoff: a row with at least that much free before and after a change
        # flips nothing (the usual case), which the table checks before calling ``moved``
        self.highest: list[float] = [-np.inf for _ in columns]

    def at_least(self, resource: int, amount: float) -> np.ndarray:
        """Rows (of the ``n`` in use) with at least ``amount`` of ``resource`` free. Read-only."""
        view = self.views[resource].get(amount)
        if view is None:
            full = self._amounts[resource].get(amount)
            if full is None:
                full = self._add(resource, amount)
            view = self.views[resource][amount] = full[: self._n]
        return view

    def kept(self, resource: int) -> tuple[float, ...]:
        """The amounts of ``resource`` with a mask now, smallest first."""
        return tuple(self._asked[resource])

    def moved(self, resource: int, row: int, old: float, new: float) -> None:
        """``row``'s free ``resource`` went from ``old`` to ``new``: flip the masks in between."""
        cutoffs = self._cutoffs[resource]
        if not cutoffs:
            return
        if new < old:  # bits of cutoffs in (new, old] turn off
            lo, hi, bit = bisect_right(cutoffs, new), bisect_right(cutoffs, old), False
        else:
            lo, hi, bit = bisect_right(cutoffs, old), bisect_right(cutoffs, new), True
        if lo < hi:
            masks = self._masks[resource]
            for i in range(lo, hi):
                masks[i][row] = bit

    def reset_row(self, row: int) -> None:
        """Recompute every mask's bit of ``row`` from the columns (its executor joined, left or changed)."""
        for column, cutoffs, masks in zip(self._columns, self._cutoffs, self._masks):
            free = column.item(row)
            for cutoff, mask in zip(cutoffs, masks):
                mask[row] = free >= cutoff

    def grown(self, columns: tuple[np.ndarray, ...]) -> None:
        """The table's columns were replaced by larger ones: the masks grow with them."""
        capacity = len(columns[0])
        for resource, masks in enumerate(self._masks):
            for i, mask in enumerate(masks):
                bigger = np.zeros(capacity, dtype=bool)
                bigger[: len(mask)] = mask
                masks[i] = bigger
            self._amounts[resource] = dict(zip(self._asked[resource], masks))
        self._columns = columns
        self.in_use(self._n)

    def in_use(self, n: int) -> None:
        """The table now has ``n`` rows in use (the views placement reads are of that length)."""
        self._n = n
        for views in self.views:
            views.clear()

    def _add(self, resource: int, amount: float) -> np.ndarray:
        if len(self._cutoffs[resource]) >= MAX_AMOUNTS:
            for kept in (self._cutoffs, self._masks, self._asked, self._amounts, self.views):
                kept[resource].clear()
            self.highest[resource] = -np.inf
        cutoff = amount - EPS
        column = self._columns[resource]
        mask = column >= cutoff  # rows not in use yet have nothing free; one that joins gets reset_row
        i = bisect_right(self._cutoffs[resource], cutoff)
        self._cutoffs[resource].insert(i, cutoff)
        self._masks[resource].insert(i, mask)
        self._asked[resource].insert(i, amount)
        self._amounts[resource][amount] = mask
        self.highest[resource] = self._cutoffs[resource][-1]
        return mask
