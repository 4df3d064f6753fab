"""Checkpoints on the head: a running attempt saves its task's progress, and the task's next attempt loads it.

A task stopped before it ends (its executor reclaimed by its owner, an urgent task of its coop taking its
place, its worker or node lost) runs again from the start unless it saved where it was. Inside a task,
``scheduler.checkpoint.save_checkpoint(state)`` sends the pickled state here, and the head keeps the last
one in its store (``StateStore.put_checkpoint``: it outlives a head restart); the next attempt's
``load_checkpoint()`` takes it back. It goes with the job's payload when the job finishes.

Who may: each attempt is dispatched with a checkpoint token (``checkpoint_token``), an HMAC of its task id and
attempt number under a secret this head keeps in its store (``put_head_state``: tokens stay valid across
its restarts); only a caller holding it is heard. The head keeps only what the task's latest attempt saves
(the one running, or the one just stopped, saving in its grace: ``stop_grace_s``): an earlier attempt still
finishing its last seconds once a newer one was placed, or another task, cannot write over it. A request
that is refused changes nothing and says why (``{"refused": message}``).

``save_checkpoint`` and ``load_checkpoint`` are not ``@guarded``: the caller is the member's task, which holds no
key; the token is its credential, and it admits only that task's checkpoint (``checkpoint``, a member reading
its job's from outside, is guarded as ``status`` is) (a task's code can reach the head's other private
methods anyway: README, known gaps).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.validation import InvalidRequest, parse
from scheduler import admin
from scheduler.damaged_records import is_damaged
from scheduler.head_auth import guarded
from scheduler.jobs import CheckpointInfo, JobStatus
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024
"""The largest checkpoint the head keeps (pickled): a task's progress marker, not its data (put that in files
or Ray objects and checkpoint their names)."""
SECRET_STATE = "checkpoint_secret"  # the head_state name the token secret is stored under


class CheckpointRequest(BaseModel):
    """Which task's checkpoint, by which of its attempts, with that attempt's token."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task_id": "job-7f3a", "attempt": 2, "token": "<the attempt's checkpoint token>"}]})

    task_id: str = Field(min_length=1, max_length=200, examples=["job-7f3a"])
    attempt: int = Field(ge=1, le=1_000_000, examples=[2])
    token: str = Field(min_length=1, max_length=200, examples=["9f2c41d07be3a5e8a0c4d2f6b1e7c3a9"])


class CheckpointSave(CheckpointRequest):
    """A checkpoint to keep: the pickled state (at most ``MAX_CHECKPOINT_BYTES``)."""

    data: bytes = Field(max_length=MAX_CHECKPOINT_BYTES, examples=[b"pickled state"])


