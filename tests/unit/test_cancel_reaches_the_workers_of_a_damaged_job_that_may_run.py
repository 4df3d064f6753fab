"""Cancelling a job whose stored record is damaged, but which may be running, reaches its worker: the head
restored nothing of it, so it asks the worker of every executor it holds for the job (where its attempt may
run, ``scheduler.held_capacity``) to cancel that task id; the one that runs it stops it, and once it has,
the watchdog's next round frees that executor. The answer is ``running`` then, as for any running job's
cancel; a job whose state is kept nowhere and that no worker runs is answered as damaged (the client raises
``JobRecordDamaged`` saying whom it asked). The Head is the real class without Ray, on a SQLite file whose
record is damaged as a disk or a hand edit would (tests/unit/test_head_recovery_damaged_json.py)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.job_handle import JobRecordDamaged
from scheduler.tasks import JobState
from tests.head_in_process import InProcessClient, ThreadedHead, handle
from tests.unit.test_client_says_a_damaged_job_with_no_state_is_damaged import damaged_with_state
from tests.unit.test_head_interleavings import no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import COOP, open_head
from tests.unit.test_head_recovery_damaged_json import ran
from tests.unit.test_head_recovery_held_capacity import Worker, submitted


class StoppingWorker(Worker):
    """A worker that runs (or queues) ``runs``: ``cancel`` answers whether it does, as the real one does."""

    async def _cancel(self, task_id):
        return task_id in self.runs


def cancels(worker: Worker) -> list[str]:
    return [args[0] for name, args in worker.calls if name == "cancel"]


def placed_then_damaged(tmp_path, state: str | None) -> tuple[str, str, str]:
    """Job "run" was placed on one of e1, e2, then its record was damaged (``state``: what its column keeps).
    The store's URL, where it runs, and the other executor."""
    url = f"sqlite:///{tmp_path}/state.db"
    where = asyncio.run(ran(url, "run", executors=("e1", "e2")))["run"]
    damaged_with_state(url, "run", state)
    return url, where, "e2" if where == "e1" else "e1"


@pytest.mark.parametrize("state", ["running", None], ids=["state kept", "state kept nowhere"])
@pytest.mark.parametrize("watched", [False, True], ids=["before the watchdog asked", "after"])
def test_cancelling_a_damaged_job_that_runs_asks_the_workers_that_may_run_it_and_its_executor_is_then_freed(
        tmp_path, state, watched):
    url, where, other = placed_then_damaged(tmp_path, state)

    async def main():
        runs_it, runs_nothing = StoppingWorker(where, runs=("run",)), StoppingWorker(other)
        head = await open_head(url, {where: runs_it, other: runs_nothing})
        if watched:  # the workers said where it runs: only that executor is still held for it
            await head._watch_once()
        answer = await head.cancel("run")
        asked = (cancels(runs_it), cancels(runs_nothing))
        runs_it.runs = []  # it stopped there
        await head._watch_once()
        await settle()
        return answer, asked, await submitted(head, "new", "next")

    answer, asked, placed = asyncio.run(main())
    assert answer == "running"  # (before the fix: "running", or None for no state, and no worker was asked)
    assert asked == (["run"], [] if watched else ["run"])
    assert placed == {"new": (JobState.RUNNING, "e1"), "next": (JobState.RUNNING, "e2")}  # both free again


def test_cancelling_a_damaged_job_kept_with_no_state_that_no_worker_runs_says_so_naming_whom_it_asked(tmp_path):
    url, where, other = placed_then_damaged(tmp_path, None)
    th = ThreadedHead(store_url=url)
    try:
        workers = {e: StoppingWorker(e) for e in (where, other)}  # it ended on its executor before the head restarted
        th.head._workers.update(workers)
        with pytest.raises(JobRecordDamaged) as caught:  # before the fix: None, as for an id the head does not know
            handle(InProcessClient(th), "run", COOP).cancel()
        assert [cancels(w) for w in workers.values()] == [["run"], ["run"]]
        assert "cancel asked e1, e2 to stop it, and none runs it" in str(caught.value)
        assert "submit the work again under a new task id" in str(caught.value)
    finally:
        th.close()


def test_cancelling_a_damaged_job_that_never_started_asks_no_worker(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "first", "waits"))  # "waits" is queued behind "first" on e1
    damaged_with_state(url, "waits", "queued")

    async def main():
        worker = StoppingWorker("e1", runs=("first",))
        head = await open_head(url, {"e1": worker})
        return await head.cancel("waits"), cancels(worker)

    assert asyncio.run(main()) == ("queued", [])  # it holds nothing anywhere: nothing of it can run
