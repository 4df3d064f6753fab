"""An executor's own queue (executors.local_queue): start what fits, the rest oldest first, and
backfill behind a task that must wait only when that cannot delay it (conservative backfill)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executors.local_queue import BACKFILL_DEPTH, LocalQueue

ONE, TWO, FOUR = (1.0, 0.0, 0.0, 0.0), (2.0, 0.0, 0.0, 0.0), (4.0, 0.0, 0.0, 0.0)
GPU = (1.0, 1.0, 0.0, 0.0)


def cpus(n: float) -> LocalQueue[str]:
    return LocalQueue((n, 0.0, 0.0, 0.0))


def test_what_fits_starts_and_the_rest_waits_in_order():
    q = cpus(2)
    assert [q.offer(k, ONE, k, limit_s=10) for k in "abc"] == [True, True, False]
    assert q.offer("d", ONE, "d", limit_s=10) is False and q.keys() == ["c", "d"]
    q.ended("a")
    assert q.ready() == ["c"] and q.keys() == ["d"]


def test_with_nothing_running_anything_starts_and_without_capacity_everything_does():
    q = cpus(1)
    assert q.offer("too-big", TWO, "too-big")  # fits the executor at all (the head checked): never waits forever
    unbounded: LocalQueue[str] = LocalQueue()
    assert all(unbounded.offer(k, TWO, k) for k in "abc") and len(unbounded) == 0 and unbounded.running == 3


def test_a_removed_task_never_starts():
    q = cpus(1)
    q.offer("a", ONE, "a", limit_s=10)
    q.offer("b", ONE, "b", limit_s=10)
    assert q.remove("b") == "b" and q.remove("b") is None and "b" not in q
    q.ended("a")
    assert q.ready() == [] and q.running == 0


def test_ending_an_unknown_or_already_ended_task_changes_nothing():
    q = cpus(1)
    q.offer("a", ONE, "a", limit_s=10)
    q.ended("a")
    q.ended("a")
    q.ended("never-ran")
    assert q.running == 0 and q.offer("b", ONE, "b", limit_s=10)


# Backfill, table-driven: a 4-CPU executor runs "long" (1 CPU, ends by t=100 at the latest) and
# "short" (2 CPUs, ends by t=10); "big" (4 CPUs) waits at the front, so its reservation is at t=100
# and nothing is spare beside it then. Which later task may start now (t=0)?
BACKFILL = [
    # (the later task's amounts, its runtime limit, starts now?, why)
    (ONE, 50.0, True, "fits now and ends (t=50) before the front's reservation (t=100)"),
    (ONE, 100.0, True, "ends exactly at the front's reservation"),
    (ONE, 150.0, False, "would still run at t=100, where the front needs every CPU"),
    (ONE, None, False, "no runtime limit: it may use only what stays spare, and nothing does"),
    (TWO, 50.0, False, "does not fit now (1 CPU free)"),
]


@pytest.mark.parametrize("amounts, limit, starts, why", BACKFILL, ids=[row[3] for row in BACKFILL])
def test_a_later_task_passes_the_front_only_if_it_cannot_delay_it(amounts, limit, starts, why):
    q = cpus(4)
    assert q.offer("long", ONE, "long", now=0.0, limit_s=100) and q.offer("short", TWO, "short", now=0.0, limit_s=10)
    assert not q.offer("big", FOUR, "big", now=0.0, limit_s=60)
    assert q.offer("later", amounts, "later", now=0.0, limit_s=limit) is starts, why
    assert q.keys() == (["big"] if starts else ["big", "later"])
    assert q.backfilled == int(starts)


def test_a_task_may_use_what_stays_spare_beside_the_front_even_past_its_reservation():
    q = cpus(4)  # when "a" (2 CPUs) ends, by t=10, "big" (2 CPUs) fits and 1 CPU stays spare beside it
    q.offer("a", TWO, "a", now=0.0, limit_s=10)
    q.offer("b", ONE, "b", now=0.0, limit_s=20)
    assert not q.offer("big", TWO, "big", now=0.0, limit_s=5)
    assert q.offer("endless", ONE, "endless", now=0.0, limit_s=None)  # takes the spare CPU
    assert not q.offer("another", ONE, "another", now=0.0, limit_s=None)  # nothing spare is left (and nothing free)


def test_backfill_never_delays_the_front_past_its_first_come_first_started_start():
    q = cpus(2)
    q.offer("running", ONE, "running", now=0.0, limit_s=30)
    assert not q.offer("big", TWO, "big", now=0.0, limit_s=10)
    assert q.offer("fits-before", ONE, "fits-before", now=0.0, limit_s=30)  # ends by t=30 as "running" does
    q.ended("running")
    q.ended("fits-before")
    assert q.ready(now=25.0) == ["big"]


def test_ready_starts_the_front_then_backfills_behind_the_next_one_that_must_wait():
    q = cpus(4)
    q.offer("a", TWO, "a", now=0.0, limit_s=100)
    q.offer("b", TWO, "b", now=0.0, limit_s=100)
    assert not q.offer("c", TWO, "c", now=0.0, limit_s=100)
    assert not q.offer("d", FOUR, "d", now=0.0, limit_s=100)
    assert not q.offer("e", TWO, "e", now=0.0, limit_s=100)
    assert not q.offer("f", ONE, "f", now=0.0, limit_s=5)
    q.ended("a")  # at t=1: "c" starts (oldest, fits); "d" then waits for both running to end, by t=101
    assert q.ready(now=1.0) == ["c"]
    q.ended("b")  # at t=2: "d" still waits for "c" (ends by 101); "e" would run past 101 (until 102): waits;
    assert q.ready(now=2.0) == ["f"]  # "f" ends by t=7: backfilled
    assert q.keys() == ["d", "e"]


def test_a_front_larger_than_the_executor_waits_for_everything_to_end_and_only_short_tasks_pass_it():
    q = cpus(3)
    q.offer("a", ONE, "a", now=0.0, limit_s=50)
    assert not q.offer("huge", FOUR, "huge", now=0.0, limit_s=10)  # starts once nothing runs (t=50 at the latest)
    assert q.offer("short", ONE, "short", now=0.0, limit_s=40)
    assert not q.offer("long", ONE, "long", now=0.0, limit_s=60)


def test_no_waiting_task_is_delayed_by_a_later_one_not_only_the_oldest():
    q = cpus(4)  # "a" ends by t=10; then "front" runs 10-15 and "second" (every CPU) is reserved for 15-20
    assert q.offer("a", (3.0, 0.0, 0.0, 0.0), "a", now=0.0, limit_s=10)
    assert not q.offer("front", TWO, "front", now=0.0, limit_s=5)
    assert not q.offer("second", FOUR, "second", now=0.0, limit_s=5)
    # would fit beside "front" (EASY's spare), but would still run at t=15, where "second" needs every CPU
    assert not q.offer("until-18", ONE, "until-18", now=0.0, limit_s=18)
    assert q.offer("until-10", ONE, "until-10", now=0.0, limit_s=10)  # done before either needs it
    assert q.keys() == ["front", "second", "until-18"] and q.backfilled == 1


def test_a_long_queue_is_looked_at_only_as_deep_as_reservations_go():
    q = cpus(3)
    q.offer("running", TWO, "running", now=0.0, limit_s=10)
    for i in range(BACKFILL_DEPTH - 1):
        assert not q.offer(f"w{i}", TWO, f"w{i}", now=0.0, limit_s=10)
    assert q.offer("shallow", ONE, "shallow", now=0.0, limit_s=1)  # fits now, ends before anyone needs it
    q.ended("shallow")
    assert not q.offer(f"w{BACKFILL_DEPTH - 1}", TWO, "last", now=0.0, limit_s=10)
    assert not q.offer("deep", ONE, "deep", now=0.0, limit_s=1)  # as harmless, but past the depth: waits in order
    q.ended("running")
    assert q.ready(now=10.0) == ["w0", "deep"]  # one fewer ahead of it: within the depth, it passes the rest


def test_gpus_count_as_well_as_cpus():
    q: LocalQueue[str] = LocalQueue((4.0, 1.0, 0.0, 0.0))
    q.offer("gpu-job", GPU, "gpu-job", now=0.0, limit_s=100)
    assert not q.offer("next-gpu-job", GPU, "next-gpu-job", now=0.0, limit_s=10)  # no GPU free
    assert q.offer("cpu-job", ONE, "cpu-job", now=0.0, limit_s=500)  # the front needs the GPU, not this CPU


def test_nothing_passes_the_front_while_a_task_without_a_runtime_limit_runs():
    q = cpus(4)  # "endless" may end at any moment, and then "front" fits beside "limited": no reservation holds
    q.offer("limited", ONE, "limited", now=0.0, limit_s=100)
    q.offer("endless", TWO, "endless", now=0.0, limit_s=None)
    assert not q.offer("front", (3.0, 0.0, 0.0, 0.0), "front", now=0.0, limit_s=10)
    assert not q.offer("short", ONE, "short", now=0.0, limit_s=1)
    q.ended("endless")
    assert q.ready(now=10.0) == ["front"]


def test_when_the_executor_grows_the_oldest_waiting_task_starts_before_a_newer_one():
    q = cpus(2)
    q.offer("a", TWO, "a", now=0.0, limit_s=100)
    assert not q.offer("old", TWO, "old", now=0.0, limit_s=100)
    q.capacity = (4.0, 0.0, 0.0, 0.0)  # re-registered larger
    assert not q.offer("new", TWO, "new", now=1.0, limit_s=50)  # even before ready(): the older one fits now
    assert q.ready(now=1.0) == ["old"] and q.keys() == ["new"]


# ----------------------------------------------------------------------------- properties
task = st.tuples(st.sampled_from((ONE, TWO, FOUR, GPU)), st.sampled_from((5.0, 20.0, 60.0, None)))


@settings(max_examples=200, deadline=None)
@given(st.lists(task, min_size=1, max_size=12))
def test_running_tasks_never_exceed_the_executor_and_no_task_starts_later_than_without_backfill(tasks):
    """Every task runs to its limit (the worst case reservations assume); simulate both queues
    event by event and compare when each front task started."""
    capacity = (4.0, 1.0, 0.0, 0.0)

    def run(backfill: bool) -> dict[str, float]:
        q: LocalQueue[str] = LocalQueue(capacity)
        if not backfill:
            q.backfill = False  # first come first started
        # a task without a limit (the queue is told None) runs 40 s
        limits = {f"t{i}": (limit if limit is not None else 40.0) for i, (_, limit) in enumerate(tasks)}
        started, ends = {}, []
        for i, (amounts, limit) in enumerate(tasks):
            key = f"t{i}"
            if q.offer(key, amounts, key, now=0.0, limit_s=limit):
                started[key] = 0.0
                ends.append((limits[key], key))
        while ends:
            ends.sort()
            now, key = ends.pop(0)
            q.ended(key)
            for k in q.ready(now):
                started[k] = now
                ends.append((now + limits[k], k))  # (the queue was told the task's own limit, or None)
            used = [0.0] * 4
            for _, k in ends:
                amounts = tasks[int(k[1:])][0]
                used = [u + a for u, a in zip(used, amounts)]
            if len(ends) > 1:
                assert all(u <= c + 1e-9 for u, c in zip(used, capacity)), (used, tasks)
        assert len(started) == len(tasks) and len(q) == 0
        return started

    fcfs, backfilled = run(False), run(True)
    if all(limit is not None for _, limit in tasks):  # conservative backfill: no task starts later than it would
        for key, at in fcfs.items():  # without backfill (when every task says how long it may run)
            assert backfilled[key] <= at + 1e-9, (key, backfilled, fcfs, tasks)
    first_waiting = next((f"t{i}" for i in range(len(tasks)) if fcfs[f"t{i}"] > 0), None)
    if first_waiting is not None:  # and the oldest that waits, whatever the others say
        assert backfilled[first_waiting] <= fcfs[first_waiting] + 1e-9
