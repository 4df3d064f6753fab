"""Review of the result references that ride on the next dispatch (``start_many(..., ended=)``).

1. A worker that answers ``start_many(specs, capacity, ended)`` with a plain list (it took the call but
   not ``ended``: e.g. a worker whose ``start_many`` takes ``*args``), or with ``refs`` of the wrong
   shape, had its answer read as ``answer["refs"]``: the TypeError/KeyError sent every task the worker
   had just started back to the queue as "dispatch failed", and the head handed them over again (a
   second attempt of a task that runs; a real worker refuses it as already running, and the job burns
   its retries). Now what the worker started is taken from the answer, and the references it did not
   bring are asked with ``result_refs``.
2. The worker launched the specs before it looked at ``ended``'s items: an item it cannot look up (a
   list) raised after the launches, so the head requeued tasks that were running. Now ``ended`` is
   checked with the specs, before anything is launched.

The real Head with FakeWorker handles (as in test_refs_with_dispatch); the real worker in process.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, report, settle  # noqa: F401
from tests.unit.test_refs_with_dispatch import calls, queued_head
from tests.worker_in_process import Harness, spec, stop


class ListAnswering(FakeWorker):
    """Takes ``ended`` (the call is made) but answers as if it had not: the list of started tasks alone."""

    async def _start_many(self, specs, capacity=None, *rest):
        return await super()._start_many(specs, capacity)


class BadRefs(FakeWorker):
    """Answers the dict, but with ``refs`` that are not one per ended task."""

    def __init__(self, executor_id: str, refs, **kw) -> None:
        super().__init__(executor_id, **kw)
        self.bad_refs = refs

    async def _start_many(self, specs, capacity=None, ended=None):
        answer = await super()._start_many(specs, capacity, ended)
        if isinstance(answer, dict):
            answer = {"started": answer["started"], **({} if self.bad_refs is KeyError else {"refs": self.bad_refs})}
        return answer


@pytest.mark.parametrize("make", [
    lambda: ListAnswering("e1", queue_all=True),
    lambda: BadRefs("e1", None, queue_all=True),
    lambda: BadRefs("e1", KeyError, queue_all=True),
    lambda: BadRefs("e1", [], queue_all=True),
], ids=["a-list", "refs-none", "refs-missing", "refs-too-few"])
def test_an_answer_without_the_references_keeps_what_the_worker_started(make):
    async def main():
        e1 = make()
        h = await queued_head(e1, "A", "B", "C")  # A and B handed over, C waits at the head
        e1.calls.clear()
        await h.on_reports([report("A", "e1", 1)])
        await settle()
        handed = [s["task_id"] for args in calls(e1, "start_many") for s in args[0]]
        job = h.core.job("C")
        assert handed == ["C"], f"C was handed over {handed.count('C')} times"
        assert job.attempts == 1 and job.executor_id == "e1", job.history
        assert calls(e1, "result_refs") == [(["A"],)]  # the reference the answer did not bring
        answer = await h.wait_result("A", 0.5)
        assert answer["state"] == "succeeded" and answer["ref"] == e1.ref("A", "fetched")
        assert not h._fetching
    asyncio.run(main())


def test_the_worker_checks_ended_before_it_launches_anything(monkeypatch):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        with pytest.raises((TypeError, ValueError)) as raised:
            await w.start_many([spec("a")], {"cpus": 1, "gpus": 0, "memory_mb": 0}, [["job-7f3a"]])
        out = str(raised.value), len(h.launched), await w.running()
        await stop(w)
        return out
    message, launched, running = asyncio.run(main())
    assert launched == 0 and running == [], "the spec was launched before ended was refused"
    assert "ended" in message and "['job-7f3a']" in message and "e.g." in message
