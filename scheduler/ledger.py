"""Usage accounting per (coop, member, calendar month UTC), with reservations.

Admission *reserves* a task's projected cost; completion *settles* it with the measured
usage; cancellation before the start *releases* it. All three are idempotent by task id
(Kubernetes' Reserve/Unreserve), so a report delivered twice is charged once.

Amounts are kept as integers in millionths (of an hour, of a credit), so reserving and
releasing any sequence of amounts returns exactly to zero: no float drift can leak
quota. Months roll over when read: a new month's standing starts empty whether or not
anything was written in it.

A task is charged to the month in which it was admitted (its reservation's month), so
that the month's admitted projection and its settled usage are the same budget.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from math import ceil
from typing import Protocol

SCALE = 1_000_000


def to_units(x: float) -> int:
    return int(round(x * SCALE))


def from_units(u: int) -> float:
    return u / SCALE


_last_month: list = [0.0, -1.0, ""]  # [start, end, "YYYY-MM"] of the month asked for last


def _up(units: float) -> int:
    """Rounded up, except float noise on a whole number (3 CPUs x 360 s is 300000.00000000006 millionths
    of a CPU-hour: 300000, so a task that exactly fills a quota still fits)."""
    nearest = round(units)
    return nearest if abs(units - nearest) <= 1e-9 * max(1.0, abs(units)) else ceil(units)


def period_of(t: float) -> str:
    """The calendar month (UTC) containing epoch second ``t``, as ``"YYYY-MM"``."""
    start, end, name = _last_month
    if start <= t < end:
        return name
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    first = dt.datetime(d.year, d.month, 1, tzinfo=dt.timezone.utc)
    following = dt.datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    name = f"{d.year:04d}-{d.month:02d}"
    _last_month[:] = [first.timestamp(), following.timestamp(), name]
    return name


def next_period_start(t: float) -> str:
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return f"{y:04d}-{m:02d}-01"


@dataclass(frozen=True)
class Cost:
    """An amount of usage, in units (millionths). Build with :meth:`of`."""

    cpu: int = 0
    gpu: int = 0
    credits: int = 0

    @classmethod
    def of(cls, cpu_hours: float = 0.0, gpu_hours: float = 0.0, credits: float = 0.0) -> Cost:
        # (round() of a real number is already an int: no int() around it, this runs on every admission)
        return _cost(round(cpu_hours * SCALE), round(gpu_hours * SCALE), round(credits * SCALE))

    @classmethod
    def projected(cls, cpu_hours: float = 0.0, gpu_hours: float = 0.0, credits: float = 0.0) -> Cost:
        """A projection, rounded up: any positive amount costs at least one unit, so a tiny request is
        checked against a limit (a zero GPU quota refuses a GPU task however short its runtime)."""
        return _cost(_up(cpu_hours * SCALE), _up(gpu_hours * SCALE), _up(credits * SCALE))

    def __add__(self, other: Cost) -> Cost:
        return _cost(self.cpu + other.cpu, self.gpu + other.gpu, self.credits + other.credits)

    def __sub__(self, other: Cost) -> Cost:
        return _cost(self.cpu - other.cpu, self.gpu - other.gpu, self.credits - other.credits)

    @property
    def cpu_hours(self) -> float:
        return from_units(self.cpu)

    @property
    def gpu_hours(self) -> float:
        return from_units(self.gpu)

    @property
    def credit_amount(self) -> float:
        return from_units(self.credits)


# The ledger builds several of these per admission. A frozen dataclass's __init__ sets each field
# through object.__setattr__; filling the new instance's __dict__ directly makes the same object
# (same fields, equality, hash, pickling) in half the time.
_new = object.__new__


def _cost(cpu: int, gpu: int, credits: int) -> Cost:
    cost = _new(Cost)
    d = cost.__dict__
    d["cpu"], d["gpu"], d["credits"] = cpu, gpu, credits
    return cost


ZERO = Cost()
UNLIMITED = -1
"""A limit component meaning "no limit" in ``reserve(..., limits=Cost(...))``."""


class ReserveResult(str, Enum):
    RESERVED = "reserved"
    DUPLICATE = "duplicate"      # this task id already holds a reservation or was settled: nothing changed
    OVER_LIMIT = "over_limit"    # used + reserved + cost would pass a limit: nothing changed


_RESERVED = ReserveResult.RESERVED  # returned per admission: a global beats EnumType.__getattr__


def fits(used: Cost, held: Cost, cost: Cost, limits: Cost | None) -> bool:
    """Whether ``used + held + cost`` stays within ``limits`` in every limited dimension."""
    if limits is None:
        return True
    return ((limits.cpu < 0 or cost.cpu <= 0 or used.cpu + held.cpu + cost.cpu <= limits.cpu)
            and (limits.gpu < 0 or cost.gpu <= 0 or used.gpu + held.gpu + cost.gpu <= limits.gpu)
            and (limits.credits < 0 or cost.credits <= 0
                 or used.credits + held.credits + cost.credits <= limits.credits))


@dataclass(frozen=True)
class Standing:
    """A member's month: settled usage, open reservations, completed task count."""

    period: str
    used: Cost
    reserved: Cost
    tasks_completed: int

    @property
    def projected(self) -> Cost:
        return self.used + self.reserved


