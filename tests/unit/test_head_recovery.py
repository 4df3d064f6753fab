"""A head restarted from its SQLite store takes back exactly what it knew: the constraints a queued job was
admitted under, the executors a retry avoids, an executor found dead, the order of the executors (placement
ties); and a cancel or an audit sample is written whole. The Head is the real class without Ray (FakeWorker
handles, as in test_head_interleavings); a second Head on the same file stands in for the restart."""
from __future__ import annotations

import asyncio
import time

import pytest

from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401

COOP = "coop:t"
BASE = {"coop_id": COOP, "enforcement_mode": "strict",
        "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 100}}
GDPR = {**BASE, "rules": [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central",
                            "tags": ["patient-data"]}]}


async def open_head(url: str, workers: dict[str, FakeWorker]) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url)
    head._watchdog = object()  # no background watchdog
    head._workers.update(workers)
    return head


async def join(head: Head, worker: FakeWorker, region: str, cpus: float = 1, **kw) -> None:
    spec = ExecutorSpec(executor_id=worker.executor_id, coop_id=COOP, region=region, node_id=worker.executor_id,
                        resources={"cpus": cpus}, **kw)
    await head.register_executor(spec.model_dump(mode="json"))
    head._workers[worker.executor_id] = worker


async def head_with_jobs(url: str, *task_ids: str) -> Head:
    """A head on ``url`` with the BASE policy and executor e1 (1 CPU, us-west), the jobs submitted in order
    (the first runs on e1, the others wait)."""
    head = await open_head(url, {})
    await head.set_policy(BASE)
    await join(head, FakeWorker("e1"), "us-west")
    for task_id in task_ids:
        await head.submit(task(task_id), task_id.encode())
    await settle()
    return head


def task(task_id: str, **kw) -> dict:
    return {"task_id": task_id, "coop_id": COOP, "member": "alice", "resources": {"cpus": 1},
            "max_runtime_s": 60, "max_retries": 2, **kw}


def test_a_restart_does_not_drop_the_constraints_a_queued_job_was_admitted_under(tmp_path):
    """A patient-data job admitted under a strict data-sovereignty rule waits for an eu-central executor.
    The policy is then changed (a new version applies to tasks submitted from now on). While the head
    runs, the queued job keeps the constraints it was admitted under; a restarted head must too."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        eu, us = FakeWorker("eu1"), FakeWorker("us1")
        h = await open_head(url, {})
        await h.set_policy(GDPR)
        await join(h, eu, "eu-central")
        await h.submit(task("B", tags=["patient-data"]), b"b")  # runs on eu1
        await h.submit(task("A", tags=["patient-data"]), b"a")  # waits: eu1 is busy, us1 not allowed
        await settle()
        await h.set_policy(BASE)  # the rule is dropped for tasks submitted from now on
        await join(h, us, "us-west")
        await settle()
        assert h.core.job("A").state is JobState.QUEUED  # the live head keeps A's admission-time constraints
        restarted = await open_head(url, {"eu1": eu, "us1": us})
        await restarted.heartbeat({"executor_id": "us1", "queue_depth": 0})
        await settle()
        job = restarted.core.job("A")
        assert job.state is JobState.QUEUED, f"A ran on {job.executor_id} (outside eu-central) after the restart"
    asyncio.run(main())


def report(task_id: str, executor_id: str, attempt: int, cpu_seconds: float = 1.0) -> dict:
    now = time.time()
    return {"task_id": task_id, "executor_id": executor_id, "coop_id": COOP, "member": "alice",
            "started_at": now - 1, "ended_at": now, "cpu_seconds": cpu_seconds, "outcome": "succeeded",
            "attempt": attempt}


class ForgetfulWorker(FakeWorker):
    """A worker that restarted and forgot what it ran (answers ``missing`` with every task asked about)."""

    forget = False

    async def _missing(self, task_ids):
        return list(task_ids) if self.forget else []


async def _retry_waits(url: str) -> tuple[Head, dict]:
    """A on e1 and G on e2 (both alice's); alice's cap drops to 1; e1's worker restarts and forgets A:
    A's retry waits (alice is at her cap) with e1 free and e2 busy."""
    e1, e2 = ForgetfulWorker("e1"), ForgetfulWorker("e2")
    h = await open_head(url, {})
    await h.set_policy({**BASE, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 2}})
    await join(h, e1, "us-west", trust=0.9)
    await join(h, e2, "us-west", trust=0.5)
    await h.submit(task("A"), b"a")  # on e1 (trusted more)
    await h.submit(task("G"), b"g")  # on e2
    await settle()
    assert (h.core.job("A").executor_id, h.core.job("G").executor_id) == ("e1", "e2")
    await h.set_policy({**BASE, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 1}})
    e1.forget = True
    await h._watch_once()  # e1's worker forgot A: A is retried, and waits (alice runs G, her cap is 1)
    e1.forget = False
    await settle()
    assert h.core.job("A").state is JobState.QUEUED
    return h, {"e1": e1, "e2": e2}


