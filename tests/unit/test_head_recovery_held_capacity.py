"""A restarted head that cannot take back a running job's record still holds what that job's attempt may use
on its executor: nothing is placed into those resources until the executor's worker says it no longer runs
the attempt, or the executor is lost or removed. The Head is the real class without Ray, on a SQLite file
(FakeWorker handles, as in test_head_interleavings); a second Head on the same file stands in for the restart."""
from __future__ import annotations

import asyncio

import pytest

import scheduler.head as head_module
from scheduler.state_store import open_store
from scheduler.tasks import JobState
from tests.unit.test_head_interleavings import FakeWorker, _Method, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import BASE, join, open_head, task

UNRESTORABLE = {  # ways a stored running job's record no longer restores, each leaving its placement readable
    "no decision": lambda r: r.pop("decision"),                                # written by another release
    "no cost": lambda r: r.update(cost=None),
    "attempt unreadable": lambda r: r["placement"].update(attempt="first"),
    "task refused now": lambda r: r["task"]["resources"].update(cpus=True),   # its resources unreadable too
    "state of another release": lambda r: [r.update(state="dispatched"), r["status"].update(state="dispatched")],
}


class Worker(FakeWorker):
    """A worker handle that answers ``running`` with ``runs`` (what it runs or queues); ``dead``: every call
    fails as a dead actor's would."""

    def __init__(self, executor_id: str, runs: tuple[str, ...] = ()) -> None:
        super().__init__(executor_id)
        self.runs, self.dead = list(runs), False
        self.running = _Method(self, "running")

    async def _running(self):
        if self.dead:
            from ray.exceptions import ActorDiedError
            raise ActorDiedError()
        return list(self.runs)


def stored_then_spoiled(url: str, spoil, cpus: float = 1) -> None:
    """A head on ``url`` ran job "run" on e1 (``cpus`` CPUs; the job asks 1); its record was then spoiled."""
    async def first():
        h = await open_head(url, {})
        await h.set_policy(BASE)
        await join(h, FakeWorker("e1"), "us-west", cpus=cpus)
        await h.submit(task("run"), b"run")
        await settle()
        assert h.core.job("run").executor_id == "e1"
        h.store.close()

    asyncio.run(first())
    store = open_store(url)
    record = store.get_job("run")
    spoil(record)
    store.put_job("run", record)
    store.close()


async def submitted(head, *task_ids: str) -> dict[str, tuple[JobState, str | None]]:
    for task_id in task_ids:
        await head.submit(task(task_id), task_id.encode())
    await settle()
    return {t: (head.core.job(t).state, head.core.job(t).executor_id) for t in task_ids}


@pytest.mark.parametrize("spoil", UNRESTORABLE.values(), ids=UNRESTORABLE.keys())
def test_a_restarted_head_places_nothing_into_what_an_unrestorable_running_job_may_hold(tmp_path, spoil):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, spoil)

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        assert head.core.task("run") is None  # skipped, as before
        return await submitted(head, "new")

    assert asyncio.run(main()) == {"new": (JobState.QUEUED, None)}, "e1 was handed the CPU 'run' may still use"


@pytest.mark.parametrize("name, want", [
    ("no decision", {"new": (JobState.RUNNING, "e1"), "next": (JobState.QUEUED, None)}),  # 1 of 2 CPUs held
    ("task refused now", {"new": (JobState.QUEUED, None), "next": (JobState.QUEUED, None)}),  # all of e1 held
], ids=["resources readable: what the task asked", "resources unreadable: the whole executor"])
def test_what_is_held_is_what_the_task_asked_else_all_of_its_executor(tmp_path, name, want):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE[name], cpus=2)

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        return await submitted(head, "new", "next")

    assert asyncio.run(main()) == want


def test_the_held_resources_are_freed_once_the_worker_says_it_no_longer_runs_the_attempt(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE["no decision"])

    async def main():
        e1 = Worker("e1", runs=("run",))
        head = await open_head(url, {"e1": e1})
        assert await submitted(head, "new") == {"new": (JobState.QUEUED, None)}
        await head._watch_once()  # e1's worker still runs "run": still held
        await settle()
        assert head.core.job("new").state is JobState.QUEUED
        e1.runs = []  # "run" ended there (its report goes nowhere: the head holds no such job)
        await head._watch_once()
        await settle()
        assert ("running", ()) in e1.calls
        return head.core.job("new")

    job = asyncio.run(main())
    assert (job.state, job.executor_id) == (JobState.RUNNING, "e1")


def test_the_held_resources_are_freed_when_the_executor_is_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(head_module, "PING_TIMEOUT_S", 0.05)
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE["no decision"])

    async def main():
        e1 = Worker("e1", runs=("run",))
        head = await open_head(url, {"e1": e1})
        assert await submitted(head, "new") == {"new": (JobState.QUEUED, None)}
        e1.dead = True
        await head._watch_once()  # e1's worker died: what ran there is gone, e1 is offline
        assert head.core.table.status_of("e1").value == "offline"
        head._workers["e1"] = Worker("e1")  # its restarted worker, which runs nothing
        await head.heartbeat({"executor_id": "e1", "queue_depth": 0})
        await settle()
        return head.core.job("new")

    job = asyncio.run(main())
    assert (job.state, job.executor_id) == (JobState.RUNNING, "e1")


def test_an_executor_removed_and_registered_again_starts_with_nothing_held(tmp_path, monkeypatch):
    monkeypatch.setattr(head_module.ray, "kill", lambda *a, **k: None)
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE["no decision"])

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        assert await submitted(head, "new") == {"new": (JobState.QUEUED, None)}
        await head.remove_executor("e1")
        await join(head, Worker("e1", runs=("run",)), "us-west")  # a new executor under the old name
        await settle()
        await head._watch_once()  # nothing is held there any more: its worker is not asked about "run"
        return head.core.job("new"), head._workers["e1"].calls

    job, calls = asyncio.run(main())
    assert (job.state, job.executor_id) == (JobState.RUNNING, "e1")
    assert all(name != "running" for name, _ in calls)


def test_a_rebuild_from_the_store_still_holds_them(tmp_path):
    """``_resync`` rebuilds the core as a restarted head would: the hold is taken again from the record."""
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE["no decision"])

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        head._resync(None)
        return await submitted(head, "new")

    assert asyncio.run(main()) == {"new": (JobState.QUEUED, None)}


def test_the_executor_list_counts_what_is_held_there_beside_what_runs(tmp_path):
    """An operator listing executors sees e1 busy with the attempt the head could not restore, not idle."""
    url = f"sqlite:///{tmp_path}/state.db"
    stored_then_spoiled(url, UNRESTORABLE["no decision"])

    async def main():
        e1 = Worker("e1", runs=("run",))
        head = await open_head(url, {"e1": e1})
        listed = {e["executor_id"]: e for e in await head.executors()}
        e1.runs = []
        await head._watch_once()
        await settle()
        return listed, {e["executor_id"]: e for e in await head.executors()}

    held, freed = asyncio.run(main())
    assert (held["e1"]["running"], held["e1"]["held"]) == (0, 1)
    assert freed["e1"]["held"] == 0
