"""Owners first: on executors open to other coops, the owner's waiting tasks have first claim.

One queue orders every coop's tasks by effective priority, and each coop's admins set their own
MemberPriority multipliers (up to 100x). Before, a borrower's boosted ``low`` task could take the
owner's executor ahead of the owner's ``critical`` one; now each scheduling round first places every
task on its own coop's executors (in queue order), then what is left on any executor it may use.
"""

from __future__ import annotations

import pytest

import scheduler.scheduling_round as scheduling_round
from scheduler.tasks import JobState
from tests.builders import make_core, make_executor, make_policy, make_task


def _coops(*executors):
    core, clock = make_core(make_policy(coop="owner"), list(executors))
    core.set_policy(make_policy(coop="borrower", rules=[{"type": "MemberPriority", "member": "bob",
                                                         "multiplier": 100.0}]))
    return core, clock


def test_a_borrowers_boosted_task_does_not_take_the_owners_executor_from_its_critical_task():
    core, _ = _coops(make_executor("owned", coop="owner", cpus=1, open_to=("*",)))
    boosted = core.submit(make_task(coop="borrower", member="bob", priority="low", cpus=1))
    critical = core.submit(make_task(coop="owner", member="alice", priority="critical", cpus=1))
    assert boosted.effective_priority > critical.effective_priority  # first in the queue
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(critical.task_id, "owned")]
    assert core.job(boosted.task_id).state.value == "queued"


def test_a_borrower_still_uses_what_the_owner_leaves_idle():
    core, _ = _coops(make_executor("owned", coop="owner", cpus=2, open_to=("borrower",)))
    mine = core.submit(make_task(coop="owner", cpus=1))
    theirs = core.submit(make_task(coop="borrower", member="bob", cpus=1))
    placed = {p.task_id: p.executor_id for p in core.schedule()}
    assert placed == {mine.task_id: "owned", theirs.task_id: "owned"}


def test_a_task_takes_its_own_coops_executor_before_a_better_scored_borrowed_one():
    core, _ = _coops(make_executor("own-low-trust", coop="borrower", cpus=1, trust=0.1),
                     make_executor("owner-high-trust", coop="owner", cpus=1, trust=1.0, open_to=("*",)))
    d = core.submit(make_task(coop="borrower", member="bob", cpus=1))
    (p,) = core.schedule()
    assert (p.task_id, p.executor_id) == (d.task_id, "own-low-trust")
    d2 = core.submit(make_task(coop="borrower", member="bob", cpus=1))  # its own is full: it borrows
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(d2.task_id, "owner-high-trust")]


def test_an_owners_task_at_its_members_limit_leaves_the_executor_to_the_borrower():
    core, _ = make_core(make_policy(coop="owner", max_concurrent_tasks=1),
                        [make_executor("owned", coop="owner", cpus=2, open_to=("*",))])
    core.set_policy(make_policy(coop="borrower"))
    first = core.submit(make_task(coop="owner", cpus=1))
    core.schedule()
    waiting = core.submit(make_task(coop="owner", priority="critical", cpus=1))
    theirs = core.submit(make_task(coop="borrower", member="bob", priority="low", cpus=1))
    assert [p.task_id for p in core.schedule()] == [theirs.task_id]
    assert "max_concurrent_tasks" in core.job(waiting.task_id).reason
    assert core.job(first.task_id).state.value == "running"


# ----------------------------------------------------------------------------- found by a review of the first version
GDPR = [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]}]


@pytest.mark.parametrize("open_to", [(), ("coop",)], ids=["not-shared", "open-to-its-own-coop-only"])
def test_an_executor_open_to_its_own_coop_only_schedules_as_one_not_shared(open_to):
    """open_to naming only the owner shares nothing, so the round must be the one of a fleet that shares
    nothing: the higher-priority task whose constraints now exclude every executor is relaxed and placed
    at its place in the queue, before a lower-priority task takes the executor."""
    core, _ = make_core(make_policy(rules=GDPR, mode="permissive"),
                        [make_executor("eu1", region="eu-central", cpus=1), make_executor("us1", cpus=1, open_to=open_to)])
    waiting = make_task(cpus=1, tags=["patient-data"], priority="high")
    assert core.submit(waiting).admitted
    core.remove_executor("eu1")
    later = make_task(cpus=1, priority="low")
    assert core.submit(later).admitted
    placed = {p.task_id: p.executor_id for p in core.schedule()}
    assert placed == {waiting.task_id: "us1"}
    assert core.job(later.task_id).state is JobState.QUEUED


