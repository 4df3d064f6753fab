"""An owner reclaims its executor (``CoopPolicy.reclaim``): its waiting task stops a borrower's running one.

Owners first gives an owner's *waiting* tasks the first claim on its executors, but a borrower's task already
running there kept the executor until it ended, however long. With ``reclaim`` set on the owner's policy, a task
of the owner that fits none of its coop's executors for want of room stops other coops' tasks running on one of
them (``lower_priority``: only tasks of lower priority), the fewest that make room, newest first. The stopped
task waits again: uncharged for the stopped attempt, its retries kept, and kept off that executor until the
stopped attempt's report comes. ``never`` (the default) keeps the old behaviour.
"""

from __future__ import annotations

import pytest

from policies.model import CoopPolicy
from scheduler.scheduling_round import ENDING_GRACE_S
from scheduler.tasks import JobState
from scheduler.usage import UsageReport
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task


def _coops(reclaim: str, *executors):
    owner = CoopPolicy.model_validate({**make_policy(coop="owner").model_dump(mode="json"), "reclaim": reclaim})
    core, clock = make_core(owner, list(executors))
    core.set_policy(make_policy(coop="borrower"))
    return core, clock


def _report(core, task_id: str, executor_id: str, attempt: int, wall: float = 10.0, outcome: str = "cancelled"):
    job = core.job(task_id)
    task = core.task(task_id)
    now = core.clock()
    return core.complete(UsageReport(task_id=task_id, executor_id=executor_id, coop_id=task.coop_id,
                                     member=task.member, started_at=now - wall, ended_at=now, attempt=attempt,
                                     cpu_seconds=task.resources.cpus * wall, outcome=outcome))


def _borrowing(reclaim: str, priority: str = "normal", cpus: float = 2):
    core, clock = _coops(reclaim, make_executor("owned", coop="owner", cpus=2, open_to=("*",)),
                         make_executor("theirs", coop="borrower", cpus=2))
    mine = core.submit(make_task(coop="borrower", member="bob", cpus=2, priority=priority))
    borrowed = core.submit(make_task(coop="borrower", member="bob", cpus=cpus, priority=priority))
    placed = {p.task_id: p.executor_id for p in core.schedule()}
    assert placed == {mine.task_id: "theirs", borrowed.task_id: "owned"}  # its own coop's is full: it borrows
    clock.advance(60)
    return core, clock, borrowed.task_id


def test_by_default_a_borrowers_running_task_keeps_the_owners_executor():
    core, _, borrowed = _borrowing("never")
    waiting = core.submit(make_task(coop="owner", cpus=2, priority="critical"))
    assert core.schedule() == [] and core.job(waiting.task_id).state.value == "queued"
    assert core.job(borrowed).state.value == "running" and core.drain_preempted() == []


def test_an_owner_that_reclaims_stops_the_borrowers_task_and_takes_its_executor():
    core, clock, borrowed = _borrowing("any")
    waiting = core.submit(make_task(coop="owner", cpus=2, priority="low"))  # ("any": whatever the priorities)
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(waiting.task_id, "owned")]
    assert core.drain_preempted() == [(borrowed, "owned")]  # the head stops it at its worker
    job = core.job(borrowed)
    assert job.state.value == "queued" and "preempted on owned: its owner, coop owner, reclaims it" in job.reason
    assert "not charged and not counted against max_retries" in job.reason
    assert core.counters.preempted[("borrower", "reclaim")] == 1 and job.preemptions == 1 and job.attempts == 1
    # its stopped attempt's report comes: nothing charged, and the executor may take it again
    before = core.usage("borrower", "bob")
    assert _report(core, borrowed, "owned", attempt=1) is None
    assert core.usage("borrower", "bob").cpu_hours == before.cpu_hours
    assert core.job(borrowed).attempts == 1 and core.job(borrowed).state.value == "queued"


