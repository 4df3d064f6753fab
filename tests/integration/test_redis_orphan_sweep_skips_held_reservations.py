"""The Redis orphan sweep sends only reservations that look orphaned to its release script: one held by a
job queued or running (its task in ``jobs:unfinished``, as nearly every reservation is) is passed over by
the sweep's first read, however old, so tens of thousands of held reservations no longer reach the script
each minute. The script still checks each candidate atomically (test_redis_orphan_reservations.py has the
race). A real redis-server, no Ray."""

from __future__ import annotations

import pytest
import redis

from scheduler.ledger import Cost
from scheduler.state_store import open_store

pytestmark = pytest.mark.integration
P = "2026-11"


@pytest.fixture
def store(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    s = open_store(redis_server.url)
    yield s
    s.close()


def record(store, task_id: str, state: str) -> None:
    store.put_job(task_id, {"task_id": task_id, "coop_id": "c", "member": "m", "state": state, "submitted_at": 1.0})


def test_reservations_of_unfinished_jobs_never_reach_the_release_script_and_orphans_still_go(store, monkeypatch):
    for i in range(450):  # more than two pages of the sweep
        store.reserve(f"held-{i}", "c", "m", P, Cost(10, 0, 0))
        record(store, f"held-{i}", "queued" if i % 2 else "running")
    for task_id in ("lost-a", "lost-b"):  # no record at all, and a finished one that owns nothing
        store.reserve(task_id, "c", "m", P, Cost(1, 0, 0))
    record(store, "lost-b", "rejected")
    sent: list[str] = []
    script = store._release_orphaned

    def recording(keys, args):
        sent.extend(args[1:])  # ARGV: the grace, then one task id per candidate
        return script(keys=keys, args=args)
    monkeypatch.setattr(store, "_release_orphaned", recording)

    assert store.release_orphaned_reservations(0.0) == ["lost-a", "lost-b"]  # every one is older than 0 s
    assert sorted(sent) == ["lost-a", "lost-b"]  # before the fix: all 452
    assert store.standing("c", "m", P)[1] == Cost(4_500, 0, 0)
