"""The head releases reservations no unfinished job owns (``ORPHAN_GRACE_S``): at start, then once a minute
from its watchdog; and the SQLite store's side of it, when each reservation was made.

A SQLite call is one transaction, so an orphan is rare there (a batch that could not begin, an older file);
the store makes one here by reserving without a job record, as a head killed mid-call on Redis leaves it
(tests/integration/test_redis_orphan_reservations.py has the Redis cases). The ``Head`` is the real class
on an asyncio loop, no Ray.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

import scheduler.head_state as head_state
from scheduler.head import Head
from scheduler.ledger import Cost, period_of
from scheduler.sqlite_store import SqliteStore
from tests.unit.test_head_interleavings import COOP, no_ray_started  # noqa: F401

P = "2026-11"


async def sqlite_head(path) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=f"sqlite:///{path}")
    head._watchdog = object()  # the tests run _watch_once themselves
    return head


def orphan(head: Head, task_id: str) -> None:
    """A reservation with no job record, as a head killed between ``reserve`` and ``put_job`` leaves it."""
    head.store.reserve(task_id, COOP, "alice", period_of(time.time()), Cost(1_000_000, 0, 0))


def held(head: Head) -> Cost:
    return head.store.standing(COOP, "alice", period_of(time.time()))[1]


def test_the_watchdog_looks_for_orphaned_reservations_once_a_minute_not_every_second(tmp_path, monkeypatch):
    monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)

    async def main():
        head = await sqlite_head(tmp_path / "s.db")
        orphan(head, "lost")
        await head._watch_once()  # a second after the start-up sweep: not yet
        assert held(head) == Cost(1_000_000, 0, 0)
        head._next_orphan_sweep -= head_state.ORPHAN_SWEEP_INTERVAL_S  # a minute later
        await head._watch_once()
        assert held(head) == Cost()
        assert head.metrics.registry.get_sample_value("coopsched_orphaned_reservations_released_total") == 1
    asyncio.run(main())


def test_a_restarted_head_releases_at_start_only_the_reservations_older_than_the_grace(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 's.db'}")
    now = period_of(time.time())
    store.reserve("old", COOP, "alice", now, Cost(1_000_000, 0, 0))
    store.reserve("young", COOP, "alice", now, Cost(2_000_000, 0, 0))
    store._conn.execute("UPDATE reservation_times SET reserved_at = reserved_at - ? WHERE task_id = 'old'",
                        (head_state.ORPHAN_GRACE_S + 1,))
    store.close()

    async def main():
        head = await sqlite_head(tmp_path / "s.db")
        assert held(head) == Cost(2_000_000, 0, 0)
    asyncio.run(main())


def test_a_sweep_the_store_cannot_answer_is_logged_and_tried_again_at_the_next(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(head_state, "ORPHAN_GRACE_S", 0.0)

    async def main():
        head = await sqlite_head(tmp_path / "s.db")
        orphan(head, "lost")
        sweep = head.store.release_orphaned_reservations

        def unreachable(grace_s):
            raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
        monkeypatch.setattr(head.store, "release_orphaned_reservations", unreachable)
        head._next_orphan_sweep = 0.0
        await head._watch_once()  # the watchdog goes on
        assert "could not look for orphaned reservations (ConnectionError" in caplog.text
        monkeypatch.setattr(head.store, "release_orphaned_reservations", sweep)
        head._next_orphan_sweep -= head_state.ORPHAN_SWEEP_INTERVAL_S
        await head._watch_once()
        assert held(head) == Cost()
    asyncio.run(main())


# --------------------------------------------------------------------------- SQLite: when a reservation was made
def test_when_a_reservation_was_made_is_kept_while_it_is_open_and_goes_with_it(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        before = time.time()
        for task_id in ("settled", "released", "orphan", "open"):
            store.reserve(task_id, "c", "m", P, Cost(1, 0, 0))
        store.put_job("open", {"task_id": "open", "coop_id": "c", "member": "m", "state": "queued"})
        store.settle("settled", "c", "m", P, Cost(1, 0, 0))
        store.release("released")
        assert store.release_orphaned_reservations(0.0) == ["orphan"]
        times = dict(store._all("SELECT task_id, reserved_at FROM reservation_times"))
        assert list(times) == ["open"] and before - 0.01 <= times["open"] <= time.time() + 0.01
    finally:
        store.close()


def test_a_reservation_from_a_file_that_kept_no_times_goes_a_grace_after_it_is_first_seen(tmp_path):
    """A version-2 file written before reservations had a time: the store adds the table and its triggers when
    it opens the file, and gives each open reservation its time at the first sweep."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (2);
        CREATE TABLE reservations (
            task_id TEXT PRIMARY KEY, coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
            cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL);
        CREATE TABLE held (
            coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
            cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL,
            PRIMARY KEY (coop_id, member, period));
        INSERT INTO reservations VALUES ('old', 'c', 'm', '2026-11', 3, 0, 0);
        INSERT INTO held VALUES ('c', 'm', '2026-11', 3, 0, 0);
    """)
    db.commit()
    db.close()
    store = SqliteStore(f"sqlite:///{path}")
    try:
        assert store.release_orphaned_reservations(0.0) == []  # first seen: its time is now
        assert store.release_orphaned_reservations(3600.0) == []
        assert store.release_orphaned_reservations(0.0) == ["old"]
        assert store.standing("c", "m", P)[1] == Cost()
    finally:
        store.close()


@pytest.mark.parametrize("state, released", [
    (None, True), ("rejected", True), ("succeeded", True), ("queued", False), ("deferred", False),
    ("running", False), ("a-state-of-a-newer-release", False),
], ids=["no-record", "rejected", "succeeded", "queued", "deferred", "running", "unknown-state"])
def test_a_reservation_is_an_orphan_when_no_job_a_restarted_head_would_restore_owns_it(tmp_path, state, released):
    store = SqliteStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        store.reserve("t", "c", "m", P, Cost(1, 0, 0))
        if state is not None:
            store.put_job("t", {"task_id": "t", "coop_id": "c", "member": "m", "state": state})
        assert store.release_orphaned_reservations(0.0) == (["t"] if released else [])
        assert ("t" in [j["task_id"] for j in store.unfinished_jobs()]) is (not released and state is not None)
    finally:
        store.close()
