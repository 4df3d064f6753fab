"""The dearest executor that could ever hold a request: what admission prices a task's credits at.

Admission reserves a task's credits at the highest price among the executors that could run
it: the registered ones its rules allow (active, draining or offline: they may come back) whose
resources hold the whole request on their own. The plain way scans every executor per
admission. Here the table keeps its rows in order of CPU price and of GPU price (sorted again
only when an executor joins, leaves or changes its registration), and a request walks that order
in growing chunks over the rows its rules allow:

* without GPUs, the first row that holds it is the dearest (its price is CPUs x CPU price);
* with GPUs, rows come by GPU price, and the walk stops once no row left can beat the best found
  (CPUs x the fleet's top CPU price + GPUs x the next row's GPU price is no more than it).

When the rules allow few executors, those are priced directly instead: a walk in Python over their
rows in the order of what the request would pay on each (the first row that holds it is the answer,
usually within a handful of rows), and numpy over all of them when a walk runs long. Answers are kept per
constraint signature and amounts until the table's shape changes, and per the executors that hold a
request (``holders_key``): new amounts that the same executors hold are priced without a look.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scheduler.executor_table import ExecutorTable

EPS = 1e-9  # as the free masks' comparisons (scheduler.free_masks.EPS)
DIRECT = 4096  # at most this many allowed executors: price them all at once rather than walk
FIRST_CHUNK = 64
WALK_ROWS = 32  # rows a direct pricing walks in Python before it compares them all in numpy
_MAX_WALKS = 16  # walk orders kept per signature
_MAX_ANSWERS = 4096  # kept per signature


@dataclass(frozen=True)
class Dearest:
    """Whether one allowed executor holds a request, and the most any of those would charge per hour."""

    possible: bool
    price_per_hour: float


IMPOSSIBLE = Dearest(False, 0.0)


@dataclass
class Allowed:
    """The registered executors one constraint signature allows, and the requests priced on them so far."""

    mask: np.ndarray  # of the table's rows in use
    count: int
    # when few are allowed (priced directly): their totals (cpus, gpus, memory, gpu memory) and prices
    # (cpu, gpu), gathered once
    columns: tuple[np.ndarray, ...] | None = None
    # and those rows as tuples of the same six values in the order a request walks them (``_walked``): per
    # CPUs-per-GPU ratio (None: without GPUs), made by the first request of that ratio
    walks: dict[float | None, list[tuple[float, ...]]] = field(default_factory=dict)
    answers: dict = field(default_factory=dict)  # amounts -> Dearest

    @classmethod
    def of(cls, table: ExecutorTable, mask: np.ndarray) -> Allowed:
        count = int(np.count_nonzero(mask))
        if count > DIRECT:
            return cls(mask, count)
        rows = np.flatnonzero(mask)
        return cls(mask, count, tuple(column.take(rows) for column in (
            table.total_cpus, table.total_gpus, table.total_mem, table.total_gmem, table.price_cpu, table.price_gpu)))


def dearest(table: ExecutorTable, allowed: Allowed, amounts: tuple) -> Dearest:
    """For (cpus, gpus, memory_mb, gpu_memory_mb): can one allowed executor hold it all, and at most what
    would one of those charge per hour.

    Requests that the same executors hold share one look (``holders_key``): a request without GPUs is
    priced at CPUs x the dearest CPU price among its holders, kept per holders; one with GPUs per holders,
    CPUs and GPUs. So a request of new amounts whose holders were priced before costs a few bisections,
    not a pass over the allowed executors (those passes were most of the slowest first decisions)."""
    known = allowed.answers.get(amounts)
    if known is not None:
        return known
    cpus, gpus = amounts[0], amounts[1]
    alike = (holders_key(table, amounts), cpus if gpus > 0 else None, gpus)
    answer = allowed.answers.get(alike)
    if answer is None:
        if not allowed.count:
            answer = IMPOSSIBLE
        elif allowed.columns is not None:
            answer = _walked(allowed, amounts) or _priced(allowed.columns, amounts)
        else:
            answer = _walk(table, allowed.mask, amounts)
        if len(allowed.answers) >= _MAX_ANSWERS:
            allowed.answers.clear()
        allowed.answers[alike] = answer  # (without GPUs: the price of one CPU, see _priced and _walk)
    if gpus <= 0 and answer.possible:
        answer = Dearest(True, cpus * answer.price_per_hour)
    allowed.answers[amounts] = answer
    return answer


def holders_key(table: ExecutorTable, amounts: tuple) -> tuple[int, int, int, int]:
    """Which registered totals of each resource hold ``amounts`` (-1 where the request asks none): requests
    with equal keys are held by the same executors. Per resource, the index of the smallest registered total
    that holds the amount: an executor holds it exactly when its own total is that one or more."""
    levels = total_levels(table)
    return tuple(bisect_left(level, amount - EPS) if amount > 0 or i == 0 else -1  # type: ignore[return-value]
                 for i, (level, amount) in enumerate(zip(levels, amounts)))


def total_levels(table: ExecutorTable) -> tuple[list[float], ...]:
    """The distinct registered totals of each resource (CPUs, GPUs, memory, GPU memory), ascending; kept by the
    table until an executor joins, leaves or registers again (as ``price_orders``; a status change keeps them)."""
    levels = table.total_levels
    if levels is None:
        n = table.n
        levels = table.total_levels = tuple(np.unique(column[:n]).tolist() for column in (
            table.total_cpus, table.total_gpus, table.total_mem, table.total_gmem))
    return levels


def _holds(cpus_col: np.ndarray, gpus_col: np.ndarray, mem_col: np.ndarray, gmem_col: np.ndarray,
           amounts: tuple) -> np.ndarray:
    """Which executors (by their registered totals) hold ``amounts``."""
    cpus, gpus, memory_mb, gpu_memory_mb = amounts
    ok = cpus_col >= cpus - EPS
    if gpus > 0:
        ok &= gpus_col >= gpus - EPS
    if memory_mb > 0:
        ok &= mem_col >= memory_mb - EPS
    if gpu_memory_mb > 0:
        ok &= gmem_col >= gpu_memory_mb - EPS
    return ok


def _priced(columns: tuple[np.ndarray, ...], amounts: tuple) -> Dearest:
    cpus_col, gpus_col, mem_col, gmem_col, price_cpu, price_gpu = columns
    ok = _holds(cpus_col, gpus_col, mem_col, gmem_col, amounts)
    if not ok.any():
        return IMPOSSIBLE
    cpus, gpus = amounts[0], amounts[1]
    if gpus > 0:
        return Dearest(True, float((cpus * price_cpu[ok] + gpus * price_gpu[ok]).max()))
    return Dearest(True, float(price_cpu[ok].max()))  # per CPU: dearest() multiplies


def _walked(allowed: Allowed, amounts: tuple) -> Dearest | None:
    """``_priced``'s answer from the allowed rows walked in Python, dearest for this request first, or None when
    the rows kept for the walk (``WALK_ROWS`` + 1 of them) did not settle it (numpy compares them all then).

    A request's price on a row is cpus x CPU price + gpus x GPU price = gpus x (ratio x CPU price + GPU price)
    with ratio = cpus / gpus, so in the order of that key (kept per ratio: requests come in a few CPU-per-GPU
    shapes) the first row that holds the request is the dearest; the walk goes on over the rows whose key is
    equal to within rounding, so the answer is the same float numpy's max gives. Without GPUs, the order is
    the CPU price's and the first holder's is the price per CPU."""
    cpus, gpus, memory_mb, gpu_memory_mb = amounts
    ratio = cpus / gpus if gpus > 0 else None
    walks = allowed.walks
    rows = walks.get(ratio)
    if rows is None:
        rows = walks[ratio] = _walk_rows(allowed, ratio)
    c, g, m, gm = cpus - EPS, gpus - EPS, memory_mb - EPS, gpu_memory_mb - EPS  # (totals are never negative)
    if ratio is None:
        for row in rows:
            if row[0] >= c and row[2] >= m and row[3] >= gm:
                return Dearest(True, row[4])  # per CPU: dearest() multiplies
    else:
        best = -1.0
        for row in rows:
            if best >= 0.0 and gpus * (ratio * row[4] + row[5]) * (1.0 + 1e-12) <= best:
                return Dearest(True, best)  # this row's key and every later one's: no more (prices are >= 0)
            if row[0] >= c and row[1] >= g and row[2] >= m and row[3] >= gm:
                price = cpus * row[4] + gpus * row[5]
                if price > best:
                    best = price
        if best >= 0.0 and len(rows) == allowed.count:
            return Dearest(True, best)
    return IMPOSSIBLE if len(rows) == allowed.count else None  # (rows left out: numpy compares them all)


def _walk_rows(allowed: Allowed, ratio: float | None) -> list[tuple[float, ...]]:
    """The ``WALK_ROWS`` + 1 allowed rows of the highest key for ``ratio`` (``_walked``), highest first (all of
    them when there are no more): a partial sort, as a walk seldom reads further."""
    columns = allowed.columns
    assert columns is not None
    if len(allowed.walks) >= _MAX_WALKS:
        allowed.walks.clear()
    least = -columns[4] if ratio is None else -(ratio * columns[4] + columns[5])
    k = min(len(least), WALK_ROWS + 1)
    top = np.argpartition(least, k - 1)[:k] if k < len(least) else np.arange(k)
    top = top[np.argsort(least[top], kind="stable")]
    return list(zip(*(column.take(top).tolist() for column in columns)))


def _walk(table: ExecutorTable, mask: np.ndarray, amounts: tuple) -> Dearest:
    cpus, gpus = amounts[0], amounts[1]
    by_cpu, by_gpu, top_cpu = price_orders(table)
    order = by_gpu if gpus > 0 else by_cpu
    n, start, size, best = len(order), 0, FIRST_CHUNK, -1.0
    while start < n:
        chunk = order[start:start + size]
        chunk = chunk[mask[chunk]]
        holders = chunk[_holds(table.total_cpus[chunk], table.total_gpus[chunk], table.total_mem[chunk],
                               table.total_gmem[chunk], amounts)]
        start += size
        size *= 2
        if gpus <= 0:
            if len(holders):  # the first in CPU-price order is the dearest (per CPU: dearest() multiplies)
                return Dearest(True, float(table.price_cpu[holders[0]]))
            continue
        if len(holders):
            best = max(best, float((cpus * table.price_cpu[holders] + gpus * table.price_gpu[holders]).max()))
        if best >= 0.0 and start < n and cpus * top_cpu + gpus * float(table.price_gpu[order[start]]) <= best:
            break  # no row left can charge more
    return Dearest(True, best) if best >= 0.0 else IMPOSSIBLE


def price_orders(table: ExecutorTable) -> tuple[np.ndarray, np.ndarray, float]:
    """The rows in use by CPU price and by GPU price, dearest first, and the top CPU price (kept by the
    table until its registrations change)."""
    orders = table.price_orders
    if orders is None or len(orders[0]) != table.n:
        n = table.n
        cpu, gpu = table.price_cpu[:n], table.price_gpu[:n]
        orders = table.price_orders = (np.argsort(-cpu, kind="stable"), np.argsort(-gpu, kind="stable"),
                                       float(cpu.max()) if n else 0.0)
    return orders
