"""Shadow evaluation of a proposed policy over recent jobs."""

from __future__ import annotations

import datetime as dt

from policies.model import CoopPolicy
from scheduler.executor_spec import ExecutorSpec
from scheduler.ledger import Cost
from scheduler.shadow import shadow_evaluate
from scheduler.tasks import TaskSpec
from tests.builders import START, make_core, make_executor, make_policy, make_task

FLEET = [make_executor("us1", region="us-west", trust=0.9), make_executor("eu1", region="eu-central", trust=0.5)]


def test_shadow_reports_what_a_new_policy_would_change():
    active = make_policy()
    proposed = make_policy(rules=[{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central",
                                   "tags": ["patient-data"]},
                                  {"type": "TaskLimits", "name": "small", "max_cpus": 4}])
    tasks = [(START, make_task(task_id="plain")), (START + 1, make_task(task_id="pd", tags=["patient-data"])),
             (START + 2, make_task(task_id="big", cpus=8))]
    out = {o.task_id: o for o in shadow_evaluate(active, proposed, FLEET, tasks, {})}
    assert out["plain"].change == "unchanged" and out["plain"].after == "placed on us1"
    assert out["pd"].change == "placed elsewhere" and out["pd"].after == "placed on eu1"
    assert out["big"].change == "now refused" and out["big"].after.startswith("refused: small")


def test_shadow_starts_from_real_usage_this_month():
    active = make_policy(cpu_hours_per_month=100.0)
    proposed = make_policy(cpu_hours_per_month=10.0)
    tasks = [(START, make_task(task_id="t", cpus=1, runtime=3600))]
    out = shadow_evaluate(active, proposed, FLEET, tasks, {"alice": Cost.of(cpu_hours=9.5)})
    assert out[0].change == "now refused" and "quota:cpu" in out[0].after


def _at(*ymd_h) -> float:
    return dt.datetime(*ymd_h, tzinfo=dt.timezone.utc).timestamp()


def test_a_job_of_this_month_is_replayed_against_this_months_usage_when_older_jobs_come_first():
    """The members' usage this month used to be booked in the month of the oldest replayed job: with one
    job from last month in the window, this month's jobs were judged against an empty month."""
    coop = "coop:shadow"

    def policy(cpu_hours: float) -> CoopPolicy:
        return CoopPolicy(coop_id=coop, default_quota={"cpu_hours_per_month": cpu_hours, "max_concurrent_tasks": 100})

    def task(task_id: str) -> TaskSpec:
        return TaskSpec(task_id=task_id, coop_id=coop, member="did:icn:alice", resources={"cpus": 1},
                        max_runtime_s=3600)

    executors = [ExecutorSpec(executor_id="e1", coop_id=coop, region="us-west", resources={"cpus": 4})]
    usage = {"did:icn:alice": Cost.of(cpu_hours=50.0)}  # December so far
    december = (_at(2026, 12, 1, 9), task("december-job"))
    both = [(_at(2026, 11, 30, 23), task("november-job")), december]
    for jobs in (both, [december]):
        out = {o.task_id: o for o in shadow_evaluate(policy(1000.0), policy(10.0), executors, jobs, usage,
                                                     now=_at(2026, 12, 1, 12))}
        assert out["december-job"].change == "now refused", out  # 50 used + 1 projected > 10
    assert out["december-job"].after.startswith("refused")


def test_open_jobs_outside_the_replay_still_count_against_the_quota():
    """A dry run used to start from settled usage alone: a member whose older jobs still ran (their
    reservations open) was judged as if those held nothing, so the dry run admitted what the head
    would refuse."""
    core, clock = make_core(make_policy(cpu_hours_per_month=10.0), [make_executor("e", cpus=16)])
    running = core.submit(make_task(task_id="long", cpus=8, runtime=3600))  # holds 8 CPU-hours
    core.schedule()
    other = core.submit(make_task(task_id="other-member", member="bob", cpus=1, runtime=3600))
    held = core.held("coop", clock(), exclude={"replayed"})
    assert running.admitted and other.admitted
    assert held == {"alice": Cost.of(cpu_hours=8.0, credits=8.0), "bob": Cost.of(cpu_hours=1.0, credits=1.0)}
    assert core.held("coop", clock(), exclude={"long"}) == {"bob": Cost.of(cpu_hours=1.0, credits=1.0)}
    replay = [(clock(), make_task(task_id="replayed", cpus=4, runtime=3600))]  # 8 held + 4 > 10
    (outcome,) = shadow_evaluate(make_policy(cpu_hours_per_month=100.0), make_policy(cpu_hours_per_month=10.0),
                                 [make_executor("e", cpus=16)], replay, {}, clock(), held=held)
    assert outcome.change == "now refused" and "quota:cpu" in outcome.after
    (without,) = shadow_evaluate(make_policy(cpu_hours_per_month=100.0), make_policy(cpu_hours_per_month=10.0),
                                 [make_executor("e", cpus=16)], replay, {}, clock())
    assert without.change == "unchanged"
