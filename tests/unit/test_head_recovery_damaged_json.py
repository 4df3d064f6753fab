"""One job record whose JSON text is damaged does not take the head down: a restarted head, and a rebuild from
the store, go past it (saying so in the log and in ``ping``'s recovery summary); nothing is placed into what
its attempt may still use, wherever that is; listings leave it out and a status of its id says it is damaged.
The Head is the real class without Ray, on a SQLite file (FakeWorker handles, as in test_head_interleavings);
the record is damaged with a direct UPDATE of the file, as a disk or a hand edit would."""
from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from scheduler.jobs import JobStatus
from scheduler.state_store import open_store
from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import BASE, COOP, join, open_head, report, task
from tests.unit.test_head_recovery_held_capacity import Worker, submitted

DAMAGES = {  # ways the JSON text of a record is damaged (each: the old text -> the new one)
    "cut short": lambda text: text[: len(text) // 2],
    "not JSON": lambda text: "garbage",
    "not UTF-8": lambda text: b"\xff\xfe" + text.encode()[2:],
    "JSON, not an object": lambda text: "[1, 2]",
}


def damage(url: str, task_id: str, how=DAMAGES["cut short"]) -> None:
    """Damage the JSON of ``task_id``'s record in the SQLite file at ``url`` (its own columns stay)."""
    db = sqlite3.connect(url[len("sqlite:///"):])
    (text,) = db.execute("SELECT record FROM jobs WHERE task_id = ?", (task_id,)).fetchone()
    db.execute("UPDATE jobs SET record = CAST(? AS TEXT) WHERE task_id = ?", (how(text), task_id))
    db.commit()
    db.close()


async def ran(url: str, *task_ids: str, executors: tuple[str, ...] = ("e1",)) -> dict[str, str | None]:
    """A head on ``url`` (BASE policy, ``executors`` of 1 CPU each) was handed ``task_ids`` in order (each placed
    where it fits, the rest wait), then went away; where each was placed."""
    h = await open_head(url, {})
    await h.set_policy(BASE)
    for executor_id in executors:
        await join(h, FakeWorker(executor_id), "us-west")
    for task_id in task_ids:
        await h.submit(task(task_id), task_id.encode())
    await settle()
    placed = {t: h.core.job(t).executor_id for t in task_ids}
    h.store.close()
    return placed


@pytest.mark.parametrize("how", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_head_starts_past_a_job_record_whose_json_is_damaged_and_says_so(tmp_path, caplog, how):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "good", "bad"))  # good runs on e1, bad waits
    damage(url, "bad", how)

    async def restart():
        head = await open_head(url, {"e1": Worker("e1", runs=("good",))})
        return head, await head.ping()

    with caplog.at_level(logging.ERROR):
        head, ping = asyncio.run(restart())  # before the fix: JSONDecodeError (or sqlite3/Attribute error)
    assert head.core.job("good").state is JobState.RUNNING and head.core.task("bad") is None
    assert (ping["recovered"]["jobs"], ping["recovered"]["damaged"], ping["recovered"]["damaged_jobs"]) == \
        (1, 1, ["bad"])
    assert any("bad" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_a_damaged_job_that_never_started_holds_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "good", "bad"))  # bad's stored state (its own column) is queued
    damage(url, "bad")

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("good",))})
        await head.on_reports([report("good", "e1", 1)])  # e1 is free: nothing needs asking its worker first
        return await submitted(head, "new"), head.recovered["held"]

    assert asyncio.run(main()) == ({"new": (JobState.RUNNING, "e1")}, 0)


def test_a_damaged_running_job_holds_every_executor_until_each_worker_says_whether_it_runs_it(tmp_path):
    """Its record no longer says where it runs: before any placement every executor's worker is asked, and the
    one that runs it keeps all of itself held (what the task asked cannot be read either)."""
    url = f"sqlite:///{tmp_path}/state.db"
    where = asyncio.run(ran(url, "run", executors=("e1", "e2")))["run"]
    other = "e2" if where == "e1" else "e1"
    damage(url, "run")

    async def main():
        runs_it, runs_nothing = Worker(where, runs=("run",)), Worker(other)
        head = await open_head(url, {where: runs_it, other: runs_nothing})
        before = await submitted(head, "new")  # the workers not asked yet: nothing may be placed anywhere
        await head._watch_once()
        await settle()
        asked = [("running", ()) in w.calls for w in (runs_it, runs_nothing)]
        after = {"new": (head.core.job("new").state, head.core.job("new").executor_id),
                 **await submitted(head, "next")}  # the executor that runs it stays held
        runs_it.runs = []  # it ended there
        await head._watch_once()
        await settle()
        return before, asked, after, (head.core.job("next").state, head.core.job("next").executor_id)

    before, asked, after, last = asyncio.run(main())
    assert before == {"new": (JobState.QUEUED, None)}, "placed before the workers said where 'run' runs"
    assert asked == [True, True]
    assert after == {"new": (JobState.RUNNING, other), "next": (JobState.QUEUED, None)}
    assert last == (JobState.RUNNING, where)


