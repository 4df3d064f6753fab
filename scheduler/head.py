"""The head actor: a thin Ray shell around ``SchedulerCore``.

It admits (``submit``/``submit_many``), dispatches placements to executors' worker
actors, hears usage from the tracker (``on_report``) and heartbeats from workers, and
schedules again whenever resources free up or executors change. A watchdog notices
workers that died or restarted and sends their tasks back to the queue (retried
elsewhere, charged once). The head is a detached, named actor that Ray restarts on
failure; what it knew is recovered from the store once the durable store exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from policies.model import CoopPolicy
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorSpec
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME, worker_name
from scheduler.placement import Placement
from scheduler.ray_data import RayDataLocator
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

WATCH_INTERVAL_S = 1.0
KEEP_RESULTS = 10_000  # finished jobs whose result references the head keeps for late result() calls
PING_TIMEOUT_S = 5.0


class Head:
    def __init__(self, namespace: str = NAMESPACE, tracker_name: str = TRACKER_NAME,
                 heartbeat_timeout_s: float = 30.0) -> None:
        self.namespace = namespace
        self.tracker_name = tracker_name
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.locator = RayDataLocator()
        self.core = SchedulerCore(clock=time.time, data_locator=self.locator)
        self._workers: dict[str, Any] = {}
        self._payloads: dict[str, ray.ObjectRef] = {}
        self._results: OrderedDict[str, list] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}
        self._dispatched: dict[str, float] = {}
        self._watchdog: asyncio.Task | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ submission
    async def submit(self, task: dict, payload: tuple | None = None, data_refs: list | None = None) -> dict:
        """Admit one task (``InvalidRequest`` for bad input). Returns the Decision as JSON."""
        self._ensure_watchdog()
        decision = self._admit(task, payload, data_refs)
        self._schedule()
        return decision

    async def submit_many(self, items: list[tuple[dict, tuple | None, list | None]]) -> list[dict]:
        """Admit a batch in one call; a bad item answers with its error, the others go on."""
        self._ensure_watchdog()
        out: list[dict] = []
        for task, payload, data_refs in items:
            try:
                out.append(self._admit(task, payload, data_refs))
            except ValueError as exc:
                out.append({"error": str(exc)})
        self._schedule()
        return out

    def _admit(self, task: dict, payload: tuple | None, data_refs: list | None) -> dict:
        if data_refs:
            keys = self.locator.remember(list(data_refs))
            hints = dict(task.get("hints") or {})
            hints["data"] = list(hints.get("data") or ()) + keys
            task = {**task, "hints": hints}
        decision = self.core.submit(task)
        if decision.admitted and decision.task_id not in self._payloads:
            self._payloads[decision.task_id] = ray.put(payload if payload is not None else (_noop, (), {}))
        return decision.model_dump(mode="json")

    # ------------------------------------------------------------------ dispatch
    def _schedule(self) -> None:
        for placement in self.core.schedule():
            asyncio.get_running_loop().create_task(self._dispatch(placement))

    async def _dispatch(self, p: Placement) -> None:
        task = p.task
        spec = {"task_id": task.task_id, "coop_id": task.coop_id, "member": task.member, "attempt": p.attempt,
                "cpus": task.resources.cpus, "gpus": task.resources.gpus, "memory_mb": task.resources.memory_mb,
                "max_runtime_s": task.max_runtime_s or self._default_runtime(task.coop_id, task.member),
                "payload": [self._payloads[task.task_id]]}
        worker = self._worker(p.executor_id)
        try:
            if worker is None:
                raise ActorUnavailableError(f"no worker actor for executor {p.executor_id}")
            accepted = await worker.start.remote(spec)
            if not accepted:
                raise RuntimeError(f"worker {p.executor_id} refused task {task.task_id} (already running it)")
            self._dispatched[task.task_id] = time.time()
            self._results[task.task_id] = await worker.result_ref.remote(task.task_id)
        except (RayActorError, ActorUnavailableError) as exc:
            self._lost(p.executor_id, f"worker of {p.executor_id} unreachable at dispatch ({type(exc).__name__})")
        except Exception as exc:
            log.exception("dispatch of %s to %s failed", task.task_id, p.executor_id)
            self.core.requeue(task.task_id, p.executor_id, f"dispatch failed: {exc}")
            self._schedule()
        self._notify(task.task_id)
        job = self.core.job(task.task_id)
        if job is not None and job.state is JobState.RUNNING and self.core.cancel_requested(task.task_id):
            await self._cancel_on_worker(task.task_id)

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
        lost = self.core.executor_lost(executor_id, why)
        self._workers.pop(executor_id, None)
        for task_id in lost:
            self._results.pop(task_id, None)
            self._dispatched.pop(task_id, None)
            self._notify(task_id)
        if lost:
            log.warning("%s: %d task(s) back in the queue", why, len(lost))
        self._schedule()

    def _default_runtime(self, coop_id: str, member: str) -> float:
        policy = self.core.policy(coop_id)
        return policy.quota_for(member).default_max_runtime_s if policy else 3600.0

    # ------------------------------------------------------------------ reports and heartbeats
    async def on_report(self, report: dict) -> bool:
        """A usage report from the tracker; settles the ledger once and frees the executor."""
        record = self.core.complete(report)
        task_id = report.get("task_id", "")
        if record is not None:
            self._payloads.pop(task_id, None)
            self._dispatched.pop(task_id, None)
            task = self.core.task(task_id)
            if task is not None and task.hints.data:
                self.locator.forget(task.hints.data)
            tracker = self._tracker()
            if tracker is not None:
                tracker.settled.remote(task_id, report["executor_id"])
            worker = self._worker(report["executor_id"])
            if worker is not None:  # the head's reference keeps the value alive; the worker may let go
                worker.forget.remote(task_id)
            if task_id in self._results:
                self._results.move_to_end(task_id)
            while len(self._results) > KEEP_RESULTS:
                self._results.popitem(last=False)
        self._notify(task_id)
        self._schedule()
        return record is not None

    async def heartbeat(self, offer: dict) -> bool:
        executor_id = offer.get("executor_id", "")
        if executor_id not in self.core.table:
            return False
        self.core.update_executor(offer)
        self._schedule()
        return True

    def _tracker(self):
        try:
            return ray.get_actor(self.tracker_name, namespace=self.namespace)
        except ValueError:
            return None

    # ------------------------------------------------------------------ results
    async def wait_result(self, task_id: str, timeout_s: float = 30.0) -> dict:
        """Wait until the task's current attempt has a result reference or the job has finished."""
        deadline = time.time() + timeout_s
        while True:
            job = self.core.job(task_id)
            if job is None:
                return {"state": None, "ref": None, "error": f"no job {task_id}"}
            ref = self._results.get(task_id) if job.state in (JobState.RUNNING, JobState.SUCCEEDED,
                                                                JobState.FAILED) else None
            if ref is not None or job.state.finished:
                return {"state": job.state.value, "ref": ref, "error": job.error, "attempt": job.attempts}
            remaining = deadline - time.time()
            if remaining <= 0:
                return {"state": job.state.value, "ref": None, "error": None, "attempt": job.attempts}
            event = self._changed.setdefault(task_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass

    def _notify(self, task_id: str) -> None:
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()

    # ------------------------------------------------------------------ control
    async def cancel(self, task_id: str) -> str | None:
        state = self.core.cancel(task_id)
        if state is JobState.RUNNING and task_id in self._dispatched:
            await self._cancel_on_worker(task_id)
        self._notify(task_id)
        self._schedule()
        return state.value if state else None

    async def _cancel_on_worker(self, task_id: str) -> None:
        job = self.core.job(task_id)
        worker = self._worker(job.executor_id) if job and job.executor_id else None
        if worker is not None:
            try:
                await worker.cancel.remote(task_id)
            except RayActorError:
                self._lost(job.executor_id, f"worker of {job.executor_id} died")

    async def register_executor(self, spec: dict) -> dict:
        self._ensure_watchdog()
        parsed = self.core.register_executor(spec)
        self._workers.pop(parsed.executor_id, None)
        self._schedule()
        return parsed.model_dump(mode="json")

    async def drain(self, executor_id: str) -> bool:
        self.core.drain(executor_id)
        return True

    async def remove_executor(self, executor_id: str) -> list[str]:
        lost = self.core.remove_executor(executor_id)
        worker = self._workers.pop(executor_id, None) or self._worker(executor_id)
        self._workers.pop(executor_id, None)
        if worker is not None:
            ray.kill(worker, no_restart=True)
        self._schedule()
        return lost

    async def executors(self) -> list[dict]:
        return [{**spec.model_dump(mode="json"), "status": status.value, "running": running}
                for spec, status, running in self.core.executors()]

    async def set_policy(self, policy: dict) -> dict:
        return self.core.set_policy(policy).model_dump(mode="json")

    async def get_policy(self, coop_id: str) -> dict | None:
        policy = self.core.policy(coop_id)
        return policy.model_dump(mode="json") if policy else None

    async def list_policies(self) -> list[dict]:
        return [p.model_dump(mode="json") for p in self.core.policies()]

    async def remove_policy(self, coop_id: str) -> bool:
        return self.core.remove_policy(coop_id) is not None

    async def status(self, task_id: str) -> dict | None:
        job = self.core.job(task_id)
        return job.model_dump(mode="json") if job else None

    async def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None) -> list[dict]:
        return [j.model_dump(mode="json") for j in self.core.jobs(coop_id, member, state)]

    async def explain(self, task_id: str) -> dict | None:
        return self.core.explain(task_id)

    async def usage(self, coop_id: str, member: str) -> dict:
        return self.core.usage(coop_id, member).model_dump(mode="json")

    async def ping(self) -> dict:
        return {"executors": len(self.core.table), "queued": len(self.core.queue), "started_at": self.started_at}

    # ------------------------------------------------------------------ watchdog
    def _ensure_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_forever())

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self._watch_once()
            except Exception:
                log.exception("watchdog round failed")

    async def _watch_once(self) -> None:
        for executor_id in list(self.core.table.ids()):
            running = self.core.running_on(executor_id)
            dispatched = {t for t in running if t in self._dispatched}
            if not dispatched:
                continue
            worker = self._worker(executor_id)
            try:
                if worker is None:
                    raise ActorDiedError()
                alive = set(await asyncio.wait_for(worker.running.remote(), PING_TIMEOUT_S))
                missing = [t for t in dispatched if t not in alive
                           and await worker.report_of.remote(t) is None]
            except (RayActorError, asyncio.TimeoutError) as exc:
                self._lost(executor_id, f"worker of {executor_id} died ({type(exc).__name__})")
                continue
            for task_id in missing:  # the worker restarted and forgot them
                if self.core.requeue(task_id, executor_id, f"worker of {executor_id} restarted") is not None:
                    self._results.pop(task_id, None)
                    self._dispatched.pop(task_id, None)
                    self._notify(task_id)
            if missing:
                self._schedule()
        stale = self.core.mark_offline(self.heartbeat_timeout_s)
        if stale:
            log.warning("no heartbeat from %s for %.0f s: offline", ", ".join(stale), self.heartbeat_timeout_s)


def _noop():
    return None


def start_head(namespace: str = NAMESPACE, name: str = HEAD_NAME, **config: Any):
    """Start (or find) the detached head actor; it holds no CPU slot and restarts on failure."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    actor = ray.remote(Head).options(name=name, namespace=namespace, lifetime="detached", num_cpus=0,
                                      max_restarts=-1, max_concurrency=1000, get_if_exists=True)
    return actor.remote(namespace=namespace, **config)


def policy_payload(policy: CoopPolicy | dict) -> dict:
    return policy.model_dump(mode="json") if isinstance(policy, CoopPolicy) else policy


def spec_payload(spec: ExecutorSpec | dict) -> dict:
    return spec.model_dump(mode="json") if isinstance(spec, ExecutorSpec) else spec
