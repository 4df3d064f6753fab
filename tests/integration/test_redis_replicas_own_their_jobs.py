"""Head replicas on one real Redis each own what they record: a job is taken back at a restart only by the head
that recorded it (the record's ``head``, the actor's namespace and name), and a restored executor takes work only
once its worker heartbeats to this head. Before, a replica started while another ran a job took that job back too, and
when it ended there (settled by its own head), ran it again and wrote its record back over the settled one; and
it placed its own jobs on the other's executors, whose reports go to the other head. The heads are the real
``Head`` class on an asyncio loop with stand-in worker handles; only the Redis server is real infrastructure."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from scheduler.executor_spec import ExecutorSpec, ExecutorStatus
from scheduler.head import Head
from scheduler.names import HEAD_NAME, NAMESPACE
from scheduler.replicas import JobOfAnotherHead
from tests.unit.test_head_interleavings import COOP, FakeWorker, no_ray_started, report, settle, task  # noqa: F401

pytestmark = pytest.mark.integration

POLICY = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 10}}


class Forgets(FakeWorker):
    """A worker whose ended attempts were acknowledged by its tracker: it holds none of them any more."""

    async def _missing(self, task_ids):
        return list(task_ids)


@pytest.fixture
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


async def replica(url: str, name: str = HEAD_NAME) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url, name=name)  # (a replica in a namespace of its own is the same:
    # the record names both)
    head._watchdog = object()  # the tests run the watchdog's rounds themselves
    return head


async def running_t1(url: str) -> Head:
    """Replica A (the default head) with its executor ea, running t1 and holding t2 queued behind it."""
    a = await replica(url)
    await a.set_policy(POLICY)
    await a.register_executor(ExecutorSpec(executor_id="ea", coop_id=COOP, region="us-west", node_id="n-a",
                                           resources={"cpus": 1}).model_dump(mode="json"))
    a._workers["ea"] = FakeWorker("ea")
    await a.submit(task("t1"))
    await a.submit(task("t2"))
    await settle()
    assert [a.core.job(t).state.value for t in ("t1", "t2")] == ["running", "queued"]
    return a


def beat(executor_id: str) -> dict:
    return {"executor_id": executor_id, "sent_at": time.time(), "queue_depth": 0}


def test_a_replica_started_while_another_runs_jobs_leaves_them_to_it_and_never_runs_them_again(url):
    async def main():
        a = await running_t1(url)
        b = await replica(url, "replica-b")
        assert b.recovered["jobs"] == 0 and b.recovered["elsewhere"] == 2
        assert b.core.job("t1") is None and b.core.job("t2") is None
        await a.on_report(report("t1", "ea", 1))  # t1 ends on A, its own head: settled, and t2 starts
        await settle()
        b._workers["ea"] = Forgets("ea")
        await b._watch_once()  # before: B asked ea about t1, found it gone and ran it again (attempt 2)
        await settle()
        assert json.loads(redis.Redis.from_url(url).get("coopsched:job:t1"))["state"] == "succeeded"
        assert a.store.get_job("t1")["state"] == "succeeded" and a.store.get_job("t2")["state"] == "running"
        assert b._running_elsewhere(COOP, "alice") == 1  # A's t2, counted against the member's limit on B
    asyncio.run(main())


def test_a_replica_places_nothing_on_an_executor_until_its_worker_heartbeats_to_it(url):
    async def main():
        a = await running_t1(url)
        await a.on_report(report("t1", "ea", 1))
        await a.on_report(report("t2", "ea", 1))
        await settle()
        b = await replica(url, "replica-b")  # restores ea (registered through A), whose worker beats to A
        b._workers["ea"] = FakeWorker("ea")
        await b.submit(task("t3"))
        await settle()
        assert b.core.job("t3").state.value == "queued"  # before: placed on ea, its report going to A
        assert "offline" in b.core.job("t3").reason
        await b.heartbeat(beat("ea"))  # ea's worker beats to B: it works for B from now on
        await settle()
        assert b.core.job("t3").state.value == "running"
    asyncio.run(main())


def test_a_restarted_replica_takes_back_the_jobs_it_recorded_and_only_those(url):
    async def main():
        a = await running_t1(url)
        b = await replica(url, "replica-b")
        await b.register_executor(ExecutorSpec(executor_id="eb", coop_id=COOP, region="us-west", node_id="n-b",
                                               resources={"cpus": 1}).model_dump(mode="json"))
        b._workers["eb"] = FakeWorker("eb")
        await b.submit(task("t3"))
        await settle()
        assert b.core.job("t3").state.value == "running"
        a.store.close()
        again = await replica(url)  # A restarted under its name
        assert again.recovered["jobs"] == 2 and again.recovered["elsewhere"] == 1
        assert again.core.job("t1").state.value == "running" and again.core.job("t3") is None
        assert again._running_elsewhere(COOP, "alice") == 1  # B's t3
        b.store.close()
        b_again = await replica(url, "replica-b")
        assert b_again.recovered["jobs"] == 1 and b_again.core.job("t3").state.value == "running"
    asyncio.run(main())


def test_a_job_recorded_by_an_earlier_release_without_a_head_is_the_default_heads(url):
    async def main():
        a = await running_t1(url)
        r = redis.Redis.from_url(url)
        record = json.loads(r.get("coopsched:job:t1"))
        assert record["head"] == f"{NAMESPACE}/{HEAD_NAME}"
        del record["head"]  # as written before records named their head
        r.set("coopsched:job:t1", json.dumps(record))
        a.store.close()
        b = await replica(url, "replica-b")
        assert b.core.job("t1") is None
        again = await replica(url)
        assert again.core.job("t1").state.value == "running"
    asyncio.run(main())


def test_cancel_or_a_result_asked_of_another_replica_names_the_head_that_holds_the_job_and_changes_nothing(url):
    async def main():
        a = await running_t1(url)  # t1 running on A, t2 queued there
        b = await replica(url, "replica-b")
        owner = f"{NAMESPACE}/{HEAD_NAME}"
        with pytest.raises(JobOfAnotherHead) as raised:  # before: B answered t2's stored state, "queued", and
            await b.cancel("t2")  # cancelled nothing; its client took that for the state after the cancel
        assert raised.value.owner == owner and raised.value.task_id == "t2"
        assert "only that head can cancel it" in str(raised.value) and "nothing was changed" in str(raised.value)
        assert a.core.job("t2").state.value == "queued" and a.store.get_job("t2")["state"] == "queued"
        started = time.monotonic()
        with pytest.raises(JobOfAnotherHead):  # before: B waited on it, then said its value was gone
            await b.wait_result("t1", 5.0)
        many = await b.wait_results(["t1", "t2"], 5.0)  # (Client.gather: the handles then follow it one by one)
        assert {t: (x["head"], x["state"], x["ref"]) for t, x in many.items()} == {
            "t1": (owner, "running", None), "t2": (owner, "queued", None)}
        assert time.monotonic() - started < 2.0  # answered at once, not at the end of the wait
        assert (await b.status("t2"))["state"] == "queued"  # reads are the store's, through any replica
        assert await a.cancel("t2") == "cancelled"  # through its own head
        with pytest.raises(JobOfAnotherHead):  # finished: still A's (A may hold a finished job's value)
            await b.cancel("t2")
        assert (await b.status("t2"))["state"] == "cancelled"
        assert await b.cancel("never-submitted") is None
    asyncio.run(main())


def test_a_rebuild_after_a_refused_write_keeps_the_executors_that_work_for_this_head_taking_work(url, monkeypatch):
    async def main():
        await running_t1(url)  # A, with its executor ea
        b = await replica(url, "replica-b")
        await b.register_executor(ExecutorSpec(executor_id="eb", coop_id=COOP, region="us-west", node_id="n-b",
                                               resources={"cpus": 2}).model_dump(mode="json"))
        b._workers["eb"] = FakeWorker("eb")
        create_job = b.store.create_job

        def refused(*args, **kwargs):
            raise redis.ConnectionError("the store went away mid-call")
        monkeypatch.setattr(b.store, "create_job", refused)
        with pytest.raises(redis.ConnectionError):
            await b.submit(task("t3"))  # its write refused: B rebuilds its memory from the store
        monkeypatch.setattr(b.store, "create_job", create_job)
        assert b.resyncs == 1 and b.core.job("t3") is None
        assert b.core.table.status_of("eb") is ExecutorStatus.ACTIVE  # before: offline until its next heartbeat
        assert b.core.table.status_of("ea") is ExecutorStatus.OFFLINE  # A's executor is still not B's
        await b.submit(task("t4"))
        await settle()
        assert b.core.job("t4").state.value == "running" and b.core.job("t4").executor_id == "eb"
    asyncio.run(main())
