"""SchedulerCore behaviour: admission outcomes, the queue, placement, completion, cancel, retry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.validation import InvalidRequest
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorStatus
from scheduler.jobs import explain_record
from scheduler.ledger import Cost
from scheduler.queue import ORDER_TTL_S
from scheduler.tasks import JobState
from scheduler.usage import UsageReport
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task

FLEET = [make_executor("us1", region="us-west", cpus=4, trust=0.9),
         make_executor("eu1", region="eu-central", cpus=4, trust=0.6),
         make_executor("eu2", region="eu-central", cpus=4, trust=0.3)]


def report_for(core: SchedulerCore, task_id: str, wall: float, **kw) -> UsageReport:
    job, task = core.job(task_id), core.task(task_id)
    fields = dict(task_id=task_id, executor_id=job.executor_id, coop_id=task.coop_id, member=task.member,
                  started_at=job.started_at, ended_at=job.started_at + wall, cpu_seconds=task.resources.cpus * wall)
    fields.update(kw)
    return UsageReport(**fields)


def test_no_policy_is_a_rejection_that_says_how_to_fix_it():
    core, _ = make_core(None, FLEET)
    d = core.submit(make_task())
    assert not d.admitted and d.code.value == "rejected" and "coopsched policy set" in d.reasons[0].message


def test_nothing_can_ever_fit_counts_what_each_filter_removed():
    fleet = [make_executor(f"us{i}", region="us-west") for i in range(28)] + \
            [make_executor(f"eu{i}", region="eu-central") for i in range(12)]
    policy = make_policy(rules=[{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central"},
                                {"type": "RequireCapability", "capability": "hipaa-compliant", "min_version": "1.0"}])
    core, _ = make_core(policy, fleet)
    d = core.submit(make_task())
    assert not d.admitted and d.code.value == "unavailable"
    assert ("0 of 40 executors fit: 28 outside region eu-central (rule gdpr), "
            "12 lack capability hipaa-compliant>=1.0 (rule RequireCapability)") in d.reasons[0].message


def test_submit_is_idempotent_by_task_id():
    core, _ = make_core(make_policy(cpu_hours_per_month=1.0), FLEET)
    task = make_task(runtime=3600)
    assert core.submit(task).admitted
    assert core.submit(task).admitted  # the same decision, not a second reservation
    assert core.usage("coop", "alice").reserved_cpu_hours == 1.0


def test_concurrency_limit_waits_with_reason_then_runs():
    sim = make_sim(make_policy(max_concurrent_tasks=2), FLEET)
    ids = [sim.submit(make_task(), duration_s=60).task_id for _ in range(3)]
    sim.step()
    third = sim.core.job(ids[2])
    assert third.state is JobState.QUEUED and "max_concurrent_tasks (2)" in third.reason
    sim.run()
    assert all(sim.core.job(i).state is JobState.SUCCEEDED for i in ids)
    assert sim.core.job(ids[2]).started_at == START + 60


def test_waiting_for_capacity_says_why():
    sim = make_sim(make_policy(), FLEET)
    big = [sim.submit(make_task(cpus=4), duration_s=60).task_id for _ in range(4)]
    sim.step()
    waiting = sim.core.job(big[3])
    assert waiting.state is JobState.QUEUED
    assert "waiting for a free executor: 0 of 3 executors fit: 3 busy" in waiting.reason


def test_fair_share_orders_equal_priorities():
    sim = make_sim(make_policy(cpu_hours_per_month=10.0), [make_executor("one", cpus=1)])
    sim.core.ledger.settle("old", "coop", "alice", Cost.of(cpu_hours=5), START)
    a = sim.submit(make_task(member="alice"))
    b = sim.submit(make_task(member="bob"))
    placed = sim.step()
    assert [p.task_id for p in placed] == [b.task_id]  # bob has used less of his share
    assert sim.core.job(a.task_id).state is JobState.QUEUED


def test_small_tasks_pass_a_large_one_that_does_not_fit_yet():
    sim = make_sim(make_policy(), [make_executor("one", cpus=4)])
    sim.submit(make_task(cpus=3), duration_s=100)
    sim.step()
    big = sim.submit(make_task(cpus=4, priority="high"))
    small = sim.submit(make_task(cpus=1))
    placed = sim.step()
    assert [p.task_id for p in placed] == [small.task_id]
    assert sim.core.job(big.task_id).state is JobState.QUEUED


def test_placement_explains_its_choice_with_runners_up():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(hints={"regions": ["eu-central"]}))
    p = sim.step()[0]
    assert p.executor_id == "eu1"  # hint (0.10) outweighs us1's better trust (0.3 x 0.25 = 0.075)
    assert set(p.breakdown) == {"trust", "capacity", "queue", "rtt", "data", "hints"}
    assert p.breakdown["hints"] == pytest.approx(0.10)
    assert abs(sum(p.breakdown.values()) - p.score) < 1e-5
    assert [o.executor_id for o in p.runners_up] == ["us1", "eu2"]
    explained = sim.core.explain(d.task_id)
    assert explained["placement"]["executor_id"] == "eu1" and "runners-up" in explained["summary"]


def test_reused_offers_match_fresh_ones_and_follow_the_fleet():
    """Placement reuses a row's offer while its facts are unchanged; the explanation is the same as
    one computed afresh, changes with the load, and never outlives the executor in that row."""
    def placed_once(core):
        core.submit(make_task())
        p = core.schedule()[0]
        return p, (p.executor_id, p.score, dict(p.breakdown), [(o.executor_id, o.score, dict(o.breakdown))
                                                                for o in p.runners_up])

    core, _ = make_core(make_policy(max_concurrent_tasks=10), FLEET)
    first, explained = placed_once(core)
    core.cancel(first.task_id)
    again, explained_again = placed_once(core)  # the first placement is still running: us1 scores lower now
    fresh, _ = make_core(make_policy(max_concurrent_tasks=10), FLEET)
    _, fresh_first = placed_once(fresh)
    _, fresh_second = placed_once(fresh)
    assert explained == fresh_first and explained_again == fresh_second
    assert explained_again[2] != explained[2] or explained_again[0] != explained[0]
    core.remove_executor("eu2")  # its row is reused by a newcomer with other facts
    core.register_executor(make_executor("ap1", region="ap-south", cpus=4, trust=0.3))
    _, after = placed_once(core)
    assert "eu2" not in {after[0]} | {o[0] for o in after[3]}
    assert "ap1" in {after[0]} | {o[0] for o in after[3]}


def test_placement_is_the_same_when_the_table_grows_under_it():
    """The table keeps views of its live rows; growing its arrays (or adding rows) must not leave
    placement reading stale ones."""
    def placements(capacity: int) -> list[tuple[str, float]]:
        core = SchedulerCore(clock=lambda: START, executor_capacity=capacity)
        core.set_policy(make_policy(max_concurrent_tasks=100))
        out = []
        for i in range(40):
            core.register_executor(make_executor(f"e{i:02d}", cpus=2 + i % 5, trust=0.3 + (i * 7 % 10) / 20))
            core.submit(make_task(cpus=1))
            out += [(p.executor_id, p.score) for p in core.schedule()]
        return out

    grown, roomy = placements(16), placements(1024)
    assert len(grown) == 40 and grown == roomy


def test_data_locality_prefers_the_node_holding_the_bytes():
    sim = make_sim(make_policy(), FLEET)
    sim.core.data_locator.register("genomes", "eu1", 10_000_000)
    sim.core.data_locator.register("genomes", "eu2", 5_000_000)  # half a copy
    sim.submit(make_task(hints={"data": ["genomes"]}))
    p = sim.step()[0]
    assert p.executor_id == "eu1" and p.breakdown["data"] == pytest.approx(0.15)
    assert {o.executor_id: o.breakdown["data"] for o in p.runners_up}["eu2"] == pytest.approx(0.075)


def test_complete_is_idempotent_and_refuses_strangers():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(cpus=2, runtime=1800))
    sim.step()
    report = report_for(sim.core, d.task_id, 900)
    assert sim.core.job(d.task_id).executor_id == "us1"
    assert sim.core.complete(report.model_copy(update={"executor_id": "eu2"})) is None  # not placed there
    assert sim.core.counters.refused_reports["not placed on this executor"] == 1
    first = sim.core.complete(report)
    again = sim.core.complete(report)
    assert first.cpu_hours == again.cpu_hours == 0.5
    assert sim.core.complete(report.model_copy(update={"task_id": "never-submitted"})) is None
    assert sim.core.counters.refused_reports["unknown task"] == 1


def test_a_report_of_an_older_attempt_does_not_settle_the_one_running_now():
    sim = make_sim(make_policy(), [make_executor("only", cpus=4)])
    d = sim.submit(make_task(cpus=1, max_retries=2))
    sim.step()
    first = report_for(sim.core, d.task_id, 60)
    assert sim.core.requeue(d.task_id, "only", "worker restarted") is JobState.QUEUED
    sim.step()  # attempt 2, on the same executor
    assert sim.core.job(d.task_id).attempts == 2
    assert sim.core.complete(first) is None  # attempt 1's report (e.g. replayed) is refused
    assert sim.core.counters.refused_reports["not the current attempt"] == 1
    assert sim.core.job(d.task_id).state is JobState.RUNNING
    assert sim.core.complete(first.model_copy(update={"attempt": 2})).tasks_completed == 1


def test_credits_are_charged_at_the_executor_price():
    sim = make_sim(make_policy(credits_per_month=100), [make_executor("e", price_cpu_hour=3.0)])
    d = sim.submit(make_task(cpus=2, runtime=3600), duration_s=1800)
    assert sim.core.usage("coop", "alice").reserved_credits == 6.0  # 2 cores x 1 h x 3
    sim.run()
    assert sim.core.usage("coop", "alice").credits == 3.0
    assert sim.core.job(d.task_id).charged_credits == 3.0


def test_cancel_queued_releases_and_cancel_running_charges_time_used():
    sim = make_sim(make_policy(max_concurrent_tasks=1), FLEET)
    running = sim.submit(make_task(cpus=2, runtime=3600), duration_s=3600)
    queued = sim.submit(make_task(cpus=2, runtime=3600))
    sim.step()
    assert sim.core.cancel(queued.task_id) is JobState.CANCELLED
    assert sim.core.usage("coop", "alice").reserved_cpu_hours == 2.0
    sim.clock.advance(900)
    sim.cancel(running.task_id)
    job = sim.core.job(running.task_id)
    assert job.state is JobState.CANCELLED and job.charged_cpu_hours == 0.5
    usage = sim.core.usage("coop", "alice")
    assert (usage.cpu_hours, usage.reserved_cpu_hours, usage.running) == (0.5, 0.0, 0)


def test_lost_executor_retries_elsewhere_and_charges_once():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(cpus=4, max_retries=1), duration_s=100)
    first = sim.step()[0].executor_id
    sim.clock.advance(50)
    sim.kill_executor(first)
    sim.run()
    job = sim.core.job(d.task_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2 and job.executor_id != first
    assert sim.core.usage("coop", "alice").cpu_hours == pytest.approx(4 * 100 / 3600, abs=1e-6)
    assert sim.core.usage("coop", "alice").tasks_completed == 1


def test_retries_are_bounded():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(max_retries=1), duration_s=100)
    for _ in range(2):
        sim.step()
        sim.kill_executor(sim.core.job(d.task_id).executor_id)
    job = sim.core.job(d.task_id)
    assert job.state is JobState.FAILED and "gave up after 2 attempts" in job.reason
    assert sim.core.usage("coop", "alice").reserved_cpu_hours == 0.0


def test_drained_and_offline_executors_get_no_new_work():
    sim = make_sim(make_policy(), FLEET)
    sim.core.drain("us1")
    sim.clock.advance(100)
    sim.core.update_executor({"executor_id": "eu2", "queue_depth": 0})
    assert sim.core.mark_offline(stale_after_s=30) == ["eu1"]
    d = sim.submit(make_task())
    assert sim.step()[0].executor_id == "eu2"
    sim.core.update_executor({"executor_id": "eu1"})  # it comes back
    assert [s.value for _, s, _ in sim.core.executors()] == ["active", "active", "draining"]
    assert d.admitted


@pytest.mark.parametrize("bad, field", [
    ({"coop_id": "c", "member": "m", "resources": {"cpus": -2}}, "resources.cpus"),
    ({"coop_id": "c", "member": "m", "priority": "urgent"}, "priority"),
    ({"coop_id": "c", "member": "m", "max_runtime_s": float("nan")}, "max_runtime_s"),
    ({"coop_id": "c", "member": "m", "tags": "gdpr"}, "tags"),
    ({"coop_id": "", "member": "m"}, "coop_id"),
    ({"coop_id": "c", "member": "m", "surprise": 1}, "surprise"),
], ids=["negative-cpus", "unknown-priority", "nan", "bare-string-tags", "empty-coop", "unknown-field"])
def test_bad_task_gets_a_clear_error_and_changes_nothing(bad, field):
    core, _ = make_core(make_policy(), FLEET)
    with pytest.raises(InvalidRequest) as err:
        core.submit(bad)
    text = str(err.value)
    assert text.startswith("invalid task: ") and field in text and "received" in text and "accepted" in text
    assert core.jobs() == [] and sum(core.counters.submitted.values()) == 0


def test_error_message_shows_an_example():
    core, _ = make_core(make_policy(), FLEET)
    with pytest.raises(InvalidRequest, match=r"resources.cpus: received -2; accepted: .*greater than 0; example: 2"):
        core.submit({"coop_id": "c", "member": "m", "resources": {"cpus": -2}})


# --------------------------------------------------------------------------- properties
executor_st = st.builds(dict, region=st.sampled_from(["us-west", "eu-central", "ap-south"]),
                        cpus=st.integers(1, 16), gpus=st.sampled_from([0, 0, 1, 2, 8]),
                        trust=st.floats(0, 1), hipaa=st.sampled_from([None, "0.9", "1.0", "2.3"]),
                        coop=st.sampled_from(["coop", "coop", "other"]))
task_st = st.builds(dict, cpus=st.integers(1, 8), gpus=st.sampled_from([0, 0, 1, 2]),
                    tags=st.sampled_from([(), ("phi",), ("gdpr",), ("phi", "gdpr")]))
POLICY = make_policy(rules=[{"type": "DataSovereignty", "region": "eu-central", "tags": ["gdpr"]},
                            {"type": "RequireCapability", "capability": "hipaa", "min_version": "1.0",
                             "tags": ["phi"]},
                            {"type": "ExecutorFilter", "blacklist": ["e3"]}])


def _fleet(executors):
    return [make_executor(f"e{i}", coop=e["coop"], region=e["region"], cpus=e["cpus"], gpus=e["gpus"],
                          trust=e["trust"], caps={"hipaa": e["hipaa"]} if e["hipaa"] else {})
            for i, e in enumerate(executors)]


@settings(max_examples=80, deadline=None)
@given(executors=st.lists(executor_st, min_size=1, max_size=12), tasks=st.lists(task_st, min_size=1, max_size=20))
def test_placement_only_ever_picks_feasible_executors(executors, tasks):
    fleet = _fleet(executors)
    sim = make_sim(POLICY, fleet)
    free = {e.executor_id: [e.resources.cpus, e.resources.gpus] for e in fleet}
    by_id = {e.executor_id: e for e in fleet}
    for t in tasks:
        sim.submit(make_task(cpus=t["cpus"], gpus=t["gpus"], tags=t["tags"]))
    for p in sim.step():
        e, task = by_id[p.executor_id], p.task
        assert e.coop_id == "coop" and e.executor_id != "e3"
        assert "gdpr" not in task.tags or e.region == "eu-central"
        assert "phi" not in task.tags or e.capabilities.get("hipaa") in ("1.0", "2.3")
        free[e.executor_id][0] -= task.resources.cpus
        free[e.executor_id][1] -= task.resources.gpus
        assert min(free[e.executor_id]) >= 0


@settings(max_examples=30, deadline=None)
@given(executors=st.lists(executor_st, min_size=1, max_size=12), tasks=st.lists(task_st, min_size=1, max_size=20))
def test_decisions_are_deterministic_for_a_fixed_clock_and_input(executors, tasks):
    def run():
        sim = make_sim(POLICY, _fleet(executors))
        decisions = [sim.submit(make_task(task_id=f"x{i}", cpus=t["cpus"], gpus=t["gpus"], tags=t["tags"]))
                     for i, t in enumerate(tasks)]
        return decisions, [(p.task_id, p.executor_id, p.score) for p in sim.step()]
    assert run() == run()


def test_a_restarted_core_takes_back_queued_and_running_jobs():
    """Jobs persisted as records come back: queued ones run, running ones report and are charged once."""
    import json

    sim = make_sim(make_policy(max_concurrent_tasks=1), FLEET)
    running = sim.submit(make_task(cpus=2, runtime=3600), duration_s=600)
    queued = sim.submit(make_task(cpus=2, runtime=3600), duration_s=60)
    sim.step()
    records = [json.loads(json.dumps(sim.core.job_record(t))) for t in sim.core.drain_changed()]
    assert {r["state"] for r in records} == {"running", "queued"}

    restarted = SchedulerCore(clock=sim.clock, ledger=sim.core.ledger)  # the ledger is the shared store's
    restarted.set_policy(make_policy(max_concurrent_tasks=1))
    for e in FLEET:
        restarted.register_executor(e)
    for r in records:
        restarted.restore_job(r)
    assert restarted.schedule() == []  # the member is still at max_concurrent_tasks
    job = restarted.job(running.task_id)
    sim.clock.advance(600)
    report = UsageReport(task_id=running.task_id, executor_id=job.executor_id, coop_id="coop", member="alice",
                         started_at=job.started_at, ended_at=job.started_at + 600, cpu_seconds=1200)
    assert restarted.complete(report).cpu_hours == pytest.approx(1 / 3)
    assert restarted.complete(report).cpu_hours == pytest.approx(1 / 3)  # resent: charged once
    placed = restarted.schedule()
    assert [p.task_id for p in placed] == [queued.task_id] and placed[0].attempt == 1


@settings(max_examples=40, deadline=None)
@given(executors=st.lists(executor_st, min_size=1, max_size=8), tasks=st.lists(task_st, min_size=1, max_size=20),
       drained=st.lists(st.integers(0, 7), max_size=3))
def test_the_table_counts_executors_with_free_cpu_exactly(executors, tasks, drained):
    """The incremental count that lets a full fleet skip the queue walk matches a full scan."""
    sim = make_sim(POLICY, _fleet(executors))
    for i in drained:
        if i < len(executors):
            sim.core.drain(f"e{i}")
    if executors:  # re-registering keeps the load: the count must follow
        sim.core.register_executor(sim.core.table.spec("e0").model_copy(update={"trust": 0.99}))
    for t in tasks:
        sim.submit(make_task(cpus=t["cpus"], gpus=t["gpus"], tags=t["tags"]), duration_s=10)
    for _ in range(3):
        sim.step()
        table = sim.core.table
        scan = int(((table.free_cpus[:table.n] > 1e-9) & table.usable_mask()).sum())
        assert table.free_count == scan
        sim.core.register_executor(sim.core.table.spec("e0").model_copy(update={"trust": 0.5}))
        assert table.free_count == int(((table.free_cpus[:table.n] > 1e-9) & table.usable_mask()).sum())
        sim.clock.advance(10)
        sim.run(until=sim.clock())


def test_a_finished_job_can_be_forgotten_and_explained_from_its_record():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(hints={"regions": ["eu-central"]}))
    sim.step()
    core = sim.core
    held = core.jobs_in_memory()
    core.drain_changed()  # persisted (as the head does before forgetting)
    assert not core.forget(d.task_id)  # running: kept
    core.complete(report_for(core, d.task_id, 60))
    assert not core.forget(d.task_id)  # finished but not persisted yet: kept
    core.drain_changed()
    record, explained = core.job_record(d.task_id), core.explain(d.task_id)
    assert core.forget(d.task_id) and core.jobs_in_memory() == held - 1
    assert core.job(d.task_id) is None and core.explain(d.task_id) is None and not core.forget(d.task_id)
    assert explain_record(record) == explained
    assert explain_record({**record, "placement": None})["summary"] == record["status"]["reason"]


def test_a_drained_executor_stays_drained_when_its_worker_is_lost_and_reports_again():
    core, _ = make_core(make_policy(), [make_executor("a", cpus=4), make_executor("b", cpus=4)])
    core.drain("a")
    core.executor_lost("a", "worker restarted")
    core.update_executor({"executor_id": "a"})  # its restarted worker's heartbeat
    assert core.table.status_of("a") is ExecutorStatus.DRAINING


def test_a_drained_executor_stays_drained_when_registered_again_with_a_new_trust():
    core, _ = make_core(make_policy(), [make_executor("a", cpus=4)])
    core.drain("a")
    core.register_executor(make_executor("a", cpus=4, trust=0.9))  # what head.set_trust does
    assert core.table.status_of("a") is ExecutorStatus.DRAINING
    core.submit(make_task())
    assert core.schedule() == []


def test_a_permissive_task_whose_constrained_executors_left_is_placed_without_the_constraint():
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]}]
    core, _ = make_core(make_policy(rules=rules, mode="permissive"),
                        [make_executor("eu1", region="eu-central", cpus=1), make_executor("us1", cpus=4)])
    core.submit(make_task(cpus=1, tags=["patient-data"]))
    core.schedule()  # eu1 is full now
    waiting = make_task(cpus=1, tags=["patient-data"])
    assert core.submit(waiting).admitted and core.schedule() == []  # it waits for eu1
    core.remove_executor("eu1")
    placed = {p.task_id: p for p in core.schedule()}
    assert placed[waiting.task_id].executor_id == "us1" and placed[waiting.task_id].relaxed == ("gdpr",)
    status = core.job(waiting.task_id)
    assert status.state is JobState.RUNNING
    assert any("placed without them" in e.message for e in status.history)
    # counted as admission counts a relaxation: this task and the one requeued from eu1
    assert core.counters.violations[("coop", "placement", "permissive")] == 2
    assert ("coop", "gdpr", "permissive") not in core.counters.violations


def test_a_strict_task_whose_constrained_executors_left_is_still_refused():
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]}]
    core, _ = make_core(make_policy(rules=rules), [make_executor("eu1", region="eu-central", cpus=1),
                                                   make_executor("us1", cpus=4)])
    core.submit(make_task(cpus=1, tags=["patient-data"]))
    core.schedule()
    waiting = make_task(cpus=1, tags=["patient-data"])
    assert core.submit(waiting).admitted
    core.remove_executor("eu1")
    core.schedule()
    assert core.job(waiting.task_id).state is JobState.REJECTED  # strict: the region rule holds


def test_a_retry_of_a_task_relaxed_late_is_retried_not_refused():
    """A permissive task placed without its constraints (its eu executor left after admission), then lost,
    was refused ("no registered executor can ever run this task"): its retry started from the strict
    requirements while it counted as relaxed already. It is retried elsewhere, as any lost task."""
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]}]
    core, _ = make_core(make_policy(rules=rules, mode="permissive"),
                        [make_executor("eu1", region="eu-central", cpus=1),
                         make_executor("us1", cpus=1, trust=0.9), make_executor("us2", cpus=1, trust=0.1)])
    t = make_task(cpus=1, tags=["patient-data"], max_retries=2)
    assert core.submit(t).admitted
    core.remove_executor("eu1")
    [p] = core.schedule()
    assert p.executor_id == "us1" and p.relaxed == ("gdpr",)
    assert core.executor_lost("us1", "worker died") == [t.task_id]
    placed = core.schedule()
    assert core.job(t.task_id).state is JobState.RUNNING, core.job(t.task_id).reason
    assert [x.executor_id for x in placed] == ["us2"]


@pytest.mark.parametrize("step_s", [ORDER_TTL_S + 0.01, -5.0], ids=["after-the-refresh", "clock-stepped-back"])
def test_the_fair_share_order_follows_usage_once_standings_are_refreshed(step_s):
    """Equal priorities: once alice has used quota and bob has not, bob's task goes first. Standings are
    refreshed at most every ORDER_TTL_S; a clock stepped back used to keep the old order until it caught up."""
    t = [START]
    core = SchedulerCore(clock=lambda: t[0])
    core.set_policy(make_policy(cpu_hours_per_month=10.0))
    core.register_executor(make_executor("one", cpus=2))
    a1 = make_task(member="alice", cpus=1)
    core.submit(a1)
    assert [p.task_id for p in core.schedule()] == [a1.task_id]
    a2, b1 = make_task(member="alice", cpus=2), make_task(member="bob", cpus=2)
    core.submit(a2)
    core.submit(b1)
    assert core.schedule() == []  # neither fits beside a1: both wait (the order is computed here)
    job = core.job(a1.task_id)
    core.complete(UsageReport(task_id=a1.task_id, executor_id="one", coop_id=a1.coop_id, member="alice",
                              started_at=job.started_at, ended_at=job.started_at + 0.5, cpu_seconds=0.5))
    t[0] += step_s
    assert [p.task_id for p in core.schedule()] == [b1.task_id]


def test_queued_tasks_of_a_coop_whose_policy_was_removed_wait_until_one_is_set():
    """They ran one at a time per member (an undocumented default); now they wait, saying why, and start
    once a policy is set again."""
    core, _ = make_core(make_policy(max_concurrent_tasks=10), [make_executor("e", cpus=1)])
    running, waiting = make_task(cpus=1), make_task(cpus=1)
    core.submit(running)
    core.submit(waiting)
    assert [p.task_id for p in core.schedule()] == [running.task_id]
    core.remove_policy("coop")
    core.complete(UsageReport(task_id=running.task_id, executor_id="e", coop_id="coop", member="alice",
                              started_at=START, ended_at=START + 1, cpu_seconds=1.0))
    assert core.schedule() == []
    assert "has no scheduling policy" in core.job(waiting.task_id).reason
    core.set_policy(make_policy(max_concurrent_tasks=10))
    assert [p.task_id for p in core.schedule()] == [waiting.task_id]


def test_within_a_coop_the_multiplier_still_orders_its_members():
    core, _ = make_core()
    core.set_policy(make_policy(rules=[{"type": "MemberPriority", "member": "bob", "multiplier": 3.0}]))
    core.register_executor(make_executor("e1", cpus=1))
    alice_high = core.submit(make_task(member="alice", priority="high"))  # 3
    bob_normal = core.submit(make_task(member="bob", priority="normal"))  # 2 x 3 = 6
    assert alice_high.admitted and bob_normal.admitted
    (placed,) = core.schedule()
    assert placed.task_id == bob_normal.task_id


def test_permissive_warnings_are_in_the_history_of_a_deferred_job():
    policy = make_policy(mode="permissive", rules=[
        {"type": "TimeWindow", "allowed_hours": [22, 23, 0, 1, 2, 3, 4, 5], "action": "defer"},
        {"type": "TaskLimits", "name": "small", "max_cpus": 2}])
    core, _ = make_core(policy, [make_executor("e1", cpus=8)])
    d = core.submit(make_task(cpus=4))
    assert d.admitted and d.not_before is not None and [w.source for w in d.warnings] == ["small"]
    history = " | ".join(e.message for e in core.job(d.task_id).history)
    assert "held by a time window" in history and "per-task limits" in history


def test_a_heartbeat_made_before_the_executor_was_declared_offline_does_not_bring_it_back():
    """Delivered late (a busy head, a slow network): no sign of life since the head gave up on it."""
    core, clock = make_core(make_policy(), [make_executor("e1", cpus=1)])
    sent = clock()
    core.update_executor({"executor_id": "e1", "sent_at": sent})
    clock.advance(10)
    assert core.mark_offline(stale_after_s=5) == ["e1"]
    core.update_executor({"executor_id": "e1", "sent_at": sent + 1})  # made before the head's decision
    assert core.table.status_of("e1") is ExecutorStatus.OFFLINE
    core.update_executor({"executor_id": "e1", "sent_at": clock() + 0.1})  # a fresh one
    assert core.table.status_of("e1") is ExecutorStatus.ACTIVE
    core.executor_lost("e1", "worker died")
    core.update_executor({"executor_id": "e1"})  # without sent_at (an older worker): taken as fresh
    assert core.table.status_of("e1") is ExecutorStatus.ACTIVE


def test_a_heartbeat_made_before_an_offline_executor_was_declared_lost_does_not_bring_it_back():
    core, clock = make_core(make_policy(), [make_executor("e1", cpus=1)])
    core.update_executor({"executor_id": "e1", "sent_at": clock()})
    clock.advance(10)
    assert core.mark_offline(stale_after_s=5) == ["e1"]
    made = clock() + 1
    clock.advance(5)
    core.executor_lost("e1", "worker died")  # given up on again, later
    core.update_executor({"executor_id": "e1", "sent_at": made})
    assert core.table.status_of("e1") is ExecutorStatus.OFFLINE


def test_a_worker_whose_clock_runs_behind_comes_back_with_its_first_fresh_heartbeat():
    core, clock = make_core(make_policy(), [make_executor("e1", cpus=1)])
    lag = 30.0  # the worker's clock is 30 s behind the head's
    core.update_executor({"executor_id": "e1", "sent_at": clock() - lag})
    clock.advance(10)
    assert core.mark_offline(stale_after_s=5) == ["e1"]
    clock.advance(1)
    core.update_executor({"executor_id": "e1", "sent_at": clock() - lag})  # fresh, by its own clock
    assert core.table.status_of("e1") is ExecutorStatus.ACTIVE


def test_a_core_rebuilt_from_the_store_keeps_when_executors_were_given_up_on():
    core, clock = make_core(make_policy(), [make_executor("e1", cpus=1)])
    made = clock()
    core.update_executor({"executor_id": "e1", "sent_at": made})
    clock.advance(10)
    core.mark_offline(stale_after_s=5)
    rebuilt = SchedulerCore(clock=clock)
    rebuilt.set_policy(make_policy())
    rebuilt.register_executor(make_executor("e1", cpus=1))
    rebuilt.table.set_status("e1", ExecutorStatus.OFFLINE)
    rebuilt.carry_over(core)
    rebuilt.update_executor({"executor_id": "e1", "sent_at": made + 1})  # late, from before
    assert rebuilt.table.status_of("e1") is ExecutorStatus.OFFLINE


def test_tasks_other_head_replicas_run_count_against_the_concurrency_limit_asked_once_a_round():
    asked = []

    def elsewhere(coop_id: str, member: str) -> int:  # what a head on a shared store answers: one runs elsewhere
        asked.append((coop_id, member))
        return 1
    core, _ = make_core(make_policy(max_concurrent_tasks=2), FLEET)
    core.running_elsewhere = elsewhere
    ids = [core.submit(make_task()).task_id for _ in range(3)]
    core.schedule()
    assert [core.job(i).state for i in ids] == [JobState.RUNNING, JobState.QUEUED, JobState.QUEUED]
    assert "max_concurrent_tasks (2); 1 of them placed by other head replicas" in core.job(ids[1]).reason
    assert asked == [("coop", "alice")]  # once for the member in the round, not once per task
    fresh, _ = make_core(make_policy(max_concurrent_tasks=2), FLEET)  # (no replicas: the core's own count)
    assert fresh.running_elsewhere is None
