"""Reservations a head call left without their job record, on a real Redis shared by head replicas (no Ray).

On Redis a call's writes are separate commands (``RedisStore.batch`` groups nothing), so a head killed, or
cut off from Redis, between an admission's ``reserve`` and its job record leaves a reservation no job owns.
It is released once older than ``ORPHAN_GRACE_S``, by whichever replica looks first, and never while a head
may still record its job. The heads here are the real ``Head`` class on an asyncio loop (as in
tests/unit/test_head_store_failures.py); only the Redis server is real infrastructure.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

import scheduler.head_state as head_state
from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from scheduler.ledger import Cost, period_of
from scheduler.state_store import open_store
from tests.unit.test_head_interleavings import COOP, no_ray_started, task  # noqa: F401

pytestmark = pytest.mark.integration
P = "2026-11"


@pytest.fixture
def url(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


async def replica(url: str) -> Head:
    """A head replica on the shared Redis (no background watchdog: the tests run ``_watch_once``). The first
    registers a drained executor (admitted jobs wait in the queue, nothing is dispatched); the others
    take it, and the policy, from the store."""
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url)
    head._watchdog = object()
    if "e1" not in head.core.table:
        await head.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                                  "max_concurrent_tasks": 100}})
        await head.register_executor(ExecutorSpec(executor_id="e1", coop_id=COOP, region="us-west", node_id="n1",
                                                  resources={"cpus": 4}).model_dump(mode="json"))
        await head.drain("e1")
    return head


def held(store) -> Cost:
    return store.standing(COOP, "alice", period_of(time.time()))[1]


def cut_off_before_the_job_record(head: Head, monkeypatch) -> None:
    def connection_lost(task_id, record):
        raise redis.ConnectionError("Connection closed by server.")
    monkeypatch.setattr(head.store, "create_job", connection_lost)  # (a job's first record)
    monkeypatch.setattr(head.store, "put_job", connection_lost)


def released_count(head: Head) -> float:
    return head.metrics.registry.get_sample_value("coopsched_orphaned_reservations_released_total")


def test_a_reservation_left_by_a_submission_cut_off_before_its_job_record_is_released_after_the_grace(
        url, store, monkeypatch):
    async def main():
        first = await replica(url)
        cut_off_before_the_job_record(first, monkeypatch)
        with pytest.raises(redis.ConnectionError):
            await first.submit(task("lost"), b"x")  # reserved, then Redis went away before the record
        assert store.get_job("lost") is None and held(store) != Cost()
        monkeypatch.setattr(head_state, "ORPHAN_SWEEP_INTERVAL_S", 0.0)  # every watchdog round looks
        second = await replica(url)  # a replica starting now: the orphan is seconds old, so it stays
        await second._watch_once()
        assert held(store) != Cost()
        monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)  # ... until it is older than the grace
        await second._watch_once()
        assert held(store) == Cost() and released_count(second) == 1
        assert (await second.usage(COOP, "alice"))["reserved_cpu_hours"] == 0.0
    asyncio.run(main())


def test_a_retry_of_an_orphans_task_id_is_told_it_is_being_admitted_and_is_admitted_once_the_grace_is_over(
        url, store, monkeypatch):
    """The client retries a submission whose head was lost with the same task id: the restarted head finds
    the id reserved with no record, says so (nothing ran, nothing was charged; ask again) and records nothing.
    Once the grace is over the reservation goes, and the same id is admitted."""
    async def main():
        first = await replica(url)
        cut_off_before_the_job_record(first, monkeypatch)
        with pytest.raises(redis.ConnectionError):
            await first.submit(task("T"), b"x")
        restarted = await replica(url)
        again = await restarted.submit(task("T"), b"x")
        [reason] = again["reasons"]
        assert not again["admitted"] and reason["code"] == "unavailable"
        assert "task_id 'T' is already being admitted" in reason["message"] and "new task id" not in reason["message"]
        assert store.get_job("T") is None and held(store) != Cost()
        monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)
        restarted._next_orphan_sweep -= head_state.ORPHAN_SWEEP_INTERVAL_S  # a minute later
        await restarted._watch_once()
        assert held(store) == Cost()
        assert (await restarted.submit(task("T"), b"x"))["admitted"]
        assert store.get_job("T")["state"] == "queued" and held(store) != Cost()
    asyncio.run(main())


def test_a_restarted_head_releases_at_start_what_a_killed_one_left_held(url, store, monkeypatch, caplog):
    store.reserve("killed-mid-call", COOP, "alice", period_of(time.time()), Cost(2_000_000, 0, 0))
    monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)

    async def main():
        head = await replica(url)
        assert held(store) == Cost() and released_count(head) == 1
    with caplog.at_level("WARNING", logger="coopsched.head"):
        asyncio.run(main())
    assert "released 1 reservation(s)" in caplog.text and "killed-mid-call" in caplog.text


def test_a_job_recorded_while_the_sweep_looks_keeps_its_reservation(store, monkeypatch):
    """Between the sweep's read of a reservation and its release, another head records the job: the release
    script checks the record itself, so the job keeps its hold."""
    store.reserve("racing", "c", "m", P, Cost(5, 0, 0))
    release = store._release_orphaned

    def another_head_records_it_first(*args, **kwargs):
        store.put_job("racing", {"task_id": "racing", "coop_id": "c", "member": "m", "state": "queued",
                                 "submitted_at": 1.0})
        return release(*args, **kwargs)
    monkeypatch.setattr(store, "_release_orphaned", another_head_records_it_first)
    assert store.release_orphaned_reservations(0.0) == []
    assert store.standing("c", "m", P)[1] == Cost(5, 0, 0)


def test_how_long_a_reservation_was_held_is_measured_by_the_redis_servers_clock_not_the_heads(store, monkeypatch):
    store.reserve("young", "c", "m", P, Cost(5, 0, 0))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400)  # this head's clock runs a day ahead
    assert store.release_orphaned_reservations(3600.0) == []
    monkeypatch.setattr(time, "time", real)
    assert store.release_orphaned_reservations(0.0) == ["young"]


def test_a_reservation_made_before_reservations_kept_their_time_goes_a_grace_after_it_is_first_seen(store, url):
    store.reserve("old", "c", "m", P, Cost(5, 0, 0))
    raw = redis.Redis.from_url(url)
    raw.hdel(f"{store.prefix}reservation:old", "reserved_at")  # as the reserve script of an earlier release
    assert store.release_orphaned_reservations(0.0) == []  # first seen: given the time of now
    assert raw.hget(f"{store.prefix}reservation:old", "reserved_at") is not None
    assert store.release_orphaned_reservations(3600.0) == []
    assert store.release_orphaned_reservations(0.0) == ["old"]
    assert store.standing("c", "m", P)[1] == Cost()
    raw.close()


def test_replicas_sweeping_at_once_release_each_orphan_exactly_once(url):
    stores = [open_store(url) for _ in range(4)]
    try:
        for i in range(300):
            stores[0].reserve(f"lost-{i}", "c", "m", P, Cost(1, 0, 0))
        for i in range(50):
            stores[0].reserve(f"kept-{i}", "c", "m", P, Cost(1_000, 0, 0))
            stores[0].put_job(f"kept-{i}", {"task_id": f"kept-{i}", "coop_id": "c", "member": "m",
                                            "state": "queued", "submitted_at": float(i)})
        released: list[list[str]] = [[] for _ in stores]
        threads = [threading.Thread(target=lambda s=s, out=out: out.extend(s.release_orphaned_reservations(0.0)))
                   for s, out in zip(stores, released)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = [task_id for each in released for task_id in each]
        assert sorted(everything) == sorted(f"lost-{i}" for i in range(300))  # none twice, none missed
        assert stores[0].standing("c", "m", P)[1] == Cost(50_000, 0, 0)
    finally:
        for s in stores:
            s.close()
