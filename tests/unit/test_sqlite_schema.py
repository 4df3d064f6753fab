"""The SQLite store's schema upgrades: a file written by an older coopsched opens with its data intact."""

from __future__ import annotations

import sqlite3

import pytest

from scheduler.ledger import Cost, ReserveResult
from scheduler.sqlite_schema import SCHEMA_VERSION
from scheduler.sqlite_store import SqliteStore

P = "2026-11"


def _version_1_file(path) -> None:
    """What schema version 1 held of the ledger: reservations with no sums beside them."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE reservations (
            task_id TEXT PRIMARY KEY, coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
            cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL);
        INSERT INTO reservations VALUES ('t1', 'c', 'm', '2026-11', 3, 0, 1);
        INSERT INTO reservations VALUES ('t2', 'c', 'm', '2026-11', 4, 1, 2);
        INSERT INTO reservations VALUES ('t3', 'c', 'x', '2026-11', 5, 0, 0);
    """)
    db.commit()
    db.close()


def test_a_version_1_file_gets_its_open_reservations_sums(tmp_path):
    path = tmp_path / "old.db"
    _version_1_file(path)
    store = SqliteStore(f"sqlite:///{path}")
    try:
        assert store.standing("c", "m", P)[1] == Cost(7, 1, 3)
        assert store.standing("c", "x", P)[1] == Cost(5, 0, 0)
        assert store.release("t1")
        assert store.standing("c", "m", P)[1] == Cost(4, 1, 2)
        version = sqlite3.connect(path).execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        assert version == SCHEMA_VERSION
    finally:
        store.close()


def test_held_sums_follow_reserve_settle_release_and_reopen(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = SqliteStore(url)
    for i in range(5):
        assert store.reserve(f"t{i}", "c", "m", P, Cost(2, 1, 3), Cost(100, -1, -1)) is ReserveResult.RESERVED
    store.settle("t0", "c", "m", P, Cost(1, 0, 1))
    store.release("t1")
    store.settle_many([("t2", "c", "m", P, Cost(1, 0, 0)), ("t3", "c", "m", "2026-12", Cost(1, 0, 0))])
    assert store.standing("c", "m", P) == (Cost(3, 0, 1), Cost(2, 1, 3), 3)
    store.close()
    store = SqliteStore(url)  # reopened: the sums are stored, not rebuilt from a wrong version
    try:
        assert store.standing("c", "m", P)[1] == Cost(2, 1, 3)
        # the limit check reads the sums: 3 used + 2 held + 2 asked = 7 > 6
        assert store.reserve("t9", "c", "m", P, Cost(2, 0, 0), Cost(6, -1, -1)) is ReserveResult.OVER_LIMIT
    finally:
        store.close()


def test_a_newer_file_is_refused(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.executescript(f"CREATE TABLE schema_version (version INTEGER NOT NULL); "
                     f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1});")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this coopsched"):
        SqliteStore(f"sqlite:///{path}")
