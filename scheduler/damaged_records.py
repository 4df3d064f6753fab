"""A job record a store holds but cannot read: its JSON text is damaged (cut short, overwritten, not UTF-8).

A store answers such a record (``get_job``, ``jobs``, ``unfinished_jobs``) with ``damaged_job(...)``
instead of raising: the task id, what the store keeps beside the JSON (SQLite's own columns: coop,
member, state, submission time; Redis's state index), and ``damaged``, what is wrong with the text.
One damaged record must not keep a restarted head from starting, a rebuild (``Head._resync``) from
finishing, or a listing of every job from answering.

What readers do with one: the head restores nothing from it (``Head._recover``), and what its attempt
may still use is held (``scheduler.held_capacity.held_anywhere``); its reservation stays held in its
month, as the record stays in the store as it was, until it is deleted through the head
(``coopsched job forget ID``: ``scheduler.head_damaged_jobs``, which releases both). Listings leave it out
(a ``JobStatus`` cannot be made of it), and a status or explain of that id answers from what is known,
saying it is damaged.

The other records read at start-up or on every call are answered the same way, each as its own marker
(documented in ``scheduler.state_store``), and each is logged once by the store that meets it:

- an executor's registration (``executors``): ``damaged_executor``; the head does not register it (it takes
  no work, its worker's heartbeats are refused) until it registers again;
- a policy version (``PolicyVersion.damaged``; its ``policy`` is then None, and it is no removal): a coop
  whose active version is damaged has no policy, and its submissions are refused saying so (fail closed);
- a usage report (``reports``, ``unforwarded_reports``): ``damaged_report``; the tracker forwards nothing
  of it, so it charges nobody;
- a registered key (``keys``): ``damaged_key``; the request gate does not accept that key;
- a head's own state (``head_state``: its borrowing history): ``{"damaged": why}``; the head starts it afresh,
  saying so, and writes it over at its next sample.

Its state is what the store keeps beside it (SQLite's column, the one Redis state index it is in). When
that is not a state this release knows (Redis: the task in no state index, or in two), the status says
``state`` None, with the reason saying so: no ``JobState`` would be true (queued or running would have the
client wait for a value that never comes; a finished state would say that nothing of it runs, while the head
holds every executor it may run on, ``held_capacity.held_anywhere``). The client turns such an answer into
``JobRecordDamaged`` (``scheduler.job_handle``), naming the job and what to do, not into a state. A
queued or running state kept beside a damaged record is answered as it is, but ``result()`` of that job
raises ``JobRecordDamaged`` with it rather than wait: no head can restore the job, so no value will come.
"""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any

from scheduler.tasks import JobState

log = logging.getLogger("coopsched.store")

DAMAGED = "damaged"
"""The key of a damaged record's marker: what is wrong with its text."""

_reported: set[tuple[str, str]] = set()  # (store url, which record): each damaged record is logged once by the stores


def read_object(text: str | bytes) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object ``text`` holds, "") or (None, what is wrong with it)."""
    try:
        record = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        return None, why_of(exc)
    if isinstance(record, dict):
        return record, ""
    return None, f"JSON {type(record).__name__}, not an object"


def why_of(exc: BaseException) -> str:
    """An error as one short line, for a damaged record's marker and the log."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def log_damaged(store_url: str, record: str, why: str, consequence: str) -> None:
    """Log that ``record`` ("the stored record of job j1") is damaged, the first time a store meets it:
    ``why``, and ``consequence``, what readers do with it and how to fix it."""
    if (store_url, record) not in _reported:
        _reported.add((store_url, record))
        log.error("%s in %s is damaged (%s): %s", record, store_url.split("@")[-1], why, consequence)


def parse_job(text: str | bytes, task_id: str, store_url: str, **known: Any) -> dict[str, Any]:
    """The stored record ``text``, or ``damaged_job(task_id, ..., **known)`` if it is not a JSON object
    (logged the first time it is met)."""
    record, why = read_object(text)
    if record is not None:
        return record
    log_damaged(store_url, f"the stored record of job {task_id}", why, "nothing is read from it (the head restores "
                f"no such job); delete it with `{forget_command(task_id)}`, or repair it there")
    return damaged_job(task_id, why, **known)


def parse_executor(text: str | bytes, executor_id: str, store_url: str) -> dict[str, Any]:
    """A stored executor registration (its ``ExecutorSpec`` as JSON), or ``damaged_executor``."""
    spec, why = read_object(text)
    if spec is not None:
        return spec
    log_damaged_executor(store_url, executor_id, why)
    return damaged_executor(executor_id, why)


def log_damaged_executor(store_url: str, executor_id: str, why: str) -> None:
    log_damaged(store_url, f"the stored registration of executor {executor_id}", why, "the head does not "
                "register it: it takes no work, and its worker's heartbeats are refused, until it is registered "
                "again (`coopsched executor join` on its node)")


