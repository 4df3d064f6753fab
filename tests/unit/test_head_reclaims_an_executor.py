"""The head stops a preempted attempt at its worker (an owner reclaiming its executor: CoopPolicy.reclaim), and
places the job back there only once that attempt's report has come; the report charges nothing. The real
``Head`` on an asyncio loop with stand-in worker handles (tests/unit/test_head_interleavings.py); the choice of
what to stop: tests/unit/test_reclaim.py."""

from __future__ import annotations

import asyncio
import time

from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from tests.head_in_process import ThreadedHead, cli
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401


def _task(task_id: str, coop: str, priority: str = "normal") -> dict:
    return {"task_id": task_id, "coop_id": coop, "member": "alice", "resources": {"cpus": 1}, "max_runtime_s": 60,
            "priority": priority}


def _report(task_id: str, coop: str, attempt: int, outcome: str) -> dict:
    now = time.time()
    return {"task_id": task_id, "executor_id": "owned", "coop_id": coop, "member": "alice", "started_at": now - 1,
            "ended_at": now, "cpu_seconds": 1.0, "outcome": outcome, "attempt": attempt}


async def reclaiming_head(url: str) -> Head:
    """A head whose coop "owner" reclaims its one executor, "owned" (1 CPU, open to every coop), from "borrower"."""
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url)
    head._watchdog = object()
    quota = {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 100}
    await head.set_policy({"coop_id": "owner", "default_quota": quota, "reclaim": "any"})
    await head.set_policy({"coop_id": "borrower", "default_quota": quota})
    await head.register_executor(ExecutorSpec(executor_id="owned", coop_id="owner", region="us-west", node_id="n1",
                                              resources={"cpus": 1}, open_to=("*",)).model_dump(mode="json"))
    return head


def test_the_head_stops_a_preempted_attempt_at_its_worker_and_places_the_job_back_once_it_ended():
    async def main():
        head = await reclaiming_head("memory://reclaims")
        worker = head._workers["owned"] = FakeWorker("owned")
        await head.submit(_task("borrowed", "borrower"), b"b")
        await settle()
        assert head.core.job("borrowed").state.value == "running" and "borrowed" in head._dispatched
        await head.submit(_task("mine", "owner"), b"m")  # the owner takes its executor back
        await settle()
        assert head.core.job("mine").state.value == "running"
        assert ("cancel", ("borrowed",)) in [(name, args) for name, args in worker.calls]  # stopped at its worker
        assert head.core.job("borrowed").state.value == "queued" and "borrowed" not in head._dispatched
        assert (await head.status("borrowed"))["state"] == "queued"  # (recorded as such)
        await head.on_report(_report("mine", "owner", 1, "succeeded"))
        await settle()
        assert head.core.job("borrowed").state.value == "queued"  # free, but its stopped attempt has not ended
        await head.on_report(_report("borrowed", "borrower", 1, "cancelled"))  # it has: uncharged
        await settle()
        job = head.core.job("borrowed")
        assert job.state.value == "running" and job.attempts == 2 and job.charged_cpu_hours == 0.0
        started = [s["attempt"] for name, args in worker.calls if name == "start_many" for s in args[0]
                   if s["task_id"] == "borrowed"]
        assert started == [1, 2]
    asyncio.run(main())


async def preempted(url: str) -> Head:
    """A reclaiming head on ``url`` where the owner's task "mine" has preempted the borrower's "borrowed"."""
    head = await reclaiming_head(url)
    head._workers["owned"] = FakeWorker("owned")
    await head.submit(_task("borrowed", "borrower"), b"b")
    await settle()
    await head.submit(_task("mine", "owner"), b"m")
    await settle()
    return head


def test_a_restarted_head_stops_a_preempted_attempt_again_in_case_it_went_down_before_it_could(tmp_path):
    async def main():
        url = f"sqlite:///{tmp_path / 'state.db'}"
        head = await preempted(url)
        assert head.store.get_job("borrowed")["ending_on"] == "owned"
        head.store.close()
        again = Head.__new__(Head)  # the head restarted (its stop of the preempted attempt may never have gone)
        await Head.__init__(again, store_url=url)
        again._watchdog = object()
        worker = again._workers["owned"] = FakeWorker("owned")
        await settle()
        assert ("cancel", ("borrowed",)) in [(name, args) for name, args in worker.calls]
        assert again.core.job("borrowed").state.value == "queued"
        assert (await again.status("borrowed"))["preemptions"] == 1  # (kept in its record)
    asyncio.run(main())


def test_coopsched_job_status_says_how_many_attempts_an_owner_stopped(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def preempt():
        head = await preempted(url)
        await head.on_report(_report("borrowed", "borrower", 1, "cancelled"))
        await settle()
        head.store.close()
    asyncio.run(preempt())
    th = ThreadedHead(store_url=url)  # (a head on that store, without workers: the CLI reads the job's status)
    try:
        code, out, _ = cli(th, monkeypatch, capsys, "job", "status", "borrowed")
        assert code == 0 and "preempted on owned" in out
        assert "attempts 1 (1 stopped to make room: an owner's reclaim or a task of higher priority); charged 0 CPU-h" in out
    finally:
        th.close()
