"""Two head replicas given the same task id at once (a client retrying on another replica while the first
still admits it, or after the first stopped mid-call): the id is one admission's, and the store's record of
it is that admission's decision, never overwritten by the replica that lost.

The heads are two real ``Head`` objects on one SQLite file (no Ray; FakeWorker handles as in
test_head_interleavings). On SQLite a call's group commit holds the file's write lock, so the other head's
call waits for all of it; but a batch that cannot begin (the lock held past the busy timeout) writes one by
one, and on Redis every write is its own command: between an admission's ``reserve`` and its job record
there is a window. Each head here writes one by one (``each_write_commits_alone``), and the other head's
call runs inside that window at one fixed point (``run_now``), so every interleaving is one fixed order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

import scheduler.head_state as head_state
from scheduler.head import Head
from scheduler.ledger import period_of
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import COOP, join, open_head


def policy(cpu_hours: float = 1000.0) -> dict:
    return {"coop_id": COOP, "enforcement_mode": "strict",
            "default_quota": {"cpu_hours_per_month": cpu_hours, "max_concurrent_tasks": 100}}


TIGHT = 1.5  # alice's CPU-hours a month: room for one task's projection, not two


def task(task_id: str) -> dict:
    """One CPU for up to an hour: a projected 1.0 CPU-hour."""
    return {"task_id": task_id, "coop_id": COOP, "member": "alice", "resources": {"cpus": 1},
            "max_runtime_s": 3600, "max_retries": 0}


def each_write_commits_alone(head: Head, monkeypatch) -> None:
    monkeypatch.setattr(head.store, "batch", lambda rollback_if=None: contextlib.nullcontext())


def run_now(call):
    """Run a head call whose body never awaits (``_submit``, ``on_report``) to its end, here and now, so one
    head's call can run at a fixed point inside the other's."""
    try:
        call.send(None)
    except StopIteration as done:
        return done.value
    call.close()
    raise AssertionError("the call awaited: it cannot run at a fixed point inside another")


def held(head: Head) -> float:
    """The CPU-hours alice's reservations hold this month."""
    return head.store.standing(COOP, "alice", period_of(time.time()))[1].cpu_hours


def used_report(task_id: str, executor_id: str) -> dict:
    now = time.time()
    return {"task_id": task_id, "executor_id": executor_id, "coop_id": COOP, "member": "alice",
            "started_at": now - 1, "ended_at": now, "cpu_seconds": 1.0, "outcome": "succeeded", "attempt": 1}


async def two_replicas(tmp_path, monkeypatch, cpu_hours: float = 1000.0) -> tuple[Head, Head, FakeWorker]:
    """Heads A and B on one SQLite file, both with the same policy (alice may use ``cpu_hours`` a month) and
    executor e1 (1 CPU), each write committed alone."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    worker = FakeWorker("e1")
    a = await open_head(url, {})
    await a.set_policy(policy(cpu_hours))
    await join(a, worker, "us-west")
    b = await open_head(url, {"e1": worker})  # takes the policy and the executor from the store
    for head in (a, b):
        each_write_commits_alone(head, monkeypatch)
    return a, b, worker


@pytest.mark.parametrize("cpu_hours", [1000.0, TIGHT], ids=["reserve-finds-it-held", "its-own-hold-fills-the-quota"])
def test_a_retry_on_another_replica_while_the_first_still_admits_is_told_so_and_writes_nothing(
        tmp_path, monkeypatch, cpu_hours):
    """With quota to spare, B's reservation finds X held; with room for one, B's evaluation counts A's hold of X
    itself against alice's quota. Either way X is A's to decide: B says so, and records no refusal of its own."""
    async def main():
        a, b, _ = await two_replicas(tmp_path, monkeypatch, cpu_hours)
        first = a._admit(task("X"), b"x", None)  # A reserved X; the rest of its call (placing, recording) below
        assert first["admitted"] and a.store.get_job("X") is None
        answer = await b.submit(task("X"), b"x")
        assert not answer["admitted"]
        [reason] = answer["reasons"]
        assert reason["code"] == "unavailable", reason
        assert "task_id 'X' is already being admitted" in reason["message"]
        assert "reserved at 20" in reason["message"] and "coopsched job status X" in reason["message"]
        assert b.store.get_job("X") is None and b.core.task("X") is None  # B wrote nothing and keeps nothing
        a._schedule()
        a._persist()  # A's call ends: X recorded, running
        assert a.store.get_job("X")["state"] == "running"
        assert await b.submit(task("X"), b"x") == first  # asked again: the decision the store records
        assert held(a) == 1.0
    asyncio.run(main())



def a_records_during_b_s_round(a, b, monkeypatch) -> None:
    """Replica A writes what it decided (its round and its records) while B's call is at its own round."""
    schedule = b._schedule

    def first_replica_records_meanwhile():
        a._schedule()
        a._persist()
        schedule()
    monkeypatch.setattr(b, "_schedule", first_replica_records_meanwhile)

