"""What a submission gives back: ``JobHandle`` (status, result, cancel, explain) and the errors a job
ends with (``PolicyViolation`` at submission; ``JobFailed``, ``JobCancelled``, ``RuntimeLimitExceeded``
from ``result()``; ``JobRecordDamaged`` when the head can tell no state of the job). The handle asks the
head through its ``Client`` and fetches the value with Ray; a job another head replica admitted is asked of that
head once the client's own says so (``scheduler.replicas``)."""

from __future__ import annotations

import math
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

import ray
from pydantic import ValidationError
from ray.exceptions import GetTimeoutError, RayError

from executors.measure import TaskError
from policies.reasons import Decision
from policies.validation import FieldError, InvalidRequest, quoted
from scheduler.jobs import JobStatus
from scheduler.replicas import JobOfAnotherHead, head_of
from scheduler.tasks import JobState

if TYPE_CHECKING:
    from scheduler.client import Client


class PolicyViolation(Exception):
    """A strict policy refused the task; ``decision.reasons`` say why and whether retrying helps.

    From ``Client.map``: ``refused`` holds every refused item's decision and ``handles`` the
    jobs of the batch that were admitted (they run)."""

    def __init__(self, decision: Decision, refused: list[Decision] | None = None,
                 handles: list[JobHandle] | None = None):
        self.decision = decision
        self.refused = refused or [decision]
        self.handles = handles or []
        extra = f" (and {len(self.refused) - 1} more refused; {len(self.handles)} admitted)" if refused else ""
        super().__init__(decision.summary() + extra)

    def __reduce__(self):
        return (PolicyViolation, (self.decision, self.refused))


class JobFailed(RuntimeError):
    """The job ended without a value; ``status`` holds its history, ``error`` the traceback."""

    def __init__(self, status: JobStatus, message: str | None = None):
        self.status = status
        self.error = status.error
        super().__init__(message or f"job {status.task_id} {status.state.value}: {status.reason}"
                         + (f"\n{status.error}" if status.error else ""))


class JobCancelled(JobFailed):
    pass


class RuntimeLimitExceeded(JobFailed):
    pass


class JobRecordDamaged(RuntimeError):
    """The job's stored record is damaged, so the head can neither run nor finish it. ``status()``, ``cancel()``
    and ``result()`` raise this when the store keeps no state of it beside the record either (on Redis: its
    task is in no state index, or in two), rather than make up a state (``scheduler.damaged_records`` says
    why none would do); ``result()`` raises it too when a state is kept (``state``: queued or running, as
    stored), as no value of it will ever come through the head. ``reason`` is the head's account: what is
    wrong, what stays held, and what to do."""

    def __init__(self, task_id: str, reason: str, state: str | None = None):
        self.task_id, self.reason, self.state = task_id, reason, state
        super().__init__(f"job {task_id!r} has no state the head can tell: {reason}" if state is None else
                         f"job {task_id!r} ({state}, as its store keeps it) has no value the head can deliver: "
                         f"{reason}")

    def __reduce__(self):
        return (JobRecordDamaged, (self.task_id, self.reason, self.state))


class UnreadableAnswer(RuntimeError):
    """The head answered a job status this client cannot read: the head runs another Coopsched release (say a
    newer one, with a state this one does not know). Raised instead of pydantic's error, naming the field,
    the value and what to do."""


def _release() -> str:
    try:
        return metadata.version("coopsched")
    except metadata.PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"


def read_status(answer: dict, task_id: str) -> JobStatus:
    """``JobStatus(**answer)``, or ``UnreadableAnswer`` saying which field holds what this release does not know."""
    try:
        return JobStatus(**answer)
    except (ValidationError, TypeError) as exc:
        where, value = "the answer", repr(answer)[:80]
        if isinstance(exc, ValidationError) and exc.errors():
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or where
            value = repr(first.get("input"))[:80]
        raise UnreadableAnswer(
            f"the head's status of job {task_id!r} cannot be read by this client: {where} is {value}, which "
            f"coopsched {_release()} (this client) does not know (its job states: "
            f"{', '.join(sorted(_STATES))}); the head likely runs a newer release: install the head's release "
            "here (e.g. `pip install --upgrade coopsched`)") from None


_STATES = frozenset(s.value for s in JobState)
_UNFINISHED = frozenset({None, *(s.value for s in JobState if not s.finished)})


def job_status(answer: Any, task_id: str) -> JobStatus:
    """The head's ``status`` answer as a ``JobStatus``; ``JobRecordDamaged`` for a damaged record's job whose
    state the head cannot tell (its answer has ``damaged`` and no state), ``KeyError`` for an unknown id."""
    if answer is None:
        raise KeyError(f"no job {task_id!r}")
    if isinstance(answer, dict) and answer.get("damaged") and answer.get("state") not in _STATES:
        raise JobRecordDamaged(task_id, str(answer.get("reason") or answer["damaged"]))
    return read_status(answer, task_id)