def test_a_restart_keeps_the_executors_a_retry_should_avoid(tmp_path):
    """A retry prefers executors its earlier attempts were not lost on (docs/architecture.md, "Decisions
    worth knowing"). The live head sends A's retry to e2 once G ends there; a head restarted while the
    retry waited forgot ``avoid`` (not in the job record) and sends it back to e1."""
    async def main():
        live, _ = await _retry_waits(f"sqlite:///{tmp_path}/live.db")
        await live.on_reports([report("G", "e2", 1)])  # e1 and e2 both free now
        await settle()
        assert live.core.job("A").executor_id == "e2"  # the live head avoids e1

        h, workers = await _retry_waits(f"sqlite:///{tmp_path}/restarted.db")
        restarted = await open_head(f"sqlite:///{tmp_path}/restarted.db", workers)
        await restarted.on_reports([report("G", "e2", 1)])
        await settle()
        job = restarted.core.job("A")
        assert (job.state, job.executor_id) == (JobState.RUNNING, "e2"), \
            f"after the restart the retry went back to {job.executor_id}, where its first attempt was lost"
    asyncio.run(main())


class DeadWorker(FakeWorker):
    """The handle of a worker actor that died: every call fails as Ray's would."""

    async def _missing(self, task_ids):
        from ray.exceptions import ActorDiedError
        raise ActorDiedError()

    async def _start_many(self, specs, capacity=None):
        from ray.exceptions import ActorDiedError
        raise ActorDiedError()


def test_a_restart_does_not_bring_back_an_executor_the_head_had_found_dead(tmp_path):
    """e1's worker died: the head marks e1 offline, so new work goes to e2 (until e1 heartbeats again).
    A restarted head restores e1 as active (an offline status is never written to the store): the next
    job is placed on the dead executor and, with no retries left, fails without ever running."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        e1, e2 = FakeWorker("e1"), FakeWorker("e2")
        h = await open_head(url, {})
        await h.set_policy(BASE)
        await join(h, e1, "us-west", trust=0.9)
        await join(h, e2, "us-west", trust=0.5)
        await h.submit(task("A"), b"a")  # on e1 (trusted more)
        await settle()
        dead = DeadWorker("e1")
        h._workers["e1"] = dead
        await h._watch_once()  # e1's worker is dead: A is retried on e2, e1 goes offline
        await settle()
        assert h.core.job("A").executor_id == "e2"
        assert h.core.table.status_of("e1").value == "offline"
        restarted = await open_head(url, {"e1": dead, "e2": e2})
        await restarted.on_reports([report("A", "e2", 2)])  # e2 free again
        await restarted.submit(task("X", max_retries=0), b"x")
        await settle()
        job = restarted.core.job("X")
        assert job.state is JobState.RUNNING and job.executor_id == "e2", (job.state, job.executor_id, job.reason)
    asyncio.run(main())


def test_placement_ties_after_a_restart_still_go_by_registration_order(tmp_path):
    """README: ties go to the executor in the lowest table row, i.e. registration order. A restarted
    head re-registers executors sorted by id, so the same submission lands elsewhere after a restart."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        zeta, alpha = FakeWorker("zeta"), FakeWorker("alpha")
        h = await open_head(url, {})
        await h.set_policy(BASE)
        await join(h, zeta, "us-west")  # registered first: row 0
        await join(h, alpha, "us-west")
        await h.submit(task("A"), b"a")
        await settle()
        assert h.core.job("A").executor_id == "zeta"
        await h.on_reports([report("A", "zeta", 1)])
        restarted = await open_head(url, {"zeta": zeta, "alpha": alpha})
        await restarted.submit(task("B"), b"b")
        await settle()
        assert restarted.core.job("B").executor_id == "zeta"
    asyncio.run(main())