def test_a_retry_that_reserves_after_the_first_replica_recorded_answers_with_that_record_and_overwrites_nothing(
        tmp_path, monkeypatch):
    """B reads X's record (none yet), A records X, B's reservation finds X held: B's refusal must not be written
    over A's record, or the orphan sweep, seeing a finished record, releases the reservation of a job A runs."""
    async def main():
        a, b, _ = await two_replicas(tmp_path, monkeypatch)
        first = a._admit(task("X"), b"x", None)
        reserve = b.store.reserve

        def first_replica_records_meanwhile(*args, **kwargs):
            a._schedule()
            a._persist()
            return reserve(*args, **kwargs)
        monkeypatch.setattr(b.store, "reserve", first_replica_records_meanwhile)
        answer = await b.submit(task("X"), b"x")
        assert b.store.get_job("X")["state"] == "running"  # A's record, not B's refusal over it
        assert b.store.release_orphaned_reservations(0.0) == []  # so A's running job keeps its reservation
        assert held(a) == 1.0
        assert answer == first and b.core.task("X") is None  # B answers with A's decision and keeps nothing
    asyncio.run(main())


def test_a_retry_after_a_head_stopped_between_reserving_and_recording_is_told_the_truth_and_runs_after_the_grace(
        tmp_path, monkeypatch):
    async def main():
        url = f"sqlite:///{tmp_path / 'state.db'}"
        lost = await open_head(url, {})
        await lost.set_policy(policy())
        await join(lost, FakeWorker("e1"), "us-west")
        each_write_commits_alone(lost, monkeypatch)
        assert lost._admit(task("X"), b"x", None)["admitted"]  # reserved; the head stops before recording X
        lost.store.close()
        worker = FakeWorker("e1")
        restarted = await open_head(url, {"e1": worker})  # X's reservation is young: the start-up sweep keeps it
        answer = await restarted.submit(task("X"), b"x")
        [reason] = answer["reasons"]
        assert not answer["admitted"] and reason["code"] == "unavailable", reason
        assert "new task id" not in reason["message"]
        assert "this submission admitted and charged nothing" in reason["message"]
        assert "released once it is 10 minutes old (soon after 20" in reason["message"]
        assert restarted.store.get_job("X") is None  # no refusal recorded: nothing owns the reservation
        monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)  # ... ten minutes later
        assert restarted._release_orphaned_reservations() == ["X"]
        again = await restarted.submit(task("X"), b"x")  # the same id, as the client retries it
        assert again["admitted"]
        await settle()
        assert restarted.store.get_job("X")["state"] == "running" and held(restarted) == 1.0
        assert [c[0] for c in worker.calls] == ["start_many"]
    asyncio.run(main())


def test_an_admission_whose_task_id_another_replica_recorded_a_refusal_for_first_is_withdrawn(tmp_path, monkeypatch):
    """A refuses X (alice's job Y holds her quota), Y then finishes, B admits X; A's refusal is recorded first,
    while B's call still runs: B takes its admission back before anything acts on it (its reservation, its
    placement, its payload) and answers with the recorded refusal, so the client hears one decision."""
    async def main():
        a, b, worker = await two_replicas(tmp_path, monkeypatch, TIGHT)
        assert (await b.submit(task("Y"), b"y"))["admitted"]
        await settle()  # Y runs on e1
        refused = a._admit(task("X"), b"x", None)  # A: 1.0 held + 1.0 > 1.5
        assert not refused["admitted"] and refused["reasons"][0]["source"] == "quota:cpu"
        assert await b.on_report(used_report("Y", "e1"))  # Y ends: 1 CPU-second used, nothing held
        a_records_during_b_s_round(a, b, monkeypatch)
        answer = await b.submit(task("X"), b"x")
        assert answer == refused
        assert b.store.get_job("X")["state"] == "rejected" and b.core.task("X") is None
        assert held(b) == 0.0 and b.store.get_payload("X") is None
        assert b.core.table.row_load[b.core.table.rows["e1"]][0] == 1.0  # e1's CPU is free again
        await settle()
        assert [spec["task_id"] for name, args in worker.calls if name == "start_many" for spec in args[0]] == ["Y"]
        withdrawn = b.metrics.registry.get_sample_value("coopsched_decisions_withdrawn_total", {"coop": COOP})
        assert (withdrawn, b.core.counters.admitted[COOP]) == (1, 2)  # X's admission counted, and taken back
    asyncio.run(main())


