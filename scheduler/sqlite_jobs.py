"""The job records and payloads of ``scheduler.sqlite_store.SqliteStore``: ``SqliteJobs``, a mixin of it (as
``scheduler.redis_ledger`` is of the Redis store). It uses the store's transactions (``_write``) and reads
(``_one``, ``_all``); the tables are in ``scheduler.sqlite_schema``.

A job's ``coop_id``, ``member``, ``state`` and ``submitted_at`` are columns of their own beside the record's
JSON, so the listings filter with SQL, and a damaged record's row still says whose it is and in what state
(``scheduler.damaged_records``); ``delete_damaged_job`` removes such a row, and only such a row.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from scheduler.damaged_records import parse_job, read_object
from scheduler.ledger import Cost
from scheduler.state_store import DamagedJobDeletion, StoredCheckpoint
from scheduler.tasks import JobState

_FINISHED_STATES = tuple(sorted(s.value for s in JobState if s.finished))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class SqliteJobs:
    """The jobs part of the ``StateStore`` protocol on SQLite (a mixin of ``SqliteStore``)."""

    def put_job(self, task_id: str, record: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)", self._job_row(task_id, record))

    def create_job(self, task_id: str, record: dict) -> bool:
        """Store a job's first record unless one of ``task_id`` is stored (another head's decision): False,
        and nothing written, if it is."""
        with self._write() as db:
            return db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
                              self._job_row(task_id, record)).rowcount > 0

    @staticmethod
    def _job_row(task_id: str, record: dict) -> tuple:
        return (task_id, record.get("coop_id"), record.get("member"), record.get("state"), record.get("submitted_at"),
                _dumps(record))

    # A record is read as bytes (CAST ... AS BLOB: SQLite hands TEXT that is not UTF-8 to no one, it fails the
    # whole query) and parsed by ``parse_job``: one damaged record is answered as such, it fails no read.
    _JOB_COLUMNS = "task_id, coop_id, member, state, submitted_at, CAST(record AS BLOB)"

    def _job(self, row: tuple) -> dict:
        task_id, coop_id, member, state, submitted_at, text = row
        return parse_job(text, task_id, self.url, coop_id=coop_id, member=member, state=state,
                         submitted_at=submitted_at)

    def get_job(self, task_id: str) -> dict | None:
        """The job's record; a damaged one as ``damaged_job`` (``scheduler.damaged_records``)."""
        row = self._one(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE task_id = ?", (task_id,))
        return self._job(row) if row else None

    def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Jobs matching every given filter, oldest submission first (a damaged one as ``damaged_job``)."""
        where, params = [], []
        for column, value in (("coop_id", coop_id), ("member", member), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {self._JOB_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY submitted_at, task_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))  # (SQLite reads LIMIT -1 as none: a negative limit answers nothing, as on Redis)
        return [self._job(r) for r in self._all(sql, tuple(params))]

    def unfinished_jobs(self) -> list[dict]:
        """Jobs not in a final state (by the ``state`` column), oldest submission first; a damaged one as
        ``damaged_job``, with the state, coop and member its columns keep."""
        marks = ", ".join("?" * len(_FINISHED_STATES))
        rows = self._all(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE state IS NULL OR state NOT IN ({marks}) "
                         "ORDER BY submitted_at, task_id", _FINISHED_STATES)
        return [self._job(r) for r in rows]

    def put_payload(self, task_id: str, data: bytes) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO payloads VALUES (?, ?)", (task_id, sqlite3.Binary(data)))

    def get_payload(self, task_id: str) -> bytes | None:
        row = self._one("SELECT data FROM payloads WHERE task_id = ?", (task_id,))
        return bytes(row[0]) if row else None

    def delete_payload(self, task_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM payloads WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM checkpoints WHERE task_id = ?", (task_id,))

    def put_checkpoint(self, task_id: str, attempt: int, saved_at: float, data: bytes) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                       (task_id, attempt, saved_at, sqlite3.Binary(data)))

    def get_checkpoint(self, task_id: str) -> StoredCheckpoint | None:
        row = self._one("SELECT attempt, saved_at, data FROM checkpoints WHERE task_id = ?", (task_id,))
        return StoredCheckpoint(int(row[0]), float(row[1]), bytes(row[2])) if row else None

    def checkpoint_info(self, task_id: str) -> tuple[int, float, int] | None:
        row = self._one("SELECT attempt, saved_at, length(data) FROM checkpoints WHERE task_id = ?", (task_id,))
        return (int(row[0]), float(row[1]), int(row[2])) if row else None

    def delete_damaged_job(self, task_id: str) -> DamagedJobDeletion:
        """Delete ``task_id``'s record if its JSON cannot be read, with its payload and its open reservation
        (the triggers take it off the member's month), in one transaction: a head writing the record over
        at that moment (``put_job``) comes either before (then it reads, and nothing is deleted) or after.
        Its index entries are SQLite's own indices of the row. A readable record, or none: nothing changes."""
        with self._write() as db:
            row = db.execute("SELECT coop_id, member, state, CAST(record AS BLOB) FROM jobs WHERE task_id = ?",
                             (task_id,)).fetchone()
            if row is None:
                return DamagedJobDeletion(task_id=task_id, outcome="not_found")
            coop_id, member, state, text = row
            if read_object(text)[0] is not None:
                return DamagedJobDeletion(task_id=task_id, outcome="not_damaged")
            held = db.execute("SELECT coop_id, member, period, cpu, gpu, credits FROM reservations "
                              "WHERE task_id = ?", (task_id,)).fetchone()
            db.execute("DELETE FROM reservations WHERE task_id = ?", (task_id,))
            payload = db.execute("DELETE FROM payloads WHERE task_id = ?", (task_id,)).rowcount > 0
            db.execute("DELETE FROM checkpoints WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM jobs WHERE task_id = ?", (task_id,))
        return DamagedJobDeletion(task_id=task_id, outcome="deleted", coop_id=coop_id or (held[0] if held else None),
                                  member=member or (held[1] if held else None), state=state,
                                  released=Cost(*held[3:]) if held else None, period=held[2] if held else None,
                                  payload_deleted=payload)
