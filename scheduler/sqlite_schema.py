"""The SQLite schema of ``scheduler.sqlite_store``: its tables, indices and triggers, and its version.

``SqliteStore`` runs ``_SCHEMA`` (every statement ``IF NOT EXISTS``) each time it opens a database, then
compares the version the file records with ``SCHEMA_VERSION`` and upgrades an older file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

SCHEMA_VERSION = 2
"""1: the first schema; 2: ``held``, the open reservations' sums per member and month, kept by triggers
(an admission read them with a SUM over every open reservation: O(queued jobs) per admission).
``reservation_times`` (when each open reservation was made) came later with no new version: triggers in the
file keep it whichever release writes, and ``release_orphaned_reservations`` dates one made before it.
``head_state`` (what a head keeps of its own beyond jobs: its borrowing history) and ``checkpoints`` (what a
running task saved of its progress) came later too, with no new version: a file without them gains them when a
release that knows them opens the file, and earlier ones ignore them."""
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # epoch seconds, by SQLite's clock (to the millisecond)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS policies (
    coop_id TEXT NOT NULL, version INTEGER NOT NULL, author TEXT NOT NULL, at REAL NOT NULL,
    predecessor INTEGER, note TEXT NOT NULL DEFAULT '', policy TEXT,
    PRIMARY KEY (coop_id, version));
CREATE TABLE IF NOT EXISTS active_policies (coop_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS executors (executor_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
    cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL, completed INTEGER NOT NULL,
    PRIMARY KEY (coop_id, member, period));
CREATE TABLE IF NOT EXISTS reservations (
    task_id TEXT PRIMARY KEY, coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
    cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_by_key ON reservations (coop_id, member, period);
CREATE TABLE IF NOT EXISTS held (
    coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
    cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL,
    PRIMARY KEY (coop_id, member, period));
CREATE TRIGGER IF NOT EXISTS held_on_reserve AFTER INSERT ON reservations BEGIN
    INSERT INTO held VALUES (NEW.coop_id, NEW.member, NEW.period, NEW.cpu, NEW.gpu, NEW.credits)
    ON CONFLICT (coop_id, member, period) DO UPDATE SET
        cpu = cpu + excluded.cpu, gpu = gpu + excluded.gpu, credits = credits + excluded.credits;
END;
CREATE TRIGGER IF NOT EXISTS held_on_release AFTER DELETE ON reservations BEGIN
    UPDATE held SET cpu = cpu - OLD.cpu, gpu = gpu - OLD.gpu, credits = credits - OLD.credits
    WHERE coop_id = OLD.coop_id AND member = OLD.member AND period = OLD.period;
END;
CREATE TABLE IF NOT EXISTS reservation_times (task_id TEXT PRIMARY KEY, reserved_at REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS reservation_time_on_reserve AFTER INSERT ON reservations BEGIN
    INSERT OR REPLACE INTO reservation_times VALUES (NEW.task_id, {_NOW});
END;
CREATE TRIGGER IF NOT EXISTS reservation_time_on_release AFTER DELETE ON reservations BEGIN
    DELETE FROM reservation_times WHERE task_id = OLD.task_id;
END;
CREATE TABLE IF NOT EXISTS settled (
    task_id TEXT PRIMARY KEY, coop_id TEXT NOT NULL, member TEXT NOT NULL, period TEXT NOT NULL,
    cpu INTEGER NOT NULL, gpu INTEGER NOT NULL, credits INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    task_id TEXT PRIMARY KEY, coop_id TEXT, member TEXT, state TEXT, submitted_at REAL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_coop_member ON jobs (coop_id, member);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS payloads (task_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, report TEXT NOT NULL, forwarded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, attempt));
CREATE INDEX IF NOT EXISTS reports_unforwarded ON reports (forwarded) WHERE forwarded = 0;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, coop_id TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
    at REAL NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_coop ON changes (coop_id, seq);
CREATE TABLE IF NOT EXISTS audit (
    session_id TEXT NOT NULL, seq_no INTEGER NOT NULL, timestamp REAL NOT NULL, coop_id TEXT NOT NULL,
    member TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (session_id, seq_no));
CREATE INDEX IF NOT EXISTS audit_by_timestamp ON audit (timestamp);
CREATE TABLE IF NOT EXISTS audit_seq (session_id TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, principal TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    task_id TEXT PRIMARY KEY, attempt INTEGER NOT NULL, saved_at REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS head_state (
    owner TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (owner, name));
CREATE TABLE IF NOT EXISTS nonces (
    key_id TEXT NOT NULL, nonce TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (key_id, nonce));
"""


def _statements(script: str) -> Iterator[str]:
    """The script's statements one by one (a trigger's body holds semicolons of its own)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if pending.strip(" \n;") and sqlite3.complete_statement(pending):
            yield pending
            pending = ""
