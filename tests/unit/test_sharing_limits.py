"""Lending and borrowing limits (``scheduler.sharing_limits``): how much of each other's executors coops may hold.

Before, an executor open to other coops could be filled by them entirely: its owner could only take it back by
``reclaim`` (stopping their work) and a borrower could hold any share of the fleet. Now an owner's
``lending_limit`` bounds what other coops hold of its executors, and a borrower's ``borrowing_limit`` what it
holds of other coops' executors, each as a fraction of CPUs and of GPUs, within a round too. Either may also be
amounts per resource (``{"cpus": 4, "gpus": 1}``, as Kueue's limits are quantities): the same tests run with the
amounts a fraction comes to, and others show what only amounts do.
"""

from __future__ import annotations

import json

import pytest

from policies.model import CoopPolicy
from policies.validation import InvalidRequest, parse
from scheduler.tasks import JobState
from tests.builders import make_core, make_executor, make_policy, make_task


def _fleet(lending: float | dict | None = None, borrowing: float | dict | None = None, lender_gpus: float = 0):
    """A lender coop with two 4-CPU executors open to everyone (8 CPUs), a borrower coop with one 4-CPU
    executor of its own, open to no one (the fleet: 12 CPUs)."""
    core, clock = make_core(_policy("lender", lending_limit=lending),
                            [make_executor(f"l{i}", coop="lender", cpus=4, gpus=lender_gpus, open_to=("*",))
                             for i in range(2)] + [make_executor("b0", coop="borrower", cpus=4)])
    core.set_policy(_policy("borrower", borrowing_limit=borrowing))
    return core, clock


def _policy(coop: str, **fields) -> CoopPolicy:
    return CoopPolicy.model_validate({**make_policy(coop=coop).model_dump(mode="json"), **fields})


def _on(core, placements) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in placements:
        owner = core.table.spec(p.executor_id).coop_id
        out[owner] = out.get(owner, 0) + 1
    return out


def _finish(core, task_id: str) -> None:
    job, task = core.job(task_id), core.task(task_id)
    core.complete({"task_id": task_id, "executor_id": job.executor_id, "coop_id": task.coop_id,
                   "member": task.member, "started_at": job.started_at, "ended_at": job.started_at + 60,
                   "cpu_seconds": 60, "attempt": job.attempts, "outcome": "succeeded"})


def test_without_limits_a_borrower_fills_the_lenders_executors():
    core, _ = _fleet()
    for _ in range(12):
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    assert _on(core, core.schedule()) == {"borrower": 4, "lender": 8}


def test_a_lending_limit_bounds_what_other_coops_hold_of_the_owners_executors_within_one_round():
    core, _ = _fleet(lending=0.5)
    waiting = [core.submit(make_task(coop="borrower", member="bob", cpus=1)).task_id for _ in range(12)]
    placed = core.schedule()
    assert _on(core, placed) == {"borrower": 4, "lender": 4}  # half of the lender's 8 CPUs
    queued = [t for t in waiting if core.job(t).state is JobState.QUEUED]
    assert len(queued) == 4
    reason = core.job(queued[0]).history[-1].message
    assert "lending_limit" in reason and "coop lender lends at most 50% of its executors" in reason, reason
    assert "lends 50% now" in reason


@pytest.mark.parametrize("lending", [0.5, {"cpus": 4}], ids=["fraction", "amounts"])
def test_a_lent_task_that_ends_makes_room_for_another_and_no_more(lending):
    core, clock = _fleet(lending=lending)
    for _ in range(10):  # 4 on its own executor, 4 lent, 2 waiting
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    first = core.schedule()
    on_lender = [p.task_id for p in first if core.table.spec(p.executor_id).coop_id == "lender"]
    clock.advance(60)
    _finish(core, on_lender[0])
    again = core.schedule()
    assert _on(core, again) == {"lender": 1}


@pytest.mark.parametrize("lending", [0.0, {"cpus": 0}], ids=["fraction", "amounts"])
def test_the_owners_own_tasks_are_not_bound_by_its_lending_limit(lending):
    core, _ = _fleet(lending=lending)
    for _ in range(8):
        core.submit(make_task(coop="lender", member="lea", cpus=1))
    assert _on(core, core.schedule()) == {"lender": 8}


