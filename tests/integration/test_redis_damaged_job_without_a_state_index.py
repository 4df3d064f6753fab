"""On Redis a damaged job record's state is the state index its task is in; in none, or in two, the store
says none. Such a job's status reaches the client as ``JobRecordDamaged`` (naming the job and what to do)
instead of a pydantic error, and cancelling it reaches the worker that runs it. The heads are the real
``Head`` class on an asyncio loop (FakeWorker handles, as in tests/unit/test_head_interleavings.py); only
the Redis server is real infrastructure (the session's, tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from scheduler.head import Head
from scheduler.job_handle import JobRecordDamaged, job_status
from scheduler.state_store import open_store
from tests.unit.test_cancel_reaches_the_workers_of_a_damaged_job_that_may_run import StoppingWorker, cancels
from tests.unit.test_head_interleavings import (COOP, FakeWorker, add_executor, no_ray_started,  # noqa: F401
                                               settle, task)

pytestmark = pytest.mark.integration


async def redis_head(url: str, workers: dict) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url)
    head._watchdog = object()  # the tests run _watch_once themselves
    head._workers.update(workers)
    return head


def placed_then_damaged(url: str, raw: redis.Redis):
    """A head on Redis placed job "run" on e1 and went away; then the JSON of its record was cut short. The
    store, open (the caller closes it)."""
    async def first():
        head = await redis_head(url, {})
        await head.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                                  "max_concurrent_tasks": 100}})
        await add_executor(head, FakeWorker("e1"))
        await head.submit(task("run"), b"run")
        await settle()
        assert head.core.job("run").executor_id == "e1"
        head.store.close()

    asyncio.run(first())
    store = open_store(url)
    raw.set(store._k("job", "run"), b'{"task_id": "run", "sta')  # its JSON cut short
    return store


SPOILS = {  # how the state indices of job "run" (running on e1) lose its state
    "in no state index": lambda raw, k: raw.srem(k("jobs", "state", "running"), "run"),
    "in two state indices": lambda raw, k: raw.sadd(k("jobs", "state", "queued"), "run"),
}


@pytest.mark.parametrize("spoil", SPOILS.values(), ids=SPOILS.keys())
def test_a_damaged_job_with_no_state_on_redis_is_answered_as_damaged_and_its_cancel_reaches_its_worker(
        redis_server, spoil):
    url = redis_server.url
    raw = redis.Redis.from_url(url)
    raw.flushdb()

    store = placed_then_damaged(url, raw)
    spoil(raw, store._k)
    assert store.get_job("run")["state"] is None
    store.close()

    async def restarted():
        worker = StoppingWorker("e1", runs=("run",))
        head = await redis_head(url, {"e1": worker})
        answer = await head.status("run")
        cancelled = await head.cancel("run")
        head.store.close()
        return answer, cancelled, cancels(worker)

    answer, cancelled, asked = asyncio.run(restarted())
    with pytest.raises(JobRecordDamaged) as caught:  # before the fix: JobStatus(**answer) raised ValidationError
        job_status(answer, "run")
    assert "'run'" in str(caught.value) and "state cannot be read" in str(caught.value)
    assert (cancelled, asked) == ("running", ["run"])  # before the fix: None, and no worker asked
    raw.flushdb()
    raw.close()