def test_a_rebuild_from_the_store_goes_past_a_damaged_record_instead_of_staying_stale(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        head = await open_head(url, {})
        await head.set_policy(BASE)
        await join(head, FakeWorker("e1"), "us-west")
        for task_id in ("good", "bad"):  # good runs on e1, bad waits
            await head.submit(task(task_id), task_id.encode())
        await settle()
        damage(url, "bad")  # while the head runs
        head._resync(None)  # as after a store failure
        return head._stale, head.core.job("good").state, head.recovered["damaged_jobs"]

    assert asyncio.run(main()) == (False, JobState.RUNNING, ["bad"])  # before the fix: stale, dispatching nothing


async def _call(head, name: str):
    calls = {
        "jobs": lambda: head.jobs(COOP),
        "status": lambda: head.status("done"),
        "explain": lambda: head.explain("done"),
        "cancel": lambda: head.cancel("done"),
        "submit again": lambda: head.submit(task("done"), b"again"),
        "members": lambda: head.members(COOP),
        "wait_result": lambda: head.wait_result("done", 0.1),
    }
    return await calls[name]()


CALLS = [
    ("jobs", lambda answer: [s["task_id"] for s in answer] == ["kept"]),  # left out: a JobStatus cannot be made
    ("status", lambda answer: JobStatus(**answer).state is JobState.SUCCEEDED and "damaged" in answer["reason"]),
    ("explain", lambda answer: answer["state"] == "succeeded" and "damaged" in answer["summary"]),
    ("cancel", lambda answer: answer == "succeeded"),
    ("submit again", lambda answer: not answer["admitted"] and answer["reasons"][0]["code"] == "error"
        and "damaged" in answer["reasons"][0]["message"]),  # not "the store is unreachable"
    ("members", lambda answer: [m["member"] for m in answer] == ["alice"]),
    ("wait_result", lambda answer: answer["state"] == "succeeded" and answer["ref"] is None),
]


@pytest.mark.parametrize("name, want", CALLS, ids=[name for name, _ in CALLS])
def test_a_call_about_a_damaged_finished_job_answers_rather_than_fails(tmp_path, name, want):
    url = f"sqlite:///{tmp_path}/state.db"

    async def first():
        h = await open_head(url, {})
        await h.set_policy(BASE)
        await join(h, FakeWorker("e1"), "us-west", cpus=2)
        await h.submit(task("done"), b"done")
        await h.submit(task("kept"), b"kept")
        await settle()
        await h.on_reports([report("done", "e1", 1), report("kept", "e1", 1)])
        h.store.close()

    asyncio.run(first())
    damage(url, "done")

    async def main():
        head = await open_head(url, {"e1": FakeWorker("e1")})
        return await _call(head, name)

    answer = asyncio.run(main())  # before the fix: JSONDecodeError (submit: "the store is unreachable")
    assert want(answer), answer


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_store_answers_a_damaged_record_as_damaged_rather_than_raising(tmp_path, kind):
    url = f"sqlite:///{tmp_path}/state.db" if kind == "sqlite" else "memory://damaged-json"
    store = open_store(url)
    try:
        for task_id, state in (("a", "running"), ("b", "queued")):
            store.put_job(task_id, {"task_id": task_id, "coop_id": "c", "member": "m", "state": state,
                                    "submitted_at": 1.0})
        store._conn.execute("UPDATE jobs SET record = '{\"task_id\": \"a\", \"sta' WHERE task_id = 'a'")
        marker = {"task_id": "a", "coop_id": "c", "member": "m", "state": "running", "submitted_at": 1.0}
        got = store.get_job("a")
        assert {k: got[k] for k in marker} == marker and "JSONDecodeError" in got["damaged"]
        assert [(j["task_id"], "damaged" in j) for j in store.jobs(coop_id="c")] == [("a", True), ("b", False)]
        assert [(j["task_id"], "damaged" in j) for j in store.unfinished_jobs()] == [("a", True), ("b", False)]
    finally:
        store.close()
