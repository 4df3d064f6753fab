"""The result reference of a task an executor launched from its own queue comes back with the next
dispatch to that executor (the slot it freed is refilled in the same round), not in a call of its own;
without a dispatch to ride on, or from a worker of an earlier release, ``result_refs`` fetches it.
The real Head, with FakeWorker handles (as in test_head_interleavings)."""
from __future__ import annotations

import asyncio

from tests.unit.test_head_interleavings import (FakeWorker, add_executor, make_head, no_ray_started,  # noqa: F401
                                                report, settle, task)


async def queued_head(worker: FakeWorker, *task_ids: str):
    """A head whose one 1-CPU executor takes one round ahead and answers every task QUEUED."""
    h = await make_head()
    await add_executor(h, worker, dispatch_ahead=1)
    for task_id in task_ids:
        await h.submit(task(task_id), task_id.encode())
    await settle()
    return h


def calls(worker: FakeWorker, name: str) -> list:
    return [args for n, args in worker.calls if n == name]


def test_the_reference_rides_on_the_dispatch_that_refills_the_slot():
    async def main():
        e1 = FakeWorker("e1", queue_all=True)
        h = await queued_head(e1, "A", "B", "C")  # A and B handed over, C waits at the head
        assert h.core.job("C").executor_id is None
        e1.calls.clear()
        await h.on_reports([report("A", "e1", 1)])
        await settle()
        (specs, _capacity, ended), = calls(e1, "start_many")
        assert [s["task_id"] for s in specs] == ["C"] and ended == ["A"]
        assert calls(e1, "result_refs") == []
        answer = await h.wait_result("A", 0.5)
        assert answer["state"] == "succeeded" and answer["ref"] == e1.ref("A", "fetched")
    asyncio.run(main())


def test_without_a_dispatch_to_ride_on_the_reference_is_fetched_on_its_own():
    async def main():
        e1 = FakeWorker("e1", queue_all=True)
        h = await queued_head(e1, "A")
        e1.calls.clear()
        await h.on_reports([report("A", "e1", 1)])
        await settle()
        assert calls(e1, "result_refs") == [(["A"],)] and calls(e1, "start_many") == []
        assert (await h.wait_result("A", 0.5))["ref"] == e1.ref("A", "fetched")
    asyncio.run(main())


class EarlierWorker(FakeWorker):
    """A worker of an earlier release: its start_many takes no ``ended`` (the call raises TypeError as it is
    made, as Ray's does when the arguments do not fit the actor method's signature)."""

    async def _start_many(self, specs, capacity=None):
        return await super()._start_many(specs, capacity)


def test_a_worker_of_an_earlier_release_is_asked_with_result_refs():
    async def main():
        e1 = EarlierWorker("e1", queue_all=True)
        h = await queued_head(e1, "A", "B", "C")
        e1.calls.clear()
        await h.on_reports([report("A", "e1", 1)])
        await settle()
        assert calls(e1, "result_refs") == [(["A"],)]
        assert h.core.job("C").executor_id == "e1"  # C was handed over all the same
        assert (await h.wait_result("A", 0.5))["ref"] == e1.ref("A", "fetched")
    asyncio.run(main())


def test_a_dispatch_that_fails_still_gets_the_reference_another_way():
    async def main():
        e1 = FakeWorker("e1", queue_all=True)
        h = await queued_head(e1, "A", "B", "C")
        e1.calls.clear()

        async def broken(specs, capacity=None, ended=None):
            raise RuntimeError("the worker's answer could not be read")
        e1._start_many = broken
        await h.on_reports([report("A", "e1", 1)])
        await settle()
        assert calls(e1, "result_refs") == [(["A"],)]
        assert (await h.wait_result("A", 0.5))["ref"] == e1.ref("A", "fetched")
    asyncio.run(main())
