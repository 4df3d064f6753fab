"""Head replicas on one real Redis given the same task id at once: one decides it, and the store's record is
that decision, never overwritten by the replica that lost (no Ray).

On Redis a call's writes are separate commands, so another replica's call can run between an admission's
``reserve`` and its job record; here it runs there at one fixed point (the other head's internal steps, or a
store method of one head that runs the other's call first). The heads are the real ``Head`` class on an
asyncio loop (``replica``, as in test_redis_orphan_reservations: a drained executor, so jobs wait queued).
The same interleavings on SQLite, with placement: tests/unit/test_replicas_racing_for_a_task_id.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from scheduler.head import Head
from scheduler.ledger import period_of
from tests.integration.test_redis_orphan_reservations import replica
from tests.unit.test_head_interleavings import COOP, no_ray_started  # noqa: F401
from tests.unit.test_replicas_racing_for_a_task_id import TIGHT, policy, run_now, task

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


def held(head: Head) -> float:
    return head.store.standing(COOP, "alice", period_of(time.time()))[1].cpu_hours


def test_a_retry_while_the_first_replica_still_admits_is_told_so_and_records_nothing(url):
    async def main():
        a, b = await replica(url), await replica(url)
        first = a._admit(task("X"), b"x", None)  # reserved on Redis; A's call has not recorded X yet
        answer = await b.submit(task("X"), b"x")
        [reason] = answer["reasons"]
        assert not answer["admitted"] and reason["code"] == "unavailable"
        assert "task_id 'X' is already being admitted: its quota was reserved at 20" in reason["message"]
        assert b.store.get_job("X") is None
        a._schedule()
        a._persist()
        assert await b.submit(task("X"), b"x") == first and b.store.get_job("X")["state"] == "queued"
    asyncio.run(main())


def test_a_retry_that_reserves_after_the_first_replica_recorded_overwrites_nothing_and_the_sweep_keeps_the_hold(
        url, monkeypatch):
    async def main():
        a, b = await replica(url), await replica(url)
        first = a._admit(task("X"), b"x", None)
        reserve = b.store.reserve

        def first_replica_records_meanwhile(*args, **kwargs):
            a._schedule()
            a._persist()
            return reserve(*args, **kwargs)
        monkeypatch.setattr(b.store, "reserve", first_replica_records_meanwhile)
        answer = await b.submit(task("X"), b"x")
        assert b.store.get_job("X")["state"] == "queued"  # A's record, not B's refusal over it
        assert b.store.release_orphaned_reservations(0.0) == [] and held(a) == 1.0
        assert answer == first
    asyncio.run(main())


def test_a_refusal_recorded_last_never_overwrites_another_replicas_admission(url, monkeypatch):
    """A refuses X while alice's queued Y holds her quota; before A records that, Y is cancelled and B admits
    and records X: A answers with B's admission and writes nothing, so the sweep keeps X's hold."""
    async def main():
        a, b = await replica(url), await replica(url)
        for head in (a, b):
            await head.set_policy(policy(TIGHT))
        assert (await b.submit(task("Y"), b"y"))["admitted"]
        admitted = {}
        schedule = a._schedule

        def another_replica_admits_and_records_meanwhile():
            assert run_now(b.cancel("Y")) == "cancelled"
            admitted.update(run_now(b._submit(task("X"), b"x", None)))
            schedule()
        monkeypatch.setattr(a, "_schedule", another_replica_admits_and_records_meanwhile)
        answer = await a.submit(task("X"), b"x")
        assert a.store.get_job("X")["state"] == "queued"  # B's record, not A's refusal over it
        assert a.store.release_orphaned_reservations(0.0) == [] and held(a) == 1.0
        assert admitted["admitted"] and answer == admitted and a.core.task("X") is None
    asyncio.run(main())
