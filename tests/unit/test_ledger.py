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


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["submit", "complete", "cancel", "month"]),
                                st.floats(0.25, 4.0), st.integers(60, 7200), st.floats(0.0, 1.0)),
                      min_size=1, max_size=60))
def test_strict_mode_never_admits_past_a_limit(steps):
    """However submissions, completions, cancels and rollovers interleave, projected usage fits."""
    from executors.simulated import Simulation
    from tests.builders import make_executor, make_policy, make_sim

    sim: Simulation = make_sim(make_policy(cpu_hours_per_month=10.0, gpu_hours_per_month=None,
                                           max_concurrent_tasks=1000),
                               [make_executor(f"e{i}", cpus=64) for i in range(4)])
    core, limit = sim.core, 10.0
    running: list[str] = []
    for i, (op, cpus, runtime, frac) in enumerate(steps):
        if op == "submit":
            d = core.submit({"task_id": f"s{i}", "coop_id": "coop", "member": "alice",
                             "resources": {"cpus": cpus}, "max_runtime_s": runtime})
            if d.admitted:
                sim.step()
                if core.job(d.task_id).state.value == "running":
                    running.append(d.task_id)
        elif op == "complete" and running:
            task_id = running.pop(0)
            job = core.job(task_id)
            task = core.task(task_id)
            wall = frac * task.max_runtime_s  # measured never exceeds the declared runtime
            core.complete({"task_id": task_id, "executor_id": job.executor_id, "coop_id": "coop",
                           "member": "alice", "started_at": job.started_at, "ended_at": job.started_at + wall,
                           "cpu_seconds": task.resources.cpus * wall})
        elif op == "cancel" and running:
            core.cancel(running[-1])
        elif op == "month":
            sim.clock.advance(31 * 86400)
        s = core.ledger.standing("coop", "alice", sim.clock())
        assert s.used.cpu + s.reserved.cpu <= limit * 1_000_000


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
