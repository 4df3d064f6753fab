"""One damaged row of the other records read at start-up or on every call takes nothing down either: an
executor's registration, a coop's active policy, a usage report, a registered key. Each is logged, named,
counted where a summary is kept (the head's ``ping``, the tracker's), and skipped or answered as damaged,
the safe way for its kind: a damaged executor takes no work (and what runs on it is not run a second time
elsewhere); a damaged policy fails closed (the coop's submissions are refused, saying why, and no earlier
version stands in); a damaged report is not forwarded (it charges nobody) and holds up none of the others;
a damaged key is not accepted, the others are. The Head and Tracker are the real classes without Ray, on a
SQLite file (FakeWorker handles, as in test_head_recovery_damaged_json); a row is damaged with a direct
UPDATE of the file, as a disk or a hand edit would."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time

import pytest

from scheduler.head import Head
from scheduler.identity import Principal, generate_key, public_key_b64, sign_request
from scheduler.state_store import open_store
from scheduler.tasks import JobState
from scheduler.tracker import Tracker
from tests.unit.test_head_interleavings import FakeWorker, no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import BASE, COOP, join, open_head, report, task
from tests.unit.test_head_recovery_damaged_json import DAMAGES
from tests.unit.test_head_recovery_held_capacity import Worker, submitted

OTHER_COOP = "coop:ok"


def damage(url: str, table: str, column: str, how=DAMAGES["cut short"], **where) -> None:
    """Damage the JSON in ``column`` of the row of ``table`` matching ``where``, in the SQLite file at ``url``."""
    db = sqlite3.connect(url[len("sqlite:///"):])
    clause = " AND ".join(f"{name} = ?" for name in where)
    (text,) = db.execute(f"SELECT {column} FROM {table} WHERE {clause}", tuple(where.values())).fetchone()
    db.execute(f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {clause}", (how(text), *where.values()))
    db.commit()
    db.close()


def logged(caplog, *words: str) -> bool:
    return any(all(w in r.getMessage() for w in words) for r in caplog.records if r.levelno >= logging.ERROR)


# ----------------------------------------------------------------------------------------------- executors
async def ran_on_one_of_two(url: str) -> tuple[str, str]:
    """A head on ``url`` with e1 and e2 (1 CPU each) was handed job "run", then went away: (where it runs, the
    other executor, left free)."""
    h = await open_head(url, {})
    await h.set_policy(BASE)
    for executor_id in ("e1", "e2"):
        await join(h, FakeWorker(executor_id), "us-west")
    await h.submit(task("run"), b"run")
    await settle()
    where = h.core.job("run").executor_id
    h.store.close()
    return where, "e2" if where == "e1" else "e1"


def damaged_executor(tmp_path, how=DAMAGES["cut short"]) -> tuple[str, str, str]:
    url = f"sqlite:///{tmp_path}/state.db"
    where, other = asyncio.run(ran_on_one_of_two(url))
    damage(url, "executors", "spec", how, executor_id=where)
    return url, where, other


@pytest.mark.parametrize("how", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_head_starts_past_an_executor_whose_stored_registration_is_damaged_and_says_so(tmp_path, caplog, how):
    url, where, other = damaged_executor(tmp_path, how)

    async def restart():
        head = await open_head(url, {where: Worker(where, runs=("run",)), other: Worker(other)})
        return head, await head.ping()

    with caplog.at_level(logging.ERROR):
        head, ping = asyncio.run(restart())  # before the fix: JSONDecodeError (or sqlite3.OperationalError)
    assert list(head.core.table.ids()) == [other]
    assert ping["recovered"]["damaged_executors"] == [where] and ping["recovered"]["executors"] == 1
    assert logged(caplog, f"executor {where}", "damaged")


def test_an_executor_whose_registration_is_damaged_takes_no_work_nor_heartbeats_until_it_registers_again(tmp_path):
    url, where, other = damaged_executor(tmp_path)

    async def main():
        head = await open_head(url, {where: Worker(where), other: Worker(other)})
        beat = await head.heartbeat({"executor_id": where, "queue_depth": 0})
        placed = await submitted(head, "a", "b")  # a on the other executor; b waits: none else is registered
        await join(head, FakeWorker(where), "us-west", cpus=2)  # registered again (its row in the store rewritten)
        await settle()
        return beat, placed, head.core.job("b").executor_id, open_store(url).executors()[0][0].get("damaged")

    beat, placed, b_then, damaged_after = asyncio.run(main())
    assert beat is False
    assert placed == {"a": (JobState.RUNNING, other), "b": (JobState.QUEUED, None)}
    assert b_then == where and damaged_after is None


UNREGISTERED = {**DAMAGES, "refused by this release": lambda text: json.dumps({**json.loads(text),
                                                                               "resources": {"cpus": -1}})}


@pytest.mark.parametrize("how", UNREGISTERED.values(), ids=UNREGISTERED.keys())
def test_a_job_running_on_an_executor_not_restored_is_not_run_a_second_time_elsewhere(tmp_path, how):
    """Its worker may still run it: the job stays running where it was placed, and the free executor is not
    handed it (before the fix, a registration refused by this release sent the job back to the queue, and
    it was placed on the other executor while its first attempt still ran)."""
    url, where, other = damaged_executor(tmp_path, how)

    async def main():
        head = await open_head(url, {where: Worker(where, runs=("run",)), other: Worker(other)})
        await settle()
        await head._watch_once()  # its worker says it still runs it
        await settle()
        return head.core.job("run").state, head.core.job("run").executor_id, await submitted(head, "new")

    assert asyncio.run(main()) == (JobState.RUNNING, where, {"new": (JobState.RUNNING, other)})


def test_a_job_on_an_executor_whose_registration_is_damaged_is_retried_once_its_worker_no_longer_runs_it(tmp_path):
    url, where, other = damaged_executor(tmp_path)

    async def main():
        worker = Worker(where, runs=("run",))
        head = await open_head(url, {where: worker, other: Worker(other)})
        worker.runs = []  # it ended there (its report may never settle it: the executor is not registered)
        await head._watch_once()
        await settle()
        return [("running", ()) in worker.calls, head.core.job("run").state, head.core.job("run").executor_id]

    assert asyncio.run(main()) == [True, JobState.RUNNING, other]  # the retry, on the executor that is registered


def test_a_job_on_an_executor_whose_registration_is_damaged_settles_with_its_report(tmp_path):
    url, where, other = damaged_executor(tmp_path)

    async def main():
        head = await open_head(url, {where: Worker(where, runs=("run",)), other: Worker(other)})
        settled = await head.on_reports([report("run", where, 1)])
        return settled, head.core.job("run").state, head.core.usage(COOP, "alice").cpu_hours

    settled, state, used = asyncio.run(main())
    assert (settled, state) == ([True], JobState.SUCCEEDED) and used == pytest.approx(1 / 3600, abs=1e-6)


def test_an_executor_registered_again_while_a_restored_job_runs_on_it_keeps_what_that_job_uses(tmp_path):
    url, where, other = damaged_executor(tmp_path)

    async def main():
        head = await open_head(url, {where: Worker(where, runs=("run",)), other: Worker(other)})
        await join(head, Worker(where, runs=("run",)), "us-west")  # 1 CPU, which "run" uses
        return await submitted(head, "new", "next")

    assert asyncio.run(main()) == {"new": (JobState.RUNNING, other), "next": (JobState.QUEUED, None)}


# ----------------------------------------------------------------------------------------------- policies
def stored_policies(url: str, *versions: dict) -> None:
    """``versions`` of COOP's policy, in order (the last active), and OTHER_COOP's, as an earlier head set them."""
    store = open_store(url)
    for policy in versions:
        store.put_policy(COOP, policy, "admin", time.time())
    store.put_policy(OTHER_COOP, {**BASE, "coop_id": OTHER_COOP}, "admin", time.time())
    store.close()


@pytest.mark.parametrize("how", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_head_starts_past_a_damaged_active_policy_and_refuses_that_coops_submissions_saying_why(
        tmp_path, caplog, how):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_policies(url, BASE)
    damage(url, "policies", "policy", how, coop_id=COOP, version=1)

    async def main():
        head = await open_head(url, {})
        await join(head, FakeWorker("e1"), "us-west")
        refused = await head.submit(task("t1"), b"t1")
        other = await head.submit({**task("t2"), "coop_id": OTHER_COOP}, b"t2")
        return head, refused, other, await head.ping()

    with caplog.at_level(logging.ERROR):
        head, refused, other, ping = asyncio.run(main())  # before the fix: JSONDecodeError (or sqlite3's)
    assert head.core.policy(COOP) is None and head.core.policy(OTHER_COOP) is not None
    assert "damaged" not in str(other)  # another coop's submissions are decided as before
    assert not refused["admitted"] and refused["reasons"][0]["code"] == "error"
    assert "damaged" in refused["reasons"][0]["message"] and "policy set" in refused["reasons"][0]["message"]
    assert head.core.task("t1") is None  # nothing recorded: once a policy is set again, the same task is admitted
    assert ping["recovered"]["damaged_policies"] == [COOP] and ping["recovered"]["policies"] == 1
    assert logged(caplog, f"coop {COOP}", "damaged")


def test_no_earlier_version_stands_in_for_a_damaged_active_policy_until_an_admin_sets_one(tmp_path):
    """Version 1 let alice run 100 tasks at once, version 2 only 1: running version 1 in its place would give
    back what version 2 took away."""
    url = f"sqlite:///{tmp_path}/state.db"
    lenient = BASE
    strict = {**BASE, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 1}}
    stored_policies(url, lenient, strict)
    damage(url, "policies", "policy", coop_id=COOP, version=2)

    async def main():
        head = await open_head(url, {})
        await join(head, FakeWorker("e1"), "us-west", cpus=4)
        before = (head.core.policy(COOP), (await head.submit(task("t1"), b"t1"))["admitted"])
        await head.set_policy(strict)  # an admin sets it again
        return before, await submitted(head, "t1", "t2")

    before, after = asyncio.run(main())
    assert before == (None, False)
    assert after == {"t1": (JobState.RUNNING, "e1"), "t2": (JobState.QUEUED, None)}  # at alice's cap of 1


def test_a_damaged_policy_version_is_named_in_the_history_and_is_not_rolled_back_to(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_policies(url, BASE, {**BASE, "description": "v2"}, {**BASE, "description": "v3"})
    damage(url, "policies", "policy", coop_id=COOP, version=2)

    async def main():
        head = await open_head(url, {})
        history = await head.policy_history(COOP)  # before the fix: JSONDecodeError
        with pytest.raises(KeyError, match="damaged"):
            await head.rollback_policy(COOP, 2)
        return history, head.core.policy(COOP).description

    history, active = asyncio.run(main())
    assert [(v["version"], v["damaged"] is not None) for v in history] == [(1, False), (2, True), (3, False)]
    assert active == "v3"  # the active version was readable: nothing changes for the coop


# ----------------------------------------------------------------------------------------------- reports
class HeadHandle:
    """The tracker's handle on a head: ``on_reports.remote`` and ``on_report.remote`` call the real Head."""

    def __init__(self, head: Head) -> None:
        self.on_reports, self.on_report = _Remote(head.on_reports), _Remote(head.on_report)


