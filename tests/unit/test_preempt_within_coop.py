"""A coop's urgent task stops its coop's own running tasks of lower priority (``CoopPolicy.preempt_within_coop``).

Before, a member's critical task waited for the coop's own running tasks to end, whatever their priority (only an
owner could stop another coop's tasks: reclaim). With ``preempt_within_coop: lower_priority``, a task that no
executor has room for stops, on one executor it may use, the fewest of its coop's running tasks of lower
*effective* priority (priority x the member's multiplier, as the queue orders them), newest first, and starts
there. The stopped task waits again as a reclaimed one does. ``never`` (the default) keeps the old behaviour.
"""

from __future__ import annotations

import pytest

from policies.model import CoopPolicy
from policies.validation import InvalidRequest, parse
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task


def _policy(within: str = "lower_priority", coop: str = "coop", **kw) -> CoopPolicy:
    return CoopPolicy.model_validate({**make_policy(coop=coop, **kw).model_dump(mode="json"),
                                      "preempt_within_coop": within})


def _full(within: str, *priorities: str, cpus: float = 2, executors=None):
    """A core whose executors run the coop's tasks of ``priorities`` (one each, ``cpus`` CPUs), placed in order."""
    core, clock = make_core(_policy(within), executors or [make_executor(f"e{i}", cpus=cpus)
                                                           for i in range(len(priorities))])
    running = []
    for p in priorities:
        running.append(core.submit(make_task(member="bob", cpus=cpus, priority=p)).task_id)
        assert [x.task_id for x in core.schedule()] == [running[-1]]
        clock.advance(10)
    return core, clock, running


def test_by_default_an_urgent_task_waits_for_its_coops_running_ones():
    core, _, running = _full("never", "low")
    urgent = core.submit(make_task(cpus=2, priority="critical")).task_id
    assert core.schedule() == [] and core.job(urgent).state is JobState.QUEUED
    assert core.drain_preempted() == [] and core.job(running[0]).state is JobState.RUNNING


def test_an_urgent_task_stops_a_running_task_of_lower_priority_and_starts_in_its_place():
    core, _, (low,) = _full("lower_priority", "low")
    urgent = core.submit(make_task(cpus=2, priority="critical")).task_id
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(urgent, "e0")]
    assert core.drain_preempted() == [(low, "e0")]  # the head stops it at its worker
    stopped = core.job(low)
    assert stopped.state is JobState.QUEUED and stopped.preemptions == 1
    assert f"preempted on e0 for task {urgent} of its coop, of higher priority (4)" in stopped.reason
    assert core.usage("coop", "bob").cpu_hours == 0  # the stopped attempt is not charged
    assert core.counters.preempted == {("coop", "priority"): 1}  # (coopsched_tasks_preempted_total's cause)
    assert core.schedule() == []  # it waits: nothing of lower priority than it runs


@pytest.mark.parametrize("running", ["normal", "critical"])
def test_tasks_of_equal_or_higher_priority_are_never_stopped(running):
    core, _, _ = _full("lower_priority", running)
    waiting = core.submit(make_task(cpus=2, priority="normal")).task_id
    assert core.schedule() == [] and core.drain_preempted() == []
    assert core.job(waiting).reason.startswith("waiting for a free executor")


def test_priority_is_effective_priority_the_members_multiplier_included():
    boost = [{"type": "MemberPriority", "name": "boost", "member": "carol", "multiplier": 3.0}]
    core, clock = make_core(_policy(rules=boost), [make_executor("e0", cpus=2)])
    high = core.submit(make_task(member="bob", cpus=2, priority="high")).task_id  # 3
    core.schedule()
    boosted = core.submit(make_task(member="carol", cpus=2, priority="normal")).task_id  # 2 x 3 = 6
    assert [p.task_id for p in core.schedule()] == [boosted] and core.drain_preempted() == [(high, "e0")]
    clock.advance(10)
    assert core.schedule() == [] and core.drain_preempted() == []  # high (3) does not stop boosted (6) in turn


def test_the_fewest_tasks_are_stopped_the_newest_first():
    core, clock = make_core(_policy(), [make_executor("a", cpus=2)])
    tasks = {}
    for name, cpus, executor in (("a1", 1, "a"), ("a2", 1, "a"), ("b1", 2, "b")):
        if executor not in core.table:
            core.register_executor(make_executor(executor, cpus=2))
        tasks[name] = core.submit(make_task(member="bob", cpus=cpus, priority="low")).task_id
        assert [p.executor_id for p in core.schedule()] == [executor]
        clock.advance(10)
    one = core.submit(make_task(cpus=1, priority="high")).task_id
    assert [p.task_id for p in core.schedule()] == [one]
    assert core.drain_preempted() == [(tasks["a2"], "a")]  # one task of 1 CPU, the newer of the two on "a"
    two = core.submit(make_task(cpus=2, priority="high")).task_id
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(two, "b")]
    assert core.drain_preempted() == [(tasks["b1"], "b")]  # one task on "b", not the two on "a"


def test_another_coops_tasks_are_never_stopped_for_it():
    core, clock = make_core(_policy(), [make_executor("theirs", coop="other", cpus=2, open_to=("*",))])
    core.set_policy(make_policy(coop="other"))
    borrowed = core.submit(make_task(coop="other", member="olga", cpus=2, priority="low")).task_id
    assert [p.task_id for p in core.schedule()] == [borrowed]
    urgent = core.submit(make_task(cpus=2, priority="critical")).task_id
    assert core.schedule() == [] and core.drain_preempted() == []  # (that would be a reclaim, which is the owner's)
    assert core.job(urgent).state is JobState.QUEUED


