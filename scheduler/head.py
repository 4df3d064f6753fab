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
from collections.abc import Awaitable
from typing import Any, TypeVar

import ray
from ray import cloudpickle
from ray.exceptions import ActorDiedError, RayError

from policies.reasons import Decision, error, unavailable
from policies.validation import FieldError, InvalidRequest, parse, quoted
from scheduler import admin
from scheduler.ahead_tuning import AheadTuner
from scheduler.core import SchedulerCore
from scheduler.damaged_records import is_damaged, stored_status
from scheduler.executor_spec import MAX_DISPATCH_AHEAD, ExecutorSpec, ExecutorStatus
from scheduler.fair_borrowing import HALF_LIFE_S
from scheduler.metrics import SchedulerMetrics
from scheduler.head_admin import CoopAdministration
from scheduler.head_auth import AuthSettings, HeadFacts, KeyAdministration, RequestGate, guarded
from scheduler.head_checkpoints import Checkpoints
from scheduler.head_damaged_jobs import DamagedJobRecords
from scheduler.head_dispatch import Dispatch
from scheduler.heap import freeze_in_actor
from scheduler.head_reports import Reports
from scheduler.head_results import ResultDelivery
from scheduler.head_state import DAMAGED_LISTED, INLINE_PAYLOAD_BYTES, StateKeeping, _noop
from scheduler.head_task_ids import TaskIdClaims, _recorded_decision, _same_owner
from scheduler.identity import Principal, Role
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME
from scheduler.jobs import explain_record
from scheduler.placement import Placement
from scheduler.policy_sync import PolicySync
from scheduler.replicas import head_owner
from scheduler.ray_data import RayDataLocator
from scheduler.state_store import PolicyVersion, default_store_url, open_store
from scheduler.store_ledger import StoreLedger
from scheduler.store_rate_buckets import StoreRateBuckets
from scheduler.tasks import JobState, TaskSpec

log = logging.getLogger("coopsched.head")
_STATES = tuple(s.value for s in JobState)
T = TypeVar("T")

WATCH_INTERVAL_S = 1.0
READ_THREADS = 4
KEEP_FINISHED_JOBS = 10_000
"""Finished jobs the core keeps in memory; older ones are read from the store (status, explain, results,
a resubmission of the same id), so the head's memory does not grow with every job it ever ran."""
PING_TIMEOUT_S = 5.0
SUBMISSION_SLOTS = 4
"""Submissions taken in at once; the rest wait in Ray's queue, outside Python.

Like the API server's priority and fairness, this keeps one class of calls from crowding out
the others: with 50 clients submitting at once, 50 half-started submissions took turns at
the GIL with every other call, and a ``ping`` waited 40 ms to be let in (25x idle; with four
in flight, ~2-3x). Submissions answered per second stayed within run-to-run noise (650-710/s
in development mode on this 2-core machine): admission is one core's work either way."""