def _timeout(value: Any) -> float | None:
    """A ``timeout`` argument: None (wait as long as it takes) or a finite number of seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidRequest("wait", [FieldError("timeout", quoted(value, 40), "seconds to wait, a finite number "
                                                 ">= 0 (0: only a value that is ready), or None to wait as long as "
                                                 "it takes", "30")])
    return float(value)


class JobHandle:
    """A submitted job: ``status()``, ``result()``, ``cancel()``, ``explain()``."""

    def __init__(self, client: Client, decision: Decision):
        self._client = client
        self.decision = decision
        self.id = decision.task_id
        self.warnings = decision.warnings
        # ([value ObjectRef], attempt) of the attempt running now, once Client.gather got it from the
        # head: result() then needs no call to the head; dropped once it fails
        self._started: tuple[list, int] | None = None
        self._head: Any = None  # the head replica that admitted it, once the client's own said it is another's

    def _ask(self, method: str, *args: Any) -> Any:
        """Call ``method`` for this job on its head: the client's, or, once that answered ``JobOfAnotherHead``
        (the job is another head replica's: ``scheduler.replicas``), the replica named there, from then on."""
        if self._head is not None:
            return self._client._call_on(self._head, method, self.id, *args)
        try:
            return self._client._call(method, self.id, *args)
        except JobOfAnotherHead as elsewhere:  # (followed once: that head owns the record, so it answers)
            self._head = head_of(elsewhere.owner)
            return self._client._call_on(self._head, method, self.id, *args)

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def status(self) -> JobStatus:
        """Its status; ``JobRecordDamaged`` if its stored record is damaged and its state cannot be told."""
        return job_status(self._ask("status"), self.id)

    def explain(self) -> dict[str, Any]:
        return self._ask("explain")

    def checkpoint(self, load: bool = False) -> Any:
        """Its last checkpoint while it is unfinished (``scheduler.checkpoint.save_checkpoint`` in its task):
        ``{"attempt", "saved_at", "bytes", "data"}``, the state still pickled, or None. ``load=True`` gives the
        state itself; unpickling runs code of whoever wrote it, so load only checkpoints of your own jobs."""
        stored = self._ask("checkpoint")
        if stored is None or not load:
            return stored
        return ray.cloudpickle.loads(stored["data"])  # (as the task pickled it)

    def cancel(self) -> str | None:
        """Cancel it; its state then (``running`` while it stops), None for an unknown id.
        ``JobRecordDamaged`` if its stored record is damaged and its state cannot be told: the head then
        asked every executor that may run it to stop it, and the error says which and what to do."""
        answer = self._ask("cancel")
        if isinstance(answer, dict):  # (a status with no state: the head answers a state wherever it can)
            return job_status(answer, self.id).state.value
        return answer

    def result(self, timeout: float | None = None) -> Any:
        """The function's return value. Raises ``JobFailed`` (with the traceback),
        ``JobCancelled``, ``RuntimeLimitExceeded`` or ``TimeoutError`` after ``timeout`` s."""
        timeout = _timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        asked = False  # (even with timeout 0, a value that is ready is returned: one look first)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0 and asked:
                raise TimeoutError(f"job {self.id} not finished after {timeout} s (status: {self.status().state.value})")
            asked = True
            if self._started is not None:
                answer = {"state": "running", "ref": self._started[0], "attempt": self._started[1]}
            else:
                answer = self._ask("wait_result", 30.0 if left is None else min(left, 30.0))
            ref = answer.get("ref")
            if ref:
                try:
                    value = ray.get(ref[0], timeout=left)
                except GetTimeoutError:
                    continue
                except RayError:  # killed (timeout/cancel) or its worker died: ask the head what happened
                    self._started = None
                    self._wait_settled(deadline)
                    status = self.status()
                    if status.attempts > answer["attempt"]:
                        continue  # retried on another executor: fetch that attempt's result
                    if status.state.value == "succeeded":  # this very attempt succeeded, but its value went
                        raise JobFailed(status, f"job {self.id} succeeded but its result is no longer available "
                                        "(the executor that held it is gone)") from None
                    if not status.state.finished:
                        time.sleep(0.05)
                        continue
                    raise self._failure(status) from None
                if isinstance(value, TaskError):
                    self._wait_settled(deadline)
                    raise JobFailed(self.status(), f"job {self.id} failed: {value.type_name}: {value.message}\n"
                                    f"{value.traceback}")
                return value
            if answer.get("pending"):  # it ended; the head is fetching its reference from the worker
                continue
            if answer.get("damaged") and answer.get("state") in _UNFINISHED:  # stored, but damaged:
                # no state of it can be told, or a queued or running one that no head can restore, so no
                # value will come (a finished one is answered below as finished)
                raise JobRecordDamaged(self.id, str(answer.get("reason") or answer["damaged"]), answer.get("state"))
            if answer.get("state") is None:
                raise KeyError(f"no job {self.id!r}: {answer.get('error') or 'the head does not know it'}")
            if answer.get("state") in ("cancelled", "failed", "timeout", "rejected"):
                raise self._failure(self.status())
            if answer.get("state") == "succeeded":  # finished, but its value is no longer held anywhere
                raise JobFailed(self.status(), f"job {self.id} succeeded but its result is no longer available "
                                "(the executor that held it is gone, or the head restarted after it was fetched)")

    def _wait_settled(self, deadline: float | None, limit_s: float = 10.0) -> None:
        end = time.monotonic() + limit_s if deadline is None else min(deadline, time.monotonic() + limit_s)
        while time.monotonic() < end:
            if self.status().state.value != "running":
                return
            time.sleep(0.02)

    @staticmethod
    def _failure(status: JobStatus) -> JobFailed:
        if status.state.value == "cancelled":
            return JobCancelled(status)
        if status.state.value == "timeout":
            return RuntimeLimitExceeded(status)
        return JobFailed(status)
