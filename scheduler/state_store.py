"""``StateStore``: the one protocol both durable backends implement.

- ``sqlite:///relative/state.db`` or ``sqlite:////absolute/state.db`` — the embedded default (``scheduler.sqlite_store``);
- ``memory://`` — the same SQLite backend in memory, for tests and the demo;
- ``redis://host:port/db`` — for clusters (``scheduler.redis_store``); several head
  replicas share quota counters through its atomic ``reserve``.

What is kept: policies with their version history, executors, usage per (coop, member,
period) with open reservations, jobs with their status history and placement
explanation (and the pickled payload of unfinished ones, so a restarted head can still
run them), usage reports received by the tracker, the policy and quota change log, audit
samples, and each head's own state beyond jobs (its borrowing history). A contract-test suite (tests/integration/test_store_contract.py) runs
against every backend.

Amounts of usage are integers in millionths (``scheduler.ledger.Cost``), so every
backend adds and subtracts exactly.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from scheduler.ledger import Cost, ReserveResult

__all__ = ["AuditRecord", "DamagedJobDeletion", "PolicyVersion", "ReserveResult", "StateStore", "TaskHold",
           "default_store_url", "open_store"]


class PolicyVersion(BaseModel):
    """One version of a coop's policy: who set it, when, and what it replaced."""

    model_config = ConfigDict(frozen=True)

    coop_id: str
    version: int = Field(ge=1)
    author: str
    at: float
    predecessor: int | None
    note: str = ""
    policy: dict[str, Any] | None = Field(description="the policy as JSON; None for a removal (or a damaged version)")
    active: bool = True
    damaged: str | None = Field(default=None, description=(
        "what is wrong with the stored version when it cannot be read (its policy is then None, and it is no "
        "removal: the coop's submissions are refused while it is the active one); None when it was read"))


class AuditRecord(BaseModel):
    """A sampled completed job, for quality review (seed 000's quality checker)."""

    model_config = ConfigDict(frozen=True)

    session_id: str = Field(min_length=1, max_length=200)
    seq_no: int = Field(ge=0)
    timestamp: float
    coop_id: str
    member: str
    task: dict[str, Any]
    result: dict[str, Any]
    usage: dict[str, Any]


class TaskHold(BaseModel):
    """What the ledger holds under one task id: its open reservation, with when it was made (``reserved_at``,
    by the store's clock; None where the store kept no time for it), or, ``settled``, its charge."""

    model_config = ConfigDict(frozen=True)

    coop_id: str
    member: str
    settled: bool = False
    reserved_at: float | None = None


class StoredCheckpoint(NamedTuple):
    """What a running task last saved of its progress (``scheduler.checkpoint.save_checkpoint``): during which
    attempt, when (the head's clock), and the pickled state."""

    attempt: int
    saved_at: float
    data: bytes


