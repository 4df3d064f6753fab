"""The worker actor's own bookkeeping, without a cluster (tests/worker_in_process.py): a launch Ray refuses,
reports kept while the tracker is down. The same worker runs on Ray in tests/integration/test_worker.py."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.worker_in_process import Harness, settle, spec, stop, until

CAP1 = {"cpus": 1, "gpus": 0, "memory_mb": 0}


def test_sanity_a_task_runs_and_its_report_reaches_the_tracker(monkeypatch):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        answer = await w.start_many([spec("a")], CAP1)
        now = time.time()
        h.finish(0, started_at=now - 1, ended_at=now)
        await until(lambda: h.tracker.received)
        await stop(w)
        return answer, [r["task_id"] for r in h.tracker.received]
    answer, reported = asyncio.run(main())
    assert answer != [None] and reported == ["a"]


def test_a_task_dispatched_with_a_checkpoint_token_is_told_which_task_attempt_and_head_it_is(monkeypatch):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker(namespace="ns-x", head_name="head-x")
        await w.start_many([spec("a", attempt=3, checkpoint_token="tok-a", stop_grace_s=12), spec("b")],
                           {**CAP1, "cpus": 2})
        await stop(w)
        return h.contexts
    contexts = asyncio.run(main())
    assert contexts == [{"task_id": "a", "attempt": 3, "head": "head-x", "namespace": "ns-x", "token": "tok-a",
                         "stop_grace_s": 12.0}, None]  # (no token: an older head's dispatch; checkpoint calls in it do nothing)


def test_a_task_stopped_to_make_room_with_a_grace_is_asked_to_end_and_reports_what_it_used(monkeypatch):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        await w.start_many([spec("a", stop_grace_s=5.0)], CAP1)
        assert await w.cancel("a", grace_s=5.0)
        await until(lambda: h.forced)
        assert h.forced == [False]  # asked, not killed
        now = time.time()
        h.finish(0, started_at=now - 3, ended_at=now, cpu=2.5)  # it saved and returned within its grace
        await until(lambda: h.tracker.received)
        await stop(w)
        return h.forced, h.tracker.received[0]
    forced, report = asyncio.run(main())
    assert forced == [False] and report["outcome"] == "cancelled"  # (a stopped attempt: never charged)
    assert report["cpu_time_s"] == 2.5 and "ended within its grace of 5 s" in report["error"]


@pytest.mark.parametrize("asked, capped", [(0.2, 300.0), (30.0, 0.2)], ids=["its own grace", "the owner's cap"])
def test_a_task_that_does_not_end_within_its_grace_is_killed(monkeypatch, asked, capped):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        await w.start_many([spec("a", stop_grace_s=asked)], CAP1)
        await w.cancel("a", grace_s=capped)
        await until(lambda: h.tracker.received)
        await stop(w)
        return h.forced, h.tracker.received[0]
    forced, report = asyncio.run(main())
    assert forced[:2] == [False, True] and report["outcome"] == "cancelled"
    assert "killed by the worker" in report["error"]


@pytest.mark.parametrize("preempted", [False, True], ids=["a member's cancel", "no grace asked"])
def test_a_cancel_or_a_stop_without_a_grace_kills_at_once(monkeypatch, preempted):
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        grace = {} if preempted else {"stop_grace_s": 30.0}  # (a member's cancel never waits for the grace)
        await w.start_many([spec("a", **grace)], CAP1)
        await w.cancel("a", grace_s=30.0) if preempted else await w.cancel("a")
        await until(lambda: h.tracker.received)
        await stop(w)
        return h.forced
    assert asyncio.run(main())[0] is True


def test_a_queued_task_whose_launch_fails_does_not_lose_the_report_of_the_task_that_just_ended(monkeypatch):
    """cpus=0.00001 is valid for the head (Resources.cpus > 0) and LaunchSpec, but Ray refuses it at
    .options() ("precision ... cannot go beyond 0.0001"). Queued behind a running task, it is launched
    from _watch, which raises before _ended(): the task that just ended is never reported, the worker
    says it has no trace of it (so the head reruns it), and the queue behind it is stuck."""
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        answers = await w.start_many([spec("a"), spec("tiny", cpus=0.00001), spec("c")], CAP1)
        now = time.time()
        h.finish(0, started_at=now - 1, ended_at=now)
        await until(lambda: {"a", "tiny"} <= {r["task_id"] for r in h.tracker.received})
        out = answers, [r["task_id"] for r in h.tracker.received], await w.missing(["a"]), len(h.launched)
        await stop(w)
        return out
    answers, reported, missing, launched = asyncio.run(main())
    assert answers[1:] == ["queued", "queued"]
    assert "a" in reported, "the ended task 'a' was never reported to the tracker"
    assert missing == [], "the worker says it has no trace of the ended task 'a'"
    assert launched == 2, "'c' was never launched although 'a' ended and nothing else runs"


def test_a_launch_ray_refuses_fails_that_attempt_and_leaves_no_phantom_holding_the_executor(monkeypatch):
    """start() of a spec Ray refuses (cpus=0.00001: "precision ... cannot go beyond 0.0001") raised after the
    local queue had counted it as running: from then on a 1-CPU task on the idle 1-CPU executor waited in
    the worker's queue forever. Now the attempt ends at once as failed (reported, charged nothing)."""
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        await w.start_many([], CAP1)
        refused = await w.start(spec("tiny", cpus=0.00001))
        out = refused, await w.running(), await w.start(spec("b"))
        await until(lambda: any(r["task_id"] == "tiny" for r in h.tracker.received))
        await stop(w)
        return out + ({r["task_id"]: r for r in h.tracker.received},)
    refused, running, answer, reports = asyncio.run(main())
    assert refused == "queued" and running == []
    assert answer not in ("queued", None), "nothing runs, yet a task that fits the idle executor was queued"
    assert reports["tiny"]["outcome"] == "failed" and "Ray refused" in reports["tiny"]["error"]
    assert reports["tiny"]["cpu_seconds"] == 0