def test_a_preempted_task_does_not_go_back_to_that_executor_until_its_stopped_attempt_has_ended():
    core, clock, borrowed = _borrowing("any")
    waiting = core.submit(make_task(coop="owner", cpus=2))
    core.schedule()
    _report(core, waiting.task_id, "owned", attempt=1, outcome="succeeded")  # the owner's task is done at once
    clock.advance(1)
    assert core.schedule() == []  # "owned" is free, but the stopped attempt may still be ending there
    _report(core, borrowed, "owned", attempt=1)  # it has ended
    assert [(p.task_id, p.executor_id, p.attempt) for p in core.schedule()] == [(borrowed, "owned", 2)]


def test_a_lost_stopped_attempts_report_keeps_the_task_off_that_executor_for_a_grace_period_only():
    core, clock, borrowed = _borrowing("any")
    waiting = core.submit(make_task(coop="owner", cpus=2))
    core.schedule()
    _report(core, waiting.task_id, "owned", attempt=1, outcome="succeeded")
    clock.advance(ENDING_GRACE_S + 1)  # no report of the stopped attempt came
    assert [p.task_id for p in core.schedule()] == [borrowed]


def test_preemptions_do_not_spend_a_tasks_retries():
    core, clock, borrowed = _borrowing("any")
    for round_ in range(4):  # more stops than its max_retries (2) allows losses
        waiting = core.submit(make_task(coop="owner", cpus=2))
        core.schedule()
        assert core.job(borrowed).state.value == "queued"
        _report(core, borrowed, "owned", attempt=round_ + 1)
        _report(core, waiting.task_id, "owned", attempt=1, outcome="succeeded")
        clock.advance(1)
        assert [p.task_id for p in core.schedule()] == [borrowed]  # it runs again, attempt round_ + 2
    assert core._jobs[borrowed].preemptions == 4 and core.job(borrowed).attempts == 5
    assert core.requeue(borrowed, "owned", "worker died") is not None  # a real loss still counts
    assert core.job(borrowed).state.value == "queued"


def test_lower_priority_reclaims_only_from_tasks_of_lower_priority():
    core, _, borrowed = _borrowing("lower_priority", priority="high")
    same = core.submit(make_task(coop="owner", cpus=2, priority="high"))
    assert core.schedule() == [] and core.job(borrowed).state.value == "running"  # high is not lower than high
    core.cancel(same.task_id)
    urgent = core.submit(make_task(coop="owner", cpus=2, priority="critical"))
    assert [p.task_id for p in core.schedule()] == [urgent.task_id]
    assert core.job(borrowed).state.value == "queued"


def test_the_fewest_tasks_are_stopped_the_newest_first_and_none_when_that_would_not_make_room():
    core, clock = _coops("any", make_executor("owned", coop="owner", cpus=4, open_to=("*",)))
    old = core.submit(make_task(coop="borrower", member="bob", cpus=1))
    core.schedule()
    clock.advance(10)
    new = core.submit(make_task(coop="borrower", member="bob", cpus=1))
    core.schedule()
    mine = core.submit(make_task(coop="owner", cpus=2))  # 2 free of 4 already: it fits without stopping any
    assert [p.task_id for p in core.schedule()] == [mine.task_id] and core.drain_preempted() == []
    clock.advance(10)
    second = core.submit(make_task(coop="owner", cpus=1))  # full: one stop makes room, the newest
    assert [p.task_id for p in core.schedule()] == [second.task_id]
    assert core.drain_preempted() == [(new.task_id, "owned")] and core.job(old.task_id).state.value == "running"
    too_big = core.submit(make_task(coop="owner", cpus=8))  # no executor of its coop could ever hold it
    assert too_big.admitted is False or core.schedule() == []
    assert core.job(old.task_id).state.value == "running" and core.drain_preempted() == []


def test_an_owners_own_running_tasks_are_never_stopped():
    core, clock = _coops("any", make_executor("owned", coop="owner", cpus=2, open_to=("*",)))
    first = core.submit(make_task(coop="owner", cpus=2, priority="low"))
    core.schedule()
    urgent = core.submit(make_task(coop="owner", cpus=2, priority="critical"))
    assert core.schedule() == [] and core.job(first.task_id).state.value == "running"
    assert core.job(urgent.task_id).state.value == "queued"