def test_a_boosted_borrower_does_not_take_the_owners_executor_from_the_owners_relaxed_task():
    """The stated intent, for a relaxed task: the owner's critical task, whose eu executor left, could run on
    the owner's us executor this round (permissive: placed without the constraint); the borrower's boosted
    task must not take it (both ended up in the borrowing pass, where the boosted task comes first)."""
    core, _ = make_core(make_policy(coop="owner", rules=GDPR, mode="permissive"),
                        [make_executor("eu1", coop="owner", region="eu-central", cpus=1),
                         make_executor("owned", coop="owner", cpus=1, open_to=("*",))])
    core.set_policy(make_policy(coop="borrower", rules=[{"type": "MemberPriority", "member": "bob",
                                                         "multiplier": 100.0}]))
    critical = make_task(coop="owner", cpus=1, tags=["patient-data"], priority="critical")
    assert core.submit(critical).admitted
    core.remove_executor("eu1")
    boosted = core.submit(make_task(coop="borrower", member="bob", priority="low", cpus=1))
    assert boosted.effective_priority > core.job(critical.task_id).effective_priority  # (first in the queue)
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(critical.task_id, "owned")]
    assert core.job(boosted.task_id).state is JobState.QUEUED


def test_a_relaxed_task_prefers_its_own_coops_executor_over_a_better_scored_borrowed_one():
    core, _ = make_core(make_policy(coop="a", rules=GDPR, mode="permissive"),
                        [make_executor("eu1", coop="a", region="eu-central", cpus=1),
                         make_executor("a-us", coop="a", cpus=1, trust=0.1),
                         make_executor("b-us", coop="b", cpus=1, trust=1.0, open_to=("*",))])
    t = make_task(coop="a", cpus=1, tags=["patient-data"])
    assert core.submit(t).admitted
    core.remove_executor("eu1")
    [p] = core.schedule()
    assert (p.task_id, p.executor_id, p.relaxed) == (t.task_id, "a-us", ("gdpr",))


def test_a_strict_task_that_can_never_run_is_refused_even_when_owners_fill_the_fleet():
    """Before, the refusal happened at the task's place in the queue (its quota released); now it waits for
    the borrowing pass, which a fleet filled by the first pass never reaches: it stays queued, holding its
    reservation, for as long as the owners keep the fleet busy."""
    core, _ = make_core(make_policy(coop="a", rules=GDPR),
                        [make_executor("eu1", coop="a", region="eu-central", cpus=1),
                         make_executor("a-us", coop="a", cpus=1),
                         make_executor("b-us", coop="b", cpus=1, open_to=("*",))])
    doomed = make_task(coop="a", cpus=1, tags=["patient-data"], priority="critical")
    assert core.submit(doomed).admitted
    core.remove_executor("eu1")
    core.set_policy(make_policy(coop="b"))
    fillers = [make_task(coop="a", cpus=1), make_task(coop="b", member="bob", cpus=1)]
    for f in fillers:
        assert core.submit(f).admitted
    core.schedule()
    assert core.job(doomed.task_id).state is JobState.REJECTED


def test_a_retry_does_not_go_back_to_the_own_executor_it_was_lost_on_while_a_borrowed_one_fits():
    core, _ = make_core(make_policy(coop="a"), [make_executor("own1", coop="a", cpus=1),
                                                make_executor("b1", coop="b", cpus=1, open_to=("*",))])
    t = make_task(coop="a", cpus=1, max_retries=2)
    assert core.submit(t).admitted
    [p] = core.schedule()
    assert p.executor_id == "own1"
    assert core.executor_lost("own1", "worker died") == [t.task_id]
    core.register_executor(make_executor("own1", coop="a", cpus=1))  # it came back
    [p] = core.schedule()
    assert p.executor_id == "b1"  # "a retry prefers executors it has not been lost on"


