"""The floor of the end-to-end benchmark: Coopsched's actors and hops with none of its work.

The issue fixes the path a job takes: a client calls a head actor, which hands the job to the
worker actor of an executor, which runs it as a Ray task pinned to its node and reports what it
used to a tracker actor, which tells the head; the client takes the value's reference from the
head and fetches it. :class:`Floor` sends jobs down exactly that path with nothing else on it:
no validation, admission, placement (the head deals jobs round-robin), store, measurement,
signing or retries. Each actor does only its hop, the way Coopsched's do it (async actors; one
dispatch call per executor and batch; a worker runs as many tasks as its executor has CPUs and
queues the rest; reports in batches; a batch's references in one wait call).

Coopsched does all of this and more on the same path, so a target the floor misses on a machine
is out of Coopsched's reach there: meeting it would take a shorter path (fewer processes or hops
per job) or cheaper hops than actor calls (e.g. Ray's compiled graphs, untried), not leaner
scheduling code. The gap between the floor and Coopsched is what Coopsched's own work costs.
``benchmarks/end_to_end.py`` runs the floor beside bare Ray and Coopsched in the same process
(modes ``floor`` and ``floor-map``).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray import cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import `benchmarks`

HEAD, TRACKER = "floor-head", "floor-tracker"
WAIT_S = 300.0  # the longest a client waits for a floor job's result (end_to_end's RESULT_TIMEOUT_S)


def worker_names(count: int) -> list[str]:
    return [f"floor-worker-{i}" for i in range(count)]
_ids = itertools.count()


def _run(payload: bytes) -> tuple[Any, float]:
    """The task: the client's pickled ``(fn, args, kwargs)``, called; its value and when it ended."""
    fn, args, kwargs = cloudpickle.loads(payload)
    return fn(*args, **kwargs), time.time()


class FloorTracker:
    """Takes a worker's reports and tells the head, one call per batch."""

    def __init__(self, namespace: str) -> None:
        self.namespace, self.head = namespace, None

    async def report_many(self, reports: list[dict]) -> list[bool]:
        if self.head is None:
            self.head = ray.get_actor(HEAD, namespace=self.namespace)
        await self.head.on_reports.remote(reports)
        return [True] * len(reports)


