"""The Python client: submit work, follow it, read usage, manage policies and executors.

    from scheduler.client import Client
    client = Client.local()                       # starts Ray and the head if none runs
    client.register_executor("laptop", coop="timebank:seattle", region="us-west")
    client.set_policy("policies/examples/timebank.json")
    job = client.submit(pow, 2, 10, coop="timebank:seattle", member="did:icn:alice")
    job.result()                                   # 1024

Every call to the head goes through ``Client._call``, which signs it with the client's key
(``Client(key="alice.key")``; see ``scheduler.identity``). A head in signed mode refuses an
unsigned, forged or replayed call, or one the key may not make, with ``AccessRefused``
(``code``: unsigned, unknown_key, forged, expired, replayed, forbidden). A head in
development mode (no keys) answers everything, and the client prints
``DEVELOPMENT MODE: ...`` on stderr.

Input is validated here, before anything is sent: a bad argument raises
``InvalidRequest`` naming the field. A strict policy's refusal raises
``PolicyViolation`` carrying the ``Decision``; a permissive one's violation is a warning
on the handle (and a Python warning).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError

from executors.measure import TaskError
from executors.worker import start_worker
from policies.reasons import Decision
from policies.validation import FieldError, InvalidRequest, parse, quoted
from scheduler.executor_spec import ExecutorSpec
from scheduler.head import start_head
from scheduler.head_results import MAX_WAIT_IDS
from scheduler.job_handle import (JobCancelled, JobFailed, JobHandle, JobRecordDamaged,  # noqa: F401  (also
                                  PolicyViolation, RuntimeLimitExceeded, UnreadableAnswer,  # importable from here)
                                  _timeout, read_status)
from scheduler.client_admin import ClientAdministration
from scheduler.client_local import _check_num_cpus, _new_head_auth, _no_operator
from scheduler.head_auth import DEV_MODE_LABEL, AccessRefused
from scheduler.identity import generate_key, load_private_key, private_key_pem, public_key_b64, sign_request
from scheduler.jobs import JobStatus, QueuePosition
from scheduler.local_ray import drop_stale_bootstrap
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME, worker_name
from scheduler.task_payload import pickled_call
from scheduler.replicas import JobOfAnotherHead
from scheduler.tasks import TaskSpec
from scheduler.state_store import check_store_url, default_store_url
from scheduler.tracker import start_tracker
from scheduler.usage import UsageRecord

log = logging.getLogger("coopsched.client")

MB = 1024 * 1024
RESTART_WAIT_S = 60.0  # how long calls wait for a restarting head
RESIGN_WAIT_S = 3.0  # how long a call refused as signed before the head restarted is signed again and retried


def _started_tracker(namespace: str, store: str, attempts: int = 3) -> None:
    """Start the tracker and wait until it is up, before the head opens the same store: a tracker whose
    start failed (seen once: SQLite answered 'database is locked' as both opened one new file) would
    leave every usage report undelivered, and executors never freed. A failed start is tried again."""
    for attempt in range(1, attempts + 1):
        tracker = start_tracker(namespace=namespace, store_url=store)
        try:
            ray.get(tracker.__ray_ready__.remote(), timeout=120)
            return
        except RayActorError:
            if attempt == attempts:
                raise
            log.warning("the tracker did not start (attempt %d of %d); starting it again", attempt, attempts)
            time.sleep(0.5)


def _private_key(key: Any, field: str = "key") -> Ed25519PrivateKey | None:
    try:
        return load_private_key(key) if key is not None else None
    except (ValueError, TypeError) as exc:  # TypeError: neither a path, text, bytes nor a key (e.g. key=5)
        shown = "<a private key object>" if not isinstance(key, (str, Path, bytes)) else \
            "<PEM bytes>" if isinstance(key, bytes) else \
            repr(str(key)) if len(str(key)) <= 200 and "\n" not in str(key) and "PRIVATE" not in str(key) else \
            "<key text, not shown>"  # never echo what may be the secret itself
        raise InvalidRequest("client", [FieldError(field, shown, str(exc) if isinstance(exc, ValueError) else
                                                   "a PEM file path, PEM text or bytes, or an Ed25519 private key",
                                                   "alice.key")]) from None


class Client(ClientAdministration):
    """A connection to a running Coopsched head; ``key`` (a PEM file path, PEM text or key) signs every call."""

    def __init__(self, address: str | None = "auto", namespace: str = NAMESPACE, *,
                 key: str | Path | bytes | Ed25519PrivateKey | None = None, _connect: bool = True):
        self.namespace = namespace
        self._key = _private_key(key)
        self.public_key = public_key_b64(self._key) if self._key is not None else None
        self.dev_mode: bool | None = None  # known after the first answer
        self._labelled = False  # the development-mode label printed once per client
        if _connect and not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        try:
            self.head = ray.get_actor(HEAD_NAME, namespace=namespace)
        except ValueError:
            raise ConnectionError(f"no Coopsched head in namespace {namespace!r} of this Ray cluster; "
                                  "start one with `coopsched start` or Client.local()") from None

    @classmethod
    def local(cls, num_cpus: int | None = None, namespace: str = NAMESPACE, store: str | None = None, *,
              key: str | Path | bytes | Ed25519PrivateKey | None = None, auth: str | None = None,
              operator_key: str | None = None, auth_window_s: float | None = None, **head_config: Any) -> Client:
        """Join the running Ray cluster (or start a local one) and start the head and tracker if needed.

        ``store``: where state lives — ``sqlite:///PATH`` (default: a file in the user's data
        directory), ``memory://`` (gone with the process) or ``redis://HOST:PORT/DB``.

        ``auth``: ``"dev"`` (the default without a key: nothing is verified, every output is labelled
        DEVELOPMENT MODE) or ``"signed"`` (the default with ``key``: every request is verified).
        A signed head's operator is ``operator_key`` (a base64 public key), by default ``key``'s own
        public key: whoever starts the head operates it.

        ``num_cpus``: the CPUs of a local Ray this call starts. When a Ray cluster runs already (this process
        is connected to one, or one runs on this machine), it keeps its own CPUs: ``num_cpus`` other than
        their number is refused (``NumCpusUnused``, an ``InvalidRequest``) before anything starts, not ignored.

        ``auth``, ``operator_key`` and ``auth_window_s`` (like ``head_config``) only configure a head
        that this call starts. A head already running keeps its own mode, so joining it needs none of
        them (``client.dev_mode`` says which mode it runs in): their values are checked first, as
        any bad input is, but signed mode's need of an operator is asked only when no head runs, and
        then before anything is started. A client without a key that joins a signed head is returned
        as ``Client(key=None)`` would be (``coopsched start --operator-key PUB`` starts a signed head
        this way, holding only the operator's public key): each of its calls is refused with
        ``AccessRefused`` (``unsigned``), which says to give ``key=``; the refusal comes when a request
        needs a signature, not at joining."""
        signing_key = _private_key(key)  # bad arguments fail here, before anything starts
        store = check_store_url(store or default_store_url())
        mode = auth or ("signed" if key is not None or operator_key is not None else "dev")
        if mode == "signed" and operator_key is None and key is not None:
            operator_key = public_key_b64(signing_key)
        settings = _new_head_auth(mode, operator_key, auth_window_s)  # None: signed mode with no operator
        joined = False
        if not ray.is_initialized():
            drop_stale_bootstrap()  # (a cluster that is gone, recorded by Ray: ray.init would wait on it for ever)
            try:
                ray.init(address="auto", namespace=namespace, log_to_driver=False)
                joined = True
            except ConnectionError:
                if settings is None:  # no cluster, so no head to join: one would have to be started
                    raise _no_operator(namespace) from None
                ray.init(num_cpus=num_cpus, namespace=namespace, include_dashboard=False, log_to_driver=False)
            if joined:
                _check_num_cpus(num_cpus, joined=True)
        else:
            _check_num_cpus(num_cpus, joined=False)
        if settings is None and not _head_exists(namespace):
            if joined:
                ray.shutdown()  # it only looked for a head: this process is left as it was
            raise _no_operator(namespace)
        _started_tracker(namespace, store)
        if not _head_exists(namespace):
            if settings is None:  # the head stopped in the meantime
                raise _no_operator(namespace)
            start_head(namespace=namespace, store_url=store, auth=settings, **head_config)
        client = cls(namespace=namespace, key=key, _connect=False)
        try:
            client._call("ping")
        except AccessRefused:  # it answered: it is up (a client without a registered key can do nothing more)
            pass
        return client

    # ------------------------------------------------------------------ jobs
    def submit(self, fn: Callable, *args: Any, coop: str, member: str, resources: dict | None = None,
               priority: str = "normal", tags: Iterable[str] = (), max_runtime_s: float | None = None,
               hints: dict | None = None, capabilities: dict | None = None, max_retries: int = 2,
               task_id: str | None = None, name: str | None = None, kwargs: dict | None = None,
               stop_grace_s: float = 0.0) -> JobHandle:
        """Run ``fn(*args, **kwargs)`` under the coop's policy. ``hints={"data": [ObjectRef, ...]}`` prefers
        executors whose node holds those objects."""
        kwargs = {} if kwargs is None else kwargs
        task, payload, data_refs = self._task(fn, args, kwargs, coop=coop, member=member, resources=resources,
                                              priority=priority, tags=tags, max_runtime_s=max_runtime_s, hints=hints,
                                              capabilities=capabilities, max_retries=max_retries, task_id=task_id,
                                              name=name, stop_grace_s=stop_grace_s)
        return self._handle(self._call("submit", task, payload, data_refs))

    def map(self, fn: Callable, iterable: Iterable[Any], *, coop: str, member: str, **options: Any) -> list[JobHandle]:
        """One job per item, submitted in one call. If a strict policy refuses some items, the batch is
        still submitted and ``PolicyViolation`` is raised afterwards: its ``refused`` lists their
        decisions and its ``handles`` the admitted jobs, which run."""
        if "task_id" in options:  # one id for every item would make them one job
            raise InvalidRequest("map", [FieldError("task_id", quoted(options["task_id"], 40), "no task_id: map gives "
                                                    "each item a job id of its own (submit() takes one)",
                                                    "client.map(fn, items, coop=..., member=..., name=\"batch-7\")")])
        unknown = sorted(set(options) - _MAP_OPTIONS)
        if unknown:
            raise InvalidRequest("map", [FieldError(unknown[0], quoted(options[unknown[0]], 40), "an option of "
                                                    "submit() other than kwargs and task_id: " + ", ".join(sorted(
                                                        _MAP_OPTIONS)), "client.map(fn, items, coop=..., member=..., "
                                                    "resources={\"cpus\": 1})")])
        items = [self._task(fn, (item,), {}, coop=coop, member=member, item=n, **options)
                 for n, item in enumerate(iterable)]  # all of them checked and pickled before any is sent
        answers = self._call("submit_many", items)
        handles, refused = [], []
        for answer in answers:
            if "error" in answer:
                raise InvalidRequest("task", [FieldError("", "", answer["error"], "")])
            if answer.get("admitted"):
                handles.append(self._handle(answer))
            else:
                refused.append(Decision(**answer))
        if refused:
            raise PolicyViolation(refused[0], refused, handles)
        return handles

    def gather(self, handles: Iterable[JobHandle], timeout: float | None = None) -> list[Any]:
        """The values of many jobs, in order, as ``[h.result() for h in handles]`` would give them, but
        waiting for all of them in one call to the head (per 10,000 jobs) instead of one each. The first
        job (in order) that failed, was cancelled or ran out of time raises as ``result()`` would;
        ``TimeoutError`` after ``timeout`` seconds."""
        handles = [handles] if isinstance(handles, (str, bytes)) else list(handles)
        bad = [h for h in handles if not isinstance(h, JobHandle)]
        if bad:
            raise InvalidRequest("gather", [FieldError("handles", quoted(bad[0], 40), "JobHandles, as submit() "
                                                       "and map() return them",
                                                       "client.gather(client.map(fn, items, ...))")])
        timeout = _timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        waiting = [h for h in handles if h._started is None]
        asked = False
        while waiting:
            left = remaining()
            if left == 0.0 and asked:
                raise TimeoutError(f"{len(waiting)} of {len(handles)} jobs not started after {timeout} s")
            asked = True
            still = []
            for at in range(0, len(waiting), MAX_WAIT_IDS):
                chunk = waiting[at:at + MAX_WAIT_IDS]
                answers = self._call("wait_results", [h.id for h in chunk], 30.0 if left is None else min(left, 30.0))
                for h in chunk:
                    answer = answers.get(h.id)
                    if answer is None:
                        still.append(h)
                    elif answer.get("ref"):
                        h._started = (answer["ref"], answer["attempt"])
            waiting = still  # the others finished without a value: result() says why
        refs = [h._started[0][0] for h in handles if h._started is not None]
        try:
            values = iter(ray.get(refs, timeout=remaining()))
        except (RayError, GetTimeoutError):  # one of them failed or is slow: each one, in order, says so
            return [h.result(timeout=remaining()) for h in handles]
        out = []
        for h in handles:
            value = next(values) if h._started is not None else None
            out.append(h.result(timeout=remaining()) if h._started is None or isinstance(value, TaskError)
                       else value)
        return out

    def jobs(self, coop: str | None = None, member: str | None = None, status: str | None = None) -> list[JobStatus]:
        return [read_status(j, j.get("task_id", "?") if isinstance(j, dict) else "?")
                for j in self._call("jobs", coop, member, status)]

    def queue(self, coop: str | None = None, member: str | None = None, limit: int | None = None
              ) -> list[QueuePosition]:
        """The waiting jobs in the order the next scheduling round tries them, numbered over every coop's queue
        (a member sees its own, a coop admin its coop's)."""
        return [QueuePosition(**p) for p in self._call("queue", coop, member, limit)]

    def job(self, task_id: str) -> JobHandle:
        status = self._call("status", task_id)
        if status is None:
            raise KeyError(f"no job {task_id!r}")
        return JobHandle(self, Decision(task_id=task_id, coop_id=status["coop_id"], admitted=True))

    def forget_damaged_job(self, task_id: str) -> dict[str, Any]:
        """Delete a job record that is damaged in the store, releasing its reservation and what the head held on
        executors for it (the operator's call, or its coop admin's: ``scheduler.head_damaged_jobs``). Answers
        ``forgotten`` True with ``released`` and ``holds_released``, or False with ``outcome`` (``not_found``,
        ``not_damaged``, ``in_memory``, ``still_runs``) and a ``message`` saying what to do; nothing changed then.
        (A retry after a lost answer finds nothing to forget: ``not_found``.)"""
        return self._call("forget_damaged_job", task_id)

    def usage(self, coop: str, member: str) -> UsageRecord:
        return UsageRecord(**self._call("usage", coop, member))

    def ping(self) -> dict[str, Any]:
        """The head's vital signs: executors, queued jobs, start time, store, what it recovered."""
        return self._call("ping")

    @staticmethod
    def _task(fn, args, kwargs, *, coop, member, resources=None, priority="normal", tags=(),
              max_runtime_s=None, hints=None, capabilities=None, max_retries=2, task_id=None, name=None,
              item=None, stop_grace_s=0.0):
        """The task, its payload and its data refs, or ``InvalidRequest`` before anything is sent (``item``:
        the position of ``args[0]`` in ``map``'s iterable, for naming it)."""
        if not callable(fn):
            raise InvalidRequest("task", [FieldError("fn", repr(fn)[:60], "a callable (function)", "math.sqrt")])
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InvalidRequest("task", [FieldError("kwargs", quoted(kwargs, 40), "a dict of keyword arguments "
                                                     "by name", '{"n": 10}')])
        data_refs: list = []
        if isinstance(hints, dict) and isinstance(hints.get("data"), (list, tuple)):
            data_refs = [d for d in hints["data"] if isinstance(d, ray.ObjectRef)]
            hints = {**hints, "data": [d for d in hints["data"] if not isinstance(d, ray.ObjectRef)]}
        fields = {"coop_id": coop, "member": member, "resources": resources or {}, "priority": priority,
                  "tags": list(tags) if isinstance(tags, (list, tuple, set, frozenset)) else tags,
                  "max_runtime_s": max_runtime_s,
                  "hints": hints if hints is not None else {}, "capabilities": capabilities or {},
                  "max_retries": max_retries, "stop_grace_s": stop_grace_s,
                  "name": name or getattr(fn, "__name__", None)}
        if task_id is not None:
            fields["task_id"] = task_id
        spec = parse(TaskSpec, fields, what="task")
        if data_refs:  # the refs count against hints.data's limit as the head will hold them, as keys
            parse(TaskSpec, {**fields, "hints": {**fields["hints"], "data": [*fields["hints"]["data"],
                                                                            *(r.hex() for r in data_refs)]}},
                  what="task")
        # The payload travels as the bytes this client pickled: the signature covers their SHA-256
        # (scheduler.identity.args_digest), and the head stores and dispatches these very bytes, so what
        # runs is what the member signed. Only the executor's task unpickles them. What cannot be pickled
        # (a lock, a connection, an open file) is refused naming the argument (scheduler.task_payload).
        sent = spec.model_dump(mode="json", exclude=None if spec.stop_grace_s else {"stop_grace_s"})  # (a head of
        # an earlier release refuses the field it does not know: sent only when asked for)
        return sent, pickled_call(fn, args, kwargs, item=item), data_refs

    def _handle(self, answer: dict) -> JobHandle:
        """The head's answer to a submission (a Decision as JSON) as a handle, or PolicyViolation."""
        decision = Decision(**answer)
        if not decision.admitted:
            raise PolicyViolation(decision)
        for w in decision.warnings:
            warnings.warn(f"policy violation allowed by a permissive policy: {w}", stacklevel=3)
            log.warning("task %s: %s", decision.task_id, w)
        return JobHandle(self, decision)

    # ------------------------------------------------------------------ executors
    def register_executor(self, executor_id: str, *, coop: str, region: str | None = None,
                          capabilities: dict[str, str] | None = None, trust: float = 0.5,
                          node_id: str | None = None, resources: dict | None = None, price_cpu_hour: float = 1.0,
                          price_gpu_hour: float = 10.0, labels: dict[str, str] | None = None,
                          open_to: Iterable[str] = (), rtt_ms: float = 10.0, dispatch_ahead: int | str = 0,
                          heartbeat_interval_s: float = 2.0,
                          nvml: Any = None, executor_key: str | Path | bytes | Ed25519PrivateKey | None = None
                          ) -> ExecutorSpec:
        """Start the executor's worker on ``node_id`` (default: this process's node) and register it.

        Resources default to what Ray's raylet on that node offers; the region defaults to the
        node's ``region`` label. ``dispatch_ahead=k`` lets the head hand this executor up to ``1 + k``
        times its resources at once; its worker queues what does not fit and starts it the moment
        a task ends (more throughput for short jobs; a task handed over early waits there even if
        a higher-priority one arrives later). ``dispatch_ahead="auto"``: the head sets it from what it measures,
        the rounds that cover the gap between a task ending there and the next arriving (0 for long jobs; see
        ``scheduler.ahead_tuning``). ``executor_key``: the key pair the worker signs its heartbeats and
        usage reports with (a PEM file, text or key); a signing client makes a new one when none is
        given, and registers its public half as this executor's key."""
        node_id = node_id or ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n["NodeID"] == node_id and n.get("Alive")), None)
        if node is None:
            raise InvalidRequest("executor", [FieldError("node_id", repr(node_id), "the id of a live Ray node",
                                                         ray.get_runtime_context().get_node_id())])
        region = region or node.get("Labels", {}).get("region")
        if not region:
            raise InvalidRequest("executor", [FieldError("region", "null", "a region name (this node has no "
                                                         "'region' label)", "eu-central")])
        offered = node.get("Resources", {})
        resources = resources or {"cpus": offered.get("CPU", 1.0), "gpus": offered.get("GPU", 0.0),
                                  "memory_mb": int(offered.get("memory", 0) // MB)}
        spec = parse(ExecutorSpec, {"executor_id": executor_id, "coop_id": coop, "node_id": node_id, "region": region,
                                    "capabilities": capabilities or {}, "trust": trust, "resources": resources,
                                    "price_cpu_hour": price_cpu_hour, "price_gpu_hour": price_gpu_hour,
                                    "labels": labels or {}, "rtt_ms": rtt_ms, "open_to": list(open_to) if isinstance(
                                        open_to, (list, tuple, set, frozenset)) else open_to,
                                    **({"dispatch_ahead": 0, "dispatch_ahead_auto": True} if dispatch_ahead == "auto"
                                       else {"dispatch_ahead": dispatch_ahead})},
                     what="executor")
        signing = _private_key(executor_key, "executor_key") if executor_key is not None else (
            generate_key() if self._key is not None else None)
        public_key = None
        try:
            ray.get_actor(worker_name(executor_id), namespace=self.namespace)  # running: it keeps its key
        except ValueError:
            public_key = public_key_b64(signing) if signing is not None else None
            start_worker(executor_id, node_id, name=worker_name(executor_id), namespace=self.namespace,
                         tracker_name=TRACKER_NAME, head_name=HEAD_NAME, detached=True,
                         heartbeat_interval_s=heartbeat_interval_s, nvml=nvml,
                         signing_key=private_key_pem(signing) if signing is not None else None)
        return ExecutorSpec(**self._call("register_executor", spec.model_dump(mode="json"), public_key=public_key))

    def executors(self) -> list[dict[str, Any]]:
        return self._call("executors")

    def set_trust(self, executor_id: str, trust: float) -> ExecutorSpec:
        return ExecutorSpec(**self._call("set_trust", executor_id, trust))

    def drain(self, executor_id: str) -> bool:
        return self._call("drain", executor_id)

    def remove_executor(self, executor_id: str) -> list[str]:
        return self._call("remove_executor", executor_id)

    # ------------------------------------------------------------------ keys
    def add_key(self, public_key: str, *, coop: str | None, role: str, id: str) -> dict[str, Any]:
        """Register ``public_key`` (base64) as ``role`` (member, admin, executor) ``id`` of ``coop``."""
        return self._call("add_key", {"public_key": public_key, "role": role, "coop_id": coop, "subject": id})

    def remove_key(self, key_id: str) -> bool:
        return self._call("remove_key", key_id)

    def list_keys(self, coop: str | None = None) -> list[dict[str, Any]]:
        return self._call("list_keys", coop)

    def whoami(self) -> dict[str, Any]:
        """``{"dev_mode": bool, "principal": the registered key this client signs with, or None}``."""
        return self._call("whoami")

    # ------------------------------------------------------------------ plumbing
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the head, signed with this client's key; while it restarts (Ray brings it back) retry
        for up to ``RESTART_WAIT_S``, each try signed afresh (a new nonce and time).

        Retrying is safe: submissions carry their task id (the head answers a resubmission
        with the first decision) and every other call is a read or idempotent."""
        return self._call_on(self.head, method, *args, **kwargs)

    def _call_on(self, head: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """``_call`` on a given head actor (this client's, or the replica a job belongs to)."""
        deadline = time.monotonic() + RESTART_WAIT_S
        resign_until = time.monotonic() + RESIGN_WAIT_S
        delay = 0.05
        while True:
            signed = sign_request(self._key, method, args, kwargs, now=time.time()) if self._key else None
            try:
                answer = ray.get(getattr(head, method).remote(*args, _request={"signed": signed}, **kwargs))
                if signed is not None and _restarted_since(answer) and time.monotonic() < resign_until:
                    time.sleep(delay)  # signed before the head (re)started, by this machine's clock: sign again
                    delay = min(delay * 2, 1.0)
                    continue
                return self._unwrap(answer)
            except RayTaskError as exc:
                cause = exc.cause if hasattr(exc, "cause") else None
                if isinstance(cause, (InvalidRequest, KeyError, ValueError, AccessRefused, JobOfAnotherHead)):
                    raise cause from None
                raise
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _unwrap(self, answer: dict) -> Any:
        self.dev_mode = bool(answer.get("dev_mode"))
        if self.dev_mode and not self._labelled:
            self._labelled = True
            print(f"*** {DEV_MODE_LABEL} ***", file=sys.stderr, flush=True)
        if "refused" in answer:
            raise AccessRefused(answer["refused"]["code"], answer["refused"]["message"])
        return answer["ok"]


_MAP_OPTIONS = frozenset({"resources", "priority", "tags", "max_runtime_s", "hints", "capabilities", "max_retries",
                          "name", "stop_grace_s"})


def _restarted_since(answer: Any) -> bool:
    """Whether the head refused a request as signed before it (re)started: a request signed afresh a
    moment later passes (unless this machine's clock lags the head's by more than ``RESIGN_WAIT_S``)."""
    refused = answer.get("refused") if isinstance(answer, dict) else None
    return isinstance(refused, dict) and refused.get("code") == "expired" and "(re)started" in refused.get(
        "message", "")


def _head_exists(namespace: str) -> bool:
    try:
        ray.get_actor(HEAD_NAME, namespace=namespace)
        return True
    except ValueError:
        return False


def shutdown(namespace: str = NAMESPACE) -> list[str]:
    """Stop the head, the tracker and every worker actor of ``namespace``. Returns what was stopped."""
    stopped = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != namespace:
            continue
        name = entry["name"]
        if name in (HEAD_NAME, TRACKER_NAME) or name.startswith(worker_name("")):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
                stopped.append(name)
            except ValueError:
                pass
    return stopped
