"""The head's dispatch, results and persistence under interleavings a real cluster produces only by
chance: a worker that answers late or hangs, an executor removed while its task is retried, a
reference still on its way, a heartbeat that places work, a tracker restarted mid-forward.

The ``Head`` and ``Tracker`` here are the real classes (not their Ray actors) on an asyncio
loop, with a memory or SQLite store; only the worker and head *handles* are stand-ins, so
each interleaving happens in a fixed order. The same paths run on Ray, in their ordinary
order, in tests/integration (test_runtime, test_worker).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

import scheduler.client as client_module
import scheduler.head as head_module
from policies.reasons import Decision
from scheduler.job_handle import JobFailed, JobHandle
from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from scheduler.tracker import Tracker

COOP = "coop:t"
_stores = itertools.count()


@pytest.fixture(autouse=True)
def no_ray_started():
    """These tests need no Ray: a code path that reaches for the cluster (``ray.get_actor``, ``ray.put``)
    would start one here, which fails the test (in the full suite Ray already runs: nothing to see)."""
    import ray
    was = ray.is_initialized()
    yield
    assert was or not ray.is_initialized(), "the head reached for a Ray cluster on a path that needs none"


class _Method:
    def __init__(self, worker: FakeWorker, name: str) -> None:
        self.worker, self.name = worker, name

    def remote(self, *args, **kwargs):
        self.worker.calls.append((self.name, args))
        return getattr(self.worker, "_" + self.name)(*args, **kwargs)


class FakeWorker:
    """A worker actor's handle: ``hold_start`` keeps ``start_many``'s answer until ``release``;
    ``queue_all`` answers QUEUED (kept in its own queue); ``hang_missing`` never answers ``missing``."""

    def __init__(self, executor_id: str, queue_all: bool = False) -> None:
        self.executor_id, self.queue_all = executor_id, queue_all
        self.hold_start = self.hang_missing = False
        self.calls: list = []
        self.release, self.refs_gate = asyncio.Event(), asyncio.Event()
        self.refs_gate.set()
        for name in ("start_many", "missing", "result_refs", "result_ref", "cancel"):
            setattr(self, name, _Method(self, name))

    def ref(self, task_id: str, attempt) -> list:
        return [f"ref:{self.executor_id}:{task_id}:{attempt}"]

    async def _start_many(self, specs, capacity=None, ended=None):
        if self.hold_start:
            await self.release.wait()
        started = ["queued" if self.queue_all else self.ref(s["task_id"], s["attempt"]) for s in specs]
        return started if ended is None else {"started": started, "refs": [self.ref(t, "fetched") for t in ended]}

    async def _missing(self, task_ids):
        if self.hang_missing:
            await asyncio.sleep(3600)
        return []

    async def _result_refs(self, task_ids):
        await self.refs_gate.wait()
        return [self.ref(t, "fetched") for t in task_ids]

    async def _result_ref(self, task_id):
        return self.ref(task_id, "asked")

    async def _cancel(self, task_id, grace_s=None):
        return True


async def make_head() -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=f"memory://interleavings-{next(_stores)}")
    head._watchdog = object()  # no background watchdog: tests run _watch_once themselves
    head.core.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                             "max_concurrent_tasks": 100}})
    return head


async def add_executor(head: Head, worker: FakeWorker, cpus: float = 1, **kw) -> None:
    spec = ExecutorSpec(executor_id=worker.executor_id, coop_id=COOP, region="us-west", node_id="n1",
                        resources={"cpus": cpus}, **kw)
    await head.register_executor(spec.model_dump(mode="json"))
    head._workers[worker.executor_id] = worker  # (registering drops a cached handle)


def task(task_id: str) -> dict:
    return {"task_id": task_id, "coop_id": COOP, "member": "alice", "resources": {"cpus": 1},
            "max_runtime_s": 60, "max_retries": 2}


def report(task_id: str, executor_id: str, attempt: int) -> dict:
    now = time.time()
    return {"task_id": task_id, "executor_id": executor_id, "coop_id": COOP, "member": "alice",
            "started_at": now - 1, "ended_at": now, "cpu_seconds": 1.0, "outcome": "succeeded", "attempt": attempt}


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def running_a(queue_all: bool = False) -> tuple[Head, FakeWorker]:
    """A head whose one executor, e1, was handed job "A"."""
    h = await make_head()
    e1 = FakeWorker("e1", queue_all=queue_all)
    await add_executor(h, e1)
    await h.submit(task("A"), b"a")
    await settle()
    return h, e1


def test_a_late_dispatch_answer_from_a_lost_executor_never_stands_in_for_the_retry(monkeypatch):
    monkeypatch.setattr(head_module, "PING_TIMEOUT_S", 0.05)

    async def main():
        h = await make_head()
        e1 = FakeWorker("e1")
        await add_executor(h, e1, cpus=2)
        await h.submit(task("A"), b"a")
        await settle()
        e1.hold_start = e1.hang_missing = True  # e1 hangs from now on, with B's dispatch in flight
        await h.submit(task("B"), b"b")
        await settle()
        e2 = FakeWorker("e2")
        await add_executor(h, e2, cpus=2)
        await h._watch_once()  # e1 does not answer: lost; A and B retried on e2
        await settle()
        assert h.core.job("B").executor_id == "e2" and h._results["B"] == e2.ref("B", 2)
        e1.release.set()  # e1's late answer to B's first dispatch
        await settle()
        answer = await h.wait_result("B", 0.2)
        assert answer["attempt"] == 2 and answer["ref"] == e2.ref("B", 2)
        assert ("cancel", ("B",)) in e1.calls  # the stale attempt is stopped where it runs
    asyncio.run(main())


def test_a_removed_executors_reference_never_answers_for_the_retry(monkeypatch):
    monkeypatch.setattr(head_module.ray, "kill", lambda *a, **k: None)

    async def main():
        h, e1 = await running_a()
        e2 = FakeWorker("e2", queue_all=True)
        await add_executor(h, e2, dispatch_ahead=1)
        assert await h.remove_executor("e1") == ["A"]
        await settle()
        assert h.core.job("A").executor_id == "e2" and "A" not in h._results
        await h.on_reports([report("A", "e2", 2)])
        await settle()
        answer = await h.wait_result("A", 0.5)
        assert answer["state"] == "succeeded" and answer["ref"] == e2.ref("A", "fetched")
    asyncio.run(main())


def test_a_wait_that_ends_while_the_reference_is_on_its_way_says_so():
    async def main():
        h, e1 = await running_a(queue_all=True)
        e1.refs_gate.clear()  # result_refs answers a little later
        await h.on_reports([report("A", "e1", 1)])
        early = await h.wait_result("A", 0.1)
        e1.refs_gate.set()
        await settle()
        assert early["pending"] and early["ref"] is None
        assert (await h.wait_result("A", 0.2))["ref"] == e1.ref("A", "fetched")
    asyncio.run(main())


def test_a_placement_made_in_a_heartbeat_round_is_written_to_the_store(monkeypatch):
    monkeypatch.setattr(head_module, "PING_TIMEOUT_S", 0.05)

    async def main():
        h, e1 = await running_a()
        e1.hang_missing = True
        await h._watch_once()  # e1 hangs: lost, A back in the queue
        assert h.store.get_job("A")["state"] == "queued"
        e1.hang_missing = False
        h._workers["e1"] = e1
        await h.heartbeat({"executor_id": "e1", "queue_depth": 0})  # back: A placed there again
        await settle()
        assert h.core.job("A").attempts == 2
        assert h.store.get_job("A")["state"] == "running"  # a head restarted now would not run it twice
    asyncio.run(main())


def test_resubmitting_a_finished_job_stores_nothing_again():
    async def main():
        h = await make_head()
        await add_executor(h, FakeWorker("e1"))
        first = await h.submit(task("A"), b"payload")
        await settle()
        await h.on_reports([report("A", "e1", 1)])
        assert await h.submit(task("A"), b"payload") == first  # the client retried: the first decision
        assert h.store.get_payload("A") is None and "A" not in h._payloads
    asyncio.run(main())


class ThreadedHead:
    """The head on an event loop of its own thread; ``_call`` is what ``Client._call`` does, minus Ray."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.head = self.do(make_head())

    def do(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def _call(self, method: str, *args, **kwargs):
        return self.do(getattr(self.head, method)(*args, **kwargs))

    def handle(self, task_id: str) -> JobHandle:
        return JobHandle(self, Decision(task_id=task_id, coop_id=COOP, admitted=True))  # type: ignore[arg-type]

    def close(self) -> None:
        async def stop() -> None:
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        self.do(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_result_with_a_short_timeout_times_out_while_the_reference_is_on_its_way():
    th = ThreadedHead()
    try:
        e1 = FakeWorker("e1", queue_all=True)
        th.do(add_executor(th.head, e1))
        th.do(th.head.submit(task("A"), b"a"))
        th.do(settle())
        e1.refs_gate.clear()
        th.do(th.head.on_reports([report("A", "e1", 1)]))
        with pytest.raises(TimeoutError):  # not "succeeded but its result is no longer available"
            th.handle("A").result(timeout=0.3)
    finally:
        th.close()


def test_result_of_a_succeeded_job_whose_value_is_gone_fails_at_once(monkeypatch):
    th = ThreadedHead()
    try:
        th.do(add_executor(th.head, FakeWorker("e1")))
        th.do(th.head.submit(task("A"), b"a"))
        th.do(settle())
        th.do(th.head.on_reports([report("A", "e1", 1)]))

        def owner_died(ref, timeout=None):  # what ray.get answers once the value's owner (the worker) died
            raise client_module.RayError(f"the owner of {ref} died")
        monkeypatch.setattr(client_module.ray, "get", owner_died)
        started = time.monotonic()
        with pytest.raises(JobFailed, match="no longer available"):
            th.handle("A").result(timeout=5.0)
        assert time.monotonic() - started < 2.0
    finally:
        th.close()


def test_a_restarted_tracker_forwards_what_it_had_stored_without_being_called(tmp_path):
    url = f"sqlite:///{tmp_path}/tracker.db"
    forwarded: list[str] = []

    class Head_:
        class on_reports:  # noqa: N801  # an actor method handle: .remote(reports) -> awaitable
            @staticmethod
            def remote(reports):
                forwarded.extend(r["task_id"] for r in reports)

                async def answer():
                    return [True] * len(reports)
                return answer()

    async def main():
        first = Tracker.__new__(Tracker)
        await first.__init__(store_url=url, resend_interval_s=0.1)
        first._loop_task = object()  # it dies before forwarding (no loop of its own runs)
        assert first._store(report("A", "e1", 1), None) is True  # stored and acknowledged to the worker
        restarted = Tracker.__new__(Tracker)
        await restarted.__init__(store_url=url, resend_interval_s=0.1)  # as Ray restarts it
        restarted._head = Head_()
        for _ in range(50):
            if forwarded:
                break
            await asyncio.sleep(0.05)
        assert forwarded == ["A"]
    asyncio.run(main())


def test_one_report_with_an_unstorable_signature_does_not_fail_the_whole_delivery(tmp_path):
    """A pair whose signature was not a signed envelope (bytes) made report_many raise as it stored it: the
    good reports of the same delivery were never acknowledged and the worker resent the batch forever."""
    async def main():
        tracker = Tracker.__new__(Tracker)
        await Tracker.__init__(tracker, store_url=f"sqlite:///{tmp_path}/t.db", resend_interval_s=0.05)
        tracker._loop_task = object()  # no forwarding: only storing is looked at
        answers = await tracker.report_many([(report("A", "e1", 1), None), (report("B", "e1", 1), b"not-one"),
                                             (report("C", "e1", 1), None)])
        assert answers == [True, False, True]
    asyncio.run(main())


def test_an_executor_without_a_worker_is_declared_lost_at_dispatch():
    """The head raised Ray's ActorUnavailableError with a message only (it wants an actor id too): the raise
    itself was a TypeError, so the executor was never declared lost and its tasks were placed on it again
    and again until they gave up ('dispatch failed: ... missing 1 required positional argument')."""
    from scheduler.executor_spec import ExecutorStatus

    async def main():
        h = await make_head()
        await add_executor(h, FakeWorker("e1"))
        h._worker = lambda executor_id: None  # no worker actor for e1 (ray.get_actor found none)
        await h.submit(task("A"), b"a")
        await settle(50)
        history = [e.message for e in h.core.job("A", explain=False).history]
        assert not any("missing 1 required positional argument" in m for m in history), history
        assert h.core.table.status_of("e1") is ExecutorStatus.OFFLINE
        assert h.core.job("A").state.value == "queued"  # waits for an executor with a worker
    asyncio.run(main())


def test_an_executor_registered_again_with_more_resources_tells_its_worker_at_once():
    """Its worker's queue holds what was dispatched ahead; with the new capacity it starts what now fits
    without waiting for the head's next dispatch (a worker learns its capacity only from the head)."""
    async def main():
        h = await make_head()
        e1 = FakeWorker("e1")
        await add_executor(h, e1, cpus=1)
        await add_executor(h, e1, cpus=1)  # the same resources: nothing to tell
        await asyncio.sleep(0)
        assert e1.calls == []
        await add_executor(h, e1, cpus=4)
        for _ in range(3):
            await asyncio.sleep(0)
        assert e1.calls == [("start_many", ([], {"cpus": 4.0, "gpus": 0.0, "memory_mb": 0}))]
    asyncio.run(main())


def test_a_dry_run_counts_what_open_jobs_outside_it_hold():
    """``shadow_policy`` replays the last jobs only: job A, still running and not replayed, holds its 60 s
    reservation, which the dry run now counts (before, a quota that A's hold fills was judged empty)."""
    async def main():
        h, _ = await running_a()
        await h.submit(task("B"), b"b")  # the one replayed (last_n=1)
        await settle()
        one_job = 60 / 3600  # CPU-hours of one 60 s, 1-CPU job
        policy = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1.5 * one_job,
                                                     "max_concurrent_tasks": 100}}
        (outcome,) = await h.shadow_policy(policy, last_n=1)
        assert outcome["task_id"] == "B" and outcome["change"] == "now refused", outcome
        assert "quota:cpu" in outcome["after"]
    asyncio.run(main())
