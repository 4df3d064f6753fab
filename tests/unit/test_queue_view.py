"""``coopsched job queue`` / ``Client.queue``: the waiting jobs in the order the next round tries them.

A member asking "why does my job wait, and behind what?" got the job's reason only. Now the queue is
shown in scheduling order (effective priority, then the member's fair share of its quota, then submission
time), numbered over every coop's waiting jobs, so a filtered view still tells how many wait ahead.
"""

from __future__ import annotations

import json

import pytest

from policies.validation import InvalidRequest
from scheduler.tasks import JobState
from scheduler.usage import UsageReport
from tests.builders import make_core, make_executor, make_policy, make_task
from tests.head_in_process import ThreadedHead, cli
from tests.unit.test_head_interleavings import COOP, FakeWorker, add_executor


def _busy_core():
    """A 1-CPU executor per coop, both busy: whatever is submitted next waits."""
    core, clock = make_core(make_policy(rules=[{"type": "MemberPriority", "member": "vip", "multiplier": 3.0}]),
                            [make_executor("e0", cpus=1), make_executor("o0", coop="other", cpus=1)])
    core.set_policy(make_policy(coop="other"))
    busy = core.submit(make_task(member="carol", cpus=1)).task_id
    core.submit(make_task(coop="other", member="olaf", cpus=1))
    assert len(core.schedule()) == 2
    return core, clock, busy


def _finish(core, task_id: str, executor_id: str, seconds: float) -> None:
    now, task = core.clock(), core.task(task_id)
    core.complete(UsageReport(task_id=task_id, executor_id=executor_id, coop_id=task.coop_id, member=task.member,
                              started_at=now - seconds, ended_at=now, cpu_seconds=seconds))


def test_positions_follow_effective_priority_then_fair_share_then_submission_time():
    core, clock, busy = _busy_core()
    clock.advance(3600)
    _finish(core, busy, "e0", 3600)  # carol has used 1 of her 100 CPU-hours
    hog = core.submit(make_task(member="carol", cpus=1)).task_id
    assert [p.task_id for p in core.schedule()] == [hog]  # the executor is busy again
    ids = {}
    for name, member, priority, coop in (("carol-normal", "carol", "normal", "coop"),
                                         ("bob-normal", "bob", "normal", "coop"), ("bob-low", "bob", "low", "coop"),
                                         ("vip-normal", "vip", "normal", "coop"),
                                         ("olga-high", "olga", "high", "other")):
        clock.advance(1)
        ids[name] = core.submit(make_task(coop=coop, member=member, priority=priority)).task_id
    core.schedule()
    order = [(p.position, p.task_id) for p in core.queue_positions()]
    want = ["vip-normal", "olga-high", "bob-normal", "carol-normal", "bob-low"]  # 6 > 3 > 2 (bob has used none) > 1
    assert order == [(i + 1, ids[name]) for i, name in enumerate(want)]
    first = core.queue_positions()[0]
    assert (first.effective_priority, first.priority, first.state) == (6.0, "normal", JobState.QUEUED)
    carol = next(p for p in core.queue_positions() if p.member == "carol")
    assert carol.fair_share == pytest.approx(600 / 3600 / 100, abs=1e-6)  # (charged its 600 s limit, of 100 CPU-h)
    assert "waiting for a free executor: every active one is full" in carol.reason  # (said at once)
    # a filtered view keeps the places in the whole queue; limit cuts the view
    assert [(p.position, p.member) for p in core.queue_positions(coop_id="coop", member="bob")] == [
        (3, "bob"), (5, "bob")]
    assert [p.position for p in core.queue_positions(coop_id="other")] == [2]
    assert [p.position for p in core.queue_positions(limit=2)] == [1, 2]
    assert all(p.task_id not in (busy, hog) for p in core.queue_positions())  # running jobs do not wait


def test_the_first_shown_is_the_next_placed():
    core, clock, busy = _busy_core()
    for member in ("ann", "vip", "bob"):
        core.submit(make_task(member=member, cpus=1))
    head = core.queue_positions()[0]
    clock.advance(60)
    _finish(core, busy, "e0", 60)
    assert [p.task_id for p in core.schedule()] == [head.task_id]
    assert [p.position for p in core.queue_positions()] == [1, 2]


@pytest.fixture
def th():
    threaded = ThreadedHead()
    threaded.call("set_policy", {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                                    "max_concurrent_tasks": 100,
                                                                    "max_priority": "high"}})
    threaded.do(add_executor(threaded.head, FakeWorker("e1")))
    yield threaded
    threaded.close()


def _task(task_id: str, member: str = "alice", priority: str = "normal") -> dict:
    return {"task_id": task_id, "coop_id": COOP, "member": member, "resources": {"cpus": 1}, "max_runtime_s": 60,
            "priority": priority}


def test_the_command_shows_the_queue_in_order(th, monkeypatch, capsys):
    for task_id, member, priority in (("run", "alice", "normal"), ("later", "alice", "low"),
                                      ("sooner", "bob", "high")):
        th.call("submit", _task(task_id, member, priority), b"x")
    code, out, _ = cli(th, monkeypatch, capsys, "job", "queue")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["#", "JOB", "COOP", "MEMBER", "PRIORITY"]
    assert [line.split()[:2] for line in lines[2:]] == [["1", "sooner"], ["2", "later"]]  # (under a rule)
    code, out, _ = cli(th, monkeypatch, capsys, "job", "queue", "--member", "alice", "--json")
    assert code == 0 and [(p["position"], p["task_id"]) for p in json.loads(out)] == [(2, "later")]
    code, out, _ = cli(th, monkeypatch, capsys, "job", "queue", "--member", "nobody")
    assert code == 0 and "no job waits" in out


def test_a_bad_limit_is_refused_naming_the_field(th):
    with pytest.raises(InvalidRequest) as caught:
        th.call("queue", None, None, -1)
    assert "limit" in str(caught.value) and "-1" in str(caught.value) and "100" in str(caught.value)
