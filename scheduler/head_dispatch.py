"""How the head hands placed tasks to executors' workers and takes back what they lost.

A mixin of ``scheduler.head.Head`` (the Ray actor), like ``scheduler.head_results``: every
method here runs on the head's main event loop. One dispatch call is in flight per executor at
a time; what is placed there meanwhile goes in its next call. A worker answers each task with
its result reference, or ``QUEUED`` when it keeps the task in its own queue
(``ExecutorSpec.dispatch_ahead``); the references of those are fetched once their reports are
settled (``_fetch_refs``): with the next dispatch to that worker when one is about to go (the slot
they freed is usually refilled at once), else in one ``result_refs`` call per worker.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray
from ray.exceptions import ActorUnavailableError, ActorUnschedulableError, RayActorError, RayError

from executors.worker import QUEUED
from scheduler.damaged_records import stored_status
from scheduler.names import worker_name
from scheduler.placement import Placement
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

KEEP_RESULTS = 10_000  # finished jobs whose result references the head keeps for late result() calls
CANCEL_TIMEOUT_S = 5.0  # how long a cancel waits for the worker of an executor held for a job not restored


class Dispatch:
    """``_schedule`` and what it starts: dispatch, lost workers, fetched result references, cancels."""

    def _schedule(self) -> None:
        """Place what fits and dispatch it: one call per executor at a time. What is placed on an
        executor while a call to it is in flight goes in its next call (as the tracker forwards
        reports), so a stream of single submissions makes one call per round trip, not one per job,
        and an idle executor's first job goes at once."""
        started = time.perf_counter()
        placements = self.core.schedule()
        self.metrics.placed(len(placements), time.perf_counter() - started)
        for task_id, executor_id in self.core.drain_preempted():  # stopped to make room (reclaim, preemption)
            self._dispatched.pop(task_id, None)  # (queued again: the watchdog asks no worker about it)
            self._results.pop(task_id, None)  # (its value will not come: a waiting result() asks again)
            self._notify(task_id)
            self._loop.create_task(self._stop_preempted(task_id, executor_id))
        for p in placements:
            outbox = self._outbox.get(p.executor_id)
            if outbox is None:
                self._outbox[p.executor_id] = [p]
                self._loop.create_task(self._send(p.executor_id))
            else:
                outbox.append(p)

    async def _send(self, executor_id: str) -> None:
        """Dispatch the executor's outbox, then what was placed there meanwhile, until it is empty."""
        try:
            while self._outbox.get(executor_id):
                self._fresh()  # placed from memory a failed rebuild kept: perhaps never stored
                if self._stale:  # the store still unreadable: send nothing; the rebuild places what it holds
                    self._outbox.pop(executor_id, None)
                    return
                group, self._outbox[executor_id] = self._outbox[executor_id], []
                group = [p for p in group if self.core.is_placed(p.task.task_id, executor_id, p.attempt)]  # lost,
                # cancelled or requeued while it waited: dropped
                if group:
                    await self._dispatch(executor_id, group)
        finally:
            if not self._outbox.get(executor_id):
                self._outbox.pop(executor_id, None)
                riding = self._refs_riding.pop(executor_id, None)
                if riding:  # no dispatch went after all (everything in it was dropped): ask on their own
                    self._loop.create_task(self._fetch_refs_of(executor_id, riding))
            else:  # _dispatch raised (a bug): keep the rest moving
                self._loop.create_task(self._send(executor_id))

    def _launch_spec(self, p: Placement) -> dict:
        task = p.task
        return {"task_id": task.task_id, "coop_id": task.coop_id, "member": task.member, "attempt": p.attempt,
                "cpus": task.resources.cpus, "gpus": task.resources.gpus, "memory_mb": task.resources.memory_mb,
                "max_runtime_s": self.core.runtime_limit(task.task_id),
                "payload": [self._payloads[task.task_id]],
                "checkpoint_token": self._checkpoint_token(task.task_id, p.attempt),  # (scheduler.head_checkpoints)
                **({"stop_grace_s": task.stop_grace_s} if task.stop_grace_s else {})}

    async def _dispatch(self, executor_id: str, group: list[Placement]) -> None:
        """Send the placements of one executor to its worker in one call (with it, the ended tasks
        whose result references are wanted from there: ``_fetch_refs``)."""
        ended = self._refs_riding.pop(executor_id, None)
        fetched = False
        try:
            fetched = await self._dispatch_with(executor_id, group, ended)
        finally:
            if fetched:
                self._refs_fetched(ended)
            elif ended:  # the call did not bring them (it failed, or the worker is of an earlier release)
                self._loop.create_task(self._fetch_refs_of(executor_id, ended))

    async def _dispatch_with(self, executor_id: str, group: list[Placement], ended: list[str] | None) -> bool:
        """The dispatch; True if it brought back the references of ``ended``."""
        started, fetched = 0, False
        worker = self._worker(executor_id)
        try:
            if worker is None:  # (Ray's ActorUnavailableError wants an actor id, which there is none of)
                self._lost(executor_id, f"no worker actor for executor {executor_id}")
                return False
            specs, capacity = [self._launch_spec(p) for p in group], self._capacity(executor_id)
            sent, call = time.monotonic(), None
            if ended:
                try:  # (Ray checks the arguments against the worker's own signature as the call is made)
                    call = worker.start_many.remote(specs, capacity, ended)
                except TypeError:  # a worker of an earlier release, without ``ended``: result_refs then
                    ended = None
            refs, brought = _started_and_refs(await (worker.start_many.remote(specs, capacity) if call is None
                                                     else call), ended)
            self.ahead_tuner.dispatched(executor_id, time.monotonic() - sent)
            if brought is not None:
                self._took_refs(ended, brought)
                fetched = True
            now = time.time()
            for p, ref in zip(group, refs):
                task_id = p.task.task_id
                if not self.core.is_placed(task_id, executor_id, p.attempt):  # a late answer: the executor was
                    self._drop_stale(task_id, executor_id, worker)  # lost meanwhile, the task went elsewhere
                    continue
                if not ref:  # a bug somewhere if it happens: the attempt is already running there
                    log.error("worker %s refused task %s (already running it)", executor_id, task_id)
                    self.core.requeue(task_id, executor_id, f"worker {executor_id} refused it (already running it)")
                    continue
                self._dispatched[task_id] = now
                if ref != QUEUED:  # queued there: its reference is fetched once it ended (_fetch_refs)
                    self._results[task_id] = ref  # the worker keeps its own for a while (KEEP_FINISHED)
                started += 1
        except (RayActorError, ActorUnavailableError, ActorUnschedulableError) as exc:
            self._lost(executor_id, f"worker of {executor_id} unreachable at dispatch ({type(exc).__name__})")
        except Exception as exc:
            log.exception("dispatch of %d task(s) to %s failed", len(group), executor_id)
            for p in group:
                self.core.requeue(p.task.task_id, executor_id, f"dispatch failed: {exc}")
        if started < len(group):
            with self._writes():
                self._schedule()
                self._persist()
        for p in group:
            task_id = p.task.task_id
            self._notify(task_id)
            if self.core.cancel_requested(task_id):  # asked while the dispatch was in flight
                job = self.core.job(task_id, explain=False)
                if job is not None and job.state is JobState.RUNNING:
                    await self._cancel_on_worker(task_id)
        return fetched

    async def _stop_preempted(self, task_id: str, executor_id: str) -> None:
        """Stop a preempted attempt at its worker. Its report (``cancelled``) settles nothing and lets the job
        go back to that executor (``Job.ending_on``); a worker that does not answer is found lost by the
        watchdog, which ends that hold too."""
        task = self.core.task(task_id)
        grace = task.stop_grace_s if task is not None else 0.0
        owner = self.core.policy(self.core.table.spec(executor_id).coop_id) if executor_id in self.core.table else None
        if owner is not None and owner.max_stop_grace_s is not None:  # the executor's owner caps it
            grace = min(grace, owner.max_stop_grace_s)
        if not await self._cancel_held(task_id, executor_id, grace_s=grace):
            log.info("preempted task %s was not running on %s any more (ended, or its dispatch still on the way: "
                     "a late start there is stopped when its answer comes)", task_id, executor_id)

    def _drop_stale(self, task_id: str, executor_id: str, worker) -> None:
        """A worker answered a dispatch after its executor was declared lost and the task requeued: that
        attempt's reference must not stand in for the retry's, and the attempt should stop. (When the retry
        went back to the same executor, its worker refused it as already running; nothing to cancel.)"""
        job = self.core.job(task_id, explain=False)
        if job is not None and job.executor_id == executor_id and job.state is JobState.RUNNING:
            return  # (a job preempted there while its dispatch was on the way is queued: that attempt stops)
        log.info("late dispatch answer from %s for %s, now placed elsewhere: cancelling it there",
                 executor_id, task_id)
        self._loop.create_task(self._cancel_quietly(worker, task_id))

    @staticmethod
    async def _cancel_quietly(worker, task_id: str) -> None:
        try:
            await worker.cancel.remote(task_id)
        except RayError:
            pass  # gone for good: nothing runs there any more

    async def _send_capacity(self, worker, executor_id: str) -> None:
        """Tell a worker its executor's resources, dispatching nothing (``start_many([], capacity)``)."""
        try:
            await worker.start_many.remote([], self._capacity(executor_id))
        except Exception as exc:  # noqa: BLE001  # a worker restarted or gone: the next dispatch tells the new one
            log.info("capacity of %s not sent to its worker: %s", executor_id, type(exc).__name__)

    def _capacity(self, executor_id: str) -> dict | None:
        """The executor's resources, for its worker to start what fits and queue the rest."""
        if executor_id not in self.core.table:
            return None
        r = self.core.table.spec(executor_id).resources
        return {"cpus": r.cpus, "gpus": r.gpus, "memory_mb": r.memory_mb}

    def _worker(self, executor_id: str):
        handle = self._workers.get(executor_id)
        if handle is None:
            try:
                handle = ray.get_actor(worker_name(executor_id), namespace=self.namespace)
            except ValueError:
                return None
            self._workers[executor_id] = handle
        return handle

    def _lost(self, executor_id: str, why: str) -> None:
        with self._writes():
            lost = self.core.executor_lost(executor_id, why)
            self._store_status(executor_id)  # offline: a restarted head sends it nothing until it reports
            self._workers.pop(executor_id, None)
            self._forget_attempts(lost)
            if lost:
                log.warning("%s: %d task(s) back in the queue", why, len(lost))
            self._schedule()
            self._persist()

    def _forget_attempts(self, task_ids) -> None:
        """Tasks sent back to the queue: their old attempt's result reference and dispatch time go, and
        their waiters wake (to wait for the retry)."""
        for task_id in task_ids:
            self._results.pop(task_id, None)
            self._dispatched.pop(task_id, None)
            self._notify(task_id)

    def _fetch_refs(self) -> None:
        """Get the result references of the tasks each worker launched from its own queue that just
        ended (their ``start`` answer had none), then wake their waiters: with the next dispatch to that
        worker when one is about to go (called after ``_schedule``), else in one ``result_refs`` call."""
        wanted, self._refs_wanted = self._refs_wanted, {}
        for executor_id, task_ids in wanted.items():
            if self._outbox.get(executor_id):  # placed there and not sent yet: a dispatch call will go
                self._refs_riding.setdefault(executor_id, []).extend(task_ids)
            else:
                self._loop.create_task(self._fetch_refs_of(executor_id, task_ids))

    async def _fetch_refs_of(self, executor_id: str, task_ids: list[str]) -> None:
        worker = self._worker(executor_id)
        try:
            self._took_refs(task_ids, await worker.result_refs.remote(task_ids) if worker is not None else [])
        except RayError as exc:  # its waiters ask the worker themselves (wait_result), or learn it is gone
            log.info("result references of %d task(s) not fetched from %s: %s", len(task_ids), executor_id,
                     type(exc).__name__)
        finally:
            self._refs_fetched(task_ids)

    def _took_refs(self, task_ids: list[str], refs: list) -> None:
        for task_id, ref in zip(task_ids, refs):
            if ref:
                self._results[task_id] = ref
        while len(self._results) > KEEP_RESULTS:
            self._results.popitem(last=False)

    def _refs_fetched(self, task_ids: list[str]) -> None:
        """Fetched or not, the references of these are no longer on their way: their waiters go on
        (without one, ``wait_result`` asks the worker itself, or learns it is gone)."""
        for task_id in task_ids:
            self._fetching.discard(task_id)
            self._notify(task_id)

    async def _cancel_on_worker(self, task_id: str) -> None:
        job = self.core.job(task_id)
        worker = self._worker(job.executor_id) if job and job.executor_id else None
        if worker is not None:
            try:
                await worker.cancel.remote(task_id)
            except RayActorError:
                self._lost(job.executor_id, f"worker of {job.executor_id} died")

    async def _cancel_unrestored(self, task_id: str) -> str | dict | None:
        """``cancel`` of a job the core does not hold: the store's word, after asking the worker of every
        executor where its attempt is held (an unrestored job's: ``scheduler.held_capacity``) to stop it.
        What is held there stays held until the watchdog hears that worker no longer runs it; its report
        settles nothing (the core holds no such job), and the record stays in the store as it was."""
        asked = self.core.held_where(task_id)
        stopping = [e for e, stops in zip(asked, await asyncio.gather(
            *(self._cancel_held(task_id, e) for e in asked))) if stops]
        if asked:
            log.warning("cancel of job %s, which this head could not restore: asked %s to stop it; %s", task_id,
                        ", ".join(asked), f"{', '.join(stopping)} stops it" if stopping else "none runs it")
        record = self.store.get_job(task_id)
        status = stored_status(record) if record else None
        if status is not None and status["state"] is not None:
            return status["state"]
        if stopping:  # (no state kept, but a worker runs or queues it: as any running job's cancel answers)
            return JobState.RUNNING.value
        if status is None:
            return None
        done = (f"cancel asked {', '.join(asked)} to stop it, and none runs it" if asked else
                "no executor is held for it, so no worker was asked to stop it")
        return {**status, "reason": f"{status['reason']}; {done}"}

    async def _cancel_held(self, task_id: str, executor_id: str, grace_s: float = 0.0) -> bool:
        """Ask ``executor_id``'s worker to cancel ``task_id``: whether it runs or queues it there (and stops it;
        ``grace_s``, for a task stopped to make room: asked to end, and killed only after that long). A worker
        that is gone or does not answer says no; the watchdog finds it lost, its holds ending then."""
        worker = self._worker(executor_id)
        if worker is None:
            return False
        try:
            call = worker.cancel.remote(task_id, grace_s=grace_s) if grace_s > 0 \
                else worker.cancel.remote(task_id)  # (asked only then: a worker of an earlier release takes none)
            return bool(await asyncio.wait_for(call, CANCEL_TIMEOUT_S))
        except (RayError, asyncio.TimeoutError) as exc:
            log.info("cancel of %s not answered by the worker of %s (%s)", task_id, executor_id, type(exc).__name__)
            return False


def _started_and_refs(answer, ended: list[str] | None) -> tuple[list, list | None]:
    """``start_many``'s answer: what it started (one entry per spec) and, when asked with ``ended``, their
    references if it brought one per ended task, else None (``_dispatch`` then asks ``result_refs``). A
    worker that took ``ended`` but answered the plain list (or refs of another shape) still started what
    it says: reading its answer as the dict must not send those tasks back to the queue to run twice."""
    if not ended or not isinstance(answer, dict):
        return answer, None
    refs = answer.get("refs")
    return answer.get("started"), refs if isinstance(refs, list) and len(refs) == len(ended) else None