class FloorWorker:
    """One executor of ``slots`` CPUs: launches what fits as pinned 1-CPU tasks, queues the rest."""

    def __init__(self, namespace: str, node_id: str, slots: int) -> None:
        self.task = ray.remote(_run).options(num_cpus=1, num_returns=2, max_retries=0,
                                             scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        self.tracker = ray.get_actor(TRACKER, namespace=namespace)
        self.slots, self.running = slots, 0
        self.queue: list[dict] = []
        self.unsent: list[dict] = []
        self.ready = asyncio.Event()
        self.delivery: asyncio.Task | None = None

    async def start_many(self, specs: list[dict]) -> list[list | None]:
        """Each spec's ``[value ref]`` if launched now, None if queued (its ref travels with its report)."""
        if self.delivery is None:
            self.delivery = asyncio.create_task(self._deliver())
        out: list[list | None] = []
        for spec in specs:
            if self.running < self.slots:
                out.append(self._launch(spec, queued=False))
            else:
                self.queue.append(spec)
                out.append(None)
        return out

    def _launch(self, spec: dict, queued: bool) -> list:
        self.running += 1
        value, ended = self.task.remote(spec["payload"])
        asyncio.create_task(self._watch(spec["task_id"], value, ended, queued))
        return [value]

    async def _watch(self, task_id: str, value: ray.ObjectRef, ended: ray.ObjectRef, queued: bool) -> None:
        try:
            at = await ended
        except Exception:  # noqa: BLE001  # the job failed: it still ends and is reported (its value raises)
            at = time.time()
        self.running -= 1
        if self.queue:
            self._launch(self.queue.pop(0), queued=True)
        # the reference of a task launched from the queue travels with its report (the head has no other)
        self.unsent.append({"task_id": task_id, "ended_at": at, "ref": [value] if queued else None})
        self.ready.set()

    async def _deliver(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            batch, self.unsent = self.unsent, []
            try:
                await self.tracker.report_many.remote(batch)
            except Exception:  # noqa: BLE001  # sent again with the next batch
                self.unsent = batch + self.unsent
                await asyncio.sleep(0.1)
                self.ready.set()


class FloorHead:
    """Deals jobs round-robin to the workers and hands each job's value reference to the client."""

    def __init__(self, namespace: str, workers: list[str]) -> None:
        self.workers = [ray.get_actor(name, namespace=namespace) for name in workers]
        self.refs: dict[str, list] = {}
        self.waiting: dict[str, asyncio.Event] = {}
        self.turn = itertools.count()

    async def submit(self, task_id: str, payload: bytes) -> dict:
        return (await self.submit_many([(task_id, payload)]))[0]

    async def submit_many(self, items: list[tuple[str, bytes]]) -> list[dict]:
        groups: dict[int, list[dict]] = {}
        for task_id, payload in items:
            groups.setdefault(next(self.turn) % len(self.workers), []).append(
                {"task_id": task_id, "payload": payload})
        for worker, specs in groups.items():
            asyncio.create_task(self._dispatch(self.workers[worker], specs))
        return [{"admitted": True}] * len(items)

    async def _dispatch(self, worker, specs: list[dict]) -> None:
        for spec, ref in zip(specs, await worker.start_many.remote(specs)):
            if ref is not None:
                self._ready(spec["task_id"], ref)

    async def on_reports(self, reports: list[dict]) -> bool:
        for report in reports:
            if report["ref"] is not None:
                self._ready(report["task_id"], report["ref"])
        return True

    def _ready(self, task_id: str, ref: list) -> None:
        self.refs[task_id] = ref
        event = self.waiting.pop(task_id, None)
        if event is not None:
            event.set()

    async def wait_results(self, task_ids: list[str]) -> dict[str, list]:
        out = {}
        deadline = time.monotonic() + WAIT_S
        for task_id in task_ids:
            while task_id not in self.refs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:  # a benchmark run fails rather than hangs
                    raise TimeoutError(f"floor: job {task_id} has no result after {WAIT_S:.0f} s")
                try:
                    await asyncio.wait_for(self.waiting.setdefault(task_id, asyncio.Event()).wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            out[task_id] = self.refs.pop(task_id)
        return out


def start_floor(namespace: str, executors: Sequence[tuple[str, int]]) -> list:
    """The floor's actors in ``namespace``: one worker per ``(node_id, cpus)`` (cpus >= 1: the tasks it runs at
    once); returns every handle. What was started is stopped again if a later actor fails to start."""
    if any(int(cpus) < 1 for _, cpus in executors):
        raise ValueError(f"floor executors need at least 1 CPU each; received {list(executors)!r}")
    handles = [ray.remote(FloorTracker).options(name=TRACKER, namespace=namespace, num_cpus=0).remote(namespace)]
    try:
        names = worker_names(len(executors))
        handles += [ray.remote(FloorWorker).options(
            name=name, namespace=namespace, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(namespace, node_id, int(cpus))
            for name, (node_id, cpus) in zip(names, executors)]
        ray.get([w.__ray_ready__.remote() for w in handles[1:]])
        head = ray.remote(FloorHead).options(name=HEAD, namespace=namespace, num_cpus=0).remote(namespace, names)
        handles.insert(0, head)
        ray.get(head.__ray_ready__.remote())
    except BaseException:
        stop_floor(handles)
        raise
    return handles


def stop_floor(handles: Sequence) -> None:
    for handle in handles:
        ray.kill(handle)


class Floor:
    """A benchmark mode (``one``/``many``, like ``end_to_end.BareRay``) on the floor's actors; ``batch``:
    one ``submit_many`` for the lot, as ``Client.map``; else one ``submit`` call per job."""

    def __init__(self, name: str, namespace: str, batch: bool = False) -> None:
        self.name, self.batch = name, batch
        self.head = ray.get_actor(HEAD, namespace=namespace)

    @staticmethod
    def _payload(fn: Callable, x: Any) -> tuple[str, bytes]:
        return f"floor-{next(_ids)}", cloudpickle.dumps((fn, (x,), {}))

    def one(self, fn: Callable, x: Any):
        from benchmarks.end_to_end import Sample, _check  # (end_to_end imports this module)
        submitted = time.time()
        task_id, payload = self._payload(fn, x)
        ray.get(self.head.submit.remote(task_id, payload))
        accepted = time.time()
        ref = ray.get(self.head.wait_results.remote([task_id]))[task_id][0]
        value, entered = ray.get(ref)  # the job's own answer: its argument and when it started
        returned = time.time()
        _check(value, x, self.name)
        return Sample(submitted, accepted, entered, returned)

    def many(self, fn: Callable, xs: Sequence[Any]) -> list:
        items = [self._payload(fn, x) for x in xs]
        if self.batch:
            ray.get(self.head.submit_many.remote(items))
        else:
            for item in items:
                ray.get(self.head.submit.remote(*item))
        refs = ray.get(self.head.wait_results.remote([task_id for task_id, _ in items]))
        return ray.get([refs[task_id][0] for task_id, _ in items])
