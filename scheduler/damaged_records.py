"""A job record a store holds but cannot read: its JSON text is damaged (cut short, overwritten, not UTF-8).

A store answers such a record (``get_job``, ``jobs``, ``unfinished_jobs``) with ``damaged_job(...)``
instead of raising: the task id, what the store keeps beside the JSON (SQLite's own columns: coop,
member, state, submission time; Redis's state index), and ``damaged``, what is wrong with the text.
One damaged record must not keep a restarted head from starting, a rebuild (``Head._resync``) from
finishing, or a listing of every job from answering.

What readers do with one: the head restores nothing from it (``Head._recover``), and what its attempt
may still use is held (``scheduler.held_capacity.held_anywhere``); its reservation stays held in its
month, as the record stays in the store as it was. Listings leave it out (a ``JobStatus`` cannot be
made of it), and a status or explain of that id answers from what is known, saying it is damaged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("coopsched.store")

DAMAGED = "damaged"
"""The key of a damaged record's marker: what is wrong with its text."""

_reported: set[tuple[str, str]] = set()  # (store url, task id): each damaged record is logged once by the stores


def parse_job(text: str | bytes, task_id: str, store_url: str, **known: Any) -> dict[str, Any]:
    """The stored record ``text``, or ``damaged_job(task_id, ..., **known)`` if it is not a JSON object
    (logged the first time it is met)."""
    try:
        record = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        why = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(record, dict):
            return record
        why = f"JSON {type(record).__name__}, not an object"
    if (store_url, task_id) not in _reported:
        _reported.add((store_url, task_id))
        log.error("the stored record of job %s in %s is damaged (%s): nothing is read from it; repair or "
                  "delete it there (the head restores no such job)", task_id, store_url.split("@")[-1], why)
    return damaged_job(task_id, why, **known)


def damaged_job(task_id: str, why: str, coop_id: str | None = None, member: str | None = None,
                state: str | None = None, submitted_at: float | None = None) -> dict[str, Any]:
    """A damaged record's marker: what the store still knows of it (None where it does not)."""
    return {"task_id": task_id, "coop_id": coop_id, "member": member, "state": state,
            "submitted_at": submitted_at, DAMAGED: why}


def is_damaged(record: Any) -> bool:
    return isinstance(record, dict) and bool(record.get(DAMAGED))


def damaged_reason(record: dict[str, Any]) -> str:
    return (f"this job's stored record is damaged ({record[DAMAGED]}): the head can neither run nor finish it, "
            f"and its reservation stays held; an operator can repair or delete the record of {record['task_id']!r} "
            "in the store; submit the work again under a new task id")


def stored_status(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record's status for readers (``JobStatus`` as JSON): for a damaged one, made of what is
    known, its stored state as it was, and a reason that says it is damaged."""
    if not is_damaged(record):
        return record["status"]
    return {"task_id": record["task_id"], "coop_id": record.get("coop_id") or "",
            "member": record.get("member") or "", "name": None, "state": record.get("state"),
            "reason": damaged_reason(record), "effective_priority": 0.0, "attempts": 0, "executor_id": None,
            "submitted_at": record.get("submitted_at") or 0.0, "started_at": None, "finished_at": None,
            "warnings": [], "charged_cpu_hours": 0.0, "charged_gpu_hours": 0.0, "charged_credits": 0.0,
            "wall_seconds": None, "error": None, "history": []}


def damaged_explain(record: dict[str, Any]) -> dict[str, Any]:
    """``explain``'s answer for a damaged record: no decision or placement can be read."""
    reason = damaged_reason(record)
    return {"task_id": record["task_id"], "state": record.get("state"), "reason": reason, "decision": None,
            "placement": None, "summary": reason}