def _standing(period: str, used: Cost, reserved: Cost, tasks_completed: int) -> Standing:
    standing = _new(Standing)
    d = standing.__dict__
    d["period"], d["used"], d["reserved"], d["tasks_completed"] = period, used, reserved, tasks_completed
    return standing


@dataclass(frozen=True)
class Reservation:
    coop_id: str
    member: str
    period: str
    cost: Cost


def _reservation(coop_id: str, member: str, period: str, cost: Cost) -> Reservation:
    reservation = _new(Reservation)
    d = reservation.__dict__
    d["coop_id"], d["member"], d["period"], d["cost"] = coop_id, member, period, cost
    return reservation


class UsageLedger(Protocol):
    """What the core needs of a ledger: this in-memory one, or one over a shared durable store."""

    def reserve(self, task_id: str, coop_id: str, member: str, cost: Cost, now: float,
                limits: Cost | None = None) -> ReserveResult: ...
    def settle(self, task_id: str, coop_id: str, member: str, measured: Cost, ended_at: float) -> bool: ...
    def release(self, task_id: str) -> bool: ...
    def standing(self, coop_id: str, member: str, now: float) -> Standing: ...
    def coop_standing(self, coop_id: str, now: float) -> Standing: ...  # every member's month together
    def reservation(self, task_id: str) -> Reservation | None: ...
    def is_settled(self, task_id: str) -> bool: ...
    def reset(self, coop_id: str, member: str, now: float) -> None: ...