class Checkpoints:
    """The head's part (a mixin of ``scheduler.head.Head``): tokens at dispatch, save and load."""

    _checkpoint_key: bytes | None = None

    def _checkpoint_token(self, task_id: str, attempt: int) -> str:
        """The token attempt ``attempt`` of ``task_id`` is dispatched with (``Dispatch._launch_spec``)."""
        digest = hmac.new(self._checkpoint_secret(), f"{task_id}\0{attempt}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def _checkpoint_secret(self) -> bytes:
        """This head's token secret: read from its store once, made (and stored) when there is none."""
        if self._checkpoint_key is None:
            try:
                self._checkpoint_key = self._stored_checkpoint_secret()
            except Exception as exc:  # noqa: BLE001  # a store down at a dispatch must not stop the dispatch
                log.error("the checkpoint secret of %s could not be read or stored (%s: %s): this head uses one "
                          "of its own until it restarts, so tokens it gave before do not hold, nor do its own "
                          "after a restart", self.owner, type(exc).__name__, exc)
                self._checkpoint_key = secrets.token_bytes(32)
        return self._checkpoint_key

    def _stored_checkpoint_secret(self) -> bytes:
        stored = self.store.head_state(self.owner, SECRET_STATE)
        if stored is not None and not is_damaged(stored) and isinstance(stored.get("secret"), str):
            try:
                return bytes.fromhex(stored["secret"])
            except ValueError:
                pass
        if stored is not None:
            log.error("the stored checkpoint secret of %s cannot be read: a new one is made, so the attempts "
                      "running now cannot save or load their checkpoints (their retries can)", self.owner)
        key = secrets.token_bytes(32)
        self.store.put_head_state(self.owner, SECRET_STATE, {"secret": key.hex()})
        return key

    async def save_checkpoint(self, task_id: str, attempt: int, token: str, data: bytes) -> dict[str, Any]:
        """Keep ``data`` as ``task_id``'s checkpoint, written by its running attempt ``attempt``:
        ``{"saved": bytes, "attempt": attempt}``, or ``{"refused": why}`` (nothing kept)."""
        request = self._checkpoint_request(CheckpointSave, task_id=task_id, attempt=attempt, token=token, data=data)
        if isinstance(request, str):
            return {"refused": request}
        try:
            self.store.put_checkpoint(request.task_id, request.attempt, time.time(), request.data)
        except Exception as exc:  # noqa: BLE001  # the store's failure is the task's answer, not the head's crash
            log.warning("checkpoint of %s not kept: the store refused it: %s: %s", task_id, type(exc).__name__, exc)
            return {"refused": f"the head's store did not take the checkpoint ({type(exc).__name__}: {exc}); "
                               "the one saved before stands: save again later"}
        return {"saved": len(request.data), "attempt": request.attempt}

    async def load_checkpoint(self, task_id: str, attempt: int, token: str) -> dict[str, Any]:
        """``task_id``'s last checkpoint, for its running attempt ``attempt``: ``{"checkpoint": None}`` or
        ``{"checkpoint": {"attempt": saved by, "saved_at": epoch s, "data": bytes}}``; or ``{"refused": why}``."""
        request = self._checkpoint_request(CheckpointRequest, task_id=task_id, attempt=attempt, token=token)
        if isinstance(request, str):
            return {"refused": request}
        try:
            stored = self.store.get_checkpoint(request.task_id)
        except Exception as exc:  # noqa: BLE001
            return {"refused": f"the head's store could not be read ({type(exc).__name__}: {exc}); try again"}
        return {"checkpoint": None if stored is None else stored._asdict()}

    @guarded
    async def checkpoint(self, task_id: str) -> dict[str, Any] | None:
        """A job's last checkpoint, for its member or its coop's admin (``JobHandle.checkpoint``):
        ``{"attempt", "saved_at", "bytes", "data"}`` (the pickled state, as its task saved it), or None when
        none was saved or the job has finished."""
        stored = self.store.get_checkpoint(admin.check_task_id(task_id, "checkpoint"))
        return None if stored is None else {**stored._asdict(), "bytes": len(stored.data)}

    def _with_checkpoint(self, job: JobStatus) -> JobStatus:
        """``job``'s status with what its checkpoint is, if it is unfinished and has one (a store that cannot be
        read now leaves it out: the status is what was asked for)."""
        if job.state.finished or not job.attempts:
            return job
        try:
            info = self.store.checkpoint_info(job.task_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("the checkpoint of %s could not be read for its status: %s: %s", job.task_id,
                        type(exc).__name__, exc)
            return job
        if info is None:
            return job
        return job.model_copy(update={"checkpoint": CheckpointInfo(attempt=info[0], saved_at=info[1], bytes=info[2])})

    def _checkpoint_request(self, model: type[CheckpointRequest], **fields: Any) -> CheckpointRequest | str:
        """The request, validated and allowed, or why not (the message the caller is answered with)."""
        try:
            request = parse(model, fields, what="checkpoint request")
        except InvalidRequest as exc:
            return str(exc)
        return self._checkpoint_refused(request) or request

    def _checkpoint_refused(self, request: CheckpointRequest) -> str | None:
        """Why this request may not touch the task's checkpoint, or None: the token must be this attempt's, and
        this attempt the task's latest: running, or stopped (to make room, or its executor lost) with no attempt
        placed since, as while it saves in its ``stop_grace_s`` (its job already waits to run again)."""
        expected = self._checkpoint_token(request.task_id, request.attempt)
        if not hmac.compare_digest(expected, request.token):
            return (f"token: not the checkpoint token of attempt {request.attempt} of task {request.task_id!r} "
                    "(only the attempt itself holds it: scheduler.checkpoint reads it from the task's context)")
        self._fresh()
        job = self.core.job(request.task_id, explain=False)
        if job is None or job.state not in (JobState.RUNNING, JobState.QUEUED):
            state = "unknown to this head" if job is None else f"{job.state.value} (finished)"
            return f"task {request.task_id!r} is {state}: only an unfinished task keeps a checkpoint"
        if job.attempts != request.attempt:
            if not job.attempts:
                return f"task {request.task_id!r} has not started: it has no attempt {request.attempt}"
            return (f"attempt {request.attempt} of task {request.task_id!r} is not its latest (attempt "
                    f"{job.attempts} is): an earlier attempt's checkpoint would write over the newer one")
        return None
