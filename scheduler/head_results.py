"""How a job's value reaches its submitter: the head hands over result references.

A mixin of ``scheduler.head.Head`` (the Ray actor). The value of an attempt is an ObjectRef
owned by the worker actor that launched it; the head holds a copy from the moment of dispatch
(``Head._results``) and hands it to the client, which then fetches the value from the worker's
node with ``ray.get``, never through the head: ``wait_result(id)`` for one job,
``wait_results(ids)`` for many in one call (``Client.gather``).

(Handing the reference back with the submission's answer, the submission waiting for its own
dispatch, was tried and measured: it saved one call per job but not latency, since the
dispatch's reply is on the critical path either way, and it cost a client that submits one job
after another 20-30 % of its throughput, each submission holding it up for a dispatch round trip.)

An attempt that fails (its worker died, it was cancelled) makes the held reference raise; the
client then asks again and gets the next attempt's. After a head restart the worker still
holds results it produced (``_ref_from_worker``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayActorError

from policies.validation import NOT_BOOL, parse
from scheduler.damaged_records import DAMAGED, is_damaged, stored_status
from scheduler.head_auth import guarded
from scheduler.replicas import JobOfAnotherHead, recorded_head
from scheduler.tasks import JobState

MAX_WAIT_IDS = 10_000
"""Job ids one ``wait_results`` call may ask about (``Client.gather`` sends more in several calls)."""
MAX_WAIT_S = 3600.0
_WITH_RESULT = (JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED)


class WaitRequest(BaseModel):
    """The arguments of ``wait_results`` (and ``wait_result``'s timeout), checked before any waiting."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task_ids": ["job-7f3a", "job-91c2"], "timeout_s": 30.0}]})

    task_ids: list[str] = Field(default_factory=list, max_length=MAX_WAIT_IDS, examples=[["job-7f3a", "job-91c2"]])
    timeout_s: Annotated[float, NOT_BOOL] = Field(default=30.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False, examples=[30.0])


class ResultDelivery:
    """``wait_result`` and ``wait_results``."""

    @guarded
    async def wait_result(self, task_id: str, timeout_s: float = 30.0) -> dict:
        """Wait until the task's current attempt has a result reference or the job has finished."""
        request = parse(WaitRequest, {"task_ids": [task_id], "timeout_s": timeout_s}, what="wait_result")
        task_id, timeout_s = request.task_ids[0], request.timeout_s
        self._ensure_watchdog()
        answer = await self._wait_ready(task_id, time.time() + timeout_s)
        if answer is not None:
            if answer.get("head"):  # another replica's job: only it holds its value (scheduler.replicas)
                raise JobOfAnotherHead(task_id, answer["head"])
            return answer
        job = self.core.job(task_id, explain=False)
        if job is not None:  # pending: it ended and its reference is on its way from the worker: ask again
            return {"state": job.state.value, "ref": None, "error": None, "attempt": job.attempts,
                    "pending": task_id in self._fetching}
        record = self.store.get_job(task_id)  # held by another head replica, not finished yet (or damaged)
        status = stored_status(record) if record else None
        answer = {"state": status["state"] if status else None, "ref": None, "error": None,
                  "attempt": status["attempts"] if status else 0}
        if status is not None and status.get(DAMAGED):  # (with no state: the client says so, not "no job")
            answer.update({DAMAGED: status[DAMAGED], "reason": status["reason"]})
        return answer

    @guarded
    async def wait_results(self, task_ids: list[str], timeout_s: float = 30.0) -> dict[str, dict]:
        """``wait_result`` for many jobs in one call: answers once every one of them has a result
        reference or has finished, or after ``timeout_s``; jobs not ready by then are left out of the
        answer (ask again for those)."""
        request = parse(WaitRequest, {"task_ids": task_ids, "timeout_s": timeout_s}, what="wait_results")
        self._ensure_watchdog()
        deadline = time.time() + request.timeout_s
        out = {}
        for task_id in request.task_ids:  # past the deadline, the rest are answered only if ready now
            answer = await self._wait_ready(task_id, deadline)
            if answer is not None:
                out[task_id] = answer
        return out

    async def _wait_ready(self, task_id: str, deadline: float) -> dict | None:
        """The job's ``wait_result`` answer once it has a result reference or has finished (or is
        unknown); None if neither happened by ``deadline``."""
        while True:
            job = self.core.job(task_id, explain=False)
            if job is None:
                answer = await self._stored_answer(task_id)
                if answer is not None:
                    return answer
            else:
                ref = self._results.get(task_id) if job.state in _WITH_RESULT else None
                fetching = ref is None and task_id in self._fetching  # on its way from the worker (Head._fetch_refs)
                if ref is None and not fetching and job.state in (JobState.SUCCEEDED, JobState.FAILED) \
                        and job.executor_id:
                    ref = await self._ref_from_worker(task_id, job.executor_id)
                if ref is not None or (job.state.finished and not fetching):
                    return {"state": job.state.value, "ref": ref, "error": job.error, "attempt": job.attempts}
            remaining = deadline - time.time()
            if remaining <= 0:
                return None
            event = self._changed.setdefault(task_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass

    async def _stored_answer(self, task_id: str) -> dict | None:
        """The answer for a job the core does not hold: one that finished (the core forgot it, or it
        finished before this head started), its value, if still held, asked of the worker that ran it; for
        another head replica's job (on a shared store), its stored state and ``head``, the replica to ask."""
        record = self.store.get_job(task_id)
        if record is None:
            return {"state": None, "ref": None, "error": f"no job {task_id}"}
        status = stored_status(record)  # (a damaged record's: its stored state, no executor)
        if not is_damaged(record) and self._elsewhere_recorded(record):  # its head holds its value: the answer
            # names it (wait_result raises JobOfAnotherHead; Client.gather has the handle follow it)
            return {"state": status["state"], "ref": None, "error": None, "attempt": status.get("attempts", 0),
                    "head": recorded_head(record)}
        try:
            state = JobState(status["state"])
        except ValueError:  # a state this release does not know, or none kept beside a damaged record: wait
            return None
        if not state.finished:
            if status.get(DAMAGED):  # no head can restore it (each reads the same record): it never finishes
                return {"state": state.value, "ref": None, "error": None, "attempt": 0, DAMAGED: status[DAMAGED],
                        "reason": status["reason"]}
            return None  # another head replica runs it
        ref = self._results.get(task_id) if state in _WITH_RESULT else None
        if ref is None and state in (JobState.SUCCEEDED, JobState.FAILED) and status.get("executor_id"):
            ref = await self._ref_from_worker(task_id, status["executor_id"])
        return {"state": state.value, "ref": ref, "error": status.get("error"), "attempt": status.get("attempts", 0)}

    async def _ref_from_worker(self, task_id: str, executor_id: str) -> list | None:
        """After a head restart the worker still holds results it produced: ask it."""
        worker = self._worker(executor_id)
        if worker is None:
            return None
        try:
            ref = await worker.result_ref.remote(task_id)
        except RayActorError:
            return None
        if ref:
            self._results[task_id] = ref
        return ref

    def _notify(self, task_id: str) -> None:
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()
