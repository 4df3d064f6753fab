"""What a member is charged: never more than admission reserved, for the runtime it was admitted with;
and the two ledgers agree on every standing.

Findings of a review of the accounting, each closed (the strict-mode promise: admitted projected usage,
and so what is settled, never passes a limit)."""

from __future__ import annotations

import itertools

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from executors.simulated import SimulatedRun
from scheduler.ledger import Cost, Ledger, period_of
from scheduler.sqlite_store import SqliteStore
from scheduler.tasks import JobState
from scheduler.store_ledger import StoreLedger
from scheduler.usage import Outcome
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task

_stores = itertools.count()


def _finish(core, task_id, wall, outcome="succeeded"):
    job = core.job(task_id)
    cpus = core.task(task_id).resources.cpus
    return core.complete({"task_id": task_id, "executor_id": job.executor_id, "coop_id": "coop",
                          "member": "alice", "started_at": job.started_at, "ended_at": job.started_at + wall,
                          "cpu_seconds": cpus * wall, "attempt": job.attempts, "outcome": outcome})


def test_a_dearer_executor_joining_after_admission_cannot_push_credits_past_a_strict_limit():
    core, clock = make_core(make_policy(credits_per_month=10.0), [make_executor("cheap", cpus=1, price_cpu_hour=1.0)])
    first, second = core.submit(make_task(cpus=1, runtime=3600)), core.submit(make_task(cpus=1, runtime=3600))
    assert first.admitted and second.admitted
    core.schedule()
    core.register_executor(make_executor("dear", cpus=1, price_cpu_hour=100.0))
    assert [p.executor_id for p in core.schedule()] == ["dear"]
    _finish(core, second.task_id, 3600)
    _finish(core, first.task_id, 3600)
    assert core.ledger.standing("coop", "alice", clock()).used.credit_amount <= 10.0
    assert "capped at what admission reserved" in core.job(second.task_id).reason


def test_an_executor_raising_its_price_after_admission_cannot_push_credits_past_a_strict_limit():
    core, clock = make_core(make_policy(credits_per_month=10.0), [make_executor("e", cpus=1, price_cpu_hour=1.0)])
    d = core.submit(make_task(cpus=1, runtime=3600))
    assert d.admitted
    core.register_executor(make_executor("e", cpus=1, price_cpu_hour=100.0))
    core.schedule()
    _finish(core, d.task_id, 3600)
    assert core.ledger.standing("coop", "alice", clock()).used.credit_amount == 1.0


def test_a_timeout_reported_just_past_max_runtime_is_charged_the_limit_not_more():
    core, clock = make_core(make_policy(cpu_hours_per_month=1.0, gpu_hours_per_month=None),
                            [make_executor("e", cpus=4)])
    d = core.submit(make_task(cpus=4, runtime=900))
    assert d.admitted
    core.schedule()
    _finish(core, d.task_id, 900.5, outcome=Outcome.TIMEOUT.value)  # the kill landed half a second late
    assert core.ledger.standing("coop", "alice", clock()).used.cpu_hours == 1.0


def test_a_shorter_run_is_charged_what_it_used():
    core, clock = make_core(make_policy(), [make_executor("e", cpus=2, price_cpu_hour=3.0)])
    d = core.submit(make_task(cpus=2, runtime=3600))
    core.schedule()
    _finish(core, d.task_id, 900)
    used = core.ledger.standing("coop", "alice", clock()).used
    assert (used.cpu_hours, used.credit_amount) == (0.5, 1.5)


def test_raising_the_default_runtime_while_a_task_waits_does_not_let_it_run_past_what_was_reserved():
    sim = make_sim(make_policy(cpu_hours_per_month=1.0, gpu_hours_per_month=None, default_max_runtime_s=600),
                   [make_executor("e", cpus=1)])
    blocker = sim.submit(make_task(cpus=1, runtime=600), SimulatedRun(duration_s=600))
    d = sim.submit(make_task(cpus=1, runtime=None), SimulatedRun(duration_s=7200))  # projected at 600 s
    assert blocker.admitted and d.admitted
    assert sim.core.task(d.task_id).max_runtime_s is None  # the task stays as the member sent it ...
    assert sim.core.runtime_limit(d.task_id) == 600  # ... and the runtime it was admitted with is its limit
    sim.step()
    sim.core.set_policy(make_policy(cpu_hours_per_month=1.0, gpu_hours_per_month=None, default_max_runtime_s=7200))
    sim.run()
    job = sim.core.job(d.task_id)  # stopped at the 600 s it was admitted with, not run for 7,200 s
    assert job.state is JobState.TIMEOUT and job.wall_seconds == pytest.approx(600)
    assert job.charged_cpu_hours == pytest.approx(600 / 3600, abs=1e-5)


