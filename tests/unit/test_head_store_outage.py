"""When the store refuses a call's writes and cannot be read back either (Redis gone for a few seconds:
both fail), _resync keeps the head's memory as it was. The call's changes were already drained from
changed_jobs, so before, nothing ever wrote them: the store kept the job running with its reservation
held, and a restart ran it again. Now the next call rebuilds memory from the store first."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from scheduler.ledger import period_of
from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import COOP, head_with_jobs, report


def test_a_settlement_lost_to_a_double_store_failure_is_written_when_the_store_is_back(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        h = await head_with_jobs(url, "A")
        assert h.core.job("A").state is JobState.RUNNING

        def down(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")
        monkeypatch.setattr(h.store, "put_job", down)          # the call's write fails ...
        monkeypatch.setattr(h.store, "active_policies", down)  # ... and so does the read back (_recover)
        with pytest.raises(sqlite3.OperationalError):
            await h.on_reports([report("A", "e1", 1, cpu_seconds=36.0)])
        monkeypatch.undo()  # the store is back
        await h.on_reports([report("A", "e1", 1, cpu_seconds=36.0)])  # the tracker resends (not marked forwarded)
        await h.heartbeat({"executor_id": "e1", "queue_depth": 0})  # and the head goes on with other calls
        await settle()
        record = h.store.get_job("A")
        _, held, done = h.store.standing(COOP, "alice", period_of(time.time()))
        assert (record["state"], done) == ("succeeded", 1), \
            f"store: job {record['state']}, {done} settled, held {held}; memory: {h.core.job('A').state}"
    asyncio.run(main())