def damaged_executor(executor_id: str, why: str) -> dict[str, Any]:
    return {"executor_id": executor_id, DAMAGED: why}


def parse_report(text: str | bytes, task_id: str, attempt: int, store_url: str) -> dict[str, Any]:
    """A stored usage report, or ``damaged_report``."""
    report, why = read_object(text)
    if report is not None:
        return report
    log_damaged(store_url, f"the stored usage report of job {task_id} attempt {attempt}", why, "it is not "
                "forwarded and charges nobody (the job's reservation stays held); the other reports go on. Its "
                "worker's copy, if it still has one, is forwarded when it is sent again")
    return damaged_report(task_id, attempt, why)


def damaged_report(task_id: str, attempt: int, why: str) -> dict[str, Any]:
    return {"task_id": task_id, "attempt": attempt, DAMAGED: why}


def parse_key(text: str | bytes, key_id: str, store_url: str) -> dict[str, Any]:
    """A stored registered principal (``scheduler.identity.Principal`` as JSON), or ``damaged_key``."""
    principal, why = read_object(text)
    if principal is not None:
        return principal
    log_damaged(store_url, f"the stored registration of key {key_id}", why, "requests signed with that key are "
                "refused until it is registered again (`coopsched keys add`); the other keys are accepted")
    return damaged_key(key_id, why)


def parse_head_state(text: str | bytes) -> dict[str, Any]:
    """A head's stored state (``StateStore.head_state``), or ``{DAMAGED: why}`` (the head logs what it does)."""
    state, why = read_object(text)
    return state if state is not None else {DAMAGED: why}


def damaged_key(key_id: str, why: str) -> dict[str, Any]:
    return {"key_id": key_id, DAMAGED: why}


def log_damaged_policy(store_url: str, coop_id: str, version: int, why: str) -> None:
    log_damaged(store_url, f"the stored policy version {version} of coop {coop_id}", why, "nothing is read from it "
                "(if it is the active version, the coop's submissions are refused until a coop admin sets a "
                "policy again); repair it there, or set the policy again (`coopsched policy set FILE`)")


def damaged_job(task_id: str, why: str, coop_id: str | None = None, member: str | None = None,
                state: str | None = None, submitted_at: float | None = None) -> dict[str, Any]:
    """A damaged record's marker: what the store still knows of it (None where it does not)."""
    return {"task_id": task_id, "coop_id": coop_id, "member": member, "state": state,
            "submitted_at": submitted_at, DAMAGED: why}


def is_damaged(record: Any) -> bool:
    return isinstance(record, dict) and bool(record.get(DAMAGED))


_STATES = frozenset(s.value for s in JobState)


def known_state(record: dict[str, Any]) -> str | None:
    """A damaged record's stored state, if it is one this release knows; else None (none was kept beside it,
    as for a task in no Redis state index or in two, or another release's)."""
    state = record.get("state")
    return state if state in _STATES else None


def damaged_reason(record: dict[str, Any]) -> str:
    state = record.get("state")
    unknown = "" if known_state(record) is not None else "; its state cannot be read either (the store keeps " + (
        "no one state beside the record)" if state is None else
        f"{repr(state)[:40]} beside the record, not a state this release knows)")
    return (f"this job's stored record is damaged ({record[DAMAGED]}){unknown}: the head can neither run nor finish "
            f"it, and its reservation stays held; an operator (or, where the store keeps its coop, that coop's "
            f"admin) deletes the record, releasing that reservation, with `{forget_command(record['task_id'])}`; "
            f"submit the work again under a new task id")


def forget_command(task_id: str) -> str:
    """The command that deletes a damaged record, as an operator types it (``scheduler.head_damaged_jobs``)."""
    return f"coopsched job forget {shlex.quote(task_id)}"


def stored_status(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record's status for readers (``JobStatus`` as JSON): for a damaged one, made of what is
    known, its stored state as it was (None if that is not a ``JobState``), a reason that says it is
    damaged, and its marker (``damaged``: what is wrong; ``JobStatus`` ignores it, the client reads it)."""
    if not is_damaged(record):
        return record["status"]
    return {"task_id": record["task_id"], "coop_id": record.get("coop_id") or "",
            "member": record.get("member") or "", "name": None, "state": known_state(record),
            "reason": damaged_reason(record), "effective_priority": 0.0, "attempts": 0, "executor_id": None,
            "submitted_at": record.get("submitted_at") or 0.0, "started_at": None, "finished_at": None,
            "warnings": [], "charged_cpu_hours": 0.0, "charged_gpu_hours": 0.0, "charged_credits": 0.0,
            "wall_seconds": None, "error": None, "history": [], DAMAGED: record[DAMAGED]}


def damaged_explain(record: dict[str, Any]) -> dict[str, Any]:
    """``explain``'s answer for a damaged record: no decision or placement can be read."""
    reason = damaged_reason(record)
    return {"task_id": record["task_id"], "state": known_state(record), "reason": reason, "decision": None,
            "placement": None, "summary": reason}