class _Remote:
    def __init__(self, method) -> None:
        self.method = method

    def remote(self, *args):
        return self.method(*args)


async def tracker_on(url: str) -> Tracker:
    tracker = Tracker.__new__(Tracker)
    await Tracker.__init__(tracker, store_url=url, resend_interval_s=0.05)
    tracker._loop_task = object()  # no forwarding loop: the test forwards
    return tracker


async def two_running(url: str) -> Head:
    """A head on ``url`` running "a" and "b" (alice's) on e1 (2 CPUs)."""
    head = await open_head(url, {})
    await head.set_policy(BASE)
    await join(head, FakeWorker("e1"), "us-west", cpus=2)
    await submitted(head, "a", "b")
    return head


@pytest.mark.parametrize("how", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_tracker_starts_past_a_damaged_report_and_forwards_the_others_charging_no_one_for_it(tmp_path, caplog, how):
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        head = await two_running(url)
        first = await tracker_on(url)
        for task_id in ("a", "b"):  # stored and acknowledged; the tracker stops before forwarding them
            assert first._store(report(task_id, "e1", 1, cpu_seconds=60), None) is True
        damage(url, "reports", "report", how, task_id="b", attempt=1)
        with caplog.at_level(logging.ERROR):
            tracker = await tracker_on(url)  # as Ray restarts it; before the fix: JSONDecodeError
        tracker._head = HeadHandle(head)
        while tracker._unforwarded and await tracker._forward_batch():
            pass
        left = [(r["task_id"], "damaged" in r) for r in open_store(url).unforwarded_reports()]
        return (await tracker.ping(), left, head.core.job("a").state, head.core.job("b").state,
                head.core.usage(COOP, "alice").cpu_hours)

    ping, left, a, b, used = asyncio.run(main())
    assert (ping["pending"], ping["damaged"], ping["damaged_reports"]) == (0, 1, [["b", 1]])
    assert left == [("b", True)]  # kept unforwarded, as it was
    assert (a, b) == (JobState.SUCCEEDED, JobState.RUNNING) and used == pytest.approx(1 / 60, abs=1e-6)  # a's only
    assert logged(caplog, "report of job b attempt 1", "damaged")


def test_a_worker_resending_a_report_whose_stored_copy_is_damaged_reaches_the_head(tmp_path):
    """The stored copy cannot be read; the worker's, sent again, is passed to the head (which verifies it and
    settles it once), as any report that differs from the stored one is."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def main():
        head = await two_running(url)
        tracker = await tracker_on(url)
        tracker._head = HeadHandle(head)
        assert tracker._store(report("b", "e1", 1), None) is True
        damage(url, "reports", "report", task_id="b", attempt=1)
        answer = await tracker.report(report("b", "e1", 1))  # before the fix: JSONDecodeError
        return answer, head.core.job("b").state

    assert asyncio.run(main()) == (True, JobState.SUCCEEDED)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_store_answers_a_damaged_report_key_and_executor_as_damaged_rather_than_raising(tmp_path, kind):
    url = f"sqlite:///{tmp_path}/state.db" if kind == "sqlite" else "memory://damaged-rows"
    store = open_store(url)
    try:
        for task_id in ("a", "b"):
            store.put_report({"task_id": task_id, "attempt": 1})
            store.put_key(f"k-{task_id}", {"subject": task_id})
            store.put_executor({"executor_id": f"e-{task_id}"}, "active")
        for table, column, where in (("reports", "report", "task_id = 'a'"), ("keys", "principal", "key_id = 'k-a'"),
                                     ("executors", "spec", "executor_id = 'e-a'")):
            store._conn.execute(f"UPDATE {table} SET {column} = '{{\"cut' WHERE {where}")
        assert [("damaged" in r, r["task_id"], r["attempt"]) for r in store.reports()] == \
            [(True, "a", 1), (False, "b", 1)]
        assert [("damaged" in r, r["task_id"]) for r in store.unforwarded_reports()] == [(True, "a"), (False, "b")]
        assert [("damaged" in r, r.get("key_id") or r["subject"]) for r in store.keys()] == \
            [(True, "k-a"), (False, "b")]
        assert [("damaged" in s, s["executor_id"], status) for s, status in store.executors()] == \
            [(True, "e-a", "active"), (False, "e-b", "active")]
    finally:
        store.close()


# ----------------------------------------------------------------------------------------------- keys
OPERATOR, ALICE, BOB = generate_key(), generate_key(), generate_key()


def member_key(key) -> Principal:
    return Principal(public_key=public_key_b64(key), role="member", coop_id=COOP,
                     subject="alice" if key is ALICE else "bob")


def stored_keys(url: str, *keys) -> None:
    store = open_store(url)
    store.put_policy(COOP, BASE, "admin", time.time())
    for key in keys:
        store.put_key(member_key(key).key_id, member_key(key).model_dump(mode="json"))
    store.close()


async def signed_head(url: str) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=url, auth={"mode": "signed", "operator_key": public_key_b64(OPERATOR)})
    head._watchdog = object()
    return head


async def jobs_as(head: Head, key, member: str) -> dict:
    await asyncio.sleep(0.01)  # signed after the head started
    return await head.jobs(COOP, member, _request={"signed": sign_request(key, "jobs", (COOP, member), {},
                                                                          now=time.time())})


@pytest.mark.parametrize("how", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_head_starts_past_a_damaged_registered_key_and_refuses_only_that_key(tmp_path, caplog, how):
    url = f"sqlite:///{tmp_path}/state.db"
    stored_keys(url, ALICE, BOB)
    damage(url, "keys", "principal", how, key_id=member_key(BOB).key_id)

    async def main():
        head = await signed_head(url)  # before the fix: JSONDecodeError (or sqlite3's) in the request gate
        return await jobs_as(head, ALICE, "alice"), await jobs_as(head, BOB, "bob"), await head.ping(_request={
            "signed": sign_request(OPERATOR, "ping", (), {}, now=time.time())})

    with caplog.at_level(logging.ERROR):
        alice, bob, ping = asyncio.run(main())
    assert alice == {"ok": [], "dev_mode": False}
    assert bob["refused"]["code"] == "unknown_key"
    assert ping["ok"]["recovered"]["damaged_keys"] == [member_key(BOB).key_id]
    assert logged(caplog, f"key {member_key(BOB).key_id}", "damaged")


def test_a_key_whose_stored_row_is_damaged_while_the_head_runs_is_no_longer_accepted(tmp_path):
    """The head held it from before: a reload of the registry drops it (fail closed), and keeps the others."""
    url = f"sqlite:///{tmp_path}/state.db"
    stored_keys(url, ALICE, BOB)

    async def main():
        head = await signed_head(url)
        before = await jobs_as(head, BOB, "bob")
        damage(url, "keys", "principal", key_id=member_key(BOB).key_id)
        head.gate._load_keys()  # as a reload does (another replica's change, or an unknown key): before the fix,
        # JSONDecodeError, and every such reload failed the call that made it
        return before, await jobs_as(head, BOB, "bob"), await jobs_as(head, ALICE, "alice")

    before, bob, alice = asyncio.run(main())
    assert "ok" in before and bob["refused"]["code"] == "unknown_key" and "ok" in alice
