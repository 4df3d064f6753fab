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

When the rules allow few executors, those are priced directly instead: per class of requests (the
executors that hold them, ``holders_key``) and CPUs-per-GPU ratio, the prices that may charge most are
found once (a walk in Python over the rows of the highest keys for that ratio, usually settled within a
handful of rows; numpy over all of them when it is not) and kept, so new amounts of a known class and
ratio cost a dictionary look and a multiplication. Answers are kept per constraint signature and amounts
until the table's shape changes.
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
    # and of those, per CPUs-per-GPU ratio (None: no GPUs), the rows a pricing walks first (``_walk_rows``)
    walks: dict[float | None, list[tuple[float, ...]]] = field(default_factory=dict)
    # per class of requests (``holders_key``) and CPUs-per-GPU ratio: the prices that may charge most
    candidates: dict[tuple, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    answers: dict = field(default_factory=dict)  # amounts -> Dearest

    @classmethod
    def of(cls, table: ExecutorTable, mask: np.ndarray) -> Allowed:
        count = int(np.count_nonzero(mask))
        if count > DIRECT:
            return cls(mask, count)
        rows = np.flatnonzero(mask)
        columns = tuple(column.take(rows) for column in (
            table.total_cpus, table.total_gpus, table.total_mem, table.total_gmem, table.price_cpu, table.price_gpu))
        return cls(mask, count, columns)


def dearest(table: ExecutorTable, allowed: Allowed, amounts: tuple) -> Dearest:
    """For (cpus, gpus, memory_mb, gpu_memory_mb): can one allowed executor hold it all, and at most what
    would one of those charge per hour.

    Requests that the same executors hold share one look (``holders_key``): priced directly, per holders and
    CPUs-per-GPU ratio (``_candidates``); walked, per holders, CPUs and GPUs (without GPUs, per holders: the
    dearest CPU price). So a request of new amounts whose holders were priced before costs a few
    bisections, not a pass over the allowed executors (those passes were most of the slowest first
    decisions)."""
    known = allowed.answers.get(amounts)
    if known is not None:
        return known
    if len(allowed.answers) >= _MAX_ANSWERS:
        allowed.answers.clear()
    cpus, gpus = amounts[0], amounts[1]
    if not allowed.count:
        answer = IMPOSSIBLE
    elif allowed.columns is not None:
        ratio = cpus / gpus if gpus > 0 else None
        kind = (holders_key(table, amounts), ratio)
        pairs = allowed.candidates.get(kind)
        if pairs is None:
            if len(allowed.candidates) >= _MAX_ANSWERS:
                allowed.candidates.clear()
            pairs = allowed.candidates[kind] = _candidates(allowed, ratio, amounts)
        if not pairs:
            answer = IMPOSSIBLE
        elif ratio is None:
            answer = Dearest(True, pairs[0][0])  # per CPU, multiplied below
        else:
            answer = Dearest(True, max(cpus * pc + gpus * pg for pc, pg in pairs))
    else:
        alike = (holders_key(table, amounts), cpus if gpus > 0 else None, gpus)
        answer = allowed.answers.get(alike)
        if answer is None:
            answer = allowed.answers[alike] = _walk(table, allowed.mask, amounts)  # (no GPUs: one CPU's price)
    if gpus <= 0 and answer.possible:
        answer = Dearest(True, cpus * answer.price_per_hour)
    allowed.answers[amounts] = answer
    return answer


def holders_key(table: ExecutorTable, amounts: tuple) -> tuple[int, int, int, int]:
    """Which registered totals of each resource hold ``amounts`` (-1 where the request asks none): requests
    with equal keys are held by the same executors. Per resource, the index of the smallest registered total
    that holds the amount: an executor holds it exactly when its own total is that one or more. Kept per
    amounts with the totals (every signature asks it of the same few amounts)."""
    levels = table.total_levels
    if levels is None:
        levels = table.total_levels = TotalLevels(table)
    key = levels.keys.get(amounts)
    if key is None:
        if len(levels.keys) >= _MAX_ANSWERS:
            levels.keys.clear()
        key = levels.keys[amounts] = tuple(  # type: ignore[assignment]
            bisect_left(level, amount - EPS) if amount > 0 or i == 0 else -1
            for i, (level, amount) in enumerate(zip(levels.levels, amounts)))
    return key  # type: ignore[return-value]


class TotalLevels:
    """The distinct registered totals of each resource (CPUs, GPUs, memory, GPU memory), ascending, and the
    ``holders_key`` of each amounts asked; kept by the table until an executor joins, leaves or registers
    again (as ``price_orders``; a status change keeps them)."""

    __slots__ = ("levels", "keys")

    def __init__(self, table: ExecutorTable) -> None:
        n = table.n
        self.levels: tuple[list[float], ...] = tuple(np.unique(column[:n]).tolist() for column in (
            table.total_cpus, table.total_gpus, table.total_mem, table.total_gmem))
        self.keys: dict[tuple, tuple[int, ...]] = {}


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


def _candidates(allowed: Allowed, ratio: float | None, amounts: tuple) -> tuple[tuple[float, float], ...]:
    """The (CPU price, GPU price) pairs among the allowed rows that hold ``amounts`` that may charge it most,
    kept per class of requests (``holders_key``) and CPUs-per-GPU ratio by ``dearest``.

    A request's price on a row is cpus x CPU price + gpus x GPU price = gpus x (ratio x CPU price + GPU price)
    with ratio = cpus / gpus, so among the holders the dearest for every request of that ratio has the highest
    key; the rows whose key is equal to it within rounding are all kept, so ``dearest`` takes the highest
    exact price among them: the float numpy's max over every holder gives. Without GPUs, the key is the CPU
    price (``dearest`` multiplies by the CPUs). The rows of the highest keys are walked in Python first (the
    answer is usually within a few of them: numpy's calls cost more than that on a few hundred rows), all of
    them in numpy when that walk does not settle it."""
    rows = allowed.walks.get(ratio)
    if rows is None:
        if len(allowed.walks) >= _MAX_WALKS:
            allowed.walks.clear()
        rows = allowed.walks[ratio] = _walk_rows(allowed, ratio)
    c, g, m, gm = (amount - EPS for amount in amounts)  # (totals are never negative)
    pairs: dict[tuple[float, float], None] = {}
    least = None
    for cpus, gpus, memory, gpu_memory, pc, pg, key in rows:
        if least is not None and key < least:
            return tuple(pairs)  # every row left has a lower key
        if cpus >= c and gpus >= g and memory >= m and gpu_memory >= gm:
            if least is None:
                least = key * (1.0 - 1e-9)  # (exact prices differ from gpus x key by far less)
            pairs[(pc, pg)] = None  # (rows of equal prices: one pair)
    if len(rows) == allowed.count:
        return tuple(pairs)  # every row walked
    cpus_col, gpus_col, mem_col, gmem_col, price_cpu, price_gpu = allowed.columns  # type: ignore[misc]
    holds = _holds(cpus_col, gpus_col, mem_col, gmem_col, amounts)
    if not holds.any():
        return ()
    pc, pg = price_cpu[holds], price_gpu[holds]
    key = pc if ratio is None else ratio * pc + pg
    near = key >= float(key.max()) * (1.0 - 1e-9)
    return tuple(dict.fromkeys(zip(pc[near].tolist(), pg[near].tolist())))


def _walk_rows(allowed: Allowed, ratio: float | None) -> list[tuple[float, ...]]:
    """The ``WALK_ROWS`` allowed rows of the highest keys for ``ratio`` (``_candidates``), highest first (all of
    them when there are no more), as (cpus, gpus, memory, GPU memory, CPU price, GPU price, key): a partial sort."""
    columns = allowed.columns
    assert columns is not None
    key = columns[4] if ratio is None else ratio * columns[4] + columns[5]
    k = min(len(key), WALK_ROWS)
    top = np.argpartition(-key, k - 1)[:k] if k < len(key) else np.arange(k)
    top = top[np.argsort(-key[top], kind="stable")]
    return list(zip(*(column.take(top).tolist() for column in (*columns, key))))


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
