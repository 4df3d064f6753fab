"""The head when its store fails under a call (a full disk inside a submission's group commit).

The call must fail loudly, and the head's memory must not keep what the call decided and the
store did not take: no job the store never admitted may run or hold quota, and the head goes on
working once the store has room again. The ``Head`` is the real class on an asyncio loop (as in
test_head_interleavings), on a real SQLite file that is made to fill up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from tests.unit.test_head_interleavings import COOP, FakeWorker, add_executor, no_ray_started, report, settle, task  # noqa: F401
from scheduler.head import Head


async def sqlite_head(path) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=f"sqlite:///{path}")
    head._watchdog = object()
    await head.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                              "max_concurrent_tasks": 100}})
    return head


def fill_up(head: Head) -> None:
    conn = head.store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")


def make_room(head: Head) -> None:
    head.store._conn.execute("PRAGMA max_page_count = 1000000")


def test_a_submission_the_store_could_not_take_leaves_no_job_behind(tmp_path):
    async def main():
        h = await sqlite_head(tmp_path / "s.db")
        e1 = FakeWorker("e1")
        await add_executor(h, e1, cpus=4)
        await h.submit(task("warm"), b"w")
        held = h.core.ledger.standing(COOP, "alice", time.time()).reserved
        fill_up(h)
        with pytest.raises(sqlite3.Error):
            await h.submit(task("big"), b"x" * 50_000)  # its payload does not fit on the disk
        await settle()
        make_room(h)
        assert h.core.job("big") is None  # the store never took it: the head does not hold it either
        assert h.core.ledger.standing(COOP, "alice", time.time()).reserved == held  # no quota held for it
        assert all(s["task_id"] != "big" for name, args in e1.calls if name == "start_many" for s in args[0])
        await h.submit(task("next"), b"n")  # the head goes on working
        await settle()
        assert h.core.job("next").state.value == "running"
        assert h.core.job("warm").state.value == "running"  # what the store held before is kept
        status = await h.status("big")
        assert status is None
        resubmitted = await h.submit(task("big"), b"x" * 50_000)  # there is room now: it is admitted
        assert resubmitted["admitted"]
    asyncio.run(main())


def test_a_report_whose_job_record_the_store_refused_is_settled_once_when_sent_again(tmp_path, monkeypatch):
    async def main():
        h = await sqlite_head(tmp_path / "s.db")
        e1 = FakeWorker("e1")
        await add_executor(h, e1, cpus=4)
        await h.submit(task("A"), b"a")
        await settle()
        put_job = h.store.put_job

        def io_error(task_id, record):
            raise sqlite3.OperationalError("disk I/O error")
        monkeypatch.setattr(h.store, "put_job", io_error)
        with pytest.raises(sqlite3.OperationalError):
            await h.on_reports([report("A", "e1", 1)])  # settled in the ledger; its record not written
        monkeypatch.setattr(h.store, "put_job", put_job)
        assert h.core.job("A").state.value == "running"  # as the store holds it: the report is not lost
        assert await h.on_reports([report("A", "e1", 1)]) == [True]  # the tracker sends it again
        usage = await h.usage(COOP, "alice")
        assert usage["cpu_hours"] == pytest.approx(1 / 3600, abs=1e-6)  # charged once, not twice
        assert h.store.get_job("A")["state"] == "succeeded"  # a restarted head would not run it again
        assert h.resyncs == 1 and (await h.ping())["store_resyncs"] == 1
        assert h.metrics.registry.get_sample_value("coopsched_store_resyncs_total") == 1
    asyncio.run(main())