def test_placement_order_survives_a_restart_so_a_reclaim_still_stops_the_last_placed_first():
    owner = CoopPolicy.model_validate({**make_policy(coop="owner").model_dump(mode="json"), "reclaim": "any"})
    core, clock = make_core(owner, [make_executor("owned", coop="owner", cpus=2, open_to=("*",))])
    core.set_policy(make_policy(coop="borrower"))
    first, last = (core.submit(make_task(coop="borrower", member="bob", cpus=1, task_id=t)).task_id
                   for t in ("z-first", "a-last"))  # (ids that sort the other way round)
    assert [p.task_id for p in core.schedule()] == [first, last]  # placed at one instant
    again, _ = make_core(None, [])
    for p in core.policies():
        again.set_policy(p)
    again.register_executor(make_executor("owned", coop="owner", cpus=2, open_to=("*",)))
    for t in (first, last):
        again.restore_job(core.job_record(t))
    mine = again.submit(make_task(coop="owner", cpus=1)).task_id
    assert [p.task_id for p in again.schedule()] == [mine] and again.drain_preempted() == [(last, "owned")]
    assert again._jobs[mine].placed_seq == 3  # counting on from the restored ones


def test_a_preempted_job_is_restored_with_its_hold_after_a_restart():
    core, clock, borrowed = _borrowing("any")
    core.submit(make_task(coop="owner", cpus=2))
    core.schedule()
    record = core.job_record(borrowed)
    assert record["ending_on"] == "owned" and record["preemptions"] == 1
    again, _ = make_core(None, [])
    for p in core.policies():
        again.set_policy(p)
    again.register_executor(make_executor("owned", coop="owner", cpus=2, open_to=("*",)))
    again.restore_job(record)
    assert again.job(borrowed).state.value == "queued"
    assert again._jobs[borrowed].ending_on == "owned" and again._jobs[borrowed].preemptions == 1
    assert again.schedule() == []  # "owned" is free here, but the stopped attempt may still be ending there


