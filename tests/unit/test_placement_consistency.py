"""Placement says one thing everywhere: the score and its breakdown, admission and the scheduler on whether
a task could ever run, the explanation and the placement. Found by a differential test of the core against
a plain model over random interleavings of registrations, heartbeats, drains, losses and submissions."""

from __future__ import annotations

from scheduler.placement import explain_no_fit
from scheduler.tasks import JobState
from tests.builders import make_core, make_executor, make_policy, make_task


def test_a_hint_naming_an_executor_twice_counts_twice_and_the_breakdown_disagrees_with_the_score():
    """The hint bonus was added once per occurrence in hints.executors but explained once per executor: a
    member who repeated an executor id bought more than the hints weight (1,024 repeats: +102.4), and the
    explanation's parts no longer added up to the score. Hints are deduplicated as they are read."""
    core, _ = make_core(make_policy(), [make_executor("e0", trust=0.1), make_executor("e1", trust=0.5)])
    once = make_task(hints={"executors": ["e0"]})
    twice = make_task(hints={"executors": ["e0", "e0"]})
    core.submit(once)
    core.submit(twice)
    p_once, p_twice = sorted(core.schedule(), key=lambda p: p.task_id)
    assert abs(sum(p_twice.breakdown.values()) - p_twice.score) < 1e-9, (p_twice.breakdown, p_twice.score)


def test_a_hint_repeated_many_times_outweighs_everything_else():
    core, _ = make_core(make_policy(), [make_executor("good", trust=1.0), make_executor("bad", trust=0.0, rtt_ms=5000)])
    core.submit(make_task(hints={"executors": ["bad"] * 20}))
    (p,) = core.schedule()
    # a hint is worth at most the hints weight (0.10): "bad" (0.25 + 0.15·0.01 behind on trust and RTT) must not win
    assert p.executor_id == "good", p.explain()


def test_set_trust_keeps_the_load_the_worker_reported():
    """set_trust (ExecutorTable.update_spec: remove + add) reset the queue depth, GPU use and RTT the last
    heartbeat reported: a busy, distant executor scored as idle and near until its next heartbeat."""
    core, _ = make_core(make_policy(), [make_executor("busy"), make_executor("idle")])
    core.update_executor({"executor_id": "busy", "queue_depth": 50, "rtt_ms": 2000.0})
    table = core.table
    row = table.rows["busy"]
    before = (table.reported_queue[row], table.rtt_ms[row], table.features(row))
    core.set_trust("busy", 0.5)  # the same trust it had
    row = table.rows["busy"]
    after = (table.reported_queue[row], table.rtt_ms[row], table.features(row))
    assert after == before


def test_set_trust_to_the_same_value_changes_where_the_next_task_goes():
    core, _ = make_core(make_policy(), [make_executor("busy"), make_executor("idle")])
    core.update_executor({"executor_id": "busy", "queue_depth": 50})
    core.set_trust("busy", 0.5)  # unchanged trust
    core.submit(make_task())
    (p,) = core.schedule()
    assert p.executor_id == "idle", p.explain()


def test_explain_no_fit_calls_an_executor_busy_for_a_resource_the_task_does_not_ask_for():
    """explain_no_fit's "busy" filter compared all four free columns, even those the task asks none of, while
    fit_mask skips them: after an executor re-registered with fewer GPUs than its tasks hold, a CPU-only
    task was explained as "0 of 1 executors fit: 1 busy" and yet placed there at once."""
    core, _ = make_core(make_policy(), [make_executor("e0", cpus=8, gpus=2)])
    core.submit(make_task(cpus=1, gpus=2))
    assert len(core.schedule()) == 1
    core.register_executor(make_executor("e0", cpus=8, gpus=1))  # re-registered with one GPU fewer
    cpu_only = make_task(cpus=1)
    core.submit(cpu_only)
    message, _ = explain_no_fit(core.table, core.queue.get(cpu_only.task_id).requirements)
    placed = core.schedule()
    assert [p.executor_id for p in placed] == ["e0"]  # it did fit
    assert message.startswith("1 of 1 executor fit"), message


def test_an_executor_briefly_offline_at_admission_drops_a_permissive_coops_data_sovereignty():
    """Admission judged "could it ever run" over active executors only, the scheduler over every registered
    one: a gdpr task queued before the eu executor missed a heartbeat waited for it, but one submitted
    during the gap was admitted without its region constraint and ran in us. Both count every registered
    executor now (drained and offline ones come back)."""
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["gdpr"]}]
    core, clock = make_core(make_policy(rules=rules, mode="permissive"),
                            [make_executor("eu-1", region="eu-central"), make_executor("us-1", region="us-west")])
    clock.advance(120)
    core.update_executor({"executor_id": "us-1"})
    assert core.mark_offline(60) == ["eu-1"]  # one missed heartbeat
    task = make_task(tags=["gdpr"])
    core.submit(task)
    placed = core.schedule()
    assert [p.executor_id for p in placed] != ["us-1"], placed[0].explain()


def test_strict_admission_calls_a_task_impossible_while_its_executor_is_only_offline():
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["gdpr"]}]
    core, clock = make_core(make_policy(rules=rules), [make_executor("eu-1", region="eu-central"),
                                                       make_executor("us-1", region="us-west")])
    queued_before = make_task(tags=["gdpr"])
    core.submit(queued_before)  # admitted while eu-1 was active (not scheduled yet)
    core.executor_lost("eu-1", "worker restarted")  # offline until it reports again
    core.schedule()
    assert core.state_of(queued_before.task_id) is JobState.QUEUED  # schedule(): it may run here later
    decision = core.submit(make_task(tags=["gdpr"]))
    assert decision.admitted, decision.reasons[0].message  # admission: "no registered executor can ever run"
