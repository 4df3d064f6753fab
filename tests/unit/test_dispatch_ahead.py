"""Dispatch ahead: an executor registered with ``dispatch_ahead=k`` is handed up to ``1 + k`` rounds of
its resources; the executor starts what fits and queues the rest (core + simulated executors, no Ray)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies.validation import InvalidRequest
from scheduler.metrics import SchedulerMetrics
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task


@pytest.mark.parametrize("ahead, cpus, placed_now", [
    (0, 1, 1),   # only what fits now
    (1, 1, 2),   # one round ahead
    (3, 1, 4),
    (2, 2, 6),   # rounds of the executor's resources, not a count of tasks
])
def test_an_executor_is_handed_one_plus_k_rounds_of_its_resources(ahead, cpus, placed_now):
    sim = make_sim(make_policy(), [make_executor("one", cpus=cpus, dispatch_ahead=ahead)])
    ids = [sim.submit(make_task(cpus=1), duration_s=60).task_id for _ in range(8)]
    assert len(sim.step()) == placed_now
    assert [sim.core.job(i).state for i in ids].count(JobState.RUNNING) == placed_now
    assert sim.core.job(ids[-1]).state is JobState.QUEUED
    assert "waiting for a free executor" in sim.core.job(ids[-1]).reason
    assert len(sim.waiting("one")) == placed_now - cpus  # handed over, waiting at the executor itself


def test_a_task_bigger_than_the_executor_is_refused_whatever_it_may_be_handed():
    sim = make_sim(make_policy(), [make_executor("one", cpus=1, dispatch_ahead=3)])
    decision = sim.submit(make_task(cpus=2))
    assert not decision.admitted and "1 too small for 2 CPU" in decision.reasons[0].message


def test_handed_over_tasks_start_one_after_another_and_are_charged_their_own_run():
    sim = make_sim(make_policy(), [make_executor("one", cpus=1, dispatch_ahead=2)])
    ids = [sim.submit(make_task(cpus=1, runtime=600), duration_s=60).task_id for _ in range(3)]
    sim.step()
    assert "handed over ahead" not in sim.core.job(ids[0]).reason
    assert "handed over ahead" in sim.core.job(ids[1]).reason and "own queue" in sim.core.job(ids[2]).reason
    sim.run()
    jobs = [sim.core.job(i) for i in ids]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 3
    assert [j.started_at for j in jobs] == [START, START + 60, START + 120]  # the real start, from the report
    assert [j.charged_cpu_hours for j in jobs] == [pytest.approx(60 / 3600, abs=1e-5)] * 3
    usage = sim.core.usage("coop", "alice")
    assert usage.cpu_hours == pytest.approx(180 / 3600, abs=1e-5) and usage.reserved_cpu_hours == 0.0


def test_cancelling_a_task_waiting_at_the_executor_charges_nothing_and_the_next_one_moves_up():
    sim = make_sim(make_policy(), [make_executor("one", cpus=1, dispatch_ahead=2)])
    first, second, third = (sim.submit(make_task(cpus=1, runtime=600), duration_s=60).task_id for _ in range(3))
    sim.step()
    sim.cancel(second)
    cancelled = sim.core.job(second)
    assert cancelled.state is JobState.CANCELLED and cancelled.charged_cpu_hours == 0.0
    assert sim.waiting("one") == [third]
    sim.run()
    assert sim.core.job(third).started_at == START + 60
    assert sim.core.usage("coop", "alice").cpu_hours == pytest.approx(120 / 3600, abs=1e-5)


def test_placement_prefers_the_executor_with_the_shorter_queue():
    core, _ = make_core(make_policy(), [make_executor("a", cpus=1, dispatch_ahead=3, trust=0.5),
                                        make_executor("b", cpus=1, dispatch_ahead=3, trust=0.5)])
    core.update_executor({"executor_id": "a", "queue_depth": 5})  # alike in everything but the queue
    core.update_executor({"executor_id": "b", "queue_depth": 0})
    d = core.submit(make_task(cpus=1))
    (placed,) = core.schedule()
    assert placed.task_id == d.task_id and placed.executor_id == "b"
    (runner_up,) = placed.runners_up
    assert runner_up.executor_id == "a" and placed.breakdown["queue"] > runner_up.breakdown["queue"]


def test_re_registering_keeps_what_was_handed_over():
    sim = make_sim(make_policy(), [make_executor("one", cpus=1, dispatch_ahead=1)])
    ids = [sim.submit(make_task(cpus=1), duration_s=60).task_id for _ in range(3)]
    assert len(sim.step()) == 2
    sim.core.register_executor(make_executor("one", cpus=1, dispatch_ahead=1, trust=0.9))
    assert sim.step() == []  # still two handed over: nothing more fits
    sim.run()
    assert all(sim.core.job(i).state is JobState.SUCCEEDED for i in ids)
    assert sim.core.table.row_load[sim.core.table.rows["one"]][0] == pytest.approx(2.0)  # all free again


def test_free_cpus_gauge_counts_only_the_real_resources():
    sim = make_sim(make_policy(), [make_executor("one", cpus=2, dispatch_ahead=2)])
    metrics = SchedulerMetrics(sim.core)

    def free() -> float:
        for family in text_string_to_metric_families(metrics.exposition()):
            for s in family.samples:
                if s.name == "coopsched_executor_free_cpus":
                    return s.value
        raise AssertionError("no coopsched_executor_free_cpus sample")

    assert free() == 2.0
    sim.submit(make_task(cpus=1), duration_s=60)
    sim.step()
    assert free() == 1.0
    for _ in range(4):
        sim.submit(make_task(cpus=1), duration_s=60)
    sim.step()
    assert free() == 0.0  # two running, three waiting at the executor: never below zero


@pytest.mark.parametrize("bad", [-1, 17, "two", 1.5])
def test_a_bad_dispatch_ahead_names_the_field(bad):
    sim = make_sim(make_policy())
    with pytest.raises(InvalidRequest) as err:
        sim.core.register_executor({"executor_id": "x", "coop_id": "coop", "region": "us-west",
                                    "resources": {"cpus": 1}, "dispatch_ahead": bad})
    assert "dispatch_ahead" in str(err.value) and repr(bad).strip("'") in str(err.value)


def test_a_short_task_handed_over_behind_a_waiting_large_one_starts_at_once_without_delaying_it():
    """Backfill at the executor (executors.local_queue): "long" holds 1 of 2 CPUs for up to 600 s,
    "wide" (2 CPUs) must wait for it; "short" (1 CPU, at most 300 s) runs in the idle CPU meanwhile and
    ends before "wide" could start, so "wide" starts exactly when "long" ends."""
    sim = make_sim(make_policy(), [make_executor("one", cpus=2, dispatch_ahead=1)])
    long_ = sim.submit(make_task(cpus=1, runtime=600), duration_s=600).task_id
    wide = sim.submit(make_task(cpus=2, runtime=600), duration_s=60).task_id
    short = sim.submit(make_task(cpus=1, runtime=300), duration_s=300).task_id
    sim.step()
    assert sim.waiting("one") == [wide]  # "short" passed it
    sim.run()
    jobs = {name: sim.core.job(i) for name, i in (("long", long_), ("wide", wide), ("short", short))}
    assert {name: j.started_at - START for name, j in jobs.items()} == {"long": 0, "short": 0, "wide": 600}
    assert all(j.state is JobState.SUCCEEDED for j in jobs.values())


def test_a_task_that_could_outlast_the_waiting_large_one_keeps_its_place():
    sim = make_sim(make_policy(), [make_executor("one", cpus=2, dispatch_ahead=1)])
    sim.submit(make_task(cpus=1, runtime=600), duration_s=600)
    wide = sim.submit(make_task(cpus=2, runtime=600), duration_s=60).task_id
    slow = sim.submit(make_task(cpus=1, runtime=1200), duration_s=60).task_id  # its limit runs past t=600
    sim.step()
    assert sim.waiting("one") == [wide, slow]
    sim.run()
    assert sim.core.job(slow).started_at - START == 660  # after "wide", first come first started


def test_a_task_waiting_at_an_executor_that_grows_starts_before_newer_ones():
    sim = make_sim(make_policy(), [make_executor("one", cpus=2, dispatch_ahead=1)])
    first, waiting = (sim.submit(make_task(cpus=2, runtime=600), duration_s=100).task_id for _ in range(2))
    sim.step()
    assert sim.waiting("one") == [waiting]
    sim.core.register_executor(make_executor("one", cpus=4, dispatch_ahead=1))  # now it fits beside the first
    newer = sim.submit(make_task(cpus=2, runtime=50), duration_s=50).task_id
    sim.step()
    assert sim.waiting("one") == [newer]
    assert sim.core.job(waiting).state is JobState.RUNNING
    sim.run()
    assert sim.core.job(waiting).started_at == START


def test_a_task_larger_than_an_executor_taking_work_ahead_is_never_placed_there():
    """Its free CPUs count down from (1 + K) rounds: 16 "free" on 8 real CPUs. A 16-CPU task waits for the
    16-CPU executor instead."""
    sim = make_sim(make_policy(), [make_executor("small", cpus=8, dispatch_ahead=1, trust=0.9),
                                   make_executor("big", cpus=16, trust=0.1)])
    sim.submit(make_task(cpus=16), duration_s=60)
    assert [p.executor_id for p in sim.step()] == ["big"]
    wide = sim.submit(make_task(cpus=16), duration_s=60).task_id
    assert sim.step() == []
    assert "waiting for a free executor" in sim.core.job(wide).reason
    sim.run()
    assert sim.core.job(wide).executor_id == "big" and sim.core.job(wide).state is JobState.SUCCEEDED


def test_a_task_waiting_at_an_executor_that_grows_starts_at_once_without_a_new_placement():
    sim = make_sim(make_policy(), [make_executor("one", cpus=2, dispatch_ahead=1)])
    first, waiting = (sim.submit(make_task(cpus=2, runtime=600), duration_s=100).task_id for _ in range(2))
    sim.step()
    assert sim.waiting("one") == [waiting]
    sim.add_executor(make_executor("one", cpus=4, dispatch_ahead=1))  # now it fits beside the first
    sim.run()
    assert sim.core.job(first).state is JobState.SUCCEEDED and sim.core.job(waiting).state is JobState.SUCCEEDED
    assert sim.core.job(waiting).started_at == START  # not START + 100, idling 2 of 4 CPUs behind "first"


def test_the_table_tells_where_a_task_starts_at_once_and_where_it_would_wait_in_a_queue():
    core, _ = make_core(make_policy(), [make_executor("ahead", cpus=4, dispatch_ahead=2)])
    table, row = core.table, core.table.rows["ahead"]
    assert table.at_once((4.0, 0.0, 0, 0))[row] and not table.at_once((5.0, 0.0, 0, 0))[row]
    core.submit(make_task(cpus=2))
    core.schedule()
    assert table.at_once((2.0, 0.0, 0, 0))[row] and not table.at_once((3.0, 0.0, 0, 0))[row]
    core.submit(make_task(cpus=2))
    core.schedule()
    assert not table.at_once((1.0, 0.0, 0, 0))[row]  # its 4 CPUs are taken: a third task would wait in its queue
    assert table.free_of(row)[0] == 8.0  # while 8 more may be handed over (2 rounds ahead)