def test_a_zero_gpu_quota_refuses_a_gpu_task_however_short_its_max_runtime():
    core, _ = make_core(make_policy(gpu_hours_per_month=0.0), [make_executor("g", cpus=8, gpus=8)])
    d = core.submit(make_task(cpus=1, gpus=8, runtime=0.0002))  # 4.4e-7 GPU-h: rounded up to one unit
    assert not d.admitted


def test_projections_round_up_and_measurements_round_to_nearest():
    assert Cost.projected(1e-9, 0.0, 0.0) == Cost(1, 0, 0)
    assert Cost.of(1e-9, 0.0, 0.0) == Cost(0, 0, 0)
    assert Cost.projected(0.5, 0.0, 2.0) == Cost.of(0.5, 0.0, 2.0)


costs = st.builds(Cost, st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7))
limits = st.one_of(st.none(), st.builds(Cost, st.integers(-1, 3 * 10**7), st.integers(-1, 3 * 10**7),
                                        st.integers(-1, 3 * 10**7)))
ops = st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release", "month", "reset"]),
                         st.sampled_from(["t0", "t1", "t2", "t3"]), st.sampled_from(["a", "b"]), costs, limits),
               max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_the_memory_and_sqlite_ledgers_agree_on_every_standing(ops):
    mem, store = Ledger(), StoreLedger(SqliteStore(f"memory://parity{next(_stores)}"))
    now = START
    for op, task, member, cost, lim in ops:
        if op == "reserve":
            assert mem.reserve(task, "c", member, cost, now, lim) == store.reserve(task, "c", member, cost, now, lim)
        elif op == "settle":
            assert mem.settle(task, "c", member, cost, now) == store.settle(task, "c", member, cost, now)
        elif op == "release":
            assert mem.release(task) == store.release(task)
        elif op == "reset":
            mem.reset("c", member, now)
            store.reset("c", member, now)
        else:
            now += 20 * 86400
        for m in ("a", "b"):
            for t in (START, now):
                assert mem.standing("c", m, t) == store.standing("c", m, t), (op, m, period_of(t))


def test_projections_of_whole_amounts_are_not_rounded_up_by_float_noise():
    for cpus, runtime, quota in ((3, 360, 0.3), (6, 360, 0.6)):  # 3 x 360 s is 0.30000000000000004 CPU-h
        core, _ = make_core(make_policy(cpu_hours_per_month=quota), [make_executor("e1", cpus=8)])
        assert core.submit(make_task(cpus=cpus, runtime=runtime)).admitted


def test_the_admitted_default_runtime_survives_a_restore_and_a_dry_run_sees_the_task_as_sent():
    from scheduler.shadow import shadow_evaluate
    from scheduler.tasks import TaskSpec
    active, executors = make_policy(default_max_runtime_s=3600), [make_executor("e1", cpus=8)]
    core, _ = make_core(active, executors)
    d = core.submit(make_task(runtime=None))
    record = core.job_record(d.task_id)
    assert record["task"]["max_runtime_s"] is None and record["runtime_s"] == 3600
    later, _ = make_core(make_policy(default_max_runtime_s=60), executors)
    later.restore_job(record)
    assert later.runtime_limit(d.task_id) == 3600
    proposed = make_policy(default_max_runtime_s=600, rules=[{"type": "TaskLimits", "max_runtime_s": 600}])
    (outcome,) = shadow_evaluate(active, proposed, executors, [(START, TaskSpec(**record["task"]))], {}, START)
    assert outcome.change == "unchanged"
