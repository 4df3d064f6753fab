"""The SQLite store when SQLite itself fails: a full disk inside a group commit, a COMMIT refused.

A write that fails with a full disk makes SQLite roll the whole transaction back, not just
that write's savepoint; a COMMIT refused as busy leaves the transaction open. Either way the
store must say so (``BatchRolledBack``, or the COMMIT's error) and never leave later writes
inside a transaction that will not commit.
"""

from __future__ import annotations

import sqlite3

import pytest

from scheduler.sqlite_connection import BatchRolledBack
from scheduler.sqlite_store import SqliteStore


def job(task_id: str) -> dict:
    return {"task_id": task_id, "coop_id": "c", "member": "m", "state": "queued", "submitted_at": 1.0}


def nearly_full(store: SqliteStore) -> None:
    """Cap the file a couple of pages past its size: the next large write finds the disk full."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")


def test_a_full_disk_inside_a_batch_is_raised_at_once_and_at_the_end_never_swallowed(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    store.put_job("warm", job("warm"))
    nearly_full(store)
    failures = []
    with pytest.raises(BatchRolledBack, match="lost"):
        with store.batch():
            store.put_job("before", job("before"))
            try:
                store.put_payload("big", b"x" * 200_000)
            except sqlite3.Error as exc:  # as the head's admission does: it answers and goes on
                failures.append(exc)
            store.put_job("after", job("after"))
    assert len(failures) == 1 and isinstance(failures[0], BatchRolledBack)  # not "no such savepoint"
    assert "full" in str(failures[0].__cause__)
    store._conn.execute("PRAGMA max_page_count = 1000000")
    assert not store._conn.in_transaction
    store.put_job("later", job("later"))  # the store goes on working once there is room again
    assert store.get_job("later") is not None and store.get_job("warm") is not None
    store.close()


def test_a_full_disk_outside_a_batch_fails_that_write_alone(tmp_path):
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    store.put_job("warm", job("warm"))
    nearly_full(store)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.put_payload("big", b"x" * 200_000)
    assert not store._conn.in_transaction and store.get_job("warm") is not None
    store.close()


def test_a_refused_commit_is_rolled_back_so_later_writes_commit(tmp_path):
    path = tmp_path / "s.db"
    store = SqliteStore(f"sqlite:///{path}")
    store._conn.execute("PRAGMA journal_mode = DELETE")  # outside WAL a reader's snapshot blocks a COMMIT
    store._conn.execute("PRAGMA busy_timeout = 100")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM jobs").fetchall()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.put_job("refused", job("refused"))
    reader.execute("COMMIT")
    reader.close()
    assert not store._conn.in_transaction  # not left open, holding the file's write lock
    store.put_job("next", job("next"))
    store.close()
    again = SqliteStore(f"sqlite:///{path}")
    assert again.get_job("next") is not None and again.get_job("refused") is None
    again.close()


def test_a_store_opened_while_another_process_sets_up_the_same_file_waits_its_turn(tmp_path):
    """The tracker and the head open one file at once when a cluster starts; switching to WAL failed at once
    with "database is locked" (SQLite does not wait out the busy timeout for it) and the tracker actor
    died at birth, so no usage report was ever forwarded. The switch is tried again."""
    import threading
    import time

    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # the other process, in the middle of its own set-up
    other.execute("CREATE TABLE setup (x)")

    def finish() -> None:
        time.sleep(0.3)
        other.execute("COMMIT")
    threading.Thread(target=finish).start()
    store = SqliteStore(f"sqlite:///{path}")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.put_job("j", job("j"))
    store.close()
    other.close()
