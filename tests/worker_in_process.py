"""The real ``ExecutorWorker`` on a plain asyncio loop, without a cluster: each Ray task it launches is a
pair of futures the test resolves (``Harness.finish``); Ray's own option checks still run on every
``.options()``, and ``ray.cancel`` resolves the task as killed (unless ``kill_lands=False``)."""
from __future__ import annotations

import asyncio
import types
from typing import Any

import ray

import executors.worker as W


class FakeTask:
    def __init__(self, harness: "Harness", options: dict) -> None:
        self.h = harness
        self.options = options

    def remote(self, payload: Any, context: dict | None = None):  # (context: executors.task_context)
        loop = asyncio.get_running_loop()
        value, metrics = loop.create_future(), loop.create_future()
        self.h.launched.append((payload, self.options, value, metrics))
        self.h.contexts.append(context)
        self.h.by_value[id(value)] = metrics
        return value, metrics


class FakeMeasured:
    """Stands in for ray.remote(run_measured): .options() validates with Ray's real option checks."""

    def __init__(self, harness: "Harness") -> None:
        self.h = harness

    def options(self, **kw: Any) -> FakeTask:
        W.__dict__["_real_measured"].options(**kw)  # Ray's own validation of the options (no cluster needed)
        return FakeTask(self.h, kw)


class FakeTracker:
    def __init__(self) -> None:
        self.received: list[dict] = []
        self.report_many = types.SimpleNamespace(remote=self._report_many)

    def _report_many(self, items):
        self.received.extend(r for r, _ in items)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result([True] * len(items))
        return fut


class Harness:
    def __init__(self, monkeypatch, *, tracker: bool = True, kill_lands: bool = True) -> None:
        self.launched: list = []
        self.contexts: list = []  # what each launched task was told of itself (executors.task_context)
        self.by_value: dict = {}
        self.cancels: list = []
        self.forced: list = []  # each cancel's force
        self.tracker = FakeTracker() if tracker else None
        self.kill_lands = kill_lands
        W.__dict__.setdefault("_real_measured", W._measured_task)
        monkeypatch.setattr(W, "_measured_task", FakeMeasured(self))
        monkeypatch.setattr(ray, "get_runtime_context",
                            lambda: types.SimpleNamespace(get_node_id=lambda: "ab" * 28,
                                                          get_actor_id=lambda: None))  # (not inside an actor)

        def get_actor(name, namespace=None):
            if name == W.DEFAULT_TRACKER_NAME and self.tracker is not None:
                return self.tracker
            raise ValueError(name)

        monkeypatch.setattr(ray, "get_actor", get_actor)

        def cancel(ref, force=False):
            self.cancels.append(ref)
            self.forced.append(force)
            metrics = self.by_value.get(id(ref))
            if force and self.kill_lands and metrics is not None and not metrics.done():  # (a cancel without
                # force only asks the task to end: the test ends it, or not)
                err = RuntimeError("TaskCancelledError")
                ref.set_exception(err) if not ref.done() else None
                metrics.set_exception(err)

        monkeypatch.setattr(ray, "cancel", cancel)

    async def worker(self, **kw: Any) -> W.ExecutorWorker:
        w = W.ExecutorWorker.__new__(W.ExecutorWorker)
        await w.__init__("exec-1", heartbeat_interval_s=3600, report_retry_s=0.05, **kw)
        return w

    def finish(self, index: int, *, started_at: float, ended_at: float, cpu: float = 0.0, value: Any = 1) -> None:
        _, _, v, m = self.launched[index]
        v.set_result(value)
        m.set_result({"started_at": started_at, "ended_at": ended_at, "cpu_time_s": cpu, "peak_memory_mb": 10.0,
                      "memory_method": "hwm", "pid": 1, "error": None})


def spec(task_id: str, cpus: float = 1.0, max_runtime_s: float | None = 60.0, **kw: Any) -> dict:
    return {"task_id": task_id, "coop_id": "research:biolab", "member": "did:icn:alice", "attempt": 1,
            "cpus": cpus, "gpus": 0.0, "memory_mb": 0, "max_runtime_s": max_runtime_s,
            "payload": [(abs, (-1,), {})], **kw}


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def until(condition, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (on a loaded machine a fixed sleep is a guess), or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {getattr(condition, '__doc__', None) or condition}")
        await asyncio.sleep(0.01)


async def stop(w: W.ExecutorWorker) -> None:
    for t in w._loops:
        t.cancel()
    for a in list(w._running.values()):
        if a.watcher is not None:
            a.watcher.cancel()
    await asyncio.sleep(0)
