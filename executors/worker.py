"""The worker actor: one per executor, pinned to its node; it runs, measures and reports.

``start_worker(executor_id, node_id)`` creates an :class:`ExecutorWorker` actor on that
node. The head calls ``start(spec)`` for each task placed there; the worker launches the
user's function as a Ray task pinned to the same node with the task's CPUs, GPUs and
memory (so Ray enforces them, GPU visibility included), enforces ``max_runtime_s``,
supports ``cancel``, and sends a :class:`scheduler.usage.UsageReport` to the tracker actor
when the attempt ends. Reports that cannot be delivered are kept and resent every
``report_retry_s`` until the tracker acknowledges them (the tracker deduplicates by task
id). A heartbeat goes to the head actor every ``heartbeat_interval_s``. The worker makes
no scheduling decisions.

How the class becomes an actor: ``ExecutorWorker`` is a plain class (with an
``async def __init__``, which Ray supports for async actors and runs on the actor's event
loop); :func:`worker_actor_class` applies ``ray.remote`` to it once and
:func:`start_worker` creates the actor with the options below.

Decisions worth knowing:

* **Restarts.** ``start_worker`` uses ``max_restarts=-1`` and ``max_task_retries=0``: a
  worker that dies comes back (heartbeats resume, the executor stays usable), but Ray
  stops the tasks a dead owner launched (Ray 2.60: their processes are gone within
  seconds), so a restarted worker has lost its running tasks, their results and any
  unsent reports. ``ping()`` returns an ``incarnation``
  that changes on every (re)start so the head can tell, and treat the attempts it had
  dispatched there as lost. Calls are not retried: a ``start`` that failed in flight
  raises at the head, which decides what to do.
* **Its own queue.** The head may hand over more than the executor can run at once (an
  executor registered with ``dispatch_ahead``; ``start_many`` says what the executor has).
  The worker launches a task only when it fits what its running tasks leave free, and keeps
  the rest in arrival order, launching the next the moment one ends, without waiting for the
  head: so a slot does not idle through report -> tracker -> head -> next dispatch. A task
  launched from the queue has no result reference in the ``start`` answer (``QUEUED``); the
  head asks ``result_refs`` once it ended. Cancelling a queued task ends it at once, having
  used nothing. A restart loses the queue like the running tasks (the head requeues both).
* **Runtime limit.** ``max_runtime_s`` is counted from the moment the worker launches
  the Ray task (it launches only what fits, so the task does not queue in Ray; process
  start-up counts against the limit; time in the worker's own queue does not). When it passes, or on ``cancel``,
  the task is killed with ``ray.cancel(force=True)``, repeated until Ray has ended it (a
  cancel can be lost in a race with the task's start). A task stopped to make room
  (``cancel(task_id, grace_s)``) that asked for a ``stop_grace_s`` is first asked to end
  (``ray.cancel(force=False)``, which its ``scheduler.checkpoint.stop_requested()`` sees) and
  killed only if it has not ended within that time.
* **Wall time of a killed task.** The task process cannot report once killed, so
  ``started_at`` is the worker's launch time and ``ended_at`` the moment the worker
  decided to stop it; the member is charged ``cpus x`` that span, i.e. only the time
  used. ``cpu_time_s`` and ``peak_memory_mb`` are then unknown and reported as 0. The
  report is sent once Ray has finished the task (or after ``KILL_GRACE_S``), so the
  resources are free when the head releases them. A task that finished on its own just
  as it was killed keeps its real outcome and measurements.
* **Memory** is a logical Ray resource: it keeps Ray from packing more tasks on the node
  than fit, but it is no hard limit on the process (Ray's memory monitor and the kernel
  handle a task that uses more).
* **Results** of ended attempts (the value ObjectRef and the report) are kept until
  ``forget(task_id)``; the head forgets a task once its result is fetched or expired.
* **Ray-level failures** (the task's worker process crashed or was killed by Ray's
  memory monitor, the node died, the return value could not be serialised) end the
  attempt as ``failed`` with Ray's error text, timed by the worker like a killed task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from executors.attempt import Attempt, End, ask_to_stop, await_ref, ended_by_itself, kill
from executors.discovery import NvmlApi, sample_gpus
from executors.launch_spec import LaunchSpec
from executors.local_queue import Amounts, LocalQueue
from executors.measure import run_measured, truncate_error
from scheduler.heap import freeze_in_actor
from scheduler.identity import load_private_key, sign_request
from scheduler.tasks import Resources
from scheduler.usage import Outcome, UsageReport

__all__ = [
    "DEFAULT_HEAD_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TRACKER_NAME",
    "QUEUED",
    "ExecutorWorker",
    "start_worker",
    "worker_actor_class",
]

_log = logging.getLogger("coopsched.worker")

DEFAULT_NAMESPACE = "coopsched"
DEFAULT_TRACKER_NAME = "coopsched-tracker"
DEFAULT_HEAD_NAME = "coopsched-head"

KEEP_FINISHED = 2_000
"""Ended attempts kept for ``result_ref``/``report_of`` (e.g. by a restarted head) until ``forget``."""
KILL_GRACE_S = 5.0
"""How long a killed task is given to be reaped by Ray before its report goes anyway."""
CALL_TIMEOUT_S = 10.0
"""Longest wait for the tracker to acknowledge one delivery of reports (a hung tracker is retried)."""
REPORT_BATCH = 200
"""Reports sent to the tracker in one call at most."""
QUEUED = "queued"
"""``start``'s answer for a task kept in the worker's queue (no result reference yet: see ``result_refs``)."""

_MIB = 1024 * 1024


_measured_task = ray.remote(run_measured)


class ExecutorWorker:
    """Runs tasks for one executor on its own node; create it with :func:`start_worker`.

    Methods callable through the actor handle: ``start``, ``start_many``, ``cancel``, ``result_ref``,
    ``result_refs``, ``report_of``, ``missing``, ``forget``, ``running``, ``unsent_reports``, ``ping``.
    """

    async def __init__(  # type: ignore[misc]  # Ray runs an async actor's __init__ on its loop
        self,
        executor_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tracker_name: str = DEFAULT_TRACKER_NAME,
        head_name: str = DEFAULT_HEAD_NAME,
        heartbeat_interval_s: float = 2.0,
        report_retry_s: float = 0.5,
        nvml: NvmlApi | None = None,
        signing_key: bytes | None = None,
    ) -> None:
        self.executor_id = executor_id
        # The executor's Ed25519 private key (PEM): it signs every heartbeat and usage report, so a
        # head in signed mode knows they come from this executor. None: a head in development mode.
        self._key = load_private_key(signing_key) if signing_key else None
        self.node_id = ray.get_runtime_context().get_node_id()
        self.incarnation = uuid.uuid4().hex
        self.started_at = time.time()
        self._namespace = namespace
        self._tracker_name = tracker_name
        self._head_name = head_name
        self._heartbeat_interval_s = heartbeat_interval_s
        self._report_retry_s = report_retry_s
        self._nvml = nvml
        self._running: dict[str, Attempt] = {}
        self._queued: LocalQueue[LaunchSpec] = LocalQueue()  # capacity as the head last said; None: launch all
        self._finished: dict[str, Attempt] = {}
        self._task_shapes: dict[tuple, Any] = {}
        self._silent_until = 0.0
        self._unsent: dict[str, dict[str, Any]] = {}
        self._signatures: dict[str, dict[str, Any] | None] = {}
        self._handles: dict[str, ActorHandle] = {}
        self._missing_logged: set[str] = set()
        self._report_ready = asyncio.Event()
        self._reapers: set[asyncio.Task[None]] = set()
        self._draining = False  # _launch_ready is at work (a refused launch inside it must not recurse)
        self._loops = [
            asyncio.create_task(self._forever("report delivery", self._deliver_reports)),
            asyncio.create_task(self._forever("heartbeat", self._heartbeat)),
        ]
        freeze_in_actor()  # what start-up made lives as long as the actor: no GC scans of it

    # --- the actor's methods ------------------------------------------------------------

    async def start(self, spec: dict[str, Any]) -> list[ray.ObjectRef] | str | None:
        """Launch one attempt; returns ``[ObjectRef]`` of its value (as ``result_ref`` would),
        ``QUEUED`` if it waits in this worker's queue for resources (see ``start_many``), or None if
        this task id is already running or queued here. Handing the reference back at once saves
        the head a second call and any race with ``forget``.

        Raises ``pydantic.ValidationError`` (a ``ValueError``) naming the field for a bad spec.
        """
        return self._accept(LaunchSpec.model_validate(spec))

    async def start_many(self, specs: list[dict[str, Any]], capacity: dict[str, Any] | None = None,
                         ended: list[str] | None = None) -> list[list[ray.ObjectRef] | str | None] | dict[str, list]:
        """``start`` for several attempts in one call (the head sends what it placed here in one
        scheduling round); every spec, and ``capacity``, is validated before any is launched.

        ``capacity``: the executor's resources (``{"cpus": 4, "gpus": 0, "memory_mb": 8192}``). With
        it, the worker launches only what fits beside its running tasks and queues the rest; without
        it (as before the head said), everything is launched at once and Ray queues what does not fit.

        ``ended``: task ids whose result references the head wants too (tasks launched from this
        worker's queue that ended: what ``result_refs`` answers), so the call that hands over the next
        tasks also brings back the last ones' references. With it the answer is ``{"started": [the
        list above], "refs": [result_refs(ended)]}``."""
        if not isinstance(specs, list):
            raise TypeError(f"start_many takes a list of launch specs; received {type(specs).__name__}; "
                            f"e.g. [{LaunchSpec.model_config['json_schema_extra']['examples'][0]}]")
        if ended is not None and (not isinstance(ended, list) or not all(isinstance(t, str) for t in ended)):
            # (checked with the specs, before anything is launched: a bad item found afterwards would fail a
            # call whose tasks already run, and the head would hand them over again)
            shown = type(ended).__name__ if not isinstance(ended, list) else \
                f"a list holding {type(next(t for t in ended if not isinstance(t, str))).__name__}"
            raise TypeError(f"start_many's ended is a list of task ids (text); received {shown}; "
                            f"e.g. ['job-7f3a']")
        launches = [LaunchSpec.model_validate(spec) for spec in specs]
        if capacity is not None:
            r = Resources.model_validate(capacity)
            self._queued.capacity = (r.cpus, r.gpus, r.memory_mb, 0.0)  # tasks ask no GPU memory here
            self._launch_ready()  # the executor may have grown: older ones first
        started = [self._accept(launch) for launch in launches]
        return started if ended is None else {"started": started, "refs": await self.result_refs(ended)}

    def _accept(self, launch: LaunchSpec) -> list[ray.ObjectRef] | str | None:
        task_id = launch.task_id
        if task_id in self._running or task_id in self._queued:
            return None
        started = self._queued.offer(task_id, _amounts(launch), launch, now=time.time(), limit_s=launch.max_runtime_s)
        return self._launch(launch) if started else QUEUED

    def _launch_ready(self) -> None:
        """Launch what fits now, oldest first, until nothing more does. A loop, not recursion: when Ray
        refuses a launch, its slot frees and what waited behind it is launched by this same loop (a
        thousand queued tasks refused in a row must not exceed Python's recursion limit)."""
        if self._draining:  # called from a refused launch inside the loop below: the loop goes on
            return
        self._draining = True
        try:
            while batch := self._queued.ready(time.time()):
                for launch in batch:
                    self._launch(launch)
        finally:
            self._draining = False

    def _launch(self, launch: LaunchSpec) -> list[ray.ObjectRef] | str:
        """Launch one attempt counted as running in the local queue. If Ray refuses it (options it
        will not take, a payload it cannot pickle), the attempt ends at once as ``failed``, reported
        like any other (charged nothing), and ``QUEUED`` is answered (the head learns of it from the
        report): the slot it held is freed, and what the caller was doing goes on."""
        try:
            return self._launch_on_ray(launch)
        except Exception as exc:  # noqa: BLE001  # Ray's refusal must not wedge the queue or lose a report
            _log.warning("Ray refused task %s: %s: %s", launch.task_id, type(exc).__name__, exc)
            self._queued.ended(launch.task_id)
            now = time.time()
            self._ended(Attempt(launch, None, None, now), End(Outcome.FAILED, now, now, error=truncate_error(
                f"Ray refused to launch the task on executor {self.executor_id}: {type(exc).__name__}: {exc}")))
            self._launch_ready()  # what waited behind it may fit now
            return QUEUED

    def _launch_on_ray(self, launch: LaunchSpec) -> list[ray.ObjectRef]:
        shape = (launch.cpus, launch.gpus, launch.memory_mb)
        task = self._task_shapes.get(shape)
        if task is None:  # one configured task per resource shape: .options() is not free
            options: dict[str, Any] = {
                "num_cpus": launch.cpus,
                "num_gpus": launch.gpus,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(self.node_id, soft=False),
                "max_retries": 0,
                "num_returns": 2,
                "name": "coopsched-task",
            }
            if launch.memory_mb > 0:
                options["memory"] = launch.memory_mb * _MIB
            task = self._task_shapes[shape] = _measured_task.options(**options)
        launched_at = time.time()
        context = None if launch.checkpoint_token is None else {  # (executors.task_context: for its checkpoints)
            "task_id": launch.task_id, "attempt": launch.attempt, "head": self._head_name,
            "namespace": self._namespace, "token": launch.checkpoint_token, "stop_grace_s": launch.stop_grace_s}
        value_ref, metrics_ref = task.remote(launch.payload[0], context)
        attempt = Attempt(launch, value_ref, metrics_ref, launched_at)
        self._finished.pop(launch.task_id, None)  # a new attempt replaces an old result
        self._running[launch.task_id] = attempt
        attempt.watcher = asyncio.create_task(self._watch(attempt))
        return [value_ref]

    async def cancel(self, task_id: str, grace_s: float = 0.0) -> bool:
        """Kill a running attempt, or drop a queued one (reported as ``cancelled``, having used
        nothing); False if it is neither. ``grace_s`` (the head's, for a task stopped to make room: its
        ``stop_grace_s``, perhaps capped by the executor's owner): the task is asked to end first, and killed
        only if it has not within that time (never longer than its own ``stop_grace_s``)."""
        queued = self._queued.remove(task_id)
        if queued is not None:
            self._launch_ready()  # it may have been the front, holding the reservation
            now = time.time()
            self._ended(Attempt(queued, None, None, now), End(
                Outcome.CANCELLED, now, now, error="task cancelled while it waited in the executor's queue; "
                "it never started"))
            return True
        attempt = self._running.get(task_id)
        if attempt is None or attempt.cancel_requested.is_set():
            return False
        attempt.grace_s = min(attempt.spec.stop_grace_s, max(0.0, float(grace_s)))
        attempt.cancel_requested.set()
        return True

    async def result_ref(self, task_id: str) -> list[ray.ObjectRef] | None:
        """``[ObjectRef]`` of the attempt's value (a ``TaskError`` if the function raised).

        Available while the attempt runs and after it ended, until ``forget(task_id)``.
        Getting it raises Ray's error for an attempt that was killed or crashed.
        """
        attempt = self._running.get(task_id) or self._finished.get(task_id)
        return None if attempt is None or attempt.value_ref is None else [attempt.value_ref]

    async def result_refs(self, task_ids: list[str]) -> list[list[ray.ObjectRef] | None]:
        """``result_ref`` for several tasks in one call (the head asks for the values of tasks that
        were launched from this worker's queue, once they ended)."""
        if not isinstance(task_ids, list):
            raise TypeError(f"result_refs takes a list of task ids; received {type(task_ids).__name__}; "
                            f"e.g. ['job-7f3a']")
        return [await self.result_ref(task_id) for task_id in task_ids]

    async def missing(self, task_ids: list[str]) -> list[str]:
        """Those of ``task_ids`` this worker neither runs, nor queues, nor holds the report of: a
        restarted worker has lost them (the head's watchdog asks this once a round)."""
        if not isinstance(task_ids, list):
            raise TypeError(f"missing takes a list of task ids; received {type(task_ids).__name__}; "
                            f"e.g. ['job-7f3a']")
        return [t for t in task_ids if t not in self._running and t not in self._queued and t not in self._unsent
                and (self._finished.get(t) is None or self._finished[t].report is None)]

    async def report_of(self, task_id: str) -> dict[str, Any] | None:
        """The UsageReport (as a dict) of an ended attempt, until ``forget(task_id)``."""
        attempt = self._finished.get(task_id)
        return None if attempt is None else attempt.report

    async def forget(self, task_id: str) -> bool:
        """Drop an ended attempt's result and report; False if unknown or still running."""
        return self._finished.pop(task_id, None) is not None

    async def running(self) -> list[str]:
        """Task ids running here or waiting in this worker's queue."""
        return [*self._running, *self._queued.keys()]

    async def unsent_reports(self) -> int:
        return len(self._unsent)

    async def ping(self) -> dict[str, Any]:
        """Who and where this worker is; ``incarnation`` changes when the actor restarts; ``backfilled``
        counts the tasks it started ahead of an older one waiting in its queue."""
        return {"executor_id": self.executor_id, "node_id": self.node_id, "running": len(self._running),
                "queued": len(self._queued), "backfilled": self._queued.backfilled,
                "incarnation": self.incarnation, "started_at": self.started_at}

    # --- one attempt ---------------------------------------------------------------------

    async def _watch(self, attempt: Attempt) -> None:
        task_id = attempt.spec.task_id
        try:
            end = await self._await_end(attempt)
        except Exception as err:  # noqa: BLE001  # a bug here must still end the attempt
            _log.exception("watching task %s failed", task_id)
            end = End(Outcome.FAILED, attempt.launched_at, time.time(),
                       error=truncate_error(f"coopsched worker error: {type(err).__name__}: {err}"))
        if self._running.pop(task_id, None) is not None:
            self._queued.ended(task_id)
        self._launch_ready()  # before reporting: the freed slot works while the report travels
        self._ended(attempt, end)

    def _ended(self, attempt: Attempt, end: End) -> None:
        """Keep the ended attempt's result and queue its report for the tracker."""
        task_id = attempt.spec.task_id
        attempt.report = self._usage_report(attempt.spec, end)
        self._finished[task_id] = attempt
        while len(self._finished) > KEEP_FINISHED:  # the oldest go first; the head holds its own refs
            # (launched from the queue: fetched with result_refs as soon as the report is settled)
            del self._finished[next(iter(self._finished))]
        self._unsent[task_id] = attempt.report
        self._signatures[task_id] = self._sign("report", (attempt.report,))
        self._report_ready.set()

    async def _await_end(self, attempt: Attempt) -> End:
        """Wait for the task, its runtime limit or a cancel; kill it in the last two cases."""
        metrics = asyncio.ensure_future(await_ref(attempt.metrics_ref))
        cancelled = asyncio.ensure_future(attempt.cancel_requested.wait())
        try:
            done, _ = await asyncio.wait({metrics, cancelled}, timeout=attempt.spec.max_runtime_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if metrics in done:
            return ended_by_itself(attempt, metrics)
        stopped_at = time.time()
        outcome = Outcome.CANCELLED if attempt.cancel_requested.is_set() else Outcome.TIMEOUT
        if attempt.grace_s > 0 and await ask_to_stop(attempt, metrics):  # it ended within its grace
            ended = ended_by_itself(attempt, metrics)  # (what it used, measured; the stopped attempt is not charged)
            return dataclasses.replace(ended, outcome=Outcome.CANCELLED, error=(
                f"task stopped to make room; it ended within its grace of {attempt.grace_s:g} s"))
        await kill(attempt, metrics, KILL_GRACE_S)
        if metrics.done() and metrics.exception() is None:
            return ended_by_itself(attempt, metrics)  # it finished before the kill landed
        if not metrics.done():
            _log.warning("task %s was killed but Ray had not reaped it after %.0f s; still cancelling it",
                         attempt.spec.task_id, KILL_GRACE_S)
            reaper = asyncio.create_task(kill(attempt, metrics, float("inf")))
            self._reapers.add(reaper)  # held until done: the loop keeps only weak references
            reaper.add_done_callback(self._reapers.discard)
        limit = attempt.spec.max_runtime_s
        why = "cancelled" if outcome is Outcome.CANCELLED else f"exceeded max_runtime_s={limit}"
        return End(outcome, attempt.launched_at, stopped_at, error=f"task {why}; killed by the worker")

    def _usage_report(self, spec: LaunchSpec, end: End) -> dict[str, Any]:
        ended_at = max(end.ended_at, end.started_at)
        wall = ended_at - end.started_at
        report = UsageReport(
            task_id=spec.task_id,
            executor_id=self.executor_id,
            coop_id=spec.coop_id,
            member=spec.member,
            started_at=end.started_at,
            ended_at=ended_at,
            cpu_seconds=spec.cpus * wall,
            gpu_seconds=spec.gpus * wall,
            cpu_time_s=end.cpu_time_s,
            peak_memory_mb=end.peak_memory_mb,
            outcome=end.outcome,
            attempt=max(1, spec.attempt),
            error=end.error,
        )
        return report.model_dump(mode="json")

    # --- background loops ----------------------------------------------------------------

    async def _forever(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` again and again; an exception is logged, never the loop's end."""
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                _log.exception("%s loop: step failed; carrying on", what)
                await asyncio.sleep(self._report_retry_s)

    async def _deliver_reports(self) -> None:
        """Wait for a new report (or the retry interval), then send every unsent one."""
        try:
            await asyncio.wait_for(self._report_ready.wait(), timeout=self._report_retry_s)
        except asyncio.TimeoutError:
            pass
        self._report_ready.clear()
        while self._unsent:  # what ended since the last delivery goes in one call (REPORT_BATCH at most)
            batch = list(self._unsent.items())[:REPORT_BATCH]
            tracker = await self._actor(self._tracker_name)
            if tracker is None:
                return
            try:
                # the signature is None without a key (a head in development mode)
                call = tracker.report_many.remote([(report, self._signatures.get(task_id)) for task_id, report in batch])
                acknowledged = await asyncio.wait_for(await_ref(call), timeout=CALL_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001  # dead, restarting or hung: look it up again
                _log.warning("%d report(s) not delivered (%s: %s); will retry", len(batch), type(err).__name__, err)
                self._handles.pop(self._tracker_name, None)
                return
            for (task_id, report), yes in zip(batch, acknowledged):
                if yes and self._unsent.get(task_id) is report:
                    del self._unsent[task_id]
                    self._signatures.pop(task_id, None)
            if not all(acknowledged):
                return  # the rest again after report_retry_s

    async def pause_heartbeats(self, seconds: float) -> bool:
        """Stay silent for ``seconds`` (an operator's maintenance switch, and how tests show that an
        executor whose heartbeats stop is taken offline and comes back)."""
        self._silent_until = time.time() + max(0.0, seconds)
        return True

    async def _heartbeat(self) -> None:
        if time.time() < self._silent_until:
            await asyncio.sleep(self._heartbeat_interval_s)
            return
        try:
            head = await self._actor(self._head_name)
            if head is not None:
                offer = await asyncio.to_thread(self._offer)
                if time.time() < self._silent_until:  # paused while the offer was made
                    return
                signed = self._sign("heartbeat", (offer,))
                call = head.heartbeat.remote(offer, _request={"signed": signed}) if signed else \
                    head.heartbeat.remote(offer)  # without a key: a head in development mode
                answer = await asyncio.wait_for(await_ref(call), timeout=self._heartbeat_interval_s)
                if isinstance(answer, dict) and "refused" in answer:
                    _log.warning("heartbeat refused by the head: %s", answer["refused"]["message"])
        except Exception as err:  # noqa: BLE001  # the head may be restarting; the next beat may reach it
            _log.debug("heartbeat not delivered: %s: %s", type(err).__name__, err)
            self._handles.pop(self._head_name, None)
        await asyncio.sleep(self._heartbeat_interval_s)

    def _sign(self, method: str, args: tuple) -> dict[str, Any] | None:
        return sign_request(self._key, method, args, {}, now=time.time()) if self._key is not None else None

    def _offer(self) -> dict[str, Any]:
        """An ``ExecutorOffer`` dict; GPU fields only when the node has GPUs."""
        offer: dict[str, Any] = {"executor_id": self.executor_id, "sent_at": time.time(),
                                 "queue_depth": len(self._running) + len(self._queued)}
        samples = sample_gpus(self._nvml)
        if samples:
            offer["gpu_utilisation_pct"] = sum(s.utilisation_pct for s in samples) / len(samples)
            offer["gpu_memory_used_mb"] = sum(s.memory_used_mb for s in samples)
        return offer

    async def _actor(self, name: str) -> ActorHandle | None:
        """The named actor's handle, cached until a call to it fails; None if it does not exist."""
        handle = self._handles.get(name)
        if handle is not None:
            return handle
        try:
            handle = await asyncio.to_thread(ray.get_actor, name, namespace=self._namespace)
        except ValueError:
            if name not in self._missing_logged:
                self._missing_logged.add(name)
                _log.info("no actor %r in namespace %r yet; will look again", name, self._namespace)
            return None
        self._missing_logged.discard(name)
        self._handles[name] = handle
        return handle


def _amounts(launch: LaunchSpec) -> Amounts:
    return (launch.cpus, launch.gpus, launch.memory_mb, 0.0)


_actor_class: Any = None


def worker_actor_class() -> Any:
    """``ray.remote(ExecutorWorker)``, made once (an ``ActorClass``; use ``.options(...).remote(...)``)."""
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(ExecutorWorker)
    return _actor_class


def start_worker(
    executor_id: str,
    node_id: str,
    *,
    name: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    tracker_name: str = DEFAULT_TRACKER_NAME,
    head_name: str = DEFAULT_HEAD_NAME,
    heartbeat_interval_s: float = 2.0,
    detached: bool = False,
    max_restarts: int = -1,
    nvml: NvmlApi | None = None,
    signing_key: bytes | None = None,
) -> ActorHandle:
    """Create the worker actor for ``executor_id`` on node ``node_id`` (hex) and return its handle.

    The actor holds no CPU (``num_cpus=0``), is pinned with
    ``NodeAffinitySchedulingStrategy(node_id, soft=False)``, lives in ``namespace`` (where it
    also looks up ``tracker_name`` and ``head_name``), is named ``name`` when given, outlives
    its creator when ``detached``, and restarts up to ``max_restarts`` times (-1: always;
    see the module notes on what a restart loses). ``nvml`` replaces ``pynvml`` for the
    heartbeat's GPU samples (e.g. a ``FakeNvml``). ``signing_key`` is the executor's Ed25519
    private key (PEM) for a head in signed mode; it travels as an actor-creation argument, so it
    is as private as the Ray cluster's control plane (see docs/architecture.md).
    """
    options: dict[str, Any] = {
        "num_cpus": 0,
        "namespace": namespace,
        "max_restarts": max_restarts,
        "max_task_retries": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }
    if name is not None:
        options["name"] = name
    if detached:
        options["lifetime"] = "detached"
    return worker_actor_class().options(**options).remote(
        executor_id, namespace=namespace, tracker_name=tracker_name, head_name=head_name,
        heartbeat_interval_s=heartbeat_interval_s, nvml=nvml, signing_key=signing_key,
    )
