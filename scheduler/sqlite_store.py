"""``SqliteStore``: the embedded ``StateStore`` (``sqlite:///PATH``) and its in-memory twin (``memory://``).

``sqlite:///PATH`` follows the SQLAlchemy convention: what follows the third slash is the
path, so ``sqlite:///state.db`` is relative to the working directory and
``sqlite:////var/lib/coopsched/state.db`` is absolute. Files use WAL with
``synchronous=NORMAL`` and a busy timeout, so several processes (each with its own store)
can share one file; every write is one ``BEGIN IMMEDIATE`` transaction, which makes
``reserve``'s limit check and its insert one atomic step across all of them.

``memory://URL`` is a private in-memory database, except that stores opened on the same
URL while another is still open share it (one connection, one lock); the database
vanishes when the last of them closes. So concurrent stores in one process see one
ledger, and consecutive tests start empty.

Each store may be used from any thread: every operation holds the store's lock.

The tables, triggers and schema version are in ``scheduler.sqlite_schema``; connections in
``scheduler.sqlite_connection``; the job records and payloads in ``scheduler.sqlite_jobs``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scheduler.damaged_records import (log_damaged_policy, parse_executor, parse_head_state, parse_key, parse_report,
                                      read_object)
from scheduler.ledger import Cost, ReserveResult, fits
from scheduler.sqlite_jobs import _FINISHED_STATES, SqliteJobs, _dumps
from scheduler.sqlite_schema import _NOW, _SCHEMA, SCHEMA_VERSION, _statements
from scheduler.state_store import AuditRecord, PolicyVersion, TaskHold
from scheduler.sqlite_connection import (_MEMORY, _MEMORY_LOCK, BUSY_TIMEOUT_S, BatchRolledBack,  # noqa: F401
                                         _commit, _connect, _Shared)  # (BatchRolledBack, BUSY_TIMEOUT_S: as before)

log = logging.getLogger("coopsched.store")

_ADD_USAGE = """
INSERT INTO usage (coop_id, member, period, cpu, gpu, credits, completed) VALUES (?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (coop_id, member, period) DO UPDATE SET
    cpu = cpu + excluded.cpu, gpu = gpu + excluded.gpu, credits = credits + excluded.credits,
    completed = completed + 1"""


def _bad_url(url: str) -> Exception:
    from policies.validation import FieldError, InvalidRequest
    return InvalidRequest("store url", [FieldError(
        "url", repr(url), "sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or memory://[NAME]",
        "sqlite:////var/lib/coopsched/state.db")])


def _cost(row: Iterable[int] | None) -> Cost:
    return Cost(*row) if row is not None else Cost()


class SqliteStore(SqliteJobs):
    """The ``StateStore`` protocol on SQLite (a file, or memory); its job records and payloads are
    in ``scheduler.sqlite_jobs``."""

    shared = False  # one head's store: several heads on one file are not supported

    def __init__(self, url: str) -> None:
        self.url = url
        self._closed = False
        self._nonce_claims = 0
        if url.startswith("memory://"):
            with _MEMORY_LOCK:
                shared = _MEMORY.get(url)
                if shared is None:
                    shared = _MEMORY[url] = _Shared(_connect(":memory:"), threading.RLock(), 0)
                shared.users += 1
            self._conn, self._lock = shared.conn, shared.lock
        elif url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn, self._lock = _connect(str(path)), threading.RLock()
        else:
            raise _bad_url(url)
        try:
            self._create_schema()
        except BaseException:
            self.close()
            raise

    def _create_schema(self) -> None:
        with self._write() as db:
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RuntimeError(f"the store {self.url} has schema version {row[0]}, newer than this "
                                   f"coopsched understands ({SCHEMA_VERSION}); upgrade coopsched to open it")
            elif row[0] < 2:  # a version-1 file: its open reservations' sums, once; the triggers keep them
                db.execute("DELETE FROM held")
                db.execute("INSERT INTO held SELECT coop_id, member, period, SUM(cpu), SUM(gpu), SUM(credits) "
                           "FROM reservations GROUP BY coop_id, member, period")
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.url.startswith("memory://"):
            with self._lock:
                self._conn.close()
            return
        with _MEMORY_LOCK:
            shared = _MEMORY[self.url]
            shared.users -= 1
            if shared.users == 0:
                del _MEMORY[self.url]
                with shared.lock:
                    shared.conn.close()

    @contextmanager
    def batch(self, rollback_if: Callable[[BaseException], bool] | None = None) -> Iterator[None]:
        """Group commit: the writes made inside, by this thread, commit together in one transaction
        (one COMMIT instead of one each). Each write keeps its own atomicity (a failed one rolls back
        to its savepoint alone), and if the block raises, what was written before is still committed,
        as it would have been without the batch, unless ``rollback_if(error)`` says to roll the whole
        batch back (the head does so when the store itself failed: then it reloads its memory from
        what is committed). Other threads wait for the batch to end."""
        with self._lock:
            db = self._conn
            if db.in_transaction:  # already inside this thread's batch
                yield
                return
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # e.g. locked past the busy timeout: each write then tries on its own
                log.warning("no batch (%s); writing one by one", exc)
                yield
                return
            try:
                yield
            except BatchRolledBack:
                raise
            except BaseException as exc:
                if db.in_transaction:
                    if rollback_if is not None and rollback_if(exc):
                        db.execute("ROLLBACK")
                    else:
                        _commit(db)  # what was written before the block raised stays written, as without a batch
                raise
            if not db.in_transaction:  # a write's failure made SQLite roll everything back, and the caller
                raise BatchRolledBack("SQLite rolled this batch back (a write inside it failed: disk full or "
                                      "I/O error); the writes made in it are lost")  # caught and went on
            _commit(db)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block returns, rolled back if it raises."""
        with self._transaction("BEGIN IMMEDIATE") as db:
            yield db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        with self._transaction("BEGIN") as db:
            yield db

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn
            if db.in_transaction and begin == "BEGIN":  # reads inside this thread's batch: they see its
                yield db  # writes and nothing else (the lock is held), and have nothing to roll back
                return
            if db.in_transaction:  # a write inside this thread's batch (the lock is held across a transaction)
                db.execute("SAVEPOINT one")
                try:
                    yield db
                except BaseException as exc:
                    if not db.in_transaction:  # SQLite rolled the whole batch back, not just this write
                        raise BatchRolledBack(f"SQLite rolled this batch back ({exc}); the writes made in it "
                                              "are lost") from exc
                    db.execute("ROLLBACK TO one")
                    db.execute("RELEASE one")
                    raise
                db.execute("RELEASE one")
                return
            db.execute(begin)
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            _commit(db)

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    # ----------------------------------------------------------------------- policies
    # The JSON columns here and below are read as bytes (CAST ... AS BLOB), as the jobs' are (see _JOB_COLUMNS):
    # one damaged row is answered as damaged (``scheduler.damaged_records``), it fails no read.
    _POLICY_COLUMNS = "p.coop_id, p.version, p.author, p.at, p.predecessor, p.note, CAST(p.policy AS BLOB), a.version"
    _POLICY_FROM = "policies p LEFT JOIN active_policies a ON a.coop_id = p.coop_id"

    def _policy(self, row: tuple) -> PolicyVersion:
        coop_id, version, author, at, predecessor, note, text, active = row
        policy, why = (None, "") if text is None else read_object(text)  # (NULL: a removal)
        if why:
            log_damaged_policy(self.url, coop_id, version, why)
        return PolicyVersion(coop_id=coop_id, version=version, author=author, at=at, predecessor=predecessor,
                             note=note, policy=policy, active=active == version, damaged=why or None)

    def _add_policy_version(self, db: sqlite3.Connection, coop_id: str, policy: dict | None, author: str,
                            at: float, note: str) -> PolicyVersion:
        last = db.execute("SELECT MAX(version) FROM policies WHERE coop_id = ?", (coop_id,)).fetchone()[0]
        version = (last or 0) + 1
        db.execute("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (coop_id, version, author, at, last, note, None if policy is None else _dumps(policy)))
        if policy is None:
            db.execute("DELETE FROM active_policies WHERE coop_id = ?", (coop_id,))
        else:
            db.execute("INSERT OR REPLACE INTO active_policies VALUES (?, ?)", (coop_id, version))
        return PolicyVersion(coop_id=coop_id, version=version, author=author, at=at, predecessor=last,
                             note=note, policy=policy, active=policy is not None)

    def put_policy(self, coop_id: str, policy: dict, author: str, at: float, note: str = "") -> PolicyVersion:
        with self._write() as db:
            return self._add_policy_version(db, coop_id, policy, author, at, note)

    def remove_policy(self, coop_id: str, author: str, at: float) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM active_policies WHERE coop_id = ?", (coop_id,)).fetchone() is None:
                return False
            self._add_policy_version(db, coop_id, None, author, at, "")
            return True

    def active_policy(self, coop_id: str) -> PolicyVersion | None:
        row = self._one(f"SELECT {self._POLICY_COLUMNS} FROM {self._POLICY_FROM} "
                        "WHERE p.coop_id = ? AND p.version = a.version", (coop_id,))
        return self._policy(row) if row else None

    def active_policies(self) -> list[PolicyVersion]:
        rows = self._all(f"SELECT {self._POLICY_COLUMNS} FROM {self._POLICY_FROM} "
                         "WHERE p.version = a.version ORDER BY p.coop_id")
        return [self._policy(r) for r in rows]

    def active_policy_versions(self) -> dict[str, int]:
        return dict(self._all("SELECT coop_id, version FROM active_policies"))

    def policy_version(self, coop_id: str, version: int) -> PolicyVersion | None:
        row = self._one(f"SELECT {self._POLICY_COLUMNS} FROM {self._POLICY_FROM} "
                        "WHERE p.coop_id = ? AND p.version = ?", (coop_id, version))
        return self._policy(row) if row else None

    def policy_history(self, coop_id: str) -> list[PolicyVersion]:
        rows = self._all(f"SELECT {self._POLICY_COLUMNS} FROM {self._POLICY_FROM} "
                         "WHERE p.coop_id = ? ORDER BY p.version", (coop_id,))
        return [self._policy(r) for r in rows]

    # ----------------------------------------------------------------------- executors
    def put_executor(self, spec: dict, status: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO executors VALUES (?, ?, ?) ON CONFLICT (executor_id) DO UPDATE SET "
                       "spec = excluded.spec, status = excluded.status",  # (an update keeps its place: rowid)
                       (spec["executor_id"], _dumps(spec), status))

    def remove_executor(self, executor_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM executors WHERE executor_id = ?", (executor_id,)).rowcount > 0

    def executors(self) -> list[tuple[dict, str]]:
        """Every executor's spec and status, in registration order (a restarted head's table rows, hence
        its placement ties, come out as they were); a spec that cannot be read as ``damaged_executor``."""
        rows = self._all("SELECT executor_id, CAST(spec AS BLOB), status FROM executors ORDER BY rowid")
        return [(parse_executor(text, executor_id, self.url), status) for executor_id, text, status in rows]

    # ----------------------------------------------------------------------- key registry
    def put_key(self, key_id: str, principal: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", (key_id, _dumps(principal)))

    def remove_key(self, key_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,)).rowcount > 0

    def keys(self) -> list[dict]:
        """Every registered principal, by key id; one that cannot be read as ``damaged_key``."""
        rows = self._all("SELECT key_id, CAST(principal AS BLOB) FROM keys ORDER BY key_id")
        return [parse_key(text, key_id, self.url) for key_id, text in rows]

    def put_head_state(self, owner: str, name: str, state: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO head_state VALUES (?, ?, ?)", (owner, name, _dumps(state)))

    def head_state(self, owner: str, name: str) -> dict | None:
        row = self._one("SELECT CAST(state AS BLOB) FROM head_state WHERE owner = ? AND name = ?", (owner, name))
        return None if row is None else parse_head_state(row[0])

    def claim_nonce(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        """True if no claim of (key_id, nonce) is younger than ``ttl_s``. A SQLite store serves one
        head (``shared`` is False), whose own nonce cache is what guards it; this is here so the
        protocol holds on every backend."""
        now = time.time()
        with self._write() as db:
            if self._nonce_claims % 1000 == 0:
                db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            self._nonce_claims += 1
            return db.execute(
                "INSERT INTO nonces VALUES (?, ?, ?) ON CONFLICT (key_id, nonce) DO UPDATE "
                "SET expires_at = excluded.expires_at WHERE nonces.expires_at < ?",
                (key_id, nonce, now + ttl_s, now)).rowcount > 0

    # ----------------------------------------------------------------------- usage ledger
    def reserve(self, task_id: str, coop_id: str, member: str, period: str, cost: Cost,
                limits: Cost | None = None) -> ReserveResult:
        """Hold ``cost``, if it ``fits`` ``limits`` (negative = unlimited), in the same transaction."""
        with self._write() as db:
            if (db.execute("SELECT 1 FROM reservations WHERE task_id = ?", (task_id,)).fetchone()
                    or db.execute("SELECT 1 FROM settled WHERE task_id = ?", (task_id,)).fetchone()):
                return ReserveResult.DUPLICATE
            if limits is not None:
                used, held, _ = self._standing(db, coop_id, member, period)
                if not fits(used, held, cost, limits):
                    return ReserveResult.OVER_LIMIT
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (task_id, coop_id, member, period, cost.cpu, cost.gpu, cost.credits))
            return ReserveResult.RESERVED

    @staticmethod
    def _settle(db: sqlite3.Connection, task_id: str, coop_id: str, member: str, period: str,
                measured: Cost) -> bool:
        if db.execute("SELECT 1 FROM settled WHERE task_id = ?", (task_id,)).fetchone():
            return False
        held = db.execute("SELECT coop_id, member, period FROM reservations WHERE task_id = ?", (task_id,)).fetchone()
        if held is not None:  # charged to the reservation's month
            coop_id, member, period = held
            db.execute("DELETE FROM reservations WHERE task_id = ?", (task_id,))
        amounts = (measured.cpu, measured.gpu, measured.credits)
        db.execute(_ADD_USAGE, (coop_id, member, period, *amounts))
        db.execute("INSERT INTO settled VALUES (?, ?, ?, ?, ?, ?, ?)", (task_id, coop_id, member, period, *amounts))
        return True

    def settle(self, task_id: str, coop_id: str, member: str, period: str, measured: Cost) -> bool:
        """Replace the reservation (if any) with ``measured``. False, and no change, if already settled."""
        with self._write() as db:
            return self._settle(db, task_id, coop_id, member, period, measured)

    def settle_many(self, items: Iterable[tuple[str, str, str, str, Cost]]) -> list[bool]:
        """``settle`` each (task_id, coop_id, member, period, measured), all in one transaction."""
        with self._write() as db:
            return [self._settle(db, *item) for item in items]

    def release(self, task_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM reservations WHERE task_id = ?", (task_id,)).rowcount > 0

    def release_orphaned_reservations(self, grace_s: float) -> list[str]:
        """Release every reservation held ``grace_s`` seconds or more whose task has no unfinished job record
        (none, or a finished one); the task ids, sorted. A call's batch commits its reservations with their
        records, so this mostly finds none; not a no-op all the same: a batch that could not begin (the file
        locked past the busy timeout) writes one by one, and can be cut off between the two. One transaction;
        a reservation with no time (made before they had one) gets one now, and goes ``grace_s`` later."""
        marks = ", ".join("?" * len(_FINISHED_STATES))
        with self._write() as db:
            now = db.execute(f"SELECT {_NOW}").fetchone()[0]
            rows = db.execute(
                "SELECT r.task_id FROM reservations r JOIN reservation_times t ON t.task_id = r.task_id "
                "LEFT JOIN jobs j ON j.task_id = r.task_id "
                f"WHERE t.reserved_at <= ? AND (j.task_id IS NULL OR j.state IN ({marks})) ORDER BY r.task_id",
                (now - float(grace_s), *_FINISHED_STATES)).fetchall()
            released = [task_id for (task_id,) in rows]
            db.executemany("DELETE FROM reservations WHERE task_id = ?", [(t,) for t in released])
            db.execute("INSERT INTO reservation_times SELECT task_id, ? FROM reservations r WHERE NOT EXISTS "
                       "(SELECT 1 FROM reservation_times t WHERE t.task_id = r.task_id)", (now,))
        return released

    def task_hold(self, task_id: str) -> TaskHold | None:
        """What the ledger holds under ``task_id``: its open reservation (and when it was made) or its charge."""
        with self._read() as db:
            row = db.execute("SELECT r.coop_id, r.member, t.reserved_at FROM reservations r "
                             "LEFT JOIN reservation_times t ON t.task_id = r.task_id WHERE r.task_id = ?",
                             (task_id,)).fetchone()
            if row is not None:
                return TaskHold(coop_id=row[0], member=row[1], reserved_at=row[2])
            row = db.execute("SELECT coop_id, member FROM settled WHERE task_id = ?", (task_id,)).fetchone()
        return TaskHold(coop_id=row[0], member=row[1], settled=True) if row is not None else None

    @staticmethod
    def _standing(db: sqlite3.Connection, coop_id: str, member: str, period: str) -> tuple[Cost, Cost, int]:
        key = (coop_id, member, period)
        used = db.execute("SELECT cpu, gpu, credits, completed FROM usage "
                          "WHERE coop_id = ? AND member = ? AND period = ?", key).fetchone()
        held = db.execute("SELECT cpu, gpu, credits FROM held WHERE coop_id = ? AND member = ? AND period = ?",
                          key).fetchone()
        return _cost(used[:3] if used else None), _cost(held), used[3] if used else 0

    def standing(self, coop_id: str, member: str, period: str) -> tuple[Cost, Cost, int]:
        """(used, reserved, tasks completed) of one member's month."""
        with self._read() as db:
            return self._standing(db, coop_id, member, period)

    def set_usage(self, coop_id: str, member: str, period: str, used: Cost, completed: int | None = None) -> None:
        """Overwrite a month's settled usage (an admin action); the completed count too, if given."""
        keep = completed is None
        with self._write() as db:
            db.execute("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (coop_id, member, period) "
                       "DO UPDATE SET cpu = excluded.cpu, gpu = excluded.gpu, credits = excluded.credits"
                       + ("" if keep else ", completed = excluded.completed"),
                       (coop_id, member, period, used.cpu, used.gpu, used.credits, 0 if keep else completed))

    def coop_standing(self, coop_id: str, period: str) -> tuple[Cost, Cost, int]:
        """(used, reserved, tasks completed) of every member of ``coop_id`` in ``period``, summed (the
        primary keys' prefix: the coop's rows only)."""
        with self._read() as db:
            used = db.execute("SELECT SUM(cpu), SUM(gpu), SUM(credits), SUM(completed) FROM usage "
                              "WHERE coop_id = ? AND period = ?", (coop_id, period)).fetchone()
            held = db.execute("SELECT SUM(cpu), SUM(gpu), SUM(credits) FROM held WHERE coop_id = ? AND period = ?",
                              (coop_id, period)).fetchone()
        return (Cost(*(int(x or 0) for x in used[:3])), Cost(*(int(x or 0) for x in held)), int(used[3] or 0))

    def usage_members(self, coop_id: str, period: str) -> list[str]:
        """Members of ``coop_id`` with settled usage or open reservations in ``period``, sorted."""
        with self._read() as db:
            rows = db.execute("SELECT member FROM usage WHERE coop_id = ? AND period = ? UNION "
                              "SELECT member FROM held WHERE coop_id = ? AND period = ? ORDER BY member",
                              (coop_id, period, coop_id, period)).fetchall()
        return [r[0] for r in rows]

    def ledger_snapshot(self) -> dict:
        """Everything in the ledger tables, in ``Ledger.snapshot()`` format (``Ledger.restore`` reads it)."""
        with self._read() as db:
            usage = db.execute("SELECT coop_id, member, period, cpu, gpu, credits, completed FROM usage "
                               "ORDER BY coop_id, member, period").fetchall()
            reservations = db.execute("SELECT * FROM reservations ORDER BY task_id").fetchall()
            settled = db.execute("SELECT * FROM settled ORDER BY task_id").fetchall()
        return {
            "used": [list(r[:6]) for r in usage],
            "completed": [[*r[:3], r[6]] for r in usage if r[6]],
            "reservations": [list(r) for r in reservations],
            "settled": [list(r) for r in settled],
        }

    # ----------------------------------------------------------------------- usage reports
    def put_report(self, report: dict) -> bool:
        """Keep a report once per (task_id, attempt); a report without ``attempt`` counts as attempt 1."""
        with self._write() as db:
            return db.execute("INSERT OR IGNORE INTO reports (task_id, attempt, report) VALUES (?, ?, ?)",
                              (report["task_id"], int(report.get("attempt", 1)), _dumps(report))).rowcount > 0

    _REPORT_COLUMNS = "task_id, attempt, CAST(report AS BLOB)"

    def reports(self, task_id: str | None = None) -> list[dict]:
        """Every report by (task id, attempt), or a task's by attempt; one that cannot be read as ``damaged_report``."""
        if task_id is None:
            rows = self._all(f"SELECT {self._REPORT_COLUMNS} FROM reports ORDER BY task_id, attempt")
        else:
            rows = self._all(f"SELECT {self._REPORT_COLUMNS} FROM reports WHERE task_id = ? ORDER BY attempt",
                             (task_id,))
        return [parse_report(text, t, attempt, self.url) for t, attempt, text in rows]

    def unforwarded_reports(self) -> list[dict]:
        """Reports not yet marked forwarded, in the order they arrived (a damaged one as ``damaged_report``)."""
        rows = self._all(f"SELECT {self._REPORT_COLUMNS} FROM reports WHERE forwarded = 0 ORDER BY rowid")
        return [parse_report(text, t, attempt, self.url) for t, attempt, text in rows]

    def mark_forwarded(self, keys: list[tuple[str, int]]) -> None:
        """Mark a batch of (task id, attempt) reports forwarded, in one transaction."""
        with self._write() as db:
            db.executemany("UPDATE reports SET forwarded = 1 WHERE task_id = ? AND attempt = ?",
                           [(task_id, int(attempt)) for task_id, attempt in keys])

    # ----------------------------------------------------------------------- change log
    def log_change(self, coop_id: str, kind: str, actor: str, at: float, detail: dict) -> int:
        with self._write() as db:
            cursor = db.execute("INSERT INTO changes (coop_id, kind, actor, at, detail) VALUES (?, ?, ?, ?, ?)",
                                (coop_id, kind, actor, at, _dumps(detail)))
            return int(cursor.lastrowid)

    def changes(self, coop_id: str | None = None, limit: int = 100) -> list[dict]:
        """The newest ``limit`` changes (of one coop, if given), newest first."""
        columns = "seq, coop_id, kind, actor, at, detail"
        if coop_id is None:
            rows = self._all(f"SELECT {columns} FROM changes ORDER BY seq DESC LIMIT ?", (max(0, limit),))
        else:
            rows = self._all(f"SELECT {columns} FROM changes WHERE coop_id = ? ORDER BY seq DESC LIMIT ?",
                             (coop_id, max(0, limit)))
        return [{"seq": seq, "coop_id": c, "kind": kind, "actor": actor, "at": at, "detail": json.loads(detail)}
                for seq, c, kind, actor, at, detail in rows]

    # ----------------------------------------------------------------------- audit samples
    def next_audit_seq(self, session_id: str) -> int:
        """From the highest stored seq_no (records older than the counter), then only up: a number that
        deleted records had is not given again."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO audit_seq VALUES (?, (SELECT COALESCE(MAX(seq_no), -1) FROM audit "
                       "WHERE session_id = ?))", (session_id, session_id))
            db.execute("UPDATE audit_seq SET last = last + 1 WHERE session_id = ?", (session_id,))
            return db.execute("SELECT last FROM audit_seq WHERE session_id = ?", (session_id,)).fetchone()[0]

    def put_audit(self, record: AuditRecord) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                       (record.session_id, record.seq_no, record.timestamp, record.coop_id, record.member,
                        _dumps(record.model_dump(mode="json"))))

    def get_audit(self, session_id: str, seq_no: int) -> AuditRecord | None:
        row = self._one("SELECT record FROM audit WHERE session_id = ? AND seq_no = ?", (session_id, seq_no))
        return AuditRecord.model_validate(json.loads(row[0])) if row else None

    def latest_audit(self, session_id: str) -> AuditRecord | None:
        row = self._one("SELECT record FROM audit WHERE session_id = ? ORDER BY seq_no DESC LIMIT 1", (session_id,))
        return AuditRecord.model_validate(json.loads(row[0])) if row else None

    def list_audit(self, coop_id: str | None = None, member: str | None = None, session_id: str | None = None,
                   since: float | None = None, limit: int = 100) -> list[AuditRecord]:
        """Records matching every given filter (``since``: timestamp at or after), newest first."""
        where, params = [], []
        for clause, value in (("coop_id = ?", coop_id), ("member = ?", member),
                              ("session_id = ?", session_id), ("timestamp >= ?", since)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT record FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY timestamp DESC, session_id DESC, seq_no DESC LIMIT ?"
        return [AuditRecord.model_validate(json.loads(r[0])) for r in self._all(sql, (*params, max(0, limit)))]

    def delete_audit(self, session_id: str, seq_no: int | None = None) -> int:
        with self._write() as db:
            if seq_no is None:
                return db.execute("DELETE FROM audit WHERE session_id = ?", (session_id,)).rowcount
            return db.execute("DELETE FROM audit WHERE session_id = ? AND seq_no = ?", (session_id, seq_no)).rowcount
