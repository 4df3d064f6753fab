"""A job record written over one whose JSON is damaged replaces it, on every backend: a head that still holds
the job in memory writes its next state (as SQLite's INSERT OR REPLACE always did), and the state indices
follow the new record. On Redis ``put_job`` read the old record strictly to move its indices, so every write
of that job raised JSONDecodeError: the head's call failed, memory was rebuilt from the store, and the job
stayed "running" in the store, held on every executor, for good. No Ray; the Redis server is the session's
(tests/integration/conftest.py starts and stops it)."""

from __future__ import annotations

import pytest

from scheduler.state_store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "memory", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    elif request.param == "memory":
        url = "memory://review-damaged-rewrite"
    else:
        import redis
        url = request.getfixturevalue("redis_server").url
        redis.Redis.from_url(url).flushdb()
    s = open_store(url)
    yield s
    s.close()


def _damage(store, task_id: str, text: bytes) -> None:
    if hasattr(store, "_r"):
        store._r.set(store._k("job", task_id), text)
    else:
        store._conn.execute("UPDATE jobs SET record = CAST(? AS TEXT) WHERE task_id = ?", (text, task_id))


def _record(state: str) -> dict:
    return {"task_id": "j", "coop_id": "c", "member": "a", "state": state, "submitted_at": 1.0}


@pytest.mark.parametrize("text", [b'{"task_id": "j", "sta', b"\xff\xfe{}", b"[1, 2]"],
                         ids=["cut short", "not UTF-8", "not an object"])
def test_a_record_written_over_a_damaged_one_replaces_it_and_its_indices_follow(store, text):
    store.put_job("j", _record("running"))
    _damage(store, "j", text)
    store.put_job("j", _record("succeeded"))  # before the fix (Redis): JSONDecodeError
    assert store.get_job("j") == _record("succeeded")
    assert store.unfinished_jobs() == []
    assert [j["task_id"] for j in store.jobs(state="running")] == []
    assert [j["task_id"] for j in store.jobs(state="succeeded")] == ["j"]
