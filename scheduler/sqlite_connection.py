"""SQLite connections for ``scheduler.sqlite_store``: opening a file (in WAL mode, retried while another
process sets the same file up), the in-memory databases shared per ``memory://`` URL, and a COMMIT
that never leaves a transaction open."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

BUSY_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- connections
@dataclass
class _Shared:
    """One in-memory database shared by the stores open on one ``memory://`` URL."""

    conn: sqlite3.Connection
    lock: threading.Lock
    users: int


_MEMORY: dict[str, _Shared] = {}
_MEMORY_LOCK = threading.Lock()


def _connect(target: str) -> sqlite3.Connection:
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    if target != ":memory:":
        _use_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. The switch needs the file to itself, and SQLite answers "database is locked"
    at once, without waiting out the busy timeout, while another process opens the same file (the head
    and the tracker start together on one file): try again for up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class BatchRolledBack(sqlite3.OperationalError):
    """SQLite rolled a whole batch back (disk full, I/O error, interrupt): its earlier writes are lost."""


def _commit(db: sqlite3.Connection) -> None:
    """COMMIT; one that fails (e.g. busy, outside WAL mode) would leave the transaction open, every
    later write a savepoint inside it that never commits and the file write-locked: roll it back."""
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