def test_a_task_too_large_for_what_stops_stops_nothing():
    core, _, running = _full("lower_priority", "low", "low", cpus=2)
    wide = core.submit(make_task(cpus=4, priority="critical")).task_id  # no executor holds 4 CPUs whatever stops
    assert core.schedule() == [] and core.drain_preempted() == []
    assert core.job(wide).state is JobState.REJECTED  # (no registered executor can ever run it)
    assert all(core.job(t).state is JobState.RUNNING for t in running)


def test_simulated_executors_stop_the_preempted_task_and_run_it_again_after():
    sim = make_sim(_policy(), [make_executor("e0", cpus=2)])
    low = sim.submit(make_task(member="bob", cpus=2, priority="low"), duration_s=600).task_id
    sim.step()
    sim.clock.advance(100)
    urgent = sim.submit(make_task(cpus=2, priority="critical"), duration_s=60).task_id
    sim.step()
    assert [(r.task_id, r.outcome.value, r.ended_at - r.started_at) for r in sim.reports] == [(low, "cancelled", 100)]
    sim.run()
    jobs = [sim.core.job(t) for t in (low, urgent)]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 2
    assert jobs[1].started_at == START + 100 and jobs[0].finished_at == START + 100 + 60 + 600
    assert sim.core.usage("coop", "bob").cpu_hours == pytest.approx(2 * 600 / 3600)  # its full run only


@pytest.mark.parametrize("value", ["sometimes", True, "any"])
def test_a_bad_value_is_refused_naming_the_field_and_what_is_accepted(value):
    with pytest.raises(InvalidRequest) as caught:
        parse(CoopPolicy, {"coop_id": "coop", "preempt_within_coop": value}, what="policy")
    message = str(caught.value)
    assert "preempt_within_coop" in message and "lower_priority" in message


def test_a_stopped_task_with_a_grace_runs_again_only_once_its_stopped_attempt_has_ended():
    """Its stopped attempt may be saving a checkpoint in its grace: a retry started elsewhere meanwhile would
    start from an older one (and the save would be refused as no longer the latest attempt's)."""
    core, clock = make_core(_policy("lower_priority"), [make_executor(f"e{i}", cpus=2) for i in range(2)])
    low = core.submit(make_task(member="bob", cpus=2, priority="low", stop_grace_s=30)).task_id
    other = core.submit(make_task(member="bob", cpus=2, priority="critical")).task_id  # (not to be stopped)
    assert {p.task_id for p in core.schedule()} == {low, other}
    urgent = core.submit(make_task(cpus=2, priority="critical")).task_id
    assert [p.task_id for p in core.schedule()] == [urgent] and core.drain_preempted()[0][0] == low
    stopped_on = core.job(urgent).executor_id
    clock.advance(5)
    core.complete({"task_id": other, "executor_id": core.job(other).executor_id, "coop_id": "coop", "member": "bob",
                   "started_at": clock() - 15, "ended_at": clock(), "cpu_seconds": 10, "attempt": 1,
                   "outcome": "succeeded"})  # an executor is free now
    assert core.schedule() == []  # but the stopped attempt has not ended: it may be saving
    assert core.job(low).reason.startswith(f"waiting for its stopped attempt on {stopped_on} to end (it has "
                                           "stop_grace_s=30 s to save a checkpoint)")
    cy = core.submit(make_task(member="cy", cpus=2)).task_id
    [placed] = core.schedule()  # another task of its shape takes the free executor meanwhile
    assert placed.task_id == cy
    core.complete({"task_id": low, "executor_id": stopped_on, "coop_id": "coop", "member": "bob",
                   "started_at": clock() - 15, "ended_at": clock(), "cpu_seconds": 0, "attempt": 1,
                   "outcome": "cancelled"})
    core.complete({"task_id": cy, "executor_id": placed.executor_id, "coop_id": "coop", "member": "cy",
                   "started_at": clock() - 1, "ended_at": clock(), "cpu_seconds": 1, "attempt": 1,
                   "outcome": "succeeded"})
    assert [(p.task_id, p.attempt) for p in core.schedule()] == [(low, 2)]


def test_a_stopped_task_whose_report_never_comes_runs_again_after_its_grace_and_the_usual_wait():
    from scheduler.scheduling_round import ENDING_GRACE_S
    core, clock = make_core(_policy("lower_priority"), [make_executor(f"e{i}", cpus=2) for i in range(2)])
    low = core.submit(make_task(member="bob", cpus=2, priority="low", stop_grace_s=30)).task_id
    assert [p.task_id for p in core.schedule()] == [low]
    core.submit(make_task(member="ann", cpus=2, priority="critical"))
    core.submit(make_task(member="ann", cpus=2, priority="critical"))
    assert len(core.schedule()) == 2 and core.drain_preempted()[0][0] == low  # both executors taken
    clock.advance(ENDING_GRACE_S + 31)
    for job in [j for j in core.jobs() if j.member == "ann"][:1]:  # one urgent task ends
        core.complete({"task_id": job.task_id, "executor_id": job.executor_id, "coop_id": "coop",
                       "member": "ann", "started_at": clock() - 10, "ended_at": clock(), "cpu_seconds": 10,
                       "attempt": 1, "outcome": "succeeded"})
    assert [p.task_id for p in core.schedule()] == [low]
