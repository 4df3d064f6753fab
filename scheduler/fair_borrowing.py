"""Coops take turns at what is left to borrow, the one borrowing least first (the borrowing pass's order).

After the owners-first pass of a round, the tasks none of their own coop's executors fit are tried on every
executor they may use. Taken in plain queue order, one coop's ``MemberPriority`` multipliers (up to 100x)
would put all its tasks ahead of every other coop's, so one coop could take all the borrowable room. Instead,
as Kueue's fair sharing within a cohort and Slurm's fair-share between accounts do, each coop keeps its own
order (its priorities and multipliers order only its own tasks), and the next task tried is always the next
of the coop whose tasks on other coops' executors hold the smallest *dominant share* of the fleet (the
larger of its share of the fleet's CPUs and of its GPUs), counting what it is placed there during the pass;
equal shares go by queue order. With one coop borrowing, this is plain queue order.

What a coop holds now is not all: one that has borrowed much of the fleet for the last hours and happens to
hold nothing at this instant would otherwise go before one that never borrowed. So, as Slurm's fair-share
decays past usage by ``PriorityDecayHalfLife`` and Kueue's admission fair sharing by ``usageHalfLifeTime``,
``BorrowingHistory`` keeps each coop's past holdings on other coops' executors, decayed by half every
``half_life_s`` (an hour by default: ``HALF_LIFE_S``), and a coop's turn goes by its dominant share now plus
its decayed average share (what it held, on average, weighted towards the last half-life).

The history outlives its head: ``snapshot`` is what the head writes to its store (``StateStore.put_head_state``,
at most once a sample) and ``restore`` what a restarted head reads back, so a coop that borrowed much in the
last hours does not go first again because its head restarted. The time the head was down counts as Kueue's
sampling does between two samples: what the last sample noted as held, for up to ``sample_s``, then what is
held when the restarted head samples first (its recovered running jobs).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.tasks import JobState

Amounts = tuple[float, float]  # (cpus, gpus)
HALF_LIFE_S = 3600.0  # how fast past borrowing is forgotten, by default (SchedulerCore(borrowing_half_life_s=...))


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


class BorrowingHistory:
    """Each coop's past holdings on other coops' executors (CPU- and GPU-seconds), decayed by half every
    ``half_life_s``; sampled (``sample``) as Kueue samples usage, at most every ``sample_s``: what was held at
    one sample counts as held until the next."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = float(half_life_s)
        self.sample_s = min(300.0, max(1.0, self.half_life_s / 60.0))
        self.sampled_at: float | None = None
        self.held: dict[str, Amounts] = {}  # per coop, what it held at the last sample
        self.used: dict[str, Amounts] = {}  # per coop, decayed CPU- and GPU-seconds

    def due(self, now: float) -> bool:
        return self.sampled_at is None or not 0.0 <= now - self.sampled_at < self.sample_s

    def sample(self, held: Mapping[str, Amounts], now: float) -> None:
        """Count what was held since the last sample, decayed as it went, and note ``held`` (now). Changes
        between samples are not seen one by one: what the last sample noted counts as held for up to
        ``sample_s`` after it, ``held`` for the rest of a longer gap (nothing samples while nothing happens)."""
        last = self.sampled_at
        if last is not None and now > last:
            first = min(now - last, self.sample_s)
            used = _decayed(self.used, self.held, first, self.half_life_s)
            self.used = _decayed(used, held, now - last - first, self.half_life_s) if now - last > first else used
        self.sampled_at = now  # (a clock stepped back: counted from here)
        self.held = {coop: amounts for coop, amounts in held.items() if amounts[0] > 0 or amounts[1] > 0}

    def snapshot(self) -> dict[str, Any]:
        """The history as JSON (``HistorySnapshot``), for a restarted head's ``restore``."""
        return HistorySnapshot(half_life_s=self.half_life_s, sampled_at=self.sampled_at, held=self.held,
                               used=self.used).model_dump(mode="json")

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back a ``snapshot`` (``pydantic.ValidationError`` if ``data`` is not one: nothing changes). A
        snapshot of another half-life keeps each coop's average share: its decayed seconds are rescaled."""
        snap = HistorySnapshot.model_validate(data)
        rescale = self.half_life_s / snap.half_life_s
        self.sampled_at = snap.sampled_at
        self.held = {coop: amounts for coop, amounts in snap.held.items() if amounts[0] > 0 or amounts[1] > 0}
        self.used = {coop: (u[0] * rescale, u[1] * rescale) for coop, u in snap.used.items()}

    def shares(self, total: Amounts) -> dict[str, float]:
        """Per coop, its decayed average dominant share of ``total`` held on other coops' executors (holding a
        share for ever tends to that share)."""
        scale = self.half_life_s / math.log(2.0)
        return {coop: dominant_share((u[0] / scale, u[1] / scale), total) for coop, u in self.used.items()}


