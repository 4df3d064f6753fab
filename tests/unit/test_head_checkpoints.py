"""Checkpoints (``scheduler.head_checkpoints``): the running attempt of a task saves its progress on the head,
which keeps it in its store until the job finishes, and hears only that attempt (its dispatch token). The Head
is the real class without Ray, on a SQLite file (FakeWorker handles, as in test_head_interleavings); a second
Head on the same file stands in for a restart. The task's side (``scheduler.checkpoint``) outside a task, and
``run_measured`` setting the task's context, are here too; on Ray: tests/integration/test_checkpoints_on_ray.py.
"""
from __future__ import annotations

import asyncio

import pytest

from executors.measure import run_measured
from executors.task_context import TaskContext, current_task
from scheduler.checkpoint import load_checkpoint, save_checkpoint
from scheduler.head_checkpoints import MAX_CHECKPOINT_BYTES, SECRET_STATE
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import BASE, join, open_head, task


async def running_a(url: str):
    """A head on ``url`` whose one executor e1 was handed job "A"; job "B" waits. Its launch spec of "A"."""
    head, e1 = await open_head(url, {}), FakeWorker("e1")
    await head.set_policy(BASE)
    await join(head, e1, "us-west")
    await head.submit(task("A"), b"a")
    await head.submit(task("B"), b"b")
    await settle()
    specs = [s for name, args in e1.calls if name == "start_many" for s in args[0]]
    return head, {s["task_id"]: s for s in specs}["A"]


def test_the_running_attempt_saves_and_loads_its_checkpoint_and_a_restarted_head_still_knows_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def main():
        head, spec = await running_a(url)
        token = spec["checkpoint_token"]
        assert (await head.load_checkpoint("A", 1, token)) == {"checkpoint": None}
        assert await head.save_checkpoint("A", 1, token, b"epoch 1") == {"saved": 7, "attempt": 1}
        assert await head.save_checkpoint("A", 1, token, b"epoch 2") == {"saved": 7, "attempt": 1}
        loaded = (await head.load_checkpoint("A", 1, token))["checkpoint"]
        assert (loaded["attempt"], loaded["data"]) == (1, b"epoch 2")
        head.store.close()
        again = await open_head(url, {"e1": FakeWorker("e1")})  # the same token is heard after a restart
        loaded = (await again.load_checkpoint("A", 1, token))["checkpoint"]
        assert loaded["data"] == b"epoch 2"
        assert again._checkpoint_token("A", 1) == token
    asyncio.run(main())


def test_a_jobs_status_says_what_checkpoint_it_has_and_coopsched_job_status_prints_it(tmp_path):
    from scheduler.cli_commands import _attempts_line

    async def main():
        head, spec = await running_a(f"sqlite:///{tmp_path / 'state.db'}")
        assert (await head.status("A"))["checkpoint"] is None
        await head.save_checkpoint("A", 1, spec["checkpoint_token"], b"x" * 2048)
        return await head.status("A")
    status = asyncio.run(main())
    assert status["checkpoint"]["attempt"] == 1 and status["checkpoint"]["bytes"] == 2048
    line = _attempts_line(status)[-1]
    assert line.startswith("  checkpoint saved by attempt 1, 2,048 bytes, ") and "a next attempt goes on" in line


def test_a_checkpoint_goes_when_its_job_finishes(tmp_path):
    async def main():
        head, spec = await running_a(f"sqlite:///{tmp_path / 'state.db'}")
        await head.save_checkpoint("A", 1, spec["checkpoint_token"], b"half way")
        job = head.core.job("A")
        await head.on_reports([{"task_id": "A", "executor_id": "e1", "coop_id": job.coop_id,
                                "member": job.member, "started_at": job.started_at,
                                "ended_at": job.started_at + 5, "cpu_seconds": 5.0, "outcome": "succeeded",
                                "attempt": 1}])
        assert head.store.get_checkpoint("A") is None
        answer = await head.save_checkpoint("A", 1, spec["checkpoint_token"], b"late")
        assert "succeeded, not running" in answer["refused"] and head.store.get_checkpoint("A") is None
    asyncio.run(main())


@pytest.mark.parametrize(("call", "says"), [
    (lambda h, t: h.save_checkpoint("A", 1, "0" * 32, b"x"), "token: not the checkpoint token of attempt 1"),
    (lambda h, t: h.save_checkpoint("A", 2, h._checkpoint_token("A", 2), b"x"),
     "attempt 2 of task 'A' is not the one running (attempt 1 is)"),
    (lambda h, t: h.save_checkpoint("B", 1, h._checkpoint_token("B", 1), b"x"), "task 'B' is queued, not running"),
    (lambda h, t: h.save_checkpoint("nope", 1, h._checkpoint_token("nope", 1), b"x"), "unknown to this head"),
    (lambda h, t: h.save_checkpoint("A", 1, t, 12), "data: received 12"),
    (lambda h, t: h.save_checkpoint("A", 1, t, b"x" * (MAX_CHECKPOINT_BYTES + 1)), "data: received"),
    (lambda h, t: h.save_checkpoint("A", 0, t, b"x"), "attempt: received 0"),
    (lambda h, t: h.load_checkpoint("A", 1, "0" * 32), "token: not the checkpoint token"),
    (lambda h, t: h.load_checkpoint("", 1, t), "task_id: received"),
], ids=["wrong token", "a stopped attempt", "a queued job", "an unknown job", "data not bytes", "data too large",
        "attempt 0", "load: wrong token", "load: no task id"])
def test_a_refused_checkpoint_request_says_why_and_keeps_nothing(tmp_path, call, says):
    async def main():
        head, spec = await running_a(f"sqlite:///{tmp_path / 'state.db'}")
        await head.save_checkpoint("A", 1, spec["checkpoint_token"], b"kept")
        answer = await call(head, spec["checkpoint_token"])
        assert says in answer["refused"], answer["refused"][:300]
        assert len(answer["refused"]) < 2000  # (a large value is not echoed back whole)
        assert head.store.get_checkpoint("A").data == b"kept" and head.store.get_checkpoint("B") is None
    asyncio.run(main())


def test_tokens_differ_by_task_attempt_and_head_and_a_damaged_secret_is_replaced(tmp_path):
    async def main():
        head, _ = await running_a(f"sqlite:///{tmp_path / 'a.db'}")
        other, _ = await running_a(f"sqlite:///{tmp_path / 'b.db'}")
        tokens = {head._checkpoint_token("A", 1), head._checkpoint_token("A", 2), head._checkpoint_token("B", 1),
                  other._checkpoint_token("A", 1)}
        assert len(tokens) == 4
        head.store.put_head_state(head.owner, SECRET_STATE, {"damaged": "cut short"})
        head._checkpoint_key = None  # (as a restart reads it again)
        assert head._checkpoint_token("A", 1) not in tokens
        assert "secret" in head.store.head_state(head.owner, SECRET_STATE)
    asyncio.run(main())


def test_outside_a_task_saving_does_nothing_and_loading_gives_the_default():
    assert current_task() is None
    assert save_checkpoint({"epoch": 3}) is False
    assert load_checkpoint(default="fresh") == "fresh"


def test_run_measured_sets_the_tasks_context_for_the_call_only():
    context = {"task_id": "A", "attempt": 2, "head": "coopsched-head", "namespace": "ns", "token": "secret-token"}
    value, _ = run_measured((current_task, (), {}), context)
    assert value == TaskContext("A", 2, "coopsched-head", "ns", "secret-token")
    assert "secret-token" not in repr(value)  # a capability, not printed
    assert current_task() is None
    assert run_measured((current_task, (), {}))[0] is None
