"""The executors as numpy columns, updated in place on reserve, release and heartbeat.

One row per executor. Placement reads whole columns at once (boolean masks, one
weighted sum); nothing on the hot path loops over executors in Python. Masks that depend
only on slowly changing facts (coop access, region, capabilities, allow/deny lists,
status) are cached per constraint signature and dropped whenever the table's *shape*
changes (an executor joins, leaves, drains, goes offline or changes capabilities).

Per-row score features are absolute, not relative to the other executors, so the part
of the score that does not depend on the task (trust, capacity, queue depth, RTT) is
kept per weight vector and refreshed row by row as rows change.

Dispatch ahead: an executor registered with ``dispatch_ahead=k`` may be handed ``1 + k`` times
its resources at once; its worker queues what does not fit yet and starts it the moment a
running task ends (see ``executors.worker``). The free columns count down from that ceiling
(``row_totals``), so the fit masks and the capacity feature need nothing special; the total
columns keep the real resources, which is what "fits this executor at all" is checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from policies.versions import ABSENT, version_key
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec, ExecutorStatus
from scheduler.free_masks import EPS, FreeMasks
from scheduler.tasks import Resources

if TYPE_CHECKING:
    from scheduler.dearest import TotalLevels

_STATUS_CODE = {ExecutorStatus.ACTIVE: 0, ExecutorStatus.DRAINING: 1, ExecutorStatus.OFFLINE: 2}
_CODE_STATUS = {v: k for k, v in _STATUS_CODE.items()}
EMPTY = 3  # a free row
RTT_SCALE_MS = 50.0  # an executor 50 ms away scores half of one next door
SHIFT = 1.0  # cached base scores are kept +1, so 0 can mean "not feasible" (see placement.choose)
_MAX_CACHED_MASKS = 512


def rtt_score(rtt_ms):
    return 1.0 / (1.0 + rtt_ms / RTT_SCALE_MS)


def queue_score(depth):
    return 1.0 / (1.0 + depth)


class ExecutorTable:
    """Columns of executor facts, indexed by row; ``rows[executor_id]`` finds a row."""

    _FLOAT_COLUMNS = ("total_cpus", "free_cpus", "total_gpus", "free_gpus", "total_mem", "free_mem",
                      "total_gmem", "free_gmem", "trust", "running", "reported_queue", "rtt_ms",
                      "price_cpu", "price_gpu", "capacity", "gpu_util", "extra_rounds")

    def __init__(self, capacity: int = 1024) -> None:
        self._cap = max(16, capacity)
        for name in self._FLOAT_COLUMNS:
            setattr(self, name, np.zeros(self._cap))
        self.region = np.full(self._cap, -1, dtype=np.int32)
        self.coop = np.full(self._cap, -1, dtype=np.int32)
        self.status = np.full(self._cap, EMPTY, dtype=np.int8)
        self.open_all = np.zeros(self._cap, dtype=bool)
        self._fit_buffer = np.empty(self._cap, dtype=bool)  # placement's fit mask, rebuilt per task
        self.capabilities: dict[str, np.ndarray] = {}
        self.specs: list[ExecutorSpec | None] = []
        # per row, as Python floats: (trust, capacity, queue depth, RTT score), kept by ``_refresh`` for
        # the few rows an explanation reads (no numpy scalar reads on the hot path)
        self.row_facts: list[tuple[float, float, float, float]] = []
        # per row, what may be handed over at once (cpus, gpus, memory, GPU memory): its resources times
        # 1 + dispatch_ahead; the free columns count down from these, the total columns hold the resources
        self.row_totals: list[tuple[float, float, float, float]] = []
        # per row, the load columns' values as Python floats, for reserve and release to read (a numpy
        # scalar read costs several list reads): [free cpus, gpus, memory, GPU memory, running, reported queue]
        self.row_load: list[list[float]] = []
        self.rows: dict[str, int] = {}
        self.node_rows: dict[str, list[int]] = {}
        self.region_codes: dict[str, int] = {}
        self.coop_codes: dict[str, int] = {}
        self._open_to: dict[int, set[int]] = {}   # coop code -> rows open to it
        self._sharing = 0  # executors open to some other coop
        self._free_rows: list[int] = []
        self.n = 0  # rows in use or freed: columns are sliced [:n]
        self.free_count = 0  # active rows with some CPU free: a full fleet is known without a scan
        self.ahead = 0  # rows registered with dispatch_ahead > 0 (their free columns exceed their resources)
        self.shape_version = 0
        self._static_masks: dict[tuple, np.ndarray] = {}
        self._base_scores: dict[tuple, np.ndarray] = {}
        self._scratch: dict[int, np.ndarray] = {}
        self._live_base: dict[tuple, np.ndarray] = {}
        self.free_masks = FreeMasks(self._free_columns(), self.n)  # rows with at least an amount free
        self._live_views()
        self.offer_cache: dict[tuple, dict] = {}  # weights -> row -> placement's reusable offer; dropped when
        # the shape changes
        self.price_orders: tuple | None = None  # rows by CPU and GPU price (scheduler.dearest), until they change
        self.total_levels: TotalLevels | None = None  # distinct totals per resource (scheduler.dearest), until they change
        self.fit_memo: dict[int, tuple] = {}  # id(requirements) -> (requirements, admission's static fit)

    # -- structure ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, executor_id: str) -> bool:
        return executor_id in self.rows

    def add(self, spec: ExecutorSpec) -> int:
        if spec.executor_id in self.rows:
            raise KeyError(f"executor {spec.executor_id!r} is already registered")
        row = self._free_rows.pop() if self._free_rows else self._append_row()
        self.specs[row] = spec
        self.rows[spec.executor_id] = row
        self.ahead += spec.dispatch_ahead > 0
        self.node_rows.setdefault(spec.node_id or spec.executor_id, []).append(row)
        r, rounds = spec.resources, 1 + spec.dispatch_ahead
        self.total_cpus[row] = r.cpus
        self.total_gpus[row] = r.gpus
        self.total_mem[row] = r.memory_mb
        self.total_gmem[row] = r.gpu_memory_mb
        self.free_cpus[row] = r.cpus * rounds
        self.free_gpus[row] = r.gpus * rounds
        self.free_mem[row] = r.memory_mb * rounds
        self.free_gmem[row] = r.gpu_memory_mb * rounds
        self.extra_rounds[row] = spec.dispatch_ahead
        self.trust[row] = spec.trust
        self.running[row] = self.reported_queue[row] = self.gpu_util[row] = 0.0
        self.rtt_ms[row] = spec.rtt_ms
        self.price_cpu[row] = spec.price_cpu_hour
        self.price_gpu[row] = spec.price_gpu_hour
        self.region[row] = self.region_codes.setdefault(spec.region, len(self.region_codes))
        self.coop[row] = self.coop_codes.setdefault(spec.coop_id, len(self.coop_codes))
        self.status[row] = _STATUS_CODE[ExecutorStatus.ACTIVE]
        self.open_all[row] = "*" in spec.open_to
        self._sharing += _shares(spec)
        for coop_id in spec.open_to:
            if coop_id != "*":
                self._open_to.setdefault(self.coop_codes.setdefault(coop_id, len(self.coop_codes)), set()).add(row)
        self._set_capabilities(row, spec.capabilities)
        self.free_masks.reset_row(row)
        self.price_orders = self.total_levels = None
        self._changed_shape()
        self._refresh(row)
        self.free_count += self._is_free(row)
        return row

    def remove(self, executor_id: str) -> ExecutorSpec:
        row = self.rows.pop(executor_id)
        spec = self.specs[row]
        assert spec is not None
        self.free_count -= self._is_free(row)
        self.node_rows[spec.node_id or executor_id].remove(row)
        for rows in self._open_to.values():
            rows.discard(row)
        self._sharing -= _shares(spec)
        for column in self.capabilities.values():
            column[row] = ABSENT
        self.status[row] = EMPTY
        self.ahead -= spec.dispatch_ahead > 0
        self.specs[row] = None
        self.free_cpus[row] = self.free_gpus[row] = self.free_mem[row] = self.free_gmem[row] = 0.0
        self.extra_rounds[row] = 0.0
        self.free_masks.reset_row(row)
        self._mirror_load(row)
        self._free_rows.append(row)
        self.price_orders = self.total_levels = None
        self._changed_shape()
        return spec

    def set_status(self, executor_id: str, status: ExecutorStatus) -> None:
        row = self.rows[executor_id]
        if self.status[row] != _STATUS_CODE[status]:
            was = self._is_free(row)
            self.status[row] = _STATUS_CODE[status]
            self.free_count += self._is_free(row) - was
            self._changed_shape()

    def free_of(self, row: int) -> tuple[float, float, float, float]:
        """What is free on a row now (CPUs, GPUs, memory, GPU memory); with ``dispatch_ahead``, of its ceilings."""
        return (float(self.free_cpus[row]), float(self.free_gpus[row]), float(self.free_mem[row]),
                float(self.free_gmem[row]))

    def free_now(self, row: int) -> tuple[float, float, float, float]:
        """What is free on a row for a task to start at once: ``free_of`` without the rounds it takes ahead."""
        extra = float(self.extra_rounds[row])
        free = self.free_of(row)
        if not extra:
            return free
        return tuple(f - extra * float(total[row]) for f, total in zip(  # type: ignore[return-value]
            free, (self.total_cpus, self.total_gpus, self.total_mem, self.total_gmem)))

    def at_once(self, amounts: tuple) -> np.ndarray:
        """Rows (of the ``n`` in use) with ``amounts`` free without the rounds they take ahead (``dispatch_ahead``):
        where a task placed now starts at once rather than wait in the executor's queue. A new array."""
        n = self.n
        extra = self.extra_rounds[:n]
        ok = np.ones(n, dtype=bool)
        for free, total, amount in ((self.free_cpus, self.total_cpus, amounts[0]),
                                    (self.free_gpus, self.total_gpus, amounts[1]),
                                    (self.free_mem, self.total_mem, amounts[2]),
                                    (self.free_gmem, self.total_gmem, amounts[3])):
            if amount > 0:
                ok &= free[:n] - extra * total[:n] >= amount - EPS
        return ok

    def holds(self, row: int, amounts: tuple) -> bool:
        """Whether the row's registered resources hold ``amounts`` (CPUs, GPUs, memory, GPU memory) on their own."""
        return all(float(total[row]) >= amount - EPS for total, amount in zip(
            (self.total_cpus, self.total_gpus, self.total_mem, self.total_gmem), amounts))

    def status_of(self, executor_id: str) -> ExecutorStatus:
        return _CODE_STATUS[int(self.status[self.rows[executor_id]])]

    def spec(self, executor_id: str) -> ExecutorSpec:
        spec = self.specs[self.rows[executor_id]]
        assert spec is not None
        return spec

    def update_spec(self, spec: ExecutorSpec) -> None:
        """Replace an executor's registration (new trust, capabilities, prices, ...) keeping its load."""
        row = self.rows[spec.executor_id]
        old = self.specs[row]
        assert old is not None
        ceilings = self.row_totals[row]
        used = (ceilings[0] - self.free_cpus[row], ceilings[1] - self.free_gpus[row],
                ceilings[2] - self.free_mem[row], ceilings[3] - self.free_gmem[row])
        running, status = self.running[row], self.status[row]
        reported = (self.reported_queue[row], self.gpu_util[row], self.rtt_ms[row])  # the last heartbeat's
        self.remove(spec.executor_id)
        new_row = self.add(spec)
        self.reported_queue[new_row], self.gpu_util[new_row] = reported[0], reported[1]
        if spec.rtt_ms == old.rtt_ms:  # a heartbeat's RTT stands, unless the registration itself changed it
            self.rtt_ms[new_row] = reported[2]
        was = self._is_free(new_row)
        self.free_cpus[new_row] -= used[0]
        self.free_gpus[new_row] -= used[1]
        self.free_mem[new_row] -= used[2]
        self.free_gmem[new_row] -= used[3]
        self.free_masks.reset_row(new_row)
        self.running[new_row] = running
        self.status[new_row] = status
        self.free_count += self._is_free(new_row) - was
        self._changed_shape()
        self._refresh(new_row)

    def ids(self) -> Iterable[str]:
        return self.rows.keys()

    # -- load --------------------------------------------------------------------
    # reserve and release run once per placement and completion: they read and write the row's
    # scalars as Python floats (the same IEEE arithmetic numpy would do) and skip the columns a task
    # does not use (free never exceeds its ceiling, so adding or subtracting nothing changes nothing)
    def reserve(self, row: int, r: Resources) -> None:
        self.reserve_amounts(row, (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb))

    def reserve_amounts(self, row: int, amounts: tuple) -> None:
        """``reserve`` of (cpus, gpus, memory_mb, gpu_memory_mb) as placement holds them (no model reads)."""
        cpus, gpus, memory_mb, gpu_memory_mb = amounts
        load = self.row_load[row]
        masks = self.free_masks
        highest = masks.highest  # less free, but still at least the largest amount asked: no mask flips
        before = load[0]
        after = load[0] = before - cpus
        self.free_cpus[row] = after
        if after < highest[0]:
            masks.moved(0, row, before, after)
        free_gpus = load[1]
        if gpus:
            old, free_gpus = free_gpus, free_gpus - gpus
            load[1] = self.free_gpus[row] = free_gpus
            if free_gpus < highest[1]:
                masks.moved(1, row, old, free_gpus)
        free_mem = load[2]
        if memory_mb:
            old, free_mem = free_mem, free_mem - memory_mb
            load[2] = self.free_mem[row] = free_mem
            if free_mem < highest[2]:
                masks.moved(2, row, old, free_mem)
        if gpu_memory_mb:
            old = load[3]
            new = load[3] = self.free_gmem[row] = old - gpu_memory_mb
            if new < highest[3]:
                masks.moved(3, row, old, new)
        running = load[4] = self.running[row] = load[4] + 1
        if self.status.item(row) == 0:
            self.free_count += (after > 1e-9) - (before > 1e-9)
        self._refresh_load(row, after, free_gpus, free_mem, running)

    def release(self, row: int, r: Resources) -> None:
        cpus, gpus, memory_mb, gpu_memory_mb = r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb
        total_cpus, total_gpus, total_mem, total_gmem = self.row_totals[row]
        load = self.row_load[row]
        masks = self.free_masks
        highest = masks.highest  # more free, from at least the largest amount asked: no mask flips
        before = load[0]
        after = load[0] = self.free_cpus[row] = min(total_cpus, before + cpus)
        if before < highest[0]:
            masks.moved(0, row, before, after)
        free_gpus = load[1]
        if gpus:
            old, free_gpus = free_gpus, min(total_gpus, free_gpus + gpus)
            load[1] = self.free_gpus[row] = free_gpus
            if old < highest[1]:
                masks.moved(1, row, old, free_gpus)
        free_mem = load[2]
        if memory_mb:
            old, free_mem = free_mem, min(total_mem, free_mem + memory_mb)
            load[2] = self.free_mem[row] = free_mem
            if old < highest[2]:
                masks.moved(2, row, old, free_mem)
        if gpu_memory_mb:
            old = load[3]
            new = load[3] = self.free_gmem[row] = min(total_gmem, old + gpu_memory_mb)
            if old < highest[3]:
                masks.moved(3, row, old, new)
        running = load[4] = self.running[row] = max(0.0, load[4] - 1)
        if self.status.item(row) == 0:
            self.free_count += (after > 1e-9) - (before > 1e-9)
        self._refresh_load(row, after, free_gpus, free_mem, running)

    def heartbeat(self, offer: ExecutorOffer) -> None:
        row = self.rows[offer.executor_id]
        if offer.queue_depth is not None:
            self.reported_queue[row] = offer.queue_depth
        if offer.rtt_ms is not None:
            self.rtt_ms[row] = offer.rtt_ms
        if offer.gpu_utilisation_pct is not None:
            self.gpu_util[row] = offer.gpu_utilisation_pct
        self._refresh(row)

    def _is_free(self, row: int) -> int:
        return int(self.status.item(row) == 0 and self.free_cpus.item(row) > 1e-9)

    # -- scores ------------------------------------------------------------------
    def base_score(self, weights: tuple[float, ...]) -> np.ndarray:
        """trust, capacity, queue and RTT contributions for ``weights``, for every row, plus ``SHIFT``."""
        base = self._base_scores.get(weights)
        if base is None:
            base = np.zeros(self._cap)
            n = self.n
            base[:n] = self._features_vector(weights, slice(0, n)) + SHIFT
            self._base_scores[weights] = base
        return base

    def live_base_score(self, weights: tuple[float, ...]) -> np.ndarray:
        """``base_score(weights)[:n]``, the view kept until the table grows (placement reads it per task)."""
        view = self._live_base.get(weights)
        if view is None:
            view = self._live_base[weights] = self.base_score(weights)[: self.n]
        return view

    def _live_views(self) -> None:
        """Placement's buffers and views over the rows in use, rebuilt whenever ``n`` or the arrays change
        (slicing per task costs more than the work it feeds on a thousand rows)."""
        n = self.n
        self._live_base.clear()
        self.live_scores = self.scratch(1, n)
        self.live_fit = self._fit_buffer[:n]
        self.free_masks.in_use(n)

    def scratch(self, slot: int, n: int) -> np.ndarray:
        """A reusable float buffer of length ``n`` (placement's working space; not thread-safe)."""
        buf = self._scratch.get(slot)
        if buf is None or len(buf) < n:
            buf = self._scratch[slot] = np.empty(max(n, self._cap))
        return buf[:n]

    def in_regions(self, regions) -> np.ndarray:
        """A new boolean mask of the rows in use that are in any of ``regions``.

        A few equality tests or-ed together: ``np.isin`` sorts, ten times slower for the handful
        of regions a policy or hint names (it stays for long lists)."""
        column = self.region[: self.n]
        codes = [self.region_codes[r] for r in regions if r in self.region_codes]
        if len(codes) > 8:
            return np.isin(column, codes)
        mask = np.zeros(self.n, dtype=bool)
        for code in codes:
            mask |= column == code
        return mask

    def region_indicator(self, regions: tuple[str, ...]) -> np.ndarray:
        """1.0 for rows in any of ``regions``, else 0.0 (cached until the table's shape changes)."""
        return self.static_mask(("regions", regions), lambda t: t.in_regions(regions).astype(np.float64))

    def features(self, row: int) -> dict[str, float]:
        """The raw (unweighted) task-independent features of one row, each in [0, 1]."""
        trust, capacity, depth, rtt = self.row_facts[row]
        return {"trust": trust, "capacity": capacity, "queue": queue_score(depth), "rtt": rtt}

    def _features_vector(self, w: tuple[float, ...], rows: slice) -> np.ndarray:
        return (w[0] * self.trust[rows] + w[1] * self.capacity[rows]
                + w[2] * queue_score(self.running[rows] + self.reported_queue[rows])
                + w[3] * rtt_score(self.rtt_ms[rows]))

    def _refresh(self, row: int) -> None:
        """Recompute one row's totals, facts and base scores after its registration or report changed."""
        spec = self.specs[row]
        rounds = 1 + spec.dispatch_ahead if spec is not None else 1
        self.row_totals[row] = (self.total_cpus.item(row) * rounds, self.total_gpus.item(row) * rounds,
                                self.total_mem.item(row) * rounds, self.total_gmem.item(row) * rounds)
        self.row_facts[row] = (self.trust.item(row), 0.0, 0.0, rtt_score(self.rtt_ms.item(row)))  # load: below
        load = self._mirror_load(row)
        self._refresh_load(row, load[0], load[1], load[2], load[4])

    def _mirror_load(self, row: int) -> list[float]:
        """Copy one row's load columns into ``row_load`` (after anything but reserve and release wrote them)."""
        load = self.row_load[row] = [self.free_cpus.item(row), self.free_gpus.item(row), self.free_mem.item(row),
                                     self.free_gmem.item(row), self.running.item(row), self.reported_queue.item(row)]
        return load

    def _refresh_load(self, row: int, free_cpus: float, free_gpus: float, free_mem: float, running: float) -> None:
        """Recompute one row's capacity, facts and base scores from its current free resources and
        running count (its trust and RTT score as last refreshed)."""
        total_cpus, total_gpus, total_mem, _ = self.row_totals[row]
        parts = [free_cpus / total_cpus if total_cpus > 0 else 0.0]
        if total_mem > 0:
            parts.append(free_mem / total_mem)
        if total_gpus > 0:
            parts.append(free_gpus / total_gpus)
        capacity = sum(parts) / len(parts)
        if not capacity > 0.0:  # max(0.0, capacity), without the builtin's call
            capacity = 0.0
        self.capacity[row] = capacity
        trust, _, _, rtt = self.row_facts[row]
        depth = running + self.row_load[row][5]
        self.row_facts[row] = (trust, capacity, depth, rtt)
        if self._base_scores:
            queue = 1.0 / (1.0 + depth)  # queue_score(depth), without the call
            for w, base in self._base_scores.items():
                base[row] = w[0] * trust + w[1] * capacity + w[2] * queue + w[3] * rtt + SHIFT

    # -- static masks --------------------------------------------------------------
    def cached_static(self, key: tuple):
        """What ``static_mask(key, ...)`` holds for ``key`` now, or None."""
        return self._static_masks.get(key)

    def static_mask(self, key: tuple, build) -> np.ndarray:
        """A cached mask for ``key``; ``build(table)`` makes it when the shape has changed."""
        mask = self._static_masks.get(key)
        if mask is None:
            if len(self._static_masks) >= _MAX_CACHED_MASKS:  # forget the oldest, not everything
                del self._static_masks[next(iter(self._static_masks))]
            mask = build(self)
            self._static_masks[key] = mask
        return mask

    def access_mask(self, coop_id: str) -> np.ndarray:
        """Rows a member of ``coop_id`` may use: the coop's own, and those open to it."""
        n = self.n
        code = self.coop_codes.get(coop_id, -2)
        mask = (self.coop[:n] == code) | self.open_all[:n]
        rows = self._open_to.get(code)
        if rows:  # one fancy-index write, not a Python loop over every row shared with this coop
            mask[np.fromiter(rows, dtype=np.intp, count=len(rows))] = True
        return mask

    @property
    def shared(self) -> bool:
        """Whether some executor serves coops other than its owner (``open_to``)."""
        return self._sharing > 0

    def own_mask(self, coop_id: str) -> np.ndarray:
        """Rows owned by ``coop_id`` (kept until the shape changes). Read-only."""
        return self.static_mask(("own", coop_id), lambda t: t.coop[: t.n] == t.coop_codes.get(coop_id, -2))

    def active_totals(self) -> tuple[float, float]:
        """The CPUs and GPUs of the active executors (their resources, not what may be handed ahead)."""
        usable = self.usable_mask()
        return float(self.total_cpus[: self.n][usable].sum()), float(self.total_gpus[: self.n][usable].sum())

    def usable_mask(self) -> np.ndarray:
        return self.status[: self.n] == 0

    def capability_column(self, name: str) -> np.ndarray:
        column = self.capabilities.get(name)
        return column[: self.n] if column is not None else np.full(self.n, ABSENT)

    # -- internals -----------------------------------------------------------------
    def _set_capabilities(self, row: int, capabilities: dict[str, str]) -> None:
        for name, version in capabilities.items():
            column = self.capabilities.get(name)
            if column is None:
                column = self.capabilities[name] = np.full(self._cap, ABSENT)
            column[row] = version_key(version)

    def _append_row(self) -> int:
        if self.n == self._cap:
            self._grow()
        self.specs.append(None)
        self.row_facts.append((0.0, 0.0, 0.0, 0.0))
        self.row_totals.append((0.0, 0.0, 0.0, 0.0))
        self.row_load.append([0.0] * 6)
        self.n += 1
        self._live_views()
        return self.n - 1

    def _grow(self) -> None:
        new_cap = self._cap * 2
        for name in self._FLOAT_COLUMNS:
            setattr(self, name, _extend(getattr(self, name), new_cap, 0.0))
        self.region = _extend(self.region, new_cap, -1)
        self.coop = _extend(self.coop, new_cap, -1)
        self.status = _extend(self.status, new_cap, EMPTY)
        self.open_all = _extend(self.open_all, new_cap, False)
        self.capabilities = {k: _extend(v, new_cap, ABSENT) for k, v in self.capabilities.items()}
        self._base_scores = {k: _extend(v, new_cap, 0.0) for k, v in self._base_scores.items()}
        self._cap = new_cap
        self._fit_buffer = np.empty(new_cap, dtype=bool)
        self.free_masks.grown(self._free_columns())
        self._live_views()

    def _free_columns(self) -> tuple[np.ndarray, ...]:
        return (self.free_cpus, self.free_gpus, self.free_mem, self.free_gmem)

    def _changed_shape(self) -> None:
        self.shape_version += 1
        self._static_masks.clear()
        self.offer_cache.clear()
        self.fit_memo.clear()


def _shares(spec: ExecutorSpec) -> bool:
    """Whether ``spec`` is open to some coop other than its owner (``open_to`` naming the owner shares nothing)."""
    return any(coop_id != spec.coop_id for coop_id in spec.open_to)


def _extend(column: np.ndarray, size: int, fill) -> np.ndarray:
    out = np.full(size, fill, dtype=column.dtype)
    out[: len(column)] = column
    return out