class HistorySnapshot(BaseModel):
    """``BorrowingHistory`` as its head stores it: per coop, CPUs and GPUs held at the last sample (``held``) and
    decayed CPU- and GPU-seconds (``used``), with the half-life they decay by."""

    model_config = ConfigDict(extra="forbid")

    half_life_s: float = Field(gt=0, allow_inf_nan=False)
    sampled_at: float | None = Field(allow_inf_nan=False)
    held: dict[str, tuple[float, float]]
    used: dict[str, tuple[float, float]]

    @field_validator("held", "used")
    @classmethod
    def _finite_and_not_negative(cls, amounts: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for coop, pair in amounts.items():
            if not all(math.isfinite(x) and x >= 0 for x in pair):
                raise ValueError(f"{coop}: {list(pair)} is not two finite amounts >= 0 (cpus, gpus), e.g. [4.0, 1.0]")
        return amounts


def _decayed(used: Mapping[str, Amounts], held: Mapping[str, Amounts], seconds: float,
             half_life_s: float) -> dict[str, Amounts]:
    """``used`` after ``seconds`` more of ``held``, everything decayed by half every ``half_life_s``."""
    keep = 2.0 ** (-seconds / half_life_s)
    gain = half_life_s / math.log(2.0) * (1.0 - keep)  # a constant holding's decayed seconds over the interval
    out: dict[str, Amounts] = {}
    for coop in set(used) | set(held):
        u, h = used.get(coop, (0.0, 0.0)), held.get(coop, (0.0, 0.0))
        total = (u[0] * keep + h[0] * gain, u[1] * keep + h[1] * gain)
        if total[0] > 1e-6 or total[1] > 1e-6:  # (a coop that stopped borrowing fades out)
            out[coop] = total
    return out


def turns(items: list[Any], coop_of: Callable[[Any], str], shares_now: Callable[[], tuple[dict[str, Amounts], Amounts]],
          placed_since: Callable[[], list[tuple[str, Amounts]]],
          past: Callable[[Amounts], Mapping[str, float]] | None = None) -> Iterator[Any]:
    """``items`` (in queue order) in turns: each time, the next item of the coop with the smallest dominant share
    of what its tasks on other coops' executors hold, ties by queue order. ``shares_now()`` (asked only when
    two coops or more have items): per coop, what its tasks hold on other coops' executors now, and the
    fleet's totals. ``placed_since()`` tells, after each item, what was placed meanwhile (coop and amounts:
    the item's own coop, as an item places only its member's tasks), which counts towards its next turn.
    ``past(total)``: per coop, its share held in the past (``BorrowingHistory.shares``), added to its share now."""
    queues: dict[str, deque] = {}
    for i, item in enumerate(items):
        queues.setdefault(coop_of(item), deque()).append((i, item))
    if len(queues) <= 1:
        yield from items
        return
    borrowed, total = shares_now()
    held = {coop: borrowed.get(coop, (0.0, 0.0)) for coop in queues}
    before = past(total) if past is not None else {}
    heap = [(dominant_share(held[coop], total) + before.get(coop, 0.0), q[0][0], coop) for coop, q in queues.items()]
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
            heapq.heappush(heap, (dominant_share(held[coop], total) + before.get(coop, 0.0), q[0][0], coop))
