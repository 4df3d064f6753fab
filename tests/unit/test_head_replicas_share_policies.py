"""Head replicas on one store decide by the same policies: one set, replaced or removed through one head
applies on the others within ``POLICY_REFRESH_S`` (``scheduler.policy_sync``), and a version a head cannot
use fails closed there. The heads are the real class on an asyncio loop, two of them on one SQLite file,
no Ray; each test runs the watchdog's round itself (tests/integration/test_redis_replicas_share_policies.py
has two head actors on Redis)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

import scheduler.policy_sync as policy_sync
from scheduler.head import Head
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started  # noqa: F401
from tests.unit.test_head_orphaned_reservations import sqlite_head

COOP = "coop:shared"


replica = sqlite_head  # a head on the SQLite file at ``path``; the tests run its watchdog's rounds themselves


async def refreshed(head: Head) -> None:
    head._next_policy_refresh = 0.0  # as if POLICY_REFRESH_S had passed
    await head._watch_once()


async def add_executor(head: Head, executor_id: str, cpus: float) -> None:
    await head.register_executor({"executor_id": executor_id, "coop_id": COOP, "region": "us-west", "node_id": "n1",
                                  "resources": {"cpus": cpus}})
    head._workers[executor_id] = FakeWorker(executor_id)  # (registering drops a cached handle)


def policy(max_cpus: float, mode: str = "strict") -> dict:
    return {"coop_id": COOP, "enforcement_mode": mode, "default_quota": {"cpu_hours_per_month": 100},
            "rules": [{"type": "TaskLimits", "max_cpus": max_cpus}]}


def task(task_id: str, cpus: float) -> dict:
    return {"task_id": task_id, "coop_id": COOP, "member": "ana", "resources": {"cpus": cpus}, "max_runtime_s": 60}


def test_a_policy_set_through_one_replica_decides_the_others_submissions_after_their_next_refresh(tmp_path):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")
        await add_executor(b, "e1", cpus=8)
        await a.set_policy(policy(max_cpus=4))
        assert b.core.policy(COOP) is None  # not yet looked
        await refreshed(b)
        assert b.core.policy(COOP) == a.core.policy(COOP)
        assert (await b.submit(task("t1", 6)))["admitted"] is False  # TaskLimits, as A decides it
        await a.set_policy(policy(max_cpus=8))  # raised through A
        await b._watch_once()  # within POLICY_REFRESH_S of the last look: still the version it holds
        assert b.core.policy(COOP).rules[0].max_cpus == 4
        await refreshed(b)
        assert b.core.policy(COOP).rules[0].max_cpus == 8
        decision = await b.submit(task("t2", 6))
        assert decision["admitted"] is True, decision
    asyncio.run(main())


def test_a_policy_removed_through_one_replica_is_removed_on_the_others(tmp_path):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")
        await a.set_policy(policy(max_cpus=4))
        await refreshed(b)
        assert b.core.policy(COOP) is not None
        assert await a.remove_policy(COOP)
        await refreshed(b)
        assert b.core.policy(COOP) is None
        decision = await b.submit(task("t1", 1))
        assert decision["admitted"] is False and "no scheduling policy" in decision["reasons"][0]["message"]
        await a.set_policy(policy(max_cpus=4))  # set again: a new version, taken again
        await refreshed(b)
        assert b.core.policy(COOP) is not None
    asyncio.run(main())


def test_a_replicas_own_change_is_never_undone_by_a_refresh_that_read_the_store_before_it(tmp_path, monkeypatch):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")
        await a.set_policy(policy(max_cpus=4))
        await refreshed(b)
        read = b.store.active_policy_versions

        def stale_read():  # B reads the versions, then (before the refresh applies them) sets a policy itself
            versions = read()
            asyncio.run_coroutine_threadsafe(b.set_policy(policy(max_cpus=2)), loop).result()
            return versions
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(b.store, "active_policy_versions", stale_read)
        refresh = asyncio.create_task(refreshed(b))
        await refresh
        assert b.core.policy(COOP).rules[0].max_cpus == 2  # its own write stands
        monkeypatch.setattr(b.store, "active_policy_versions", read)
        await refreshed(b)
        assert b.core.policy(COOP).rules[0].max_cpus == 2
        await refreshed(a)
        assert a.core.policy(COOP).rules[0].max_cpus == 2  # and reaches A
    asyncio.run(main())


def test_a_version_damaged_in_the_store_fails_closed_on_the_replica_that_refreshes_and_is_logged_once(
        tmp_path, caplog):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")
        await a.set_policy(policy(max_cpus=4))
        await refreshed(b)
        await a.set_policy(policy(max_cpus=8))
        db = sqlite3.connect(tmp_path / "s.db")
        db.execute("UPDATE policies SET policy = '{broken' WHERE coop_id = ? AND version = 2", (COOP,))
        db.commit()
        db.close()
        with caplog.at_level(logging.ERROR, logger="coopsched.head"):
            await refreshed(b)
            await refreshed(b)
        assert b.core.policy(COOP) is None  # not version 1 either: version 2 may have taken something away
        logged = [r for r in caplog.records if r.name == "coopsched.head" and "damaged" in r.getMessage()]
        assert len(logged) == 1
        decision = await b.submit(task("t1", 1))
        assert decision["admitted"] is False and "cannot be read" in decision["reasons"][0]["message"]
        await a.set_policy(policy(max_cpus=8))  # an admin sets it again: version 3, taken
        await refreshed(b)
        assert b.core.policy(COOP).rules[0].max_cpus == 8
    asyncio.run(main())


def test_a_refresh_that_cannot_read_the_store_keeps_the_policies_held(tmp_path, monkeypatch, caplog):
    async def main():
        a = await replica(tmp_path / "s.db")
        await a.set_policy(policy(max_cpus=4))

        def down():
            raise sqlite3.OperationalError("disk I/O error")
        monkeypatch.setattr(a.store, "active_policy_versions", down)
        with caplog.at_level(logging.WARNING, logger="coopsched.head"):
            await refreshed(a)
        assert a.core.policy(COOP) is not None
        assert any("could not read the stored policies" in r.getMessage() for r in caplog.records)
    asyncio.run(main())


def test_the_watchdog_looks_at_the_stored_policies_every_refresh_interval(tmp_path, monkeypatch):
    reads = []

    async def main():
        a = await replica(tmp_path / "s.db")
        read = a.store.active_policy_versions
        monkeypatch.setattr(a.store, "active_policy_versions", lambda: reads.append(1) or read())
        await refreshed(a)
        await a._watch_once()
        assert len(reads) == 1
        a._next_policy_refresh -= policy_sync.POLICY_REFRESH_S
        await a._watch_once()
        assert len(reads) == 2
    asyncio.run(main())


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_a_raise_taken_from_another_replica_lets_waiting_tasks_start(tmp_path, mode):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")
        limited = {**policy(max_cpus=8, mode=mode), "default_quota": {"cpu_hours_per_month": 100,
                                                                      "max_concurrent_tasks": 1}}
        await a.set_policy(limited)
        await refreshed(b)
        await add_executor(b, "e1", cpus=8)
        for t in ("t1", "t2"):
            assert (await b.submit(task(t, 1)))["admitted"]
        assert [b.core.job(t).state.value for t in ("t1", "t2")] == ["running", "queued"]
        await a.set_policy({**limited, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 2}})
        await refreshed(b)
        assert b.core.job("t2").state.value == "running"
    asyncio.run(main())


def test_a_raise_set_through_the_same_head_lets_waiting_tasks_start_at_once(tmp_path):
    async def main():
        a = await replica(tmp_path / "s.db")
        limited = {**policy(max_cpus=8), "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 1}}
        await a.set_policy(limited)
        await add_executor(a, "e1", cpus=8)
        for t in ("t1", "t2"):
            assert (await a.submit(task(t, 1)))["admitted"]
        assert a.core.job("t2").state.value == "queued"
        await a.set_policy({**limited, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 2}})
        assert a.core.job("t2").state.value == "running"  # not at the next report or heartbeat
    asyncio.run(main())


def test_a_replica_whose_watchdog_has_not_run_reads_the_policies_before_its_first_admission(tmp_path):
    async def main():
        a, b = await replica(tmp_path / "s.db"), await replica(tmp_path / "s.db")  # B idle since its start
        await add_executor(b, "e1", cpus=8)
        await a.set_policy(policy(max_cpus=4))
        stale = await b.submit(task("t0", 1))  # within POLICY_REFRESH_S of its start: what it restored (none)
        assert stale["admitted"] is False and "no scheduling policy" in stale["reasons"][0]["message"]
        b._next_policy_refresh -= 2 * policy_sync.POLICY_REFRESH_S  # then no refresh for two intervals
        assert (await b.submit(task("t1", 1)))["admitted"] is True
        refused = await b.submit(task("t2", 6))
        assert refused["admitted"] is False and refused["reasons"][0]["source"] == "TaskLimits"
    asyncio.run(main())