@pytest.mark.parametrize("lending", [0.0, {"cpus": 0, "gpus": 0}], ids=["fraction", "amounts"])
def test_a_lending_limit_of_zero_lends_nothing_and_the_borrower_keeps_its_own_executors(lending):
    core, _ = _fleet(lending=lending)
    for _ in range(6):
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    assert _on(core, core.schedule()) == {"borrower": 4}


def test_a_borrowing_limit_bounds_what_the_coop_holds_of_other_coops_executors():
    core, _ = _fleet(borrowing=0.25)  # a quarter of the fleet's 12 CPUs: 3 on the lender's executors
    waiting = [core.submit(make_task(coop="borrower", member="bob", cpus=1)).task_id for _ in range(12)]
    assert _on(core, core.schedule()) == {"borrower": 4, "lender": 3}
    queued = [t for t in waiting if core.job(t).state is JobState.QUEUED]
    reason = core.job(queued[0]).history[-1].message
    assert "borrowing_limit" in reason and "at most 25% of the fleet" in reason, reason


@pytest.mark.parametrize("lending", [0.5, {"cpus": 4, "gpus": 2}], ids=["fraction", "amounts"])
def test_limits_count_cpus_and_gpus_each(lending):
    core, _ = _fleet(lending=lending, lender_gpus=2)  # the lender's 4 GPUs: 2 may be lent, whatever the CPUs
    for _ in range(4):
        core.submit(make_task(coop="borrower", member="bob", cpus=1, gpus=1))
    assert _on(core, core.schedule()) == {"lender": 2}


@pytest.mark.parametrize("lending", [0.5, {"cpus": 4}], ids=["fraction", "amounts"])
def test_a_task_larger_than_what_is_left_to_lend_waits_while_a_smaller_one_borrows(lending):
    core, _ = _fleet(lending=lending)
    core.submit(make_task(coop="borrower", member="bob", cpus=4))  # own executor
    core.submit(make_task(coop="borrower", member="bob", cpus=3))  # lender: 3 of 4 lendable
    big = core.submit(make_task(coop="borrower", member="bob", cpus=2)).task_id  # 3 + 2 > 4: waits
    small = core.submit(make_task(coop="borrower", member="bob", cpus=1)).task_id  # 3 + 1 = 4: borrows
    core.schedule()
    assert core.job(big).state is JobState.QUEUED and core.job(small).state is JobState.RUNNING


@pytest.mark.parametrize("field", ["lending_limit", "borrowing_limit"])
@pytest.mark.parametrize("value", [1.5, -0.1, True, "half"])
def test_a_bad_limit_is_refused_naming_the_field_and_what_is_accepted(field, value):
    with pytest.raises(InvalidRequest) as caught:
        parse(CoopPolicy, {"coop_id": "coop", field: value}, what="policy")
    message = str(caught.value)
    assert field in message and f"received {json.dumps(value).strip(chr(34))}" in message.replace('"', ""), message
    assert "example" in message


