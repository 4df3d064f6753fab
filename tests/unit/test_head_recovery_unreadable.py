"""A head restarting on a store that holds a job record it cannot take back still starts."""
from __future__ import annotations

import asyncio
import logging

import pytest

from scheduler.state_store import open_store
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started  # noqa: F401
from tests.unit.test_head_recovery import COOP, head_with_jobs, open_head


@pytest.mark.parametrize("spoil", [
    lambda r: r["task"]["resources"].update(cpus=True),   # a boolean this release refuses where a number goes
    lambda r: r.pop("decision"),                           # a record written by another release
    lambda r: r.update(cost=None),
], ids=["task refused now", "no decision", "no cost"])
def test_a_head_restarts_past_a_stored_job_it_cannot_restore(tmp_path, caplog, spoil):
    url = f"sqlite:///{tmp_path}/state.db"

    async def first():
        h = await head_with_jobs(url, "good", "bad")  # good runs on e1, bad waits, queued
        h.store.close()

    asyncio.run(first())
    store = open_store(url)
    record = store.get_job("bad")
    spoil(record)
    store.put_job("bad", record)
    store.close()

    async def restart():
        return await open_head(url, {"e1": FakeWorker("e1")})

    with caplog.at_level(logging.ERROR):
        head = asyncio.run(restart())  # before the fix: ValidationError / KeyError / TypeError, the head never starts
    assert head.core.task("good") is not None
    assert "bad" in caplog.text


def test_a_head_restarts_past_an_executor_status_it_does_not_know(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    store.put_executor({"executor_id": "e1", "coop_id": COOP, "region": "us-west", "node_id": "e1",
                        "resources": {"cpus": 1}}, "retired")  # a status of another release
    store.close()
    with caplog.at_level(logging.ERROR):
        head = asyncio.run(open_head(url, {}))  # before the fix: ValueError: 'retired' is not a valid ExecutorStatus
    assert "e1" in caplog.text
    assert head is not None


def test_a_running_job_whose_placement_cannot_be_read_is_not_left_half_restored(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/state.db"

    async def first():
        h = await head_with_jobs(url, "run")  # runs on e1
        h.store.close()

    asyncio.run(first())
    store = open_store(url)
    record = store.get_job("run")
    record["placement"] = {**record["placement"], "attempt": "first"}
    store.put_job("run", record)
    store.close()
    head = asyncio.run(open_head(url, {"e1": FakeWorker("e1")}))
    assert head.core.task("run") is None  # skipped whole, not a running job with no placement (never settles)
