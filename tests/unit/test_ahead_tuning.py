"""``dispatch_ahead="auto"``: the head sets an executor's rounds ahead from what it measures
(``scheduler.ahead_tuning``): enough to cover the gap between a task ending there and the next arriving for
short jobs, none for long ones. Before, an operator had to guess a number per executor at registration."""

from __future__ import annotations

import asyncio
import time

import pytest

from scheduler.ahead_tuning import MIN_SAMPLES, SETTLE_S, AheadTuner
from scheduler.executor_spec import ExecutorSpec
from scheduler.tasks import JobState
from tests.builders import make_core, make_executor, make_policy, make_task
from tests.unit.test_head_interleavings import COOP, FakeWorker, add_executor, make_head, task


def _tuned(run_s: float, report_s: float, dispatch_s: float, reports: int = MIN_SAMPLES, now: float = 100.0,
           current: int = 0, max_ahead: int = 16) -> int | None:
    tuner = AheadTuner(max_ahead)
    for _ in range(reports):
        tuner.dispatched("e", dispatch_s)
        tuner.reported("e", run_s, report_s)
    return tuner.proposal("e", current, now)


@pytest.mark.parametrize("run_s, want", [(0.001, 5), (0.002, 3), (0.010, 1), (0.040, 1), (0.100, 0), (10.0, 0)],
                         ids=["1 ms", "2 ms", "10 ms", "40 ms", "100 ms", "10 s"])
def test_the_rounds_cover_the_gap_for_short_jobs_and_none_for_long_ones(run_s, want):
    # the gap: 3 ms for a report to reach the head, 2 ms for a dispatch call
    assert _tuned(run_s, 0.003, 0.002) == (want if want else None)  # (0 from 0: nothing to change)
    assert _tuned(run_s, 0.003, 0.002, current=7) == want


def test_no_more_than_the_most_an_executor_may_take():
    assert _tuned(0.0001, 0.003, 0.002, max_ahead=4) == 4


def test_a_few_reports_change_nothing_and_a_change_settles_before_the_next():
    assert _tuned(0.001, 0.003, 0.002, reports=MIN_SAMPLES - 1) is None
    tuner = AheadTuner(16)
    for _ in range(MIN_SAMPLES):
        tuner.reported("e", 0.001, 0.004)
    assert tuner.proposal("e", 0, now=100.0) == 4
    for _ in range(50):  # the jobs grow long at once
        tuner.reported("e", 10.0, 0.004)
    assert tuner.proposal("e", 4, now=100.0 + SETTLE_S / 2) is None  # too soon after the last change
    assert tuner.proposal("e", 4, now=100.0 + SETTLE_S) == 0


def test_setting_an_executors_rounds_ahead_keeps_what_runs_there():
    core, _ = make_core(make_policy(), [make_executor("e", cpus=1)])
    first = core.submit(make_task(cpus=1)).task_id
    second = core.submit(make_task(cpus=1)).task_id
    assert [p.task_id for p in core.schedule()] == [first]
    spec = core.set_dispatch_ahead("e", 2)
    assert spec.dispatch_ahead == 2 and core.table.spec("e").dispatch_ahead == 2
    assert [p.task_id for p in core.schedule()] == [second]  # handed ahead now, into its queue
    assert core.job(first).state is JobState.RUNNING and len(core.running_on("e")) == 2
    core.set_dispatch_ahead("e", 0)  # what it holds stays; nothing more until room frees
    assert len(core.running_on("e")) == 2 and core.submit(make_task(cpus=1)).admitted and core.schedule() == []


def test_an_auto_executor_is_registered_with_no_rounds_ahead_until_measured():
    spec = ExecutorSpec(executor_id="e", coop_id="c", region="r", resources={"cpus": 1}, dispatch_ahead_auto=True)
    assert spec.dispatch_ahead == 0 and spec.dispatch_ahead_auto


def test_the_head_tunes_an_auto_executor_from_its_reports_and_stores_the_value():
    async def scenario():
        head = await make_head()
        worker = FakeWorker("quick")
        await add_executor(head, worker, cpus=1, dispatch_ahead_auto=True)
        fixed = FakeWorker("fixed")
        await add_executor(head, fixed, cpus=1)  # not auto: never tuned
        for i in range(MIN_SAMPLES):
            t = f"t{i}"
            await head.submit(task(t), b"payload", None)
            await asyncio.sleep(0)  # its dispatch
            job = head.core.job(t)
            ended = time.time() - 0.004  # a 1 ms job whose report took 4 ms to arrive
            await head.on_reports([{"task_id": t, "executor_id": job.executor_id, "coop_id": COOP, "member": "alice",
                                    "started_at": ended - 0.001, "ended_at": ended, "cpu_seconds": 0.001,
                                    "outcome": "succeeded", "attempt": job.attempts}])
        return head
    head = asyncio.run(scenario())
    quick, fixed = head.core.table.spec("quick"), head.core.table.spec("fixed")
    assert quick.dispatch_ahead >= 4 and fixed.dispatch_ahead == 0
    stored = {spec["executor_id"]: spec for spec, _ in head.store.executors()}
    assert stored["quick"]["dispatch_ahead"] == quick.dispatch_ahead and stored["quick"]["dispatch_ahead_auto"]


def test_coopsched_executor_list_says_which_executors_the_head_tunes():
    from scheduler.cli_commands import _ahead
    assert _ahead({"dispatch_ahead": 2, "dispatch_ahead_auto": False}) == "2"
    assert _ahead({"dispatch_ahead": 4, "dispatch_ahead_auto": True}) == "auto (now 4)"
    assert _ahead({}) == "0"  # (a row of a head from before the field: none ahead)