@pytest.mark.parametrize("value", ["sometimes", True, 1])
def test_a_bad_reclaim_value_is_refused_naming_the_field(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        CoopPolicy(coop_id="owner", reclaim=value)
    assert "reclaim" in str(caught.value)


def test_on_a_full_fleet_only_the_coops_that_reclaim_are_looked_at():
    core, clock, borrowed = _borrowing("any")  # both executors full
    others = core.submit(make_task(coop="borrower", member="bob", cpus=1))  # (its coop does not reclaim)
    reason = core.job(others.task_id).reason
    mine = [core.submit(make_task(coop="owner", cpus=2)) for _ in range(3)]
    placed = core.schedule()
    assert [p.task_id for p in placed] == [mine[0].task_id]  # one reclaim made room for one; the rest wait
    assert core.job(others.task_id).reason == reason and core.drain_preempted() == [(borrowed, "owned")]
    assert core.schedule() == [] and core.drain_preempted() == []  # nothing left to reclaim: nothing stopped


def test_a_retry_that_keeps_off_the_owners_executor_stops_nothing_there():
    core, clock, borrowed = _borrowing("any")
    mine = core.submit(make_task(coop="owner", cpus=2, max_retries=3))
    assert [p.executor_id for p in core.schedule()] == ["owned"] and core.drain_preempted() == [(borrowed, "owned")]
    _report(core, borrowed, "owned", attempt=1)
    core.requeue(mine.task_id, "owned", "worker died")  # the owner's task lost there: its retry prefers others
    assert [p.task_id for p in core.schedule()] == [borrowed]  # the borrower takes the executor back meanwhile
    assert core.schedule() == [] and core.drain_preempted() == []  # the retry does not stop it for an executor
    # it keeps off (it would be placed elsewhere, or wait)


def _ahead_sim(reclaim: str):
    """An owner's executor of 2 CPUs taking one round of work ahead, open to a borrower."""
    owner = CoopPolicy.model_validate({**make_policy(coop="owner").model_dump(mode="json"), "reclaim": reclaim})
    sim = make_sim(owner, [make_executor("owned", coop="owner", cpus=2, open_to=("*",), dispatch_ahead=1)])
    sim.core.set_policy(make_policy(coop="borrower"))
    return sim, owner


def test_on_an_executor_taking_work_ahead_a_reclaiming_owners_task_starts_at_once_not_behind_a_borrower():
    sim, _ = _ahead_sim("any")
    running, second = (sim.submit(make_task(coop="borrower", member="bob", cpus=2), duration_s=600).task_id
                       for _ in range(2))
    sim.step()  # a borrower's task is handed over there only to start at once: the second waits at the head
    assert sim.waiting("owned") == [] and sim.core.job(second).state is JobState.QUEUED
    assert "1 owned by a coop that reclaims its executors take another coop's task only to start at once" in \
        sim.core.job(second).reason
    sim.clock.advance(60)
    mine = sim.submit(make_task(coop="owner", cpus=2), duration_s=60).task_id
    sim.step()  # it stops the borrower's running task and starts now, rather than wait 540 s in the queue
    assert sim.core.job(mine).state is JobState.RUNNING and sim.waiting("owned") == []
    assert [(r.task_id, r.outcome.value, r.ended_at - r.started_at) for r in sim.reports] == \
        [(running, "cancelled", 60.0)]
    sim.run()
    jobs = [sim.core.job(t) for t in (running, second, mine)]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 3
    assert jobs[2].started_at == START + 60 and jobs[2].finished_at == START + 120
    assert sim.core.usage("borrower", "bob").cpu_hours == pytest.approx(2 * 1200 / 3600)  # two full runs only


def test_simulated_executors_stop_what_a_reclaim_preempts_running_or_waiting_in_their_queue():
    sim, owner = _ahead_sim("never")  # borrowed before its owner reclaimed: one runs, one waits in its queue
    running, waiting = (sim.submit(make_task(coop="borrower", member="bob", cpus=2), duration_s=600).task_id
                        for _ in range(2))
    sim.step()
    assert sim.waiting("owned") == [waiting]  # handed ahead: it waits in the executor's own queue
    sim.core.set_policy(owner.model_copy(update={"reclaim": "any"}))
    sim.clock.advance(60)
    mine = sim.submit(make_task(coop="owner", cpus=2), duration_s=60).task_id
    sim.step()  # both stop: the waiting one (it used nothing) would otherwise start before the owner's
    assert sim.waiting("owned") == [] and sim.core.job(mine).state is JobState.RUNNING
    assert sorted((r.task_id, r.outcome.value, r.ended_at - r.started_at) for r in sim.reports) == \
        sorted([(waiting, "cancelled", 0.0), (running, "cancelled", 60.0)])
    sim.run()
    jobs = [sim.core.job(t) for t in (running, waiting, mine)]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 3
    assert jobs[2].started_at == START + 60  # at once
    assert sim.core.usage("borrower", "bob").cpu_hours == pytest.approx(2 * 1200 / 3600)  # two full runs only


def test_a_reclaiming_owner_takes_a_borrowed_executor_before_waiting_in_the_queue_of_its_own_busy_one():
    owner = CoopPolicy.model_validate({**make_policy(coop="owner").model_dump(mode="json"), "reclaim": "any"})
    core, clock = make_core(owner, [make_executor("busy", coop="owner", cpus=2, dispatch_ahead=1),
                                    make_executor("lent", coop="owner", cpus=2, open_to=("*",), dispatch_ahead=1)])
    core.set_policy(make_policy(coop="borrower"))
    own = core.submit(make_task(coop="owner", cpus=2)).task_id
    borrowed = core.submit(make_task(coop="borrower", member="bob", cpus=2)).task_id
    assert {p.task_id: p.executor_id for p in core.schedule()} == {own: "busy", borrowed: "lent"}
    clock.advance(60)
    mine = core.submit(make_task(coop="owner", cpus=2)).task_id
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(mine, "lent")]
    assert core.drain_preempted() == [(borrowed, "lent")]
    assert "handed over ahead" not in core.job(mine).history[-1].message
    again = core.submit(make_task(coop="owner", cpus=2)).task_id  # no borrower left: handed ahead, as ever
    assert [p.task_id for p in core.schedule()] == [again] and "handed over ahead" in core.job(again).history[-1].message
    assert core.drain_preempted() == []
