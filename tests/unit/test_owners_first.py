"""Owners first: on executors open to other coops, the owner's waiting tasks have first claim.

One queue orders every coop's tasks by effective priority, and each coop's admins set their own
MemberPriority multipliers (up to 100x). Before, a borrower's boosted ``low`` task could take the
owner's executor ahead of the owner's ``critical`` one; now each scheduling round first places every
task on its own coop's executors (in queue order), then what is left on any executor it may use.
"""

from __future__ import annotations

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
