"""Coops take turns at what is left to borrow, the one borrowing least first (``scheduler.fair_borrowing``).

Before, the borrowing pass took tasks in the one queue's order, so one coop's MemberPriority multipliers
(up to 100x) put every task of its boosted member ahead of every other coop's, and that coop took all the
borrowable room. Now each coop keeps its own order and the next task tried is the next of the coop whose
tasks on other coops' executors hold the smallest dominant share of the fleet.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from executors.simulated import VirtualClock
from scheduler.core import SchedulerCore
from scheduler.fair_borrowing import BorrowingHistory, dominant_share, turns
from tests.builders import START, make_core, make_executor, make_policy, make_task

BOOST = [{"type": "MemberPriority", "name": "boost", "member": "bob", "multiplier": 100.0}]


def _lender(slots: int = 4, gpus: float = 0):
    """A lender coop with ``slots`` idle 1-CPU executors open to everyone, and two borrower coops."""
    core, clock = make_core(make_policy(coop="lender"),
                            [make_executor(f"l{i}", coop="lender", cpus=1, gpus=gpus, open_to=("*",))
                             for i in range(slots)])
    core.set_policy(make_policy(coop="boosted", rules=BOOST))
    core.set_policy(make_policy(coop="plain"))
    return core, clock


def _placed_by_coop(placements) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in placements:
        out[p.task.coop_id] = out.get(p.task.coop_id, 0) + 1
    return out


def test_a_coops_multipliers_do_not_give_it_all_the_borrowable_room():
    core, _ = _lender()
    boosted = [core.submit(make_task(coop="boosted", member="bob", cpus=1)) for _ in range(4)]
    plain = [core.submit(make_task(coop="plain", member="pia", cpus=1)) for _ in range(4)]
    assert boosted[-1].effective_priority > 50 * plain[0].effective_priority  # all of bob's first in the queue
    assert _placed_by_coop(core.schedule()) == {"boosted": 2, "plain": 2}


def test_the_coop_borrowing_least_now_goes_first():
    core, clock = _lender()
    running = [core.submit(make_task(coop="boosted", member="bob", cpus=1)) for _ in range(2)]
    assert len(core.schedule()) == 2  # boosted holds 2 of the fleet's 4 CPUs
    clock.advance(10)
    more = [core.submit(make_task(coop="boosted", member="bob", cpus=1)) for _ in range(2)]
    plain = [core.submit(make_task(coop="plain", member="pia", cpus=1)) for _ in range(2)]
    placed = core.schedule()
    assert {p.task_id for p in placed} == {d.task_id for d in plain}  # both free slots: plain holds none yet
    assert all(core.job(d.task_id).state.value == "queued" for d in more)
    assert running  # (still running)


def test_each_coop_keeps_its_own_order():
    core, _ = _lender(slots=2)
    low = core.submit(make_task(coop="plain", member="pia", cpus=1, priority="low"))
    high = core.submit(make_task(coop="plain", member="pia", cpus=1, priority="high"))
    first = core.submit(make_task(coop="boosted", member="bob", cpus=1, priority="low"))
    core.submit(make_task(coop="boosted", member="bob", cpus=1, priority="low"))
    placed = {p.task_id for p in core.schedule()}
    assert placed == {high.task_id, first.task_id}  # plain's high before its low; one turn each
    assert core.job(low.task_id).state.value == "queued"


def test_owners_still_come_first():
    core, _ = _lender(slots=2)
    core.submit(make_task(coop="boosted", member="bob", cpus=1))
    core.submit(make_task(coop="plain", member="pia", cpus=1))
    own = core.submit(make_task(coop="lender", member="lou", cpus=1, priority="low"))
    placed = core.schedule()
    assert own.task_id in {p.task_id for p in placed} and len(placed) == 2


def test_each_coops_borrowed_share_is_what_it_holds_on_other_coops_executors_and_a_metric_says_so():
    from prometheus_client.parser import text_string_to_metric_families

    from scheduler.metrics import SchedulerMetrics
    core, _ = _lender(slots=4)
    core.register_executor(make_executor("own", coop="plain", cpus=4))  # plain's own: not borrowed
    for _ in range(5):
        core.submit(make_task(coop="plain", member="pia", cpus=1))
    core.submit(make_task(coop="boosted", member="bob", cpus=1))
    assert len(core.schedule()) == 6
    # of 8 active CPUs: plain runs 4 on its own executor and 1 on the lender's, boosted 1 on the lender's
    assert core.borrowed_shares() == {"plain": 1 / 8, "boosted": 1 / 8}
    text = SchedulerMetrics(core).exposition()
    got = {s.labels["coop"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == "coopsched_borrowed_share"}
    assert got == {"boosted": 0.125, "lender": 0.0, "plain": 0.125}


def test_dominant_share_is_the_larger_fraction():
    assert dominant_share((2.0, 1.0), (8.0, 2.0)) == 0.5
    assert dominant_share((2.0, 0.0), (8.0, 0.0)) == 0.25  # a fleet without GPUs: CPUs alone


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=30))
def test_turns_keep_every_item_once_and_each_coops_order(coops):
    items = list(enumerate(coops))
    out = list(turns(items, lambda item: item[1], lambda: ({}, (10.0, 0.0)),
                     lambda: []))  # nothing placed: equal shares, so plain queue order
    assert out == items
    placed_a: list = []
    out = list(turns(items, lambda item: item[1], lambda: ({"b": (5.0, 0.0)}, (10.0, 0.0)),
                     lambda: placed_a))
    assert sorted(out) == items
    for coop in "abc":
        assert [i for i in out if i[1] == coop] == [i for i in items if i[1] == coop]
    if "b" in coops and len(set(coops)) > 1:  # the coop holding half the fleet goes last
        assert out.index(next(i for i in items if i[1] == "b")) == len([c for c in coops if c != "b"])


# ----------------------------------------------------------------------------- borrowing over time
def _two_borrowers(half_life_s: float | None = 3600.0):
    """A lender of two idle 1-CPU executors and two borrower coops, early and late."""
    clock = VirtualClock(START)
    core = SchedulerCore(clock=clock, borrowing_half_life_s=half_life_s)
    for coop in ("lender", "early", "late"):
        core.set_policy(make_policy(coop=coop))
    for i in range(2):
        core.register_executor(make_executor(f"l{i}", coop="lender", cpus=1, open_to=("*",)))
    return core, clock


def _finish(core, task_id: str) -> None:
    job, task = core.job(task_id), core.task(task_id)
    core.complete({"task_id": task_id, "executor_id": job.executor_id, "coop_id": task.coop_id,
                   "member": task.member, "started_at": job.started_at, "ended_at": core.clock(),
                   "cpu_seconds": 1.0, "attempt": job.attempts, "outcome": "succeeded"})


def _early_borrows_everything_for(core, clock, seconds: float) -> None:
    ran = [core.submit(make_task(coop="early", member="eve", cpus=1, runtime=86400)).task_id for _ in range(2)]
    assert len(core.schedule()) == 2
    clock.advance(seconds)
    for t in ran:
        _finish(core, t)


def _second_round(core) -> dict[str, int]:
    for coop, member in (("early", "eve"), ("late", "lou")):  # early's tasks first in the queue
        for _ in range(2):
            core.submit(make_task(coop=coop, member=member, cpus=1))
    return _placed_by_coop(core.schedule())


def test_a_coop_that_borrowed_the_lenders_executors_for_hours_goes_after_one_that_did_not():
    core, clock = _two_borrowers()
    _early_borrows_everything_for(core, clock, 2 * 3600)
    # both hold nothing now; early held the whole lender for two half-lives: ~3/4 of it on average
    assert core.borrowed_shares() == {}
    assert core.borrowed_history_shares()["early"] == pytest.approx(0.75, abs=0.02)
    assert _second_round(core) == {"late": 2}  # late's share now (1/2 after its first) stays under early's past


def test_without_a_history_the_coops_take_turns_by_what_they_hold_now():
    core, clock = _two_borrowers(half_life_s=0)
    _early_borrows_everything_for(core, clock, 2 * 3600)
    assert core.borrowed_history_shares() == {}
    assert _second_round(core) == {"early": 1, "late": 1}


def test_past_borrowing_fades_by_half_every_half_life():
    core, clock = _two_borrowers()
    _early_borrows_everything_for(core, clock, 20 * 3600)  # as good as for ever: its average share ~1
    assert core.borrowed_history_shares()["early"] == pytest.approx(1.0, abs=0.02)
    for halves in (1, 2, 3):
        clock.advance(3600)
        core.schedule()  # (a round samples the history)
        assert core.borrowed_history_shares()["early"] == pytest.approx(0.5 ** halves, rel=0.05)
    clock.advance(30 * 3600)
    core.schedule()
    assert core.borrowed_history_shares().get("early", 0.0) < 1e-6
    assert _second_round(core) == {"early": 1, "late": 1}  # forgotten: queue order again


def test_the_history_is_a_metric():
    from prometheus_client.parser import text_string_to_metric_families

    from scheduler.metrics import SchedulerMetrics
    core, clock = _two_borrowers()
    _early_borrows_everything_for(core, clock, 3600)
    text = SchedulerMetrics(core).exposition()
    got = {s.labels["coop"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == "coopsched_borrowed_share_decayed"}
    assert got["early"] == pytest.approx(0.5, abs=0.02) and got["late"] == 0.0


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan"), True, "an hour"])
def test_a_bad_half_life_is_refused_naming_the_setting(value):
    from policies.validation import InvalidRequest
    with pytest.raises(InvalidRequest) as caught:
        SchedulerCore(borrowing_half_life_s=value)
    message = str(caught.value)
    assert "borrowing_half_life_s" in message and "0 or more" in message and "3600" in message, message


# ----------------------------------------------------------------------------- the history outlives its head
def test_a_restored_history_goes_on_as_the_one_it_was_taken_from():
    core, clock = _two_borrowers()
    _early_borrows_everything_for(core, clock, 2 * 3600)
    snapshot = core.borrowing_history.snapshot()
    again, _ = _two_borrowers()
    again.clock = clock
    again.borrowing_history.restore(json.loads(json.dumps(snapshot)))  # (as a store keeps it: JSON)
    assert again.borrowed_history_shares() == pytest.approx(core.borrowed_history_shares())
    assert again.borrowed_history_shares()["early"] == pytest.approx(0.75, abs=0.02)
    assert _second_round(again) == {"late": 2}  # as the head it was taken from would have


def test_a_snapshot_of_another_half_life_keeps_each_coops_average_share():
    core, clock = _two_borrowers()
    _early_borrows_everything_for(core, clock, 2 * 3600)
    longer = BorrowingHistory(4 * 3600)
    longer.restore(core.borrowing_history.snapshot())
    total = (2.0, 0.0)
    assert longer.shares(total) == pytest.approx(core.borrowing_history.shares(total))
    assert longer.half_life_s == 4 * 3600  # (its own half-life decays it from here)


_GOOD = {"half_life_s": 3600.0, "sampled_at": 100.0, "held": {"a": [1.0, 0.0]}, "used": {"a": [60.0, 0.0]}}


@pytest.mark.parametrize("bad", [
    {**_GOOD, "used": {"a": [-1.0, 0.0]}}, {**_GOOD, "held": {"a": [float("nan"), 0.0]}},
    {**_GOOD, "half_life_s": 0}, {k: v for k, v in _GOOD.items() if k != "used"}, {**_GOOD, "used": {"a": [1.0]}},
    {**_GOOD, "extra": 1}, {"damaged": "JSONDecodeError"}])
def test_a_snapshot_that_is_not_one_is_refused_and_changes_nothing(bad):
    from pydantic import ValidationError
    history = BorrowingHistory(3600)
    history.restore(_GOOD)
    before = history.snapshot()
    with pytest.raises(ValidationError):
        history.restore(bad)
    assert history.snapshot() == before
