"""A head of another Coopsched release may answer a job status this client cannot read (a state it does not
know, say a newer release's). The client then raises ``UnreadableAnswer`` naming the job, the field, the value
and what to do, instead of pydantic's ValidationError; a status it can read, with fields it does not know
besides, is read as before."""

from __future__ import annotations

import pytest

from scheduler.client import Client
from scheduler.job_handle import UnreadableAnswer, job_status

STATUS = {"task_id": "j1", "coop_id": "c", "member": "m", "name": None, "state": "running", "reason": "placed",
          "effective_priority": 2.0, "attempts": 1, "executor_id": "e1", "submitted_at": 1.0, "started_at": 2.0,
          "finished_at": None, "warnings": [], "charged_cpu_hours": 0.0, "charged_gpu_hours": 0.0,
          "charged_credits": 0.0, "wall_seconds": None, "error": None,
          "history": [{"at": 1.0, "state": "queued", "message": "admitted"}]}


def test_a_state_this_release_does_not_know_is_named_with_what_to_do():
    with pytest.raises(UnreadableAnswer) as caught:  # before: pydantic ValidationError, "Input should be ..."
        job_status({**STATUS, "state": "preempted"}, "j1")
    message = str(caught.value)
    assert "job 'j1'" in message and "state is 'preempted'" in message
    assert "queued" in message and "running" in message  # the states it knows
    assert "install the head's release here" in message


def test_an_unknown_state_in_the_history_is_named_by_its_place():
    history = [{"at": 1.0, "state": "preempted", "message": "made way"}]
    with pytest.raises(UnreadableAnswer, match=r"history\.0\.state is 'preempted'"):
        job_status({**STATUS, "history": history}, "j1")


def test_fields_this_release_does_not_know_are_ignored():
    status = job_status({**STATUS, "preempted_by": "j0"}, "j1")
    assert status.state.value == "running"


def test_a_listing_with_one_status_this_release_cannot_read_says_which_job():
    client = Client.__new__(Client)
    client._call = lambda method, *args: [STATUS, {**STATUS, "task_id": "j2", "state": "preempted"}]
    with pytest.raises(UnreadableAnswer, match="job 'j2'"):
        client.jobs(coop="c")
    client._call = lambda method, *args: [STATUS]
    assert [j.task_id for j in client.jobs(coop="c")] == ["j1"]
