"""A restarted head keeps what coops borrowed over time (``scheduler.fair_borrowing``): the history its core
sampled is written to the store (``StateStore.put_head_state``) and read back when the head starts; one that
cannot be read is logged, started afresh, and written over. The Head is the real class without Ray, on a SQLite
file (FakeWorker handles, as in test_head_interleavings); its clock is moved on by hours, as ``time.time``."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import pytest

from scheduler.executor_spec import ExecutorSpec
from scheduler.head_state import BORROWING_STATE
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import open_head

LENDER, BORROWER = "coop:lender", "coop:early"


@pytest.fixture
def hours(monkeypatch):
    """Move the head's clock (``time.time``) on by so many hours: ``hours(2)``."""
    real, offset = time.time, [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])

    def advance(n: float) -> None:
        offset[0] += n * 3600
    return advance


def policy(coop: str) -> dict:
    return {"coop_id": coop, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 10}}


async def borrowed_for_two_hours(url: str, hours) -> tuple[dict[str, float], dict]:
    """On a head on ``url``, the borrower's job ran two hours on the lender's one executor, then ended; the
    head's borrowed history shares and what the store holds of it, then the head went away."""
    head = await open_head(url, {})
    for coop in (LENDER, BORROWER):
        await head.set_policy(policy(coop))
    spec = ExecutorSpec(executor_id="e1", coop_id=LENDER, region="us-west", node_id="e1", resources={"cpus": 1},
                        open_to=("*",))
    await head.register_executor(spec.model_dump(mode="json"))
    head._workers["e1"] = FakeWorker("e1")
    await head.submit({"task_id": "j1", "coop_id": BORROWER, "member": "eve", "resources": {"cpus": 1},
                       "max_runtime_s": 86400}, b"j1")
    await settle()
    assert head.core.job("j1").executor_id == "e1"
    hours(2)
    now = time.time()
    await head.on_reports([{"task_id": "j1", "executor_id": "e1", "coop_id": BORROWER, "member": "eve",
                            "started_at": now - 7200, "ended_at": now, "cpu_seconds": 7000.0,
                            "outcome": "succeeded", "attempt": 1}])
    shares, stored = head.core.borrowed_history_shares(), head.store.head_state(head.owner, BORROWING_STATE)
    head.store.close()
    return shares, stored


def test_a_restarted_head_keeps_what_coops_borrowed_over_time(tmp_path, hours):
    url = f"sqlite:///{tmp_path}/state.db"
    shares, stored = asyncio.run(borrowed_for_two_hours(url, hours))
    assert shares[BORROWER] == pytest.approx(0.75, abs=0.02)  # the whole fleet for two half-lives
    assert stored is not None and set(stored["used"]) == {BORROWER}  # written when the report's round sampled

    async def restart():
        head = await open_head(url, {})
        return head.core.borrowed_history_shares(), await head.ping()

    again, ping = asyncio.run(restart())
    assert again == pytest.approx(shares)  # before: {} (a restarted head forgot it)
    assert ping["recovered"]["borrowing"] == 1


def test_a_damaged_stored_history_is_started_afresh_and_written_over(tmp_path, hours, caplog):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(borrowed_for_two_hours(url, hours))
    db = sqlite3.connect(url[len("sqlite:///"):])
    db.execute("UPDATE head_state SET state = CAST('{\"half_life_s\": ' AS TEXT)")
    db.commit()
    db.close()

    async def restart():
        head = await open_head(url, {})
        recovered, shares = head.recovered, head.core.borrowed_history_shares()
        await head.set_policy(policy("coop:other"))  # a call: its round samples the fresh history, and writes it
        return recovered, shares, head.store.head_state(head.owner, BORROWING_STATE)

    with caplog.at_level(logging.ERROR):
        recovered, shares, stored = asyncio.run(restart())
    assert "JSONDecodeError" in recovered["damaged_borrowing"] and "borrowing" not in recovered
    assert shares == {}
    assert any("borrowing history" in r.getMessage() and "afresh" in r.getMessage() for r in caplog.records)
    assert stored is not None and "damaged" not in stored and stored["used"] == {}
