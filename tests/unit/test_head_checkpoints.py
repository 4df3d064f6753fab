"""Checkpoints (``scheduler.head_checkpoints``): the running attempt of a task saves its progress on the head,
which keeps it in its store until the job finishes, and hears only that attempt (its dispatch token). The Head
is the real class without Ray, on a SQLite file (FakeWorker handles, as in test_head_interleavings); a second
Head on the same file stands in for a restart. The task's side (``scheduler.checkpoint``) outside a task, and
``run_measured`` setting the task's context, are here too; on Ray: tests/integration/test_checkpoints_on_ray.py.
"""
from __future__ import annotations

import _thread
import asyncio
import signal
import time

import pytest

from executors.measure import run_measured
from executors.task_context import TaskContext, current_task, running_as, stop_requested
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
        assert "succeeded (finished)" in answer["refused"] and head.store.get_checkpoint("A") is None
    asyncio.run(main())


@pytest.mark.parametrize(("call", "says"), [
    (lambda h, t: h.save_checkpoint("A", 1, "0" * 32, b"x"), "token: not the checkpoint token of attempt 1"),
    (lambda h, t: h.save_checkpoint("A", 2, h._checkpoint_token("A", 2), b"x"),
     "attempt 2 of task 'A' is not its latest (attempt 1 is)"),
    (lambda h, t: h.save_checkpoint("B", 1, h._checkpoint_token("B", 1), b"x"), "task 'B' has not started"),
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


def test_a_store_that_cannot_give_the_secret_does_not_stop_dispatch(tmp_path, monkeypatch, caplog):
    async def main():
        head, _ = await running_a(f"sqlite:///{tmp_path / 'a.db'}")
        head.store.put_head_state(head.owner, SECRET_STATE, {"secret": "not hex"})
        head._checkpoint_key = None
        replaced = head._checkpoint_token("A", 1)
        assert head.store.head_state(head.owner, SECRET_STATE)["secret"] != "not hex"

        def down(*args):
            raise OSError("disk I/O error")
        monkeypatch.setattr(head.store, "head_state", down)
        head._checkpoint_key = None
        with caplog.at_level("ERROR", logger="coopsched.head"):
            first, again = head._checkpoint_token("A", 1), head._checkpoint_token("A", 1)
        return replaced, first, again
    replaced, first, again = asyncio.run(main())
    assert first == again != replaced  # one secret of its own for this head's life
    assert "could not be read or stored (OSError: disk I/O error)" in caplog.text


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


def test_a_task_with_a_grace_sees_a_stop_request_instead_of_being_interrupted_and_signals_are_put_back():
    before = signal.getsignal(signal.SIGINT)
    with running_as(TaskContext("A", 1, "h", "ns", "t", stop_grace_s=30)):
        assert not stop_requested()
        _thread.interrupt_main()  # what Ray's cancel(force=False) does to a running task
        deadline = time.monotonic() + 5
        while not stop_requested() and time.monotonic() < deadline:
            time.sleep(0.01)  # (the handler runs between bytecodes of the main thread)
        assert stop_requested()
    assert not stop_requested() and signal.getsignal(signal.SIGINT) is before


def test_a_task_without_a_grace_is_interrupted_as_ray_means():
    """Its SIGINT handler is left as it was: in a Ray worker, the one raising KeyboardInterrupt (set here, as
    a process that has started Ray may have another)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with running_as(TaskContext("A", 1, "h", "ns", "t")):
                assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
                _thread.interrupt_main()
                time.sleep(1)
        assert not stop_requested()
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("cap", [None, 5.0, 0], ids=["as the task asks", "capped by the owner", "owner: none"])
def test_a_preempted_task_with_a_grace_is_stopped_gracefully_at_its_worker(tmp_path, cap):
    """The head asks the worker to stop a preempted task with a grace_s only when the task asked for a
    grace (a worker of an earlier release takes no such argument), capped by the executor's owner's
    max_stop_grace_s, and dispatches the task's own grace with the task."""
    from tests.unit.test_head_interleavings import FakeWorker as Base

    class Worker(Base):
        def __init__(self, executor_id):
            super().__init__(executor_id)
            self.stops: list = []

        async def _cancel(self, task_id, grace_s=None):
            self.stops.append((task_id, grace_s))
            return True

    async def main():
        head, e1 = await open_head(f"sqlite:///{tmp_path / 'state.db'}", {}), Worker("e1")
        await head.set_policy({**BASE, "preempt_within_coop": "lower_priority", "max_stop_grace_s": cap,
                               "default_quota": {**BASE["default_quota"], "max_priority": "critical"}})
        await join(head, e1, "us-west", cpus=2)
        await head.submit(task("low", priority="low", stop_grace_s=20), b"l")
        await head.submit(task("plain", priority="low"), b"p")
        await settle()
        await head.submit(task("urgent", priority="critical", resources={"cpus": 2}), b"u")
        for _ in range(50):
            await settle()
            if len(e1.stops) == 2:
                break
        specs = {s["task_id"]: s for name, args in e1.calls if name == "start_many" for s in args[0]}
        saved_in_grace = await head.save_checkpoint("low", 1, specs["low"]["checkpoint_token"], b"step 7")
        return sorted(e1.stops), specs, saved_in_grace, head.core.job("low").state.value
    stops, specs, saved_in_grace, state = asyncio.run(main())
    assert state == "queued" and saved_in_grace == {"saved": 6, "attempt": 1}  # stopped, saving in its grace
    low = ("low", None) if cap == 0 else ("low", 20.0 if cap is None else cap)  # (0: killed at once)
    assert stops == [low, ("plain", None)]
    assert specs["low"]["stop_grace_s"] == 20 and "stop_grace_s" not in specs["plain"]


@pytest.mark.parametrize("value", [-1, 301, True, "long"])
def test_a_bad_stop_grace_is_refused_naming_the_field(value):
    from policies.validation import InvalidRequest
    from scheduler.client import Client
    with pytest.raises(InvalidRequest, match=r"stop_grace_s: received .*example: 30"):
        Client._task(abs, (-1,), {}, coop="c", member="m", stop_grace_s=value)


def test_a_client_sends_stop_grace_only_when_asked_for_so_a_head_of_an_earlier_release_takes_the_rest():
    from scheduler.client import Client
    plain, _, _ = Client._task(abs, (-1,), {}, coop="c", member="m")
    graceful, _, _ = Client._task(abs, (-1,), {}, coop="c", member="m", stop_grace_s=30)
    assert "stop_grace_s" not in plain and graceful["stop_grace_s"] == 30.0
