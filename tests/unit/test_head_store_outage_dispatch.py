"""After a call whose writes the store refused and whose rebuild failed too (``_stale``), nothing acts on
the memory the next call throws away: no dispatch of a placement the store never took (it was sent twice,
the same attempt), no check against an executor the rebuild drops."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import BASE, join, open_head, report, task


def _down(*args, **kwargs):
    raise sqlite3.OperationalError("disk I/O error")


def _starts(worker: FakeWorker, task_id: str) -> list:
    return [s["attempt"] for name, args in worker.calls if name == "start_many" for s in args[0]
            if s["task_id"] == task_id]


def test_a_placement_the_store_never_took_is_not_dispatched_before_the_rebuild(tmp_path, monkeypatch):
    """The failed call placed Q on e1 in memory only; its dispatch went out from that memory, then the
    next call's rebuild put Q back in the queue and placed it on e1 again: the same attempt sent twice
    (a real worker refuses it as already running, and the head requeues a task that runs)."""
    async def main():
        h = await open_head(f"sqlite:///{tmp_path}/state.db", {})
        await h.set_policy(BASE)
        e1 = FakeWorker("e1")
        await join(h, e1, "us-west")
        await h.submit(task("A"), b"a")
        await h.submit(task("Q"), b"q")  # waits for e1
        await settle()
        monkeypatch.setattr(h.store, "put_job", _down)
        monkeypatch.setattr(h.store, "active_policies", _down)
        with pytest.raises(sqlite3.OperationalError):
            await h.on_reports([report("A", "e1", 1)])  # A settled, Q placed: in memory only
        await settle()
        monkeypatch.undo()  # the store is back
        await h.heartbeat({"executor_id": "e1", "queue_depth": 0})
        await h.on_reports([report("A", "e1", 1)])  # the tracker resends
        await settle()
        assert h.store.get_job("A")["state"] == "succeeded" and h.core.job("Q").state is JobState.RUNNING
        assert _starts(e1, "Q") == [1], f"Q's attempts sent to e1: {_starts(e1, 'Q')}"
    asyncio.run(main())


def test_a_heartbeat_is_checked_against_the_rebuilt_memory(tmp_path, monkeypatch):
    """e2's registration was refused by the store; the heartbeat's check found e2 in the stale memory, the
    rebuild in _writes then dropped it: KeyError to the worker and a second rebuild of a healthy store."""
    async def main():
        h = await open_head(f"sqlite:///{tmp_path}/state.db", {})
        await h.set_policy(BASE)
        await join(h, FakeWorker("e1"), "us-west")
        monkeypatch.setattr(h.store, "put_executor", _down)
        monkeypatch.setattr(h.store, "active_policies", _down)
        with pytest.raises(sqlite3.OperationalError):
            await join(h, FakeWorker("e2"), "us-west")
        monkeypatch.undo()
        assert await h.heartbeat({"executor_id": "e2", "queue_depth": 0}) is False  # not registered
        assert h.resyncs == 1
    asyncio.run(main())
