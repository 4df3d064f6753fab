"""The ledger: reservations, settlement, release, rollover — and properties over any interleaving."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scheduler.ledger import Cost, Ledger, ReserveResult, period_of
from tests.builders import START, make_task

DEC_1 = 1_796_083_200.0  # 2026-12-01 00:00:00 UTC


@pytest.mark.parametrize("t, want", [
    (START, "2026-11"),
    (DEC_1 - 1, "2026-11"),
    (DEC_1, "2026-12"),
    (1_798_761_600.0, "2027-01"),  # 2027-01-01 00:00 UTC
], ids=["mid-month", "last-second", "first-second", "new-year"])
def test_period_of_is_calendar_month_utc(t, want):
    assert period_of(t) == want


def test_reserve_settle_release_are_idempotent_by_task_id():
    ledger = Ledger()
    cost = Cost.of(cpu_hours=2.0, credits=3.0)
    assert ledger.reserve("t1", "c", "m", cost, START) is ReserveResult.RESERVED
    assert ledger.reserve("t1", "c", "m", cost, START) is ReserveResult.DUPLICATE  # same id: held once
    assert ledger.standing("c", "m", START).reserved == cost
    measured = Cost.of(cpu_hours=1.5, credits=2.0)
    assert ledger.settle("t1", "c", "m", measured, START + 10)
    assert not ledger.settle("t1", "c", "m", measured, START + 20)  # a resent report
    s = ledger.standing("c", "m", START)
    assert (s.used, s.reserved, s.tasks_completed) == (measured, Cost(), 1)
    assert not ledger.release("t1")
    assert ledger.reserve("t1", "c", "m", cost, START) is ReserveResult.DUPLICATE  # settled ids stay settled


def test_release_returns_exactly_to_zero_without_float_drift():
    ledger = Ledger()
    for i in range(1000):
        ledger.reserve(f"t{i}", "c", "m", Cost.of(cpu_hours=0.1, gpu_hours=1 / 3, credits=0.7), START)
    for i in range(1000):
        ledger.release(f"t{i}")
    assert ledger.standing("c", "m", START).reserved == Cost()


def test_rollover_happens_on_read():
    ledger = Ledger()
    ledger.settle("t1", "c", "m", Cost.of(cpu_hours=9.0), START)
    assert ledger.standing("c", "m", START).used.cpu_hours == 9.0
    # nothing written since; reading in December sees a fresh month
    dec = ledger.standing("c", "m", DEC_1)
    assert (dec.period, dec.used, dec.reserved) == ("2026-12", Cost(), Cost())


def test_charged_to_the_month_of_admission():
    ledger = Ledger()
    ledger.reserve("t1", "c", "m", Cost.of(cpu_hours=1.0), DEC_1 - 60)
    ledger.settle("t1", "c", "m", Cost.of(cpu_hours=0.5), DEC_1 + 3600)
    assert ledger.standing("c", "m", DEC_1 - 60).used.cpu_hours == 0.5
    assert ledger.standing("c", "m", DEC_1 + 3600).used == Cost()


def test_snapshot_round_trips_through_json():
    ledger = Ledger()
    ledger.reserve("t1", "c", "m", Cost.of(cpu_hours=1.0), START)
    ledger.reserve("t2", "c", "m", Cost.of(cpu_hours=2.0), START)
    ledger.settle("t1", "c", "m", Cost.of(cpu_hours=0.25), START + 5)
    restored = Ledger.restore(json.loads(json.dumps(ledger.snapshot())))
    assert restored.standing("c", "m", START) == ledger.standing("c", "m", START)
    assert not restored.settle("t1", "c", "m", Cost.of(cpu_hours=0.25), START + 5)  # still idempotent
    assert restored.release("t2")


# --------------------------------------------------------------------------- properties
costs = st.builds(Cost.of, cpu_hours=st.floats(0, 50, allow_nan=False), gpu_hours=st.floats(0, 10, allow_nan=False),
                  credits=st.floats(0, 500, allow_nan=False))
TASKS = [f"t{i}" for i in range(8)]
MEMBERS = ["alice", "bob"]


class LedgerMachine(RuleBasedStateMachine):
    """Any interleaving of reserve, settle, release, duplicate reports and month rollover."""

    def __init__(self):
        super().__init__()
        self.ledger = Ledger()
        self.now = START
        self.open: dict[str, tuple[str, str, Cost]] = {}      # task -> (member, period, cost)
        self.settled: dict[str, tuple[str, str, Cost]] = {}

    @rule(task=st.sampled_from(TASKS), member=st.sampled_from(MEMBERS), cost=costs)
    def reserve(self, task, member, cost):
        fresh = task not in self.open and task not in self.settled
        assert (self.ledger.reserve(task, "c", member, cost, self.now) is ReserveResult.RESERVED) == fresh
        if fresh:
            self.open[task] = (member, period_of(self.now), cost)

    @rule(task=st.sampled_from(TASKS), member=st.sampled_from(MEMBERS), measured=costs)
    def settle(self, task, member, measured):
        first = task not in self.settled
        assert self.ledger.settle(task, "c", member, measured, self.now) == first
        if first:
            held = self.open.pop(task, None)
            who, period = (held[0], held[1]) if held else (member, period_of(self.now))
            self.settled[task] = (who, period, measured)

    @rule(task=st.sampled_from(TASKS))
    def release(self, task):
        assert self.ledger.release(task) == (task in self.open)
        self.open.pop(task, None)

    @rule(days=st.integers(1, 40))
    def time_passes(self, days):
        self.now += days * 86400

    @precondition(lambda self: True)
    @invariant()
    def nothing_counted_twice(self):
        for member in MEMBERS:
            for period in {p for _, p, _ in list(self.open.values()) + list(self.settled.values())} | {period_of(self.now)}:
                want_used = sum((c for m, p, c in self.settled.values() if m == member and p == period), Cost())
                want_held = sum((c for m, p, c in self.open.values() if m == member and p == period), Cost())
                key = ("c", member, period)
                assert self.ledger._used.get(key, Cost()) == want_used
                assert self.ledger._reserved.get(key, Cost()) == want_held


TestLedgerInterleavings = LedgerMachine.TestCase
TestLedgerInterleavings.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


_STRICT_STEPS: dict[str, int] = {}  # ledger calls the property test below made, summed over its examples


class _CountingLedger(Ledger):
    def reserve(self, *args, **kwargs):
        _STRICT_STEPS["reserve"] = _STRICT_STEPS.get("reserve", 0) + 1
        return super().reserve(*args, **kwargs)

    def settle(self, *args, **kwargs):
        _STRICT_STEPS["settle"] = _STRICT_STEPS.get("settle", 0) + 1
        return super().settle(*args, **kwargs)

    def release(self, task_id):
        released = super().release(task_id)
        _STRICT_STEPS["release"] = _STRICT_STEPS.get("release", 0) + released
        return released


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["submit", "submit", "complete", "cancel", "lose", "month"]),
                                st.floats(0.25, 4.0), st.integers(60, 1800), st.floats(0.0, 1.0)),
                      min_size=1, max_size=80))
def test_strict_mode_never_admits_past_a_limit(steps):
    """However submissions, completions, cancels (of queued and of running tasks), lost executors (a
    retry, or giving up) and rollovers interleave, projected usage fits: two small executors make tasks
    queue, so cancels and give-ups release reservations."""
    from executors.simulated import VirtualClock
    from scheduler.core import SchedulerCore
    from tests.builders import START, make_executor, make_policy

    clock = VirtualClock(START)
    core = SchedulerCore(clock=clock, ledger=_CountingLedger())
    core.set_policy(make_policy(cpu_hours_per_month=10.0, gpu_hours_per_month=None, max_concurrent_tasks=1000))
    for i in range(2):
        core.register_executor(make_executor(f"e{i}", cpus=4))
    limit = 10.0
    admitted: list[str] = []
    for i, (op, cpus, runtime, frac) in enumerate(steps):
        live = [t for t in admitted if not core.job(t).state.finished]
        running = [t for t in live if core.job(t).state.value == "running"]
        if op == "submit":
            d = core.submit({"task_id": f"s{i}", "coop_id": "coop", "member": "alice", "max_retries": int(frac * 2),
                             "resources": {"cpus": cpus}, "max_runtime_s": runtime})
            if d.admitted:
                admitted.append(d.task_id)
        elif op == "complete" and running:
            task_id = running[int(frac * len(running)) % len(running)]
            job, task = core.job(task_id), core.task(task_id)
            wall = frac * task.max_runtime_s  # measured never exceeds the declared runtime
            core.complete({"task_id": task_id, "executor_id": job.executor_id, "coop_id": "coop",
                           "member": "alice", "started_at": job.started_at, "ended_at": job.started_at + wall,
                           "cpu_seconds": task.resources.cpus * wall, "attempt": job.attempts})
        elif op == "cancel" and live:
            core.cancel(live[-1] if frac < 0.5 else live[0])  # queued: released; running: ends charged
        elif op == "lose" and running:
            core.executor_lost(core.job(running[0]).executor_id, "worker died")  # retried, or given up
            for e in core.table.ids():
                core.update_executor({"executor_id": e, "queue_depth": 0})  # back: active again
        elif op == "month":
            clock.advance(31 * 86400)
        core.schedule()
        s = core.ledger.standing("coop", "alice", clock())
        assert s.used.cpu + s.reserved.cpu <= limit * 1_000_000


def test_the_strict_mode_property_test_reserves_settles_and_releases():
    """The promise above is about every kind of ledger step: the examples it draws make each of them."""
    _STRICT_STEPS.clear()
    test_strict_mode_never_admits_past_a_limit()
    assert all(_STRICT_STEPS.get(step, 0) > 0 for step in ("reserve", "settle", "release")), _STRICT_STEPS


@pytest.mark.parametrize("limits, want", [
    (Cost(10, -1, -1), ReserveResult.RESERVED),    # 4 used + 3 held + 3 = 10 <= 10
    (Cost(9, -1, -1), ReserveResult.OVER_LIMIT),
    (Cost(-1, -1, 5), ReserveResult.OVER_LIMIT),   # credits 3 held + 3 > 5
    (Cost(-1, 0, -1), ReserveResult.OVER_LIMIT),   # a zero GPU limit refuses any GPU use
    (None, ReserveResult.RESERVED),
], ids=["fits-exactly", "cpu-over", "credits-over", "zero-gpu-limit", "no-limits"])
def test_reserve_confirms_limits_in_the_same_step(limits, want):
    ledger = Ledger()
    ledger.settle("old", "c", "m", Cost(4, 0, 0), START)
    ledger.reserve("held", "c", "m", Cost(3, 0, 3), START)
    assert ledger.reserve("new", "c", "m", Cost(3, 1, 3), START, limits) is want


def test_a_stale_view_cannot_overshoot_the_confirmed_limit():
    """Two cores share one ledger (two head replicas, one store); each admits on its own view."""
    from tests.builders import make_core, make_executor, make_policy

    class StaleView(Ledger):  # answers standing() as if nothing were reserved yet: the worst stale read
        def standing(self, coop_id, member, now):
            s = super().standing(coop_id, member, now)
            return type(s)(s.period, s.used, Cost(), s.tasks_completed)

    shared = StaleView()
    cores = [make_core(make_policy(cpu_hours_per_month=5.0), [make_executor("e", cpus=64)])[0] for _ in range(2)]
    for core in cores:
        core.ledger = shared
    decisions = [cores[i % 2].submit(make_task(cpus=1, runtime=3600)) for i in range(12)]
    assert sum(d.admitted for d in decisions) == 5
    refused = [d for d in decisions if not d.admitted]
    assert all(d.reasons[0].source == "quota" and "at reservation" in d.reasons[0].message for d in refused)
    assert Ledger.standing(shared, "coop", "alice", START).reserved.cpu == Cost.of(cpu_hours=5.0).cpu