def test_missing_does_not_name_a_task_whose_report_is_still_waiting_to_be_delivered(monkeypatch):
    """``missing`` is meant to name what the worker has no trace of (the head then treats the attempt as
    lost and runs it again). An ended attempt evicted from _finished (KEEP_FINISHED) while its report is
    still in _unsent (the tracker is down) is named missing, though the worker holds its report and will
    deliver it: the head reruns a task that ran, and two attempts get reported."""
    import executors.worker as W
    monkeypatch.setattr(W, "KEEP_FINISHED", 2)

    async def main():
        h = Harness(monkeypatch, tracker=False)  # the tracker is down: reports stay unsent
        w = await h.worker()
        await w.start_many([spec(f"t{i}") for i in range(3)])
        now = time.time()
        for i in range(3):
            h.finish(i, started_at=now - 1, ended_at=now)
        await settle(0.2)
        out = await w.unsent_reports(), await w.missing(["t0", "t1", "t2"])
        await stop(w)
        return out
    unsent, missing = asyncio.run(main())
    assert unsent == 3
    assert missing == [], f"the worker still holds (and will deliver) these reports, yet calls them missing: {missing}"


def test_a_spec_ray_refuses_in_a_batch_leaves_the_rest_of_the_batch_running_once(monkeypatch):
    """start_many raised when Ray refused one spec after earlier ones of the batch were launched; the head
    then requeued the whole batch, so those ran twice. Now only the refused attempt fails."""
    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        answers = await w.start_many([spec("good"), spec("tiny", cpus=0.00001)], {"cpus": 2, "gpus": 0, "memory_mb": 0})
        out = answers, await w.running(), len(h.launched)
        await stop(w)
        return out
    answers, running, launched = asyncio.run(main())
    assert answers[1] == "queued" and answers[0] not in ("queued", None)
    assert (running, launched) == (["good"], 1)


def test_a_long_queue_of_launches_ray_refuses_loses_no_report(monkeypatch):
    """Each refused launch frees its slot for the next queued one; done by recursion, 1,100 refusals in a
    row passed Python's recursion limit, the watcher of the task that had just ended died, and its report
    was lost (and the queue kept counting tasks that never ran)."""
    cap, n = {"cpus": 1, "gpus": 0, "memory_mb": 100}, 1100

    async def main():
        h = Harness(monkeypatch)
        w = await h.worker()
        # each queued task needs all the memory (one at a time), and Ray refuses it at .options()
        queued = [spec(f"q{i}", cpus=0.00001, memory_mb=100) for i in range(n)]
        answers = await w.start_many([spec("a", memory_mb=100), *queued], cap)
        assert answers[1:] == ["queued"] * n
        now = time.time()
        h.finish(0, started_at=now - 1, ended_at=now)
        await until(lambda: len(w._finished) == n + 1)
        out = (await w.report_of("a"), await w.running(), w._queued.running, len(w._finished))
        await stop(w)
        return out

    report_a, running, queue_running, finished = asyncio.run(main())
    assert report_a is not None and report_a["outcome"] == "succeeded"
    assert running == [] and queue_running == 0
    assert finished == n + 1  # every refused one ended as failed, reported like any other
