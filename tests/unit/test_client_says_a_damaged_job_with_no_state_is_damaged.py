"""A job whose stored record is damaged and whose state the store keeps nowhere beside it (on Redis: its task
in no state index, or in two; here a SQLite row whose state column is empty) reaches the client as
``JobRecordDamaged``, naming the job and what to do, instead of a pydantic error from ``JobStatus(**...)``:
no ``JobState`` would be true of it (``scheduler.damaged_records`` says why). A damaged record whose state is
kept still answers a ``JobStatus`` with it. The real CLI, ``Client`` and ``Head`` in-process, no Ray
(tests/head_in_process.py); tests/integration/test_redis_damaged_job_without_a_state_index.py has Redis."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from scheduler.job_handle import JobRecordDamaged
from scheduler.tasks import JobState
from tests.head_in_process import InProcessClient, ThreadedHead, cli, handle
from tests.unit.test_head_interleavings import no_ray_started  # noqa: F401
from tests.unit.test_head_recovery import COOP
from tests.unit.test_head_recovery_damaged_json import damage, ran


def damaged_with_state(url: str, task_id: str, state: str | None) -> None:
    """Damage ``task_id``'s JSON in the SQLite file at ``url`` and set the state its column keeps."""
    damage(url, task_id)
    db = sqlite3.connect(url[len("sqlite:///"):])
    db.execute("UPDATE jobs SET state = ? WHERE task_id = ?", (state, task_id))
    db.commit()
    db.close()


@pytest.fixture
def head_with_damaged(tmp_path):
    """A head started on a store where job "run" (placed on e1) has a damaged record; the state kept beside it
    is the test's (``head_with_damaged(state)``)."""
    heads: list[ThreadedHead] = []

    def make(state: str | None) -> ThreadedHead:
        url = f"sqlite:///{tmp_path}/state.db"
        asyncio.run(ran(url, "run"))
        damaged_with_state(url, "run", state)
        heads.append(ThreadedHead(store_url=url))
        return heads[-1]
    yield make
    for th in heads:
        th.close()


CALLS = {  # what a member asks of the job, each through the real client
    "status": lambda job: job.status(),
    "result": lambda job: job.result(timeout=0.2),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_damaged_job_whose_state_is_kept_nowhere_is_reported_as_damaged_naming_the_job_and_what_to_do(
        head_with_damaged, call):
    th = head_with_damaged(None)
    job = handle(InProcessClient(th), "run", COOP)
    with pytest.raises(JobRecordDamaged) as caught:  # before the fix: pydantic ValidationError (result: KeyError
        call(job)  # "no job 'run'", as if the head did not know it)
    message = str(caught.value)
    assert caught.value.task_id == "run" and "'run'" in message
    assert "damaged" in message and "state cannot be read" in message
    assert "submit the work again under a new task id" in message and "`coopsched job forget run`" in message


def test_coopsched_job_status_of_such_a_job_says_it_is_damaged_and_exits_1(head_with_damaged, monkeypatch, capsys):
    th = head_with_damaged(None)
    code, out, err = cli(th, monkeypatch, capsys, "job", "status", "run")
    assert (code, out) == (1, "")  # before the fix: a pydantic ValidationError traceback
    assert err.startswith("coopsched: job 'run' has no state the head can tell") and "new task id" in err


def test_a_damaged_job_whose_state_is_kept_still_answers_that_state(head_with_damaged):
    th = head_with_damaged("running")
    status = handle(InProcessClient(th), "run", COOP).status()
    assert status.state is JobState.RUNNING and "damaged" in status.reason


@pytest.mark.parametrize("state", ["queued", "running"])
def test_result_of_a_damaged_job_whose_kept_state_is_unfinished_raises_at_once_rather_than_waiting(
        head_with_damaged, state):
    th = head_with_damaged(state)
    job = handle(InProcessClient(th), "run", COOP)
    with pytest.raises(JobRecordDamaged) as caught:  # before the fix: TimeoutError after 30 s (result() waited
        job.result(timeout=30)  # for a value no head can deliver: none can restore the job)
    assert caught.value.state == state and f"({state}, as its store keeps it)" in str(caught.value)
    assert "`coopsched job forget run`" in str(caught.value)
    assert job.status().state.value == state  # its status still says what the store keeps