def test_a_cancel_whose_record_the_store_refused_leaves_the_queued_job_holding_its_reservation(tmp_path,
                                                                                             monkeypatch):
    """Cancelling a queued job releases its reservation at once, outside the call's group commit; when the
    store then refuses the job's record, the head rebuilds its memory from the store, where the job is still
    queued: it will run, but no longer holds its projected cost, so admissions may pass the quota."""
    import sqlite3
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        h = await open_head(url, {})
        await h.set_policy(BASE)
        await join(h, FakeWorker("e1"), "us-west")
        await h.submit(task("A"), b"a")  # runs
        await h.submit(task("C"), b"c")  # waits
        await settle()
        held = h.core.ledger.standing(COOP, "alice", time.time()).reserved
        put_job = h.store.put_job

        def io_error(task_id, record):
            raise sqlite3.OperationalError("disk I/O error")
        monkeypatch.setattr(h.store, "put_job", io_error)
        with pytest.raises(sqlite3.OperationalError):
            await h.cancel("C")  # fails loudly: C stays as the store has it, queued
        monkeypatch.setattr(h.store, "put_job", put_job)
        assert h.core.job("C").state is JobState.QUEUED
        assert h.core.ledger.standing(COOP, "alice", time.time()).reserved == held, \
            "C is queued (it will run) but its reservation is gone"
    asyncio.run(main())


def test_two_sampled_completions_in_one_batch_keep_two_audit_records(tmp_path, monkeypatch):
    """Each sampled completion is written on a thread of its own (run_in_executor) as "latest seq_no + 1":
    read, then write, not atomic. Two completions settled in one on_reports call race, and one audit
    record overwrites the other. (The sleep only widens the window between the read and the write.)"""
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        h = await open_head(url, {})
        await h.set_policy({**BASE, "audit": {"members": ["alice"]}})
        await join(h, FakeWorker("e1"), "us-west", cpus=2)
        await h.submit(task("A"), b"a")
        await h.submit(task("B"), b"b")
        await settle()
        latest = h.store.latest_audit

        def slow_latest(session_id):
            found = latest(session_id)
            time.sleep(0.05)
            return found
        monkeypatch.setattr(h.store, "latest_audit", slow_latest)
        await h.on_reports([report("A", "e1", 1), report("B", "e1", 1)])
        await asyncio.sleep(0.5)
        records = h.store.list_audit(session_id=f"{COOP}/alice")
        assert sorted(r.task["task_id"] for r in records) == ["A", "B"]
    asyncio.run(main())


@pytest.mark.parametrize("policy", [
    {**BASE, "rules": [{"type": "plugin", "name": "gone", "uri": "tests.fixtures.no_such_module:Rule"}]},
    {**BASE, "rules": [{"type": "TaskLimits", "max_runtime_s": 1800}]},  # its default runtime is 3600 s
], ids=["plug-in no longer installed", "refused by this release's checks"])
def test_a_head_restarts_past_a_stored_policy_it_cannot_install(tmp_path, caplog, policy):
    url = f"sqlite:///{tmp_path}/state.db"
    from scheduler.state_store import open_store
    store = open_store(url)
    store.put_policy(COOP, policy, "admin", time.time())  # as an earlier release stored it
    store.put_policy("coop:ok", {**BASE, "coop_id": "coop:ok"}, "admin", time.time())
    store.close()

    async def main():
        head = await open_head(url, {})
        decision = await head.submit(task("t1"))
        return head, decision

    head, decision = asyncio.run(main())
    assert head.core.policy(COOP) is None and head.core.policy("coop:ok") is not None
    assert f"policy of coop {COOP} (version 1) not restored" in caplog.text
    assert not decision["admitted"] and "has no scheduling policy" in decision["reasons"][0]["message"]