class Head(StateKeeping, PolicySync, TaskIdClaims, CoopAdministration, KeyAdministration, DamagedJobRecords, Dispatch,
           Reports, ResultDelivery, Checkpoints):
    async def __init__(self, namespace: str = NAMESPACE, tracker_name: str = TRACKER_NAME,
                       heartbeat_timeout_s: float = 30.0, store_url: str | None = None,
                       metrics_port: int | None = None, auth: dict | None = None,
                       keep_finished_jobs: int = KEEP_FINISHED_JOBS, name: str = HEAD_NAME,
                       borrowing_half_life_s: float = HALF_LIFE_S) -> None:
        self._loop = asyncio.get_running_loop()  # the default group's loop: all state changes happen on it
        self.namespace = namespace
        self.owner = head_owner(namespace, name)  # the same across its restarts: the jobs it records are its own
        self.tracker_name = tracker_name
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.locator = RayDataLocator()
        self.store_url = store_url or default_store_url()
        self.store = open_store(self.store_url)
        # on a shared store, replicas spend a member's rate-limit tokens together (scheduler.store_rate_buckets);
        # _resync's new core carries these over
        self.core = SchedulerCore(clock=time.time, data_locator=self.locator, ledger=StoreLedger(self.store),
                                  buckets=StoreRateBuckets(self.store) if self.store.shared else None,
                                  running_elsewhere=self._running_elsewhere if self.store.shared else None,
                                  borrowing_half_life_s=borrowing_half_life_s)  # (its history: stored, _persist_borrowing)
        self.ahead_tuner = AheadTuner(MAX_DISPATCH_AHEAD)  # (executors registered with dispatch_ahead "auto")
        self._audit_counts: dict[str, int] = {}
        self._workers: dict[str, Any] = {}
        self._payloads: dict[str, ray.ObjectRef] = {}
        self._results: OrderedDict[str, list] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}
        self._dispatched: dict[str, float] = {}
        self._refs_wanted: dict[str, list[str]] = {}  # executor -> ended tasks whose result reference to fetch
        self._fetching: set[str] = set()  # ended tasks whose result reference is being fetched (_fetch_refs)
        self._refs_riding: dict[str, list[str]] = {}  # executor -> of those, asked for with its next dispatch
        self._outbox: dict[str, list[Placement]] = {}  # executor -> placed, not yet sent (while a call is out)
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished jobs still in memory, oldest first
        self._unrecorded: set[str] = set()  # jobs decided in this call, not yet recorded: _persist creates their
        # records where none is (scheduler.head_task_ids)
        self._beaten: dict[str, tuple[TaskSpec, dict]] = {}  # this call's decisions another head recorded first:
        # the task and that record, which the call answers with
        self.keep_finished_jobs = max(0, int(keep_finished_jobs))
        self._watchdog: asyncio.Task | None = None
        self._writing = 0  # nested _writes() blocks open
        self.resyncs = 0  # times memory was rebuilt from the store after it refused a call's writes
        self.started_at = time.time()
        self.recovered = self._recover()
        self.metrics = SchedulerMetrics(self.core)  # metrics_port None: histograms kept, nothing served
        self._release_orphaned_reservations()  # (then every ORPHAN_SWEEP_INTERVAL_S, from the watchdog)
        self.gate = RequestGate(parse(AuthSettings, auth or {}, what="auth settings"), self.store,
                                on_refused=self.metrics.refused)
        self.facts = HeadFacts(self)
        if self.gate.dev_mode:
            log.warning("DEVELOPMENT MODE: requests are not signed; anyone who can reach this cluster can act "
                        "as any member")
        if metrics_port is not None:  # 0: any free port; metrics_address() says which
            self.metrics.serve(metrics_port, advertise_host=ray.util.get_node_ip_address())
            log.info("serving Prometheus metrics at http://%s/metrics", self.metrics.address)
        # start-up state, recovered jobs included, is no longer scanned by the collector (in an actor only: a
        # head built in a test's own process leaves that process's collector alone)
        self.frozen_objects = freeze_in_actor()

    # ------------------------------------------------------------------ recovery and persistence
    def _log(self, coop_id: str, kind: str, actor: str, detail: dict) -> None:
        self.store.log_change(coop_id, kind, actor, time.time(), detail)

    # ------------------------------------------------------------------ submission
    # Submissions arrive in their own concurrency group (at most SUBMISSION_SLOTS at once; the
    # request is verified there) and are admitted on the default group's loop, where every other
    # change to the state happens.
    @ray.method(concurrency_group="submissions")
    @guarded
    async def submit(self, task: dict, payload: bytes | tuple | None = None, data_refs: list | None = None) -> dict:
        """Admit one task (``InvalidRequest`` for bad input). Returns the Decision as JSON.

        ``payload`` is ``cloudpickle.dumps((fn, args, kwargs))`` as the client made it: the client signs
        the request with these bytes in it (by their SHA-256), so the head stores and dispatches exactly
        the bytes the member signed, and never unpickles member code itself (the worker's task does).
        A ``(fn, args, kwargs)`` tuple is still accepted from callers that hold a Ray handle (dev mode)."""
        return await self._on_main_loop(self._submit(task, payload, data_refs))

    @ray.method(concurrency_group="submissions")
    @guarded
    async def submit_many(self, items: list[tuple[dict, bytes | tuple | None, list | None]]) -> list[dict]:
        """Admit a batch in one call; a bad item answers with its error, the others go on."""
        return await self._on_main_loop(self._submit_many(items))

    async def _on_main_loop(self, work: Awaitable[T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    # The writes of one call (reservations, payloads, job records, settlements) go to the store as one
    # group commit (``store.batch``): one transaction per call instead of one per write.
    async def _submit(self, task: dict, payload: bytes | tuple | None, data_refs: list | None) -> dict:
        self._ensure_watchdog()
        await self._policies_fresh()
        with self._writes():
            self._beaten.clear()
            decision = self._admit(task, payload, data_refs)
            self._schedule()
            self._persist()
            return self._recorded(decision)

    async def _submit_many(self, items: list[tuple[dict, bytes | tuple | None, list | None]]) -> list[dict]:
        self._ensure_watchdog()
        await self._policies_fresh()
        if not isinstance(items, (list, tuple)):
            raise InvalidRequest("submissions", [FieldError("items", f"<{type(items).__name__}>",
                                                            "a list of [task, payload, data_refs] triples",
                                                            '[[{"coop_id": "c", "member": "m"}, null, []]]')])
        out: list[dict] = []
        with self._writes():
            self._beaten.clear()
            for i, item in enumerate(items):
                try:
                    if not isinstance(item, (list, tuple)) or len(item) != 3:
                        raise InvalidRequest("submission", [FieldError(
                            f"items[{i}]", f"<{type(item).__name__} of {len(item) if hasattr(item, '__len__') else '?'}>",
                            "a [task, payload, data_refs] triple", '[{"coop_id": "c", "member": "m"}, null, []]')])
                    task, payload, data_refs = item
                    out.append(self._admit(task, payload, data_refs))
                except ValueError as exc:
                    out.append({"error": str(exc)})
            self._schedule()
            self._persist()
            return [self._recorded_or_error(answer) for answer in out]

    def _admit(self, task: dict, payload: bytes | tuple | None, data_refs: list | None) -> dict:
        task = parse(TaskSpec, task, what="task")  # before anything reads it
        known = self.core.task(task.task_id)
        if known is not None:  # a resubmission of a job in memory: its first decision,
            _same_owner(task, known.coop_id, known.member)
            return self.core.submit(task).model_dump(mode="json")  # without storing its payload again
        refs = _data_refs(data_refs)
        if refs:  # their keys join the task's own (validated together: Hints.data's limit holds for both)
            keys = self.locator.keys_of(refs)
            task = parse(TaskSpec, {**task.model_dump(mode="python"), "hints": {
                **task.hints.model_dump(mode="python"), "data": [*task.hints.data, *keys]}}, what="task")
        try:
            record = self.store.get_job(task.task_id)  # idempotent for jobs the core forgot (or never held) too
            if record is not None:
                return _recorded_decision(task, record)
            if self.core.policy(task.coop_id) is None:  # the core refuses it (no policy): say so if it is damaged
                active = self.store.active_policy(task.coop_id)
                if active is not None and active.damaged:
                    return _unreadable_policy_decision(task, active)
            with self.metrics.policy_evaluation.time():
                decision = self.core.submit(task)
            if not decision.admitted:  # (an admission holds its id's reservation: nobody else's decision)
                taken = self._taken(task)
                if taken is not None:
                    return taken
        except InvalidRequest:
            raise
        except Exception as exc:  # the store is unreachable: nothing was reserved, say so plainly
            log.warning("admission failed on the state store: %s", exc)
            task_id, coop = task.task_id, task.coop_id
            return Decision(task_id=task_id, coop_id=coop, admitted=False, reasons=(unavailable(
                "store", f"the state store ({self.store_url.split('@')[-1]}) is unreachable: {type(exc).__name__}; "
                "nothing was admitted or charged; retry in a few seconds"),)).model_dump(mode="json")
        self._unrecorded.add(decision.task_id)
        if decision.admitted and refs:  # held while the job may run: released when it finishes (_persist)
            self.locator.remember(decision.task_id, refs)
        if decision.admitted and decision.task_id not in self._payloads:
            payload = payload if payload is not None else (_noop, (), {})
            data = bytes(payload) if isinstance(payload, (bytes, bytearray)) else cloudpickle.dumps(payload)
            self.store.put_payload(decision.task_id, data)
            # small payloads travel inside the dispatch call; large ones once, through the object store
            self._payloads[decision.task_id] = ray.put(payload) if len(data) > INLINE_PAYLOAD_BYTES else payload
        return decision.model_dump(mode="json")

    # ------------------------------------------------------------------ control
    @guarded
    async def cancel(self, task_id: str) -> str | dict | None:
        """Cancel a job; answers its state then (a finished job's final one), None for an unknown id.
        Another head replica's job (on a shared store) raises ``JobOfAnotherHead`` naming that head, which alone
        can stop it; nothing changes here (the client's handle follows it: ``scheduler.replicas``).

        A job this head could not restore (its record damaged, or refused by ``_recover``) whose attempt may
        still run is stopped where it may run: the worker of every executor held for it is asked to cancel
        that task id (``_cancel_unrestored``). If its stored state cannot be told either (a damaged record
        whose task is in no Redis state index, or in two), the answer is ``running`` if a worker stops it,
        else its status with no state, as ``status`` answers it, the reason saying what was asked of whom (the
        client raises ``JobRecordDamaged``)."""
        with self._writes():  # the release of a queued job's quota and its record land together, or neither
            state = self.core.cancel(admin.check_task_id(task_id, "cancel"))
            self._persist()
        if state is None:  # finished and forgotten by the core (or held by another replica, or not restored)
            self._redirect_if_elsewhere(task_id)  # another replica's: only it can stop it (JobOfAnotherHead)
            return await self._cancel_unrestored(task_id)
        if state is JobState.RUNNING and task_id in self._dispatched:
            await self._cancel_on_worker(task_id)
        self._notify(task_id)
        with self._writes():
            self._schedule()
            self._persist()
        return state.value if state else None

    @guarded
    async def register_executor(self, spec: dict, actor: str = "admin", public_key: str | None = None) -> dict:
        """Register (or update) an executor. ``public_key``: the base64 key its worker signs heartbeats and
        usage reports with, registered as that executor's key; signed mode needs one (now or earlier)."""
        self._ensure_watchdog()
        executor_key = None
        if public_key is not None or not self.gate.dev_mode:
            checked = parse(ExecutorSpec, spec, what="executor")  # bad input fails before anything changes
            executor_id, coop_id = checked.executor_id, checked.coop_id
            known = any(p.role is Role.EXECUTOR and p.subject == executor_id for p in self.gate.verifier.principals())
            if public_key is None and not known:
                raise InvalidRequest("executor", [FieldError(
                    "public_key", "null", "the executor's base64 Ed25519 public key (this head verifies every "
                    "heartbeat and usage report)", "the NAME.pub written by `coopsched keys new`")])
            if public_key is not None:
                executor_key = parse(Principal, {"public_key": public_key, "role": "executor", "coop_id": coop_id,
                                                 "subject": executor_id}, what="executor key")
                self._check_not_operator_key(executor_key)  # (refused inside _writes, the core would keep it)
        with self._writes():
            before = self.core.table.spec(spec["executor_id"]).resources \
                if isinstance(spec, dict) and spec.get("executor_id") in self.core.table else None
            parsed = self.core.register_executor(spec)
            if executor_key is not None:
                self._add_key(executor_key, actor)
                self._remove_executor_keys(parsed.executor_id, parsed.coop_id, actor, keep=executor_key.key_id)
            handle = self._workers.pop(parsed.executor_id, None)
            if handle is not None and before is not None and before != parsed.resources:
                # registered again with other resources: its worker's queue learns them now, not with the next
                # dispatch (one that grew starts what waits there and now fits)
                self._loop.create_task(self._send_capacity(handle, parsed.executor_id))
            self.store.put_executor(parsed.model_dump(mode="json"),
                                    self.core.table.status_of(parsed.executor_id).value)
            self._log(parsed.coop_id, "executor.join", actor, {"executor_id": parsed.executor_id,
                                                              "region": parsed.region})
            self._schedule()
            self._persist()
        return parsed.model_dump(mode="json")

    @guarded
    async def drain(self, executor_id: str, actor: str = "admin") -> bool:
        self._registered(executor_id)
        with self._writes():
            self.core.drain(executor_id)
            spec = self.core.table.spec(executor_id)
            self.store.put_executor(spec.model_dump(mode="json"), ExecutorStatus.DRAINING.value)
            self._log(spec.coop_id, "executor.drain", actor, {"executor_id": executor_id})
        return True

    @guarded
    async def set_trust(self, executor_id: str, trust: float, actor: str = "admin") -> dict:
        self._registered(executor_id)
        with self._writes():
            spec = self.core.set_trust(executor_id, trust)  # its status stays (an offline one stays offline)
            self.store.put_executor(spec.model_dump(mode="json"), self.core.table.status_of(executor_id).value)
            self._log(spec.coop_id, "executor.trust", actor, {"executor_id": executor_id, "trust": trust})
        return spec.model_dump(mode="json")

    @guarded
    async def remove_executor(self, executor_id: str, actor: str = "admin") -> list[str]:
        coop = self._registered(executor_id).coop_id
        with self._writes():
            lost = self.core.remove_executor(executor_id)
            self.ahead_tuner.forget(executor_id)
            self._forget_attempts(lost)
            self.store.remove_executor(executor_id)
            self._log(coop, "executor.remove", actor, {"executor_id": executor_id, "requeued": lost})
            self._remove_executor_keys(executor_id, coop, actor)
            worker = self._workers.pop(executor_id, None) or self._worker(executor_id)
            self._workers.pop(executor_id, None)
            if worker is not None:
                ray.kill(worker, no_restart=True)
            self._schedule()
            self._persist()
        return lost

    def _registered(self, executor_id: str) -> ExecutorSpec:
        self._fresh()  # (checked against the memory _writes would rebuild)
        if not isinstance(executor_id, str) or executor_id not in self.core.table:
            raise KeyError(f"executor {executor_id!r} is not registered; see `coopsched executor list`")
        return self.core.table.spec(executor_id)

    @guarded
    async def executors(self) -> list[dict]:
        """Every registered executor, its status, the jobs running there, and ``held``: attempts of jobs this
        head could not restore that may still run there (their resources are held: ``held_capacity``)."""
        return [{**spec.model_dump(mode="json"), "status": status.value, "running": running,
                 "held": len(self.core.held_on(spec.executor_id))}
                for spec, status, running in self.core.executors()]

    @ray.method(concurrency_group="reads")
    @guarded
    async def status(self, task_id: str) -> dict | None:
        job = self.core.job(admin.check_task_id(task_id, "status"), explain=False)
        if job is not None:
            return self._with_checkpoint(job).model_dump(mode="json")
        record = self.store.get_job(task_id)  # finished before this head (re)started (or damaged: it says so)
        return stored_status(record) if record else None

    @guarded
    async def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None,
                   limit: int | None = None) -> list[dict]:
        admin.check_listing(coop_id, member, limit, "jobs")
        if state is not None and state not in _STATES:
            raise InvalidRequest("jobs", [FieldError("state", quoted(state, 40), ", ".join(_STATES), "running")])
        return [r["status"] for r in self.store.jobs(coop_id, member, state, limit)  # (a damaged record is no
                if not is_damaged(r)]  # JobStatus: left out; the store logged it, its status says it is damaged

    @guarded
    async def queue(self, coop_id: str | None = None, member: str | None = None, limit: int | None = None) -> list[dict]:
        """The waiting jobs in the order the next round tries them (``SchedulerCore.queue_positions``)."""
        admin.check_listing(coop_id, member, limit, "queue")
        return [p.model_dump(mode="json") for p in self.core.queue_positions(coop_id, member, limit)]

    @guarded
    async def explain(self, task_id: str) -> dict | None:
        found = self.core.explain(admin.check_task_id(task_id, "explain"))
        if found is None:  # finished long ago, or before this head (re)started
            record = self.store.get_job(task_id)
            found = explain_record(record) if record else None
        return found

    @ray.method(concurrency_group="reads")
    @guarded
    async def usage(self, coop_id: str, member: str) -> dict:
        return self.core.usage(admin.check_coop(coop_id, "usage"), admin.check_member(member, "usage")) \
            .model_dump(mode="json")

    @guarded
    async def metrics_address(self) -> str | None:
        """``host:port`` serving Prometheus text at ``/metrics``; None when started without a metrics port."""
        return self.metrics.address

    @ray.method(concurrency_group="reads")
    @guarded
    async def ping(self) -> dict:
        return {"executors": len(self.core.table), "queued": len(self.core.queue), "sharing": self._sharing(),
                "jobs_in_memory": self.core.jobs_in_memory(), "started_at": self.started_at,
                "store": self.store_url.split("@")[-1], "store_resyncs": self.resyncs,
                "recovered": {**self.recovered, "damaged_keys": self.gate.damaged_keys[:DAMAGED_LISTED]}}

    def _sharing(self) -> dict:
        """``core.sharing()``, asked again if the main loop changed what it reads meanwhile (ping runs in a thread
        of its own)."""
        for _ in range(3):
            try:
                return self.core.sharing()
            except RuntimeError:  # (a dict changed size during iteration)
                continue
        return {}

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
        if time.monotonic() >= self._next_orphan_sweep:
            await self._sweep_orphaned_reservations()
        if time.monotonic() >= self._next_policy_refresh and await self._refresh_policies():
            with self._writes():  # a raised limit may let waiting tasks start
                self._schedule()
                self._persist()
        for executor_id in [*self.core.table.ids(), *self.core.placed_off_table()]:
            running = self.core.running_on(executor_id)
            dispatched = {t for t in running if t in self._dispatched}
            held = self.core.held_on(executor_id)
            if executor_id not in self.core.table:  # its registration could not be restored (core.restore_job):
                # its jobs are asked about as held ones are, by what the worker runs or queues: one that ended
                # there is retried rather than waited for, as its report may never settle it (signed mode
                # refuses a report from an executor no longer registered); a retry is charged once
                held, dispatched = held | running, set()
            if not dispatched and not held:
                continue
            worker = self._worker(executor_id)
            try:
                if worker is None:
                    raise ActorDiedError()
                missing = await asyncio.wait_for(worker.missing.remote(sorted(dispatched)), PING_TIMEOUT_S) \
                    if dispatched else []
                # attempts of jobs the head could not restore: the worker is asked what it runs or queues, not
                # ``missing``, which also counts an ended attempt whose report it keeps (one reported to an
                # earlier head would stay held until the worker forgot it)
                runs = await asyncio.wait_for(worker.running.remote(), PING_TIMEOUT_S) if held else ()
            except (RayError, asyncio.TimeoutError) as exc:  # died, unschedulable (its node is gone), hung
                self._lost(executor_id, f"worker of {executor_id} died ({type(exc).__name__})")
                continue
            ended = held - set(runs)
            if missing or ended:
                with self._writes():  # a give-up's release and the records land together
                    for task_id in sorted(ended):
                        if self.core.release_held(task_id, executor_id):
                            log.info("unrestored job %s does not run on %s: what it held there is free",
                                     task_id, executor_id)
                    requeued = [t for t in missing  # the worker restarted and forgot them
                                if self.core.requeue(t, executor_id, f"worker of {executor_id} restarted") is not None]
                    requeued += [t for t in sorted(ended & running) if self.core.requeue(  # (unregistered executor)
                        t, executor_id, f"its worker on {executor_id}, whose registration could not be restored, "
                        "no longer runs it") is not None]
                    self._forget_attempts(requeued)
                    self._schedule()
                    self._persist()
        stale = self.core.mark_offline(self.heartbeat_timeout_s)
        for executor_id in stale:
            self._store_status(executor_id)
        if stale:
            log.warning("no heartbeat from %s for %.0f s: offline", ", ".join(stale), self.heartbeat_timeout_s)


def _unreadable_policy_decision(task: TaskSpec, active: PolicyVersion) -> dict:
    """A submission to a coop whose active policy is damaged in the store: refused, nothing recorded or charged
    (fail closed: without its policy nothing says what the coop's members may use), with what to do."""
    return Decision(task_id=task.task_id, coop_id=task.coop_id, admitted=False, reasons=(error(
        "policy", f"the policy of coop {task.coop_id} cannot be read: its active version {active.version} is damaged "
        f"in the store ({(active.damaged or '')[:120]}), and the coop's tasks are not admitted without it; a coop "
        "admin sets the policy again with `coopsched policy set FILE`; nothing was admitted or charged"),)
    ).model_dump(mode="json")


def _data_refs(data_refs: Any) -> list:
    """The ObjectRefs a submission names (``hints.data`` given as refs; the client sends them apart)."""
    if not data_refs:
        return []
    if not isinstance(data_refs, (list, tuple)) or not all(isinstance(r, ray.ObjectRef) for r in data_refs):
        raise InvalidRequest("submission", [FieldError("data_refs", quoted(data_refs, 60), "a list of Ray ObjectRefs "
                                                       "(hints.data given as refs)", "[ray.put(table)]")])
    return list(data_refs)


def start_head(namespace: str = NAMESPACE, name: str = HEAD_NAME, **config: Any):
    """Start (or find) the detached head actor; it holds no CPU slot and restarts on failure."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    # Reads that touch no event-loop state (ping, status, usage) run in their own thread, so they
    # do not queue behind a burst of submissions on the main loop; submissions are let in a few
    # at a time (SUBMISSION_SLOTS).
    actor = ray.remote(concurrency_groups={"reads": READ_THREADS, "submissions": SUBMISSION_SLOTS})(Head).options(
        name=name, namespace=namespace, lifetime="detached", num_cpus=0, max_restarts=-1, max_concurrency=1000,
        get_if_exists=True)
    return actor.remote(namespace=namespace, name=name, **config)
