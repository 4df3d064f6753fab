"""Coops take turns at what is left to borrow, the one borrowing least first (the borrowing pass's order).

After the owners-first pass of a round, the tasks none of their own coop's executors fit are tried on every
executor they may use. Taken in plain queue order, one coop's ``MemberPriority`` multipliers (up to 100x)
would put all its tasks ahead of every other coop's, so one coop could take all the borrowable room. Instead,
as Kueue's fair sharing within a cohort and Slurm's fair-share between accounts do, each coop keeps its own
order (its priorities and multipliers order only its own tasks), and the next task tried is always the next
of the coop whose tasks on other coops' executors hold the smallest *dominant share* of the fleet (the
larger of its share of the fleet's CPUs and of its GPUs), counting what it is placed there during the pass;
equal shares go by queue order. With one coop borrowing, this is plain queue order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from scheduler.tasks import JobState

Amounts = tuple[float, float]  # (cpus, gpus)


def holdings(borrowed: dict[str, list[Any]]) -> dict[str, Amounts]:
    """Per coop, the CPUs and GPUs its running jobs hold on other coops' executors, from ``borrowed`` (per
    executor, the jobs of coops other than its owner placed there)."""
    held: dict[str, Amounts] = {}
    for jobs in borrowed.values():
        for job in jobs:
            if job.state is JobState.RUNNING:
                r, was = job.task.resources, held.get(job.task.coop_id, (0.0, 0.0))
                held[job.task.coop_id] = (was[0] + r.cpus, was[1] + r.gpus)
    return held


def dominant_share(held: Amounts, total: Amounts) -> float:
    """The larger of ``held``'s fractions of the fleet's CPUs and GPUs (a resource the fleet lacks: 0)."""
    return max(held[0] / total[0] if total[0] > 0 else 0.0, held[1] / total[1] if total[1] > 0 else 0.0)


def turns(items: list[Any], coop_of: Callable[[Any], str], shares_now: Callable[[], tuple[dict[str, Amounts], Amounts]],
          placed_since: Callable[[], list[tuple[str, Amounts]]]) -> Iterator[Any]:
    """``items`` (in queue order) in turns: each time, the next item of the coop with the smallest dominant share
    of what its tasks on other coops' executors hold, ties by queue order. ``shares_now()`` (asked only when
    two coops or more have items): per coop, what its tasks hold on other coops' executors now, and the
    fleet's totals. ``placed_since()`` tells, after each item, what was placed meanwhile (coop and amounts:
    the item's own coop, as an item places only its member's tasks), which counts towards its next turn."""
    queues: dict[str, deque] = {}
    for i, item in enumerate(items):
        queues.setdefault(coop_of(item), deque()).append((i, item))
    if len(queues) <= 1:
        yield from items
        return
    borrowed, total = shares_now()
    held = {coop: borrowed.get(coop, (0.0, 0.0)) for coop in queues}
    heap = [(dominant_share(held[coop], total), q[0][0], coop) for coop, q in queues.items()]
    heapq.heapify(heap)
    while heap:
        _, _, coop = heapq.heappop(heap)
        q = queues[coop]
        _, item = q.popleft()
        yield item
        for placed_coop, (cpus, gpus) in placed_since():
            was = held.get(placed_coop, (0.0, 0.0))
            held[placed_coop] = (was[0] + cpus, was[1] + gpus)
        if q:
            heapq.heappush(heap, (dominant_share(held[coop], total), q[0][0], coop))
