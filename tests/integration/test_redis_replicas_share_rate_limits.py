"""Head replicas on one real Redis spend a member's RateLimit tokens together (``scheduler.store_rate_buckets``):
what one admitted counts against the others, so sending to several replicas gains a member nothing. Before,
each head kept its buckets in memory and two replicas let twice the burst through. The heads are the real
``Head`` class on an asyncio loop, no Ray (``replica``: a drained executor, so admitted jobs wait queued)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from scheduler.redis_store import RedisStore
from scheduler.store_rate_buckets import StoreRateBuckets, bucket_name
from tests.integration.test_redis_orphan_reservations import replica
from tests.unit.test_head_interleavings import COOP, no_ray_started  # noqa: F401

pytestmark = pytest.mark.integration

LIMITED = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 100},
           "rules": [{"type": "RateLimit", "name": "slow", "rate": 0.001, "burst": 3}]}


@pytest.fixture
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


def task(task_id: str, member: str = "alice") -> dict:
    return {"task_id": task_id, "coop_id": COOP, "member": member, "resources": {"cpus": 1}, "max_runtime_s": 60}


def test_a_burst_spent_through_one_replica_is_spent_on_the_other(url):
    async def main():
        a, b = await replica(url), await replica(url)
        await a.set_policy(LIMITED)
        await b.set_policy(LIMITED)
        decisions = [await head.submit(task(f"t{i}")) for i, head in enumerate((a, b, a, b, a, b))]
        assert [d["admitted"] for d in decisions] == [True, True, True, False, False, False]  # 3 in all, not 6
        refused = decisions[3]["reasons"][0]
        assert refused["source"] == "slow" and "rate limit 0.001/s (burst 3) reached for member alice" \
            in refused["message"]
        assert (await b.submit(task("other", member="bob")))["admitted"]  # each member has a bucket of its own
    asyncio.run(main())


def test_a_shared_bucket_refills_at_its_rate_on_the_servers_clock_and_never_goes_below_zero(url):
    store = RedisStore(url)
    buckets = StoreRateBuckets(store)
    key = (("fast", 20.0, 2, "member"), COOP, "alice")
    assert buckets.available(key, 20.0, 2, now=0.0) == 2.0  # never spent from: full
    for _ in range(4):  # two more than it holds: it stays at 0, no debt
        buckets.take(key, 20.0, 2, now=0.0)
    assert buckets.available(key, 20.0, 2, now=0.0) < 1.0
    time.sleep(0.1)  # 20 a second: two tokens back within 0.1 s (the caller's `now` is not used)
    assert buckets.available(key, 20.0, 2, now=0.0) == pytest.approx(2.0, abs=1e-6)
    ttl = redis.Redis.from_url(url).ttl(store._k("rate", bucket_name(key)))
    assert 0 < ttl <= 61  # an idle bucket goes once it would be full again (0.1 s here, plus a minute)
    store.close()


def test_a_replica_on_sqlite_keeps_its_buckets_in_memory(tmp_path):
    from scheduler.head import Head

    async def main():
        head = Head.__new__(Head)
        await Head.__init__(head, store_url=f"sqlite:///{tmp_path / 's.db'}")
        head._watchdog = object()
        assert type(head.core._buckets) is not StoreRateBuckets
    asyncio.run(main())