def test_a_members_critical_task_is_not_held_back_by_its_own_low_task_at_max_concurrent_tasks():
    """max_concurrent_tasks is a member's budget, spent in queue order: the member's critical GPU task (which
    only a borrowed executor fits) came first; its own low CPU task must not take the member's only slot
    because it happens to fit an own executor (before the change the critical one ran)."""
    core, _ = make_core(make_policy(coop="a", max_concurrent_tasks=1),
                        [make_executor("a-cpu", coop="a", cpus=4),
                         make_executor("b-gpu", coop="b", cpus=4, gpus=1, open_to=("*",))])
    gpu = make_task(coop="a", cpus=1, gpus=1, priority="critical")
    cpu = make_task(coop="a", cpus=1, priority="low")
    for t in (gpu, cpu):
        assert core.submit(t).admitted
    assert [(p.task_id, p.executor_id) for p in core.schedule()] == [(gpu.task_id, "b-gpu")]
    assert "max_concurrent_tasks" in core.job(cpu.task_id).reason


def test_one_shape_that_fits_none_of_its_coops_executors_is_looked_at_once_per_round(monkeypatch):
    """The per-round shape cache: a deep queue of one shape that nothing fits costs one look per round in a
    fleet that shares nothing; with sharing, the first pass looks at every task again (a fit mask each)."""
    core, _ = make_core(make_policy(coop="a"), [make_executor("a1", coop="a", cpus=4, open_to=("*",)),
                                                make_executor("b1", coop="b", cpus=1)])
    core.set_policy(make_policy(coop="b"))
    assert core.submit(make_task(coop="a", cpus=3)).admitted
    core.schedule()  # a1 has 1 CPU free, b1 1 CPU: the fleet is not full
    for _ in range(200):
        assert core.submit(make_task(coop="b", member="bob", cpus=2)).admitted
    calls = []
    real = scheduling_round.fit_mask
    monkeypatch.setattr(scheduling_round, "fit_mask", lambda t, r, **kw: calls.append(1) or real(t, r, **kw))
    assert core.schedule() == []
    assert len(calls) <= 2, len(calls)


def test_a_dry_run_counts_what_replayed_jobs_still_open_hold_for_the_jobs_after_them():
    """dc90b44 counts open jobs *outside* the replay; one inside it (the usual case: the last 100 jobs are
    the ones still running) is placed and settled at nothing in the replay, so the job after it is judged as
    if it held nothing: the same "admitted what the head would refuse" the commit fixed, for last_n=2."""
    import asyncio

    from tests.unit.test_head_interleavings import COOP, running_a, settle, task

    async def main():
        h, _ = await running_a()  # A runs (holds one job's projected CPU-hours)
        await h.submit(task("B"), b"b")
        await settle()
        one_job = 60 / 3600
        policy = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1.5 * one_job,
                                                     "max_concurrent_tasks": 100}}
        outcomes = {o["task_id"]: o for o in await h.shadow_policy(policy, last_n=2)}
        assert outcomes["B"]["change"] == "now refused", outcomes  # (the head would refuse B: A still holds)
    asyncio.run(main())


# ----------------------------------------------------------------------------- a member's tasks held back by its claims
# A member's task none of its own coop's executors fit keeps a claim on the member's max_concurrent_tasks slots
# and is postponed; the member's later tasks are held back behind it. When the claim holder finds nothing to
# borrow, its slot goes to them, and they still get their owners' first go.


def _busy_gpu(core):
    """b's GPU executor taken by b's own task: a's GPU task can borrow it some day, not this round."""
    filler = core.submit(make_task(coop="b", member="carol", cpus=1, gpus=1))
    assert [p.executor_id for p in core.schedule()] == ["b-gpu"]
    return filler