def test_each_owners_lent_share_is_what_other_coops_hold_of_its_executors_and_a_metric_says_so():
    from prometheus_client.parser import text_string_to_metric_families

    from scheduler.metrics import SchedulerMetrics
    core, _ = _fleet(lending=0.5)
    for _ in range(7):  # 4 on its own executor, 3 of the lender's 8 CPUs
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    core.schedule()
    assert core.lent_shares() == {"borrower": 0.0, "lender": 3 / 8}
    text = SchedulerMetrics(core).exposition()
    got = {s.labels["coop"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == "coopsched_lent_share"}
    assert got == {"borrower": 0.0, "lender": 0.375}


def test_coopsched_status_says_what_each_coop_lends_and_borrows_against_its_limits():
    from scheduler.cli_cluster import _render
    core, _ = _fleet(lending=0.5, borrowing=0.25)
    for _ in range(12):
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    core.schedule()  # 4 on its own executor, 3 of the lender's 8 CPUs (a quarter of the fleet's 12)
    sharing = core.sharing()
    assert sharing["lender"]["lent"] == 3 / 8 and sharing["lender"]["lending_limit"] == 0.5
    assert sharing["borrower"]["borrowed"] == 3 / 12 and sharing["borrower"]["borrowing_limit"] == 0.25
    head = {"started_at": None, "mode": "development", "store": "memory://", "executors": 3, "queued": 5,
            "jobs_in_memory": 12, "sharing": sharing, "recovered": {}}
    line = [ln for ln in _render({"ray_address": "a", "nodes": 1, "cluster_cpus": 2, "started_by_coopsched": False,
                                  "namespace": "ns", "head": head, "other_namespaces": []}).splitlines()
            if ln.startswith("sharing")][0]
    assert "borrower borrows 25% (limit 25%) of the fleet" in line, line
    assert "lender lends 38% (limit 50%) of its executors" in line, line


def _urgent_fleet(lending: float | dict):
    """A lender of two 2-CPU executors open to everyone, and a borrower with none of its own whose policy lets
    an urgent task stop its own tasks of lower priority."""
    core, clock = make_core(_policy("lender", lending_limit=lending),
                            [make_executor(f"l{i}", coop="lender", cpus=2, open_to=("*",)) for i in range(2)])
    core.set_policy(_policy("borrower", preempt_within_coop="lower_priority",
                            default_quota={"cpu_hours_per_month": 100.0, "max_concurrent_tasks": 100,
                                           "max_priority": "critical"}))
    return core, clock


@pytest.mark.parametrize("lending", [0.5, {"cpus": 2}], ids=["fraction", "amounts"])
def test_an_urgent_borrowed_task_takes_the_place_of_its_coops_task_within_the_lending_limit(lending):
    core, _ = _urgent_fleet(lending=lending)  # 2 of the lender's 4 CPUs may be lent
    low = core.submit(make_task(coop="borrower", member="bob", cpus=2, priority="low")).task_id
    assert len(core.schedule()) == 1
    urgent = core.submit(make_task(coop="borrower", member="ann", cpus=2, priority="critical")).task_id
    placed = core.schedule()  # the other executor is idle, but the limit keeps it off; stopping low makes room
    assert [p.task_id for p in placed] == [urgent] and core.drain_preempted() == [(low, placed[0].executor_id)]
    assert core.job(low).state is JobState.QUEUED


@pytest.mark.parametrize("lending", [0.5, {"cpus": 2}], ids=["fraction", "amounts"])
def test_nothing_is_stopped_for_a_task_a_limit_would_still_keep_off(lending):
    core, _ = _urgent_fleet(lending=lending)
    core.submit(make_task(coop="borrower", member="bob", cpus=1, priority="low"))
    core.submit(make_task(coop="borrower", member="bob", cpus=1, priority="high"))
    assert len(core.schedule()) == 2  # 2 CPUs lent: the limit
    big = core.submit(make_task(coop="borrower", member="ann", cpus=2, priority="critical")).task_id
    assert core.schedule() == [] and core.drain_preempted() == []  # stopping low frees 1: 1 + 2 > 2 lendable
    assert core.job(big).state is JobState.QUEUED


# --------------------------------------------------------------------------- amounts per resource
def test_a_lending_limit_in_amounts_bounds_what_is_lent_and_its_reason_names_them():
    core, _ = _fleet(lending={"cpus": 3})
    waiting = [core.submit(make_task(coop="borrower", member="bob", cpus=1)).task_id for _ in range(12)]
    assert _on(core, core.schedule()) == {"borrower": 4, "lender": 3}
    reason = core.job(next(t for t in waiting if core.job(t).state is JobState.QUEUED)).history[-1].message
    assert "coop lender lends at most 3 CPUs (its lending_limit) and lends 3 CPUs now" in reason, reason


def test_amounts_stay_put_as_the_owner_adds_executors_where_a_fraction_grows_with_them():
    for lending, lent_after in ((0.375, 4), ({"cpus": 3}, 3)):  # 3 of 8 CPUs, then 3/8 of 12 rounds down to 4
        core, _ = _fleet(lending=lending)
        for _ in range(12):
            core.submit(make_task(coop="borrower", member="bob", cpus=1))
        assert _on(core, core.schedule()) == {"borrower": 4, "lender": 3}
        core.register_executor(make_executor("l2", coop="lender", cpus=4, open_to=("*",)))
        assert _on(core, core.schedule()) == ({"lender": lent_after - 3} if lent_after > 3 else {}), lending


def test_a_resource_the_amounts_do_not_name_is_not_bounded_by_them():
    core, _ = _fleet(lending={"gpus": 1}, lender_gpus=2)  # one of the lender's 4 GPUs; its CPUs as open_to allows
    for _ in range(3):
        core.submit(make_task(coop="borrower", member="bob", cpus=1, gpus=1))
    for _ in range(11):  # 4 on the borrower's own executor, 7 beside the GPU task on the lender's
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    placed = core.schedule()
    on_lender = [p for p in placed if core.table.spec(p.executor_id).coop_id == "lender"]
    assert sum(core.task(p.task_id).resources.gpus for p in on_lender) == 1
    assert sum(core.task(p.task_id).resources.cpus for p in on_lender) == 8  # every lender CPU


def test_a_borrowing_limit_in_amounts_bounds_what_the_coop_holds_of_other_coops_executors():
    core, _ = _fleet(borrowing={"cpus": 2})
    waiting = [core.submit(make_task(coop="borrower", member="bob", cpus=1)).task_id for _ in range(12)]
    assert _on(core, core.schedule()) == {"borrower": 4, "lender": 2}
    reason = core.job(next(t for t in waiting if core.job(t).state is JobState.QUEUED)).history[-1].message
    assert "coop borrower may hold at most 2 CPUs on other coops' executors (its borrowing_limit) and holds " \
           "2 CPUs now" in reason, reason


@pytest.mark.parametrize(("value", "where", "says"), [
    ({}, "lending_limit", "name cpus, gpus or both"),
    ({"memory_mb": 512}, "lending_limit.memory_mb", "Extra inputs are not permitted"),
    ({"cpus": -1}, "lending_limit.cpus", "greater than or equal to 0"),
    ({"gpus": True}, "lending_limit.gpus", "true and false are not numbers"),
    ({"cpus": "many"}, "lending_limit.cpus", "valid number"),
    ([4], "lending_limit", "valid number"),
])
def test_bad_amounts_are_refused_naming_the_field_and_what_is_accepted(value, where, says):
    with pytest.raises(InvalidRequest) as caught:
        parse(CoopPolicy, {"coop_id": "coop", "lending_limit": value}, what="policy")
    message = str(caught.value)
    assert f"{where}: received" in message and says in message and "example" in message, message


def test_a_policy_with_amounts_goes_to_json_and_back_the_same():
    policy = _policy("lender", lending_limit={"cpus": 16, "gpus": 0}, borrowing_limit=0.25)
    again = CoopPolicy.model_validate_json(policy.model_dump_json())
    assert again == policy and again.lending_limit.caps() == (16.0, 0.0)
    assert policy.model_dump(mode="json")["lending_limit"] == {"cpus": 16.0, "gpus": 0.0}


def test_coopsched_status_shows_amount_limits_as_amounts():
    from scheduler.cli_cluster import _sharing_phrase
    core, _ = _fleet(lending={"cpus": 3}, borrowing={"cpus": 2, "gpus": 0})
    for _ in range(12):
        core.submit(make_task(coop="borrower", member="bob", cpus=1))
    core.schedule()
    sharing = json.loads(json.dumps(core.sharing()))  # (as it reaches the CLI)
    assert sharing["lender"]["lending_limit"] == {"cpus": 3.0} and sharing["lender"]["lent_amounts"] == [2.0, 0.0]
    assert _sharing_phrase("lender", sharing["lender"]) == "lender lends 2 CPUs (limit 3 CPUs) of its executors"
    assert _sharing_phrase("borrower", sharing["borrower"]) == \
        "borrower borrows 2 CPUs and 0 GPUs (limit 2 CPUs and 0 GPUs)"
