"""Head replicas on one real Redis count a member's tasks running through the others against its
``max_concurrent_tasks``: the store's running jobs of that member, less the replica's own among them. Before,
each head counted only what it placed, and a member sending to two replicas ran twice its limit at once. The
heads are the real ``Head`` class on an asyncio loop with stand-in worker handles, each replica with an
executor of its own (as replicas run); only the Redis server is real infrastructure."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from tests.unit.test_head_interleavings import COOP, FakeWorker, no_ray_started, report, settle, task  # noqa: F401

pytestmark = pytest.mark.integration

LIMITED = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 2}}


@pytest.fixture
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


async def replica(url: str) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url)
    head._watchdog = object()  # the tests run the watchdog's rounds themselves
    await head.set_policy(LIMITED)
    return head


async def with_executor(head: Head, executor_id: str) -> Head:
    """``head`` with an executor of its own (registered after every replica started: none restores another's)."""
    await head.register_executor(ExecutorSpec(executor_id=executor_id, coop_id=COOP, region="us-west",
                                              node_id=f"n-{executor_id}", resources={"cpus": 8}).model_dump(mode="json"))
    head._workers[executor_id] = FakeWorker(executor_id)
    return head


def state(head: Head, task_id: str) -> str:
    return head.core.job(task_id).state.value


def test_a_member_at_its_limit_through_one_replica_waits_on_the_other_until_a_task_ends(url):
    async def main():
        a, b = await replica(url), await replica(url)
        await with_executor(a, "ea"), await with_executor(b, "eb")
        for t in ("t1", "t2"):
            await a.submit(task(t))
        await settle()
        assert [state(a, t) for t in ("t1", "t2")] == ["running", "running"]
        await b.submit(task("t3"))  # before: running on eb, the member's third at once
        assert state(b, "t3") == "queued"
        assert (await b.usage(COOP, "alice"))["running"] == 2  # what it runs through every replica
        reason = b.core.job("t3").reason
        assert "at max_concurrent_tasks (2)" in reason and "2 of them placed by other head replicas" in reason
        await a.on_report(report("t1", "ea", 1))  # one of A's ends: a slot is free, for B's next round
        assert state(a, "t1") == "succeeded"
        await b.submit(task("t4"))  # (a call: B schedules again)
        await settle()
        assert (state(b, "t3"), state(b, "t4")) == ("running", "queued")  # t2 on ea and t3 on eb: 2
    asyncio.run(main())


def test_a_replica_frees_its_own_slot_in_the_call_that_ends_its_task_before_that_is_stored(url):
    """Its own jobs are counted once: a task that ended in this call is no longer the core's, and the store's
    count of it (still running there until the call's records are written) is not taken for another replica's."""
    async def main():
        a = await with_executor(await replica(url), "ea")
        for t in ("t1", "t2", "t3"):
            await a.submit(task(t))
        await settle()
        assert [state(a, t) for t in ("t1", "t2", "t3")] == ["running", "running", "queued"]
        await a.on_report(report("t1", "ea", 1))
        await settle()
        assert state(a, "t3") == "running"  # in the same call, not at the next one
    asyncio.run(main())


def test_a_restarted_replica_takes_back_which_of_the_stores_running_jobs_are_its_own(url):
    async def main():
        a = await with_executor(await replica(url), "ea")
        for t in ("t1", "t2"):
            await a.submit(task(t))
        await settle()
        a.store.close()
        again = Head.__new__(Head)  # A restarted (same store, same executor): t1 and t2 are its own, not another's
        await Head.__init__(again, store_url=url)
        again._watchdog = object()
        again._workers["ea"] = FakeWorker("ea")
        assert again._running_elsewhere(COOP, "alice") == 0
        await again.heartbeat({"executor_id": "ea", "sent_at": time.time(), "queue_depth": 0})  # (restored offline
        # on a shared store until its worker beats to this head: test_redis_replicas_own_their_jobs)
        await again.on_report(report("t1", "ea", 1))
        await again.submit(task("t3"))
        await settle()
        assert state(again, "t3") == "running"
    asyncio.run(main())