def test_a_borrower_does_not_take_the_owners_executor_its_held_back_task_could_have_had():
    core, _ = make_core(make_policy(coop="a", max_concurrent_tasks=1),
                        [make_executor("a-cpu", coop="a", cpus=1, open_to=("*",)),
                         make_executor("b-gpu", coop="b", cpus=1, gpus=1, open_to=("*",))])
    core.set_policy(make_policy(coop="b"))
    _busy_gpu(core)
    gpu = core.submit(make_task(coop="a", cpus=1, gpus=1, priority="critical"))  # claims alice's one slot
    borrower = core.submit(make_task(coop="b", member="bob", cpus=1, priority="high"))  # b's own is busy
    mine = core.submit(make_task(coop="a", cpus=1, priority="low"))  # held back behind the claim
    placed = [(p.task_id, p.executor_id) for p in core.schedule()]
    # the GPU task finds nothing free: alice's slot is free again, and her task fits her coop's executor
    assert placed == [(mine.task_id, "a-cpu")], placed
    assert core.job(gpu.task_id).state is JobState.QUEUED
    assert core.job(borrower.task_id).state is JobState.QUEUED


def test_a_held_back_task_relaxed_in_the_borrowing_pass_still_prefers_its_own_coops_executor():
    core, _ = make_core(make_policy(coop="a", rules=GDPR, mode="permissive", max_concurrent_tasks=1),
                        [make_executor("eu1", coop="a", region="eu-central", cpus=1),
                         make_executor("a-us", coop="a", cpus=1, trust=0.1),
                         make_executor("b-us", coop="b", cpus=1, trust=1.0, open_to=("*",)),
                         make_executor("b-gpu", coop="b", cpus=1, gpus=1, open_to=("*",))])
    core.set_policy(make_policy(coop="b"))
    _busy_gpu(core)
    gpu = core.submit(make_task(coop="a", cpus=1, gpus=1, priority="critical"))  # claims alice's one slot
    t = make_task(coop="a", cpus=1, tags=["patient-data"], priority="low")
    assert core.submit(t).admitted
    core.remove_executor("eu1")
    placed = [(p.task_id, p.executor_id, p.relaxed) for p in core.schedule()]
    assert placed == [(t.task_id, "a-us", ("gdpr",))], placed
    assert core.job(gpu.task_id).state is JobState.QUEUED


def test_a_claim_holder_skipped_for_its_shape_still_gives_its_slot_to_its_members_held_back_task():
    """The second GPU task of the same shape is not looked at again (the first found nothing free): its
    member's slot is free all the same."""
    core, _ = make_core(make_policy(coop="a", max_concurrent_tasks=1),
                        [make_executor("a-cpu", coop="a", cpus=1, open_to=("*",)),
                         make_executor("b-gpu", coop="b", cpus=1, gpus=1, open_to=("*",))])
    core.set_policy(make_policy(coop="b"))
    _busy_gpu(core)
    core.submit(make_task(coop="a", member="alice", cpus=1, gpus=1, priority="critical"))
    core.submit(make_task(coop="a", member="dave", cpus=1, gpus=1, priority="critical"))
    borrower = core.submit(make_task(coop="b", member="bob", cpus=1, priority="high"))
    mine = core.submit(make_task(coop="a", member="dave", cpus=1, priority="low"))
    placed = [(p.task_id, p.executor_id) for p in core.schedule()]
    assert placed == [(mine.task_id, "a-cpu")], placed
    assert core.job(borrower.task_id).state is JobState.QUEUED


def test_requirements_built_directly_get_cache_keys_of_their_own():
    """Keys left empty would make the static mask and its own-coop narrowing share one cache entry."""
    from scheduler.placement import Requirements, compile_requirements
    from scheduler.tasks import Resources
    direct = Requirements("a", Resources(cpus=1), regions=frozenset({"eu"}))
    made = compile_requirements("a", Resources(cpus=1), (), {})
    assert direct.static_key and direct.own_key and direct.static_key != direct.own_key
    assert len({direct.static_key, direct.own_key, direct.summary_key}) == 3
    assert made.static_key != direct.static_key  # (different regions: different masks)