def test_a_batch_answers_a_withdrawn_admission_with_the_recorded_refusal_and_places_what_waited_behind_it(
        tmp_path, monkeypatch):
    """As above, in one ``submit_many``: X took e1 in B's round, bob's Z waited; once X is withdrawn, Z is
    placed on e1 in the same call."""
    async def main():
        a, b, worker = await two_replicas(tmp_path, monkeypatch, TIGHT)
        assert (await b.submit(task("Y"), b"y"))["admitted"]
        await settle()
        refused = a._admit(task("X"), b"x", None)
        assert await b.on_report(used_report("Y", "e1"))
        a_records_during_b_s_round(a, b, monkeypatch)
        answers = await b.submit_many([(task("X"), b"x", None), ({**task("Z"), "member": "bob"}, b"z", None)])
        assert answers[0] == refused and answers[1]["admitted"]
        assert b.store.get_job("X")["state"] == "rejected" and b.store.get_job("Z")["state"] == "running"
        await settle()
        assert [spec["task_id"] for name, args in worker.calls if name == "start_many" for spec in args[0]] == \
            ["Y", "Z"]
    asyncio.run(main())


def test_a_refusal_whose_task_id_another_replica_admitted_and_recorded_first_overwrites_nothing(
        tmp_path, monkeypatch):
    """A evaluates X while Y holds alice's quota (refused); before A records that, Y finishes and B admits and
    records X. A's refusal written last would say X was refused while B runs it, and the orphan sweep would
    release X's reservation: A answers with B's recorded admission instead, and writes nothing."""
    async def main():
        a, b, _ = await two_replicas(tmp_path, monkeypatch, TIGHT)
        assert (await b.submit(task("Y"), b"y"))["admitted"]
        await settle()
        admitted = {}
        schedule = a._schedule

        def another_replica_admits_and_records_meanwhile():
            assert run_now(b.on_report(used_report("Y", "e1")))
            admitted.update(run_now(b._submit(task("X"), b"x", None)))
            schedule()
        monkeypatch.setattr(a, "_schedule", another_replica_admits_and_records_meanwhile)
        answer = await a.submit(task("X"), b"x")
        assert a.store.get_job("X")["state"] == "running"  # B's record, not A's refusal over it
        assert a.store.release_orphaned_reservations(0.0) == [] and held(a) == 1.0
        assert admitted["admitted"] and answer == admitted and a.core.task("X") is None
    asyncio.run(main())


@pytest.mark.parametrize("owner", [{"member": "bob"}, {"coop_id": "coop:other"}], ids=["member", "coop"])
def test_another_members_submission_of_an_id_being_admitted_learns_nothing_of_it(tmp_path, monkeypatch, owner):
    async def main():
        a, b, _ = await two_replicas(tmp_path, monkeypatch)
        assert a._admit(task("X"), b"x", None)["admitted"]
        with pytest.raises(ValueError, match="task_id") as refused:
            await b.submit({**task("X"), **owner}, b"x")
        assert "reserved" not in str(refused.value) and "job-7f3a" in str(refused.value)
        assert b.store.get_job("X") is None
    asyncio.run(main())


def test_a_heads_own_first_record_found_in_place_is_not_taken_for_another_heads(tmp_path, monkeypatch):
    """The write of a job's first record went through but its answer was lost (a Redis reply cut off): when the
    head writes it again it finds its own decision there, and keeps its job."""
    async def main():
        a, _, worker = await two_replicas(tmp_path, monkeypatch)
        create_job = a.store.create_job

        def written_but_answer_lost(task_id, record):
            create_job(task_id, record)
            return False
        monkeypatch.setattr(a.store, "create_job", written_but_answer_lost)
        answer = await a.submit(task("X"), b"x")
        assert answer["admitted"] and a.core.task("X") is not None
        await settle()
        assert a.store.get_job("X")["state"] == "running" and held(a) == 1.0
        assert [c[0] for c in worker.calls] == ["start_many"]
    asyncio.run(main())