class DamagedJobDeletion(BaseModel):
    """What ``StateStore.delete_damaged_job`` did with one task id.

    ``outcome``: ``deleted`` (its record was damaged, and is gone with every index entry of it, its payload, its
    checkpoint and its open reservation), ``not_found`` (no record of that id) or ``not_damaged`` (its record reads; nothing was
    changed: a readable job is cancelled, not deleted). Of a deleted one, what the store knew: whose it was
    (``coop_id``, ``member``: SQLite's columns beside the record, else the owner its reservation or charge
    names; None where nothing says), the state it kept beside it, and ``released``, what its reservation held
    in ``period`` (None: it held none). A charge (a settled task) stays charged: it is the month's usage."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    outcome: Literal["deleted", "not_found", "not_damaged"]
    coop_id: str | None = None
    member: str | None = None
    state: str | None = None
    released: Cost | None = None
    period: str | None = None
    payload_deleted: bool = False


class StateStore(Protocol):
    url: str
    shared: bool  # several heads may use this store at once (Redis); they then share the nonces they saw

    def close(self) -> None: ...
    def batch(self, rollback_if: Any = None) -> AbstractContextManager[None]: ...  # group commit (SqliteStore)

    # -- policies: every set is a new version; removal deactivates, history stays. A version whose stored text
    # cannot be read is answered with ``damaged`` set (what is wrong; ``policy`` None), never raised
    def put_policy(self, coop_id: str, policy: dict, author: str, at: float, note: str = "") -> PolicyVersion: ...
    def active_policy(self, coop_id: str) -> PolicyVersion | None: ...
    def active_policies(self) -> list[PolicyVersion]: ...
    def active_policy_versions(self) -> dict[str, int]: ...  # coop -> its active version (what a refresh reads)
    def policy_version(self, coop_id: str, version: int) -> PolicyVersion | None: ...
    def policy_history(self, coop_id: str) -> list[PolicyVersion]: ...          # oldest first
    def remove_policy(self, coop_id: str, author: str, at: float) -> bool: ...  # False if none active

    # -- executors
    def put_executor(self, spec: dict, status: str) -> None: ...
    def remove_executor(self, executor_id: str) -> bool: ...
    def executors(self) -> list[tuple[dict, str]]: ...                         # in registration order; a spec
    # that cannot be read as ``scheduler.damaged_records.damaged_executor`` ({"executor_id", "damaged"}), with the
    # status as the store keeps it beside the spec ("unknown" where it keeps it inside), never raised

    # -- usage ledger (same semantics as scheduler.ledger.Ledger, plus an atomic limit check)
    def reserve(self, task_id: str, coop_id: str, member: str, period: str, cost: Cost,
                limits: Cost | None = None) -> ReserveResult: ...
    def settle(self, task_id: str, coop_id: str, member: str, period: str, measured: Cost) -> bool: ...
    def release(self, task_id: str) -> bool: ...
    def standing(self, coop_id: str, member: str, period: str) -> tuple[Cost, Cost, int]: ...
    def set_usage(self, coop_id: str, member: str, period: str, used: Cost,
                  completed: int | None = None) -> None: ...                 # completed None: the count stays
    def coop_standing(self, coop_id: str, period: str) -> tuple[Cost, Cost, int]: ...  # every member's month,
    # summed: (used, reserved, tasks completed), for a policy's coop_quota
    def usage_members(self, coop_id: str, period: str) -> list[str]: ...       # with usage or holds then, sorted
    def ledger_snapshot(self) -> dict: ...                                      # Ledger.snapshot() format
    def release_orphaned_reservations(self, grace_s: float) -> list[str]: ...   # held >= grace_s by a task with
    # no unfinished job record (a call cut off between reserve and its record): released, each atomically against
    # a head recording that job at the same moment; the task ids, sorted
    def task_hold(self, task_id: str) -> TaskHold | None: ...  # its open reservation or its charge; None: neither

    # -- jobs (a record whose JSON cannot be read is answered as ``scheduler.damaged_records.damaged_job``, with
    # what the store keeps beside it, never raised: one damaged record must not fail a listing or a recovery)
    def put_job(self, task_id: str, record: dict) -> None: ...
    def create_job(self, task_id: str, record: dict) -> bool: ...  # a job's first record, atomically only if
    # the store holds none of that id (another head replica's decision): False, and nothing written, if it does
    def get_job(self, task_id: str) -> dict | None: ...
    def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None,
             limit: int | None = None) -> list[dict]: ...                       # oldest submission first
    def unfinished_jobs(self) -> list[dict]: ...
    def put_payload(self, task_id: str, data: bytes) -> None: ...
    def get_payload(self, task_id: str) -> bytes | None: ...
    def delete_payload(self, task_id: str) -> None: ...  # the job finished: its payload and its checkpoint go
    def put_checkpoint(self, task_id: str, attempt: int, saved_at: float, data: bytes) -> None: ...  # replaces
    # the one stored (``scheduler.head_checkpoints``: what a running task saved of its progress)
    def get_checkpoint(self, task_id: str) -> StoredCheckpoint | None: ...
    def checkpoint_info(self, task_id: str) -> tuple[int, float, int] | None: ...  # (attempt, saved_at, bytes)
    def delete_damaged_job(self, task_id: str) -> DamagedJobDeletion: ...  # only if its record cannot be read,
    # atomically with that check: the record, its index entries, its payload and its open reservation go together

    # -- usage reports received by the tracker (idempotent by task id and attempt); one that cannot be read is
    # answered as ``scheduler.damaged_records.damaged_report`` ({"task_id", "attempt", "damaged"}), never raised
    def put_report(self, report: dict) -> bool: ...                             # False if already stored
    def reports(self, task_id: str | None = None) -> list[dict]: ...
    def unforwarded_reports(self) -> list[dict]: ...
    def mark_forwarded(self, keys: list[tuple[str, int]]) -> None: ...        # (task id, attempt) pairs, at once

    # -- the key registry (scheduler.identity.Principal as JSON, by key id): who may sign requests; a principal
    # that cannot be read is answered as ``scheduler.damaged_records.damaged_key`` ({"key_id", "damaged"})
    def put_key(self, key_id: str, principal: dict) -> None: ...
    def remove_key(self, key_id: str) -> bool: ...                              # False if unknown
    def keys(self) -> list[dict]: ...                                           # sorted by key id
    def claim_nonce(self, key_id: str, nonce: str, ttl_s: float) -> bool: ...   # True once per ttl_s, atomic

    # -- what a head keeps of its own beyond jobs (its borrowing history, ``BorrowingHistory.snapshot``), by its
    # owner string (``scheduler.replicas.head_owner``: replicas keep one each) and a name; a value that cannot be
    # read is answered as ``{"damaged": why}``, never raised
    def put_head_state(self, owner: str, name: str, state: dict) -> None: ...
    def head_state(self, owner: str, name: str) -> dict | None: ...            # None: nothing stored

    # -- change log (policies, quotas, executors, keys): append-only
    def log_change(self, coop_id: str, kind: str, actor: str, at: float, detail: dict) -> int: ...
    def changes(self, coop_id: str | None = None, limit: int = 100) -> list[dict]: ...  # newest first

    # -- audit samples
    def next_audit_seq(self, session_id: str) -> int: ...  # one more than any given (or stored) before,
    # atomically: head replicas and writer threads sharing the store never number two records alike
    def put_audit(self, record: AuditRecord) -> None: ...
    def get_audit(self, session_id: str, seq_no: int) -> AuditRecord | None: ...
    def latest_audit(self, session_id: str) -> AuditRecord | None: ...
    def list_audit(self, coop_id: str | None = None, member: str | None = None, session_id: str | None = None,
                   since: float | None = None, limit: int = 100) -> list[AuditRecord]: ...  # newest first
    def delete_audit(self, session_id: str, seq_no: int | None = None) -> int: ...  # count deleted


def check_store_url(url: object) -> str:
    """``url`` if it names a kind of store this knows (without opening it); ``InvalidRequest`` if not."""
    if isinstance(url, str) and url.startswith(("sqlite://", "memory://", "redis://", "rediss://")):
        return url
    from policies.validation import FieldError, InvalidRequest
    raise InvalidRequest("store url", [FieldError("url", repr(url)[:80], "sqlite:///PATH, memory:// or "
                                                  "redis://HOST:PORT/DB", "sqlite:////var/lib/coopsched/state.db")])


def open_store(url: str) -> StateStore:
    """A store from its URL: ``sqlite:///path``, ``memory://`` or ``redis://host:port/db``."""
    if check_store_url(url).startswith(("sqlite://", "memory://")):
        from scheduler.sqlite_store import SqliteStore
        return SqliteStore(url)
    from scheduler.redis_store import RedisStore
    return RedisStore(url)


def data_dir() -> Path:
    """Coopsched's per-user data directory: ``$XDG_DATA_HOME/coopsched`` (``~/.local/share/coopsched``)."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "coopsched"


def default_store_url() -> str:
    """``sqlite:///<user data dir>/coopsched/state.db`` (``COOPSCHED_STORE`` overrides)."""
    if os.environ.get("COOPSCHED_STORE"):
        return os.environ["COOPSCHED_STORE"]
    return f"sqlite:///{data_dir() / 'state.db'}"