class Ledger:
    """In-memory ledger; the durable store persists the same facts."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str, str], Cost] = {}
        self._reserved: dict[tuple[str, str, str], Cost] = {}
        self._completed: dict[tuple[str, str, str], int] = {}
        self._reservations: dict[str, Reservation] = {}
        self._settled: dict[str, tuple[tuple[str, str, str], Cost]] = {}

    # -- writes ----------------------------------------------------------------
    def reserve(self, task_id: str, coop_id: str, member: str, cost: Cost, now: float,
                limits: Cost | None = None) -> ReserveResult:
        """Hold ``cost`` for ``task_id`` in the current month, if it fits ``limits`` (checked in the same step)."""
        if task_id in self._reservations or task_id in self._settled:
            return ReserveResult.DUPLICATE
        period = period_of(now)
        key = (coop_id, member, period)
        held = self._reserved.get(key, ZERO)
        if limits is not None and not fits(self._used.get(key, ZERO), held, cost, limits):
            return ReserveResult.OVER_LIMIT
        self._reservations[task_id] = _reservation(coop_id, member, period, cost)
        self._reserved[key] = _cost(held.cpu + cost.cpu, held.gpu + cost.gpu, held.credits + cost.credits)
        return _RESERVED

    def settle(self, task_id: str, coop_id: str, member: str, measured: Cost, ended_at: float) -> bool:
        """Replace the reservation with measured usage. False (and no change) if already settled."""
        if task_id in self._settled:
            return False
        reservation = self._reservations.pop(task_id, None)
        if reservation is not None:
            key = (reservation.coop_id, reservation.member, reservation.period)
            self._reserved[key] = self._reserved[key] - reservation.cost
        else:
            key = (coop_id, member, period_of(ended_at))
        self._used[key] = self._used.get(key, ZERO) + measured
        self._completed[key] = self._completed.get(key, 0) + 1
        self._settled[task_id] = (key, measured)
        return True

    def release(self, task_id: str) -> bool:
        """Drop an open reservation (the task will not run). False if there was none."""
        reservation = self._reservations.pop(task_id, None)
        if reservation is None:
            return False
        key = (reservation.coop_id, reservation.member, reservation.period)
        self._reserved[key] = self._reserved[key] - reservation.cost
        return True

    def reset(self, coop_id: str, member: str, now: float) -> None:
        """Forget the current month's settled usage of one member (an admin action)."""
        key = (coop_id, member, period_of(now))
        self._used.pop(key, None)
        self._completed.pop(key, None)

    # -- persistence -------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything the ledger knows, as JSON-ready data (the durable store keeps the same facts)."""
        def cost(c: Cost) -> list[int]:
            return [c.cpu, c.gpu, c.credits]
        return {
            "used": [[*k, *cost(v)] for k, v in sorted(self._used.items())],
            "completed": [[*k, v] for k, v in sorted(self._completed.items())],
            "reservations": [[t, r.coop_id, r.member, r.period, *cost(r.cost)]
                             for t, r in sorted(self._reservations.items())],
            "settled": [[t, *k, *cost(c)] for t, (k, c) in sorted(self._settled.items())],
        }

    @classmethod
    def restore(cls, data: dict) -> Ledger:
        ledger = cls()
        for coop, member, period, cpu, gpu, credits in data["used"]:
            ledger._used[(coop, member, period)] = Cost(cpu, gpu, credits)
        for coop, member, period, n in data["completed"]:
            ledger._completed[(coop, member, period)] = n
        for task_id, coop, member, period, cpu, gpu, credits in data["reservations"]:
            r = Reservation(coop, member, period, Cost(cpu, gpu, credits))
            ledger._reservations[task_id] = r
            key = (coop, member, period)
            ledger._reserved[key] = ledger._reserved.get(key, ZERO) + r.cost
        for task_id, coop, member, period, cpu, gpu, credits in data["settled"]:
            ledger._settled[task_id] = ((coop, member, period), Cost(cpu, gpu, credits))
        return ledger

    # -- reads -----------------------------------------------------------------
    def standing(self, coop_id: str, member: str, now: float) -> Standing:
        key = (coop_id, member, period_of(now))
        return _standing(key[2], self._used.get(key, ZERO), self._reserved.get(key, ZERO),
                         self._completed.get(key, 0))

    def coop_standing(self, coop_id: str, now: float) -> Standing:
        """Every member's month of ``coop_id`` together (read when its policy has a ``coop_quota``)."""
        period = period_of(now)
        used = sum((c for (coop, _, p), c in self._used.items() if coop == coop_id and p == period), ZERO)
        held = sum((c for (coop, _, p), c in self._reserved.items() if coop == coop_id and p == period), ZERO)
        done = sum(n for (coop, _, p), n in self._completed.items() if coop == coop_id and p == period)
        return _standing(period, used, held, done)

    def reservation(self, task_id: str) -> Reservation | None:
        return self._reservations.get(task_id)

    def is_settled(self, task_id: str) -> bool:
        return task_id in self._settled

    def charged(self, task_id: str) -> Cost | None:
        entry = self._settled.get(task_id)
        return entry[1] if entry else None

    def members(self, coop_id: str, now: float) -> list[str]:
        period = period_of(now)
        keys = set(self._used) | set(self._reserved)
        return sorted({m for (c, m, p) in keys if c == coop_id and p == period})
