"""An operator (or the coop's admin) deletes a damaged job record through the head, ``forget_damaged_job`` and
``coopsched job forget ID``, instead of editing the store by hand: the record goes with its payload and its
reservation (released off the member's month), and what the head held on executors for its attempt is free.
A readable record, a job the head holds, an unknown id and a job whose worker still runs it are refused, with
nothing changed; a member may not forget one, even its own. The Head is the real class without Ray, on a
SQLite file whose record is damaged as a disk or a hand edit would (tests/unit/test_head_recovery_damaged_json.py);
the CLI and Client run in-process against it (tests/head_in_process.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from policies.validation import InvalidRequest
from scheduler.ledger import Cost, from_units, period_of
from scheduler.tasks import JobState
from tests.head_in_process import ThreadedHead, cli
from tests.unit.test_head_interleavings import no_ray_started, settle  # noqa: F401
from tests.unit.test_head_recovery import COOP, open_head, report
from tests.unit.test_head_recovery_damaged_json import damage, ran
from tests.unit.test_head_recovery_held_capacity import Worker, submitted


def reserved(head) -> Cost:
    """What alice's month holds in open reservations, by the store."""
    return head.store.standing(COOP, "alice", period_of(time.time()))[1]


def stored(head, task_id: str) -> tuple:
    """What the store keeps of ``task_id``: its record (whether damaged), its payload and its ledger hold."""
    record = head.store.get_job(task_id)
    return (None if record is None else "damaged" in record, head.store.get_payload(task_id) is not None,
            head.store.task_hold(task_id) is not None)


def test_forgetting_a_damaged_record_deletes_it_and_releases_its_reservation(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run", "wait"))  # run runs on e1; wait waits (queued: it holds nothing on executors)
    damage(url, "wait")

    async def main():
        head = await open_head(url, {"e1": Worker("e1", runs=("run",))})
        before, kept = (reserved(head), stored(head, "wait")), stored(head, "run")
        assert (head.recovered["damaged"], head.recovered["damaged_jobs"]) == (1, ["wait"])  # as ping names it
        answer = await head.forget_damaged_job("wait")
        assert (head.recovered["damaged"], head.recovered["damaged_jobs"]) == (0, [])
        return head, before, kept, answer, reserved(head)

    head, (held_before, before), kept, answer, held_after = asyncio.run(main())
    assert before == (True, True, True)  # damaged, with its payload and its reservation
    released = held_before.cpu - held_after.cpu
    assert released > 0 and held_after.cpu == released  # one job's projection went; run's is still held
    assert (answer["forgotten"], answer["outcome"], answer["coop_id"], answer["member"], answer["state"]) == \
        (True, "forgotten", COOP, "alice", "queued")
    assert answer["released"]["cpu_hours"] == from_units(released) and answer["payload_deleted"]
    assert "forgotten" in answer["message"] and "new task id" in answer["message"]
    assert stored(head, "wait") == (None, False, False) and stored(head, "run") == kept  # run's untouched
    assert [s["task_id"] for s in head.store.jobs(COOP)] == ["run"] and head.core.job("run").state is JobState.RUNNING
    change = head.store.changes(COOP, limit=1)[0]
    assert (change["kind"], change["actor"], change["detail"]["task_id"]) == ("job.forget", "admin", "wait")
    assert change["detail"]["released"] == answer["released"]


def test_forgetting_a_damaged_running_job_frees_what_its_attempt_was_held_on(tmp_path):
    """Its record no longer says where it ran: every executor is held for it. Forgotten once no worker runs it,
    those holds end at once, and a waiting job starts, not after the watchdog's next round."""
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run", executors=("e1", "e2")))
    damage(url, "run")

    async def main():
        workers = {e: Worker(e) for e in ("e1", "e2")}  # it ended while no head ran: neither runs it now
        head = await open_head(url, workers)
        before = await submitted(head, "new"), head.core.held_where("run")
        answer = await head.forget_damaged_job("run")
        await settle()
        asked = [("running", ()) in w.calls for w in workers.values()]
        return before, answer, asked, head.core.held_where("run"), head.core.job("new").state

    (waiting, held), answer, asked, held_after, state = asyncio.run(main())
    assert waiting == {"new": (JobState.QUEUED, None)} and held == ["e1", "e2"]
    assert answer["forgotten"] and answer["holds_released"] == ["e1", "e2"] and asked == [True, True]
    assert held_after == [] and state is JobState.RUNNING  # (before: held until the watchdog asked)


def test_a_damaged_job_whose_worker_still_runs_it_is_forgotten_only_once_it_no_longer_does(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run"))
    damage(url, "run")

    async def main():
        e1 = Worker("e1", runs=("run",))
        head = await open_head(url, {"e1": e1})
        before = reserved(head)
        refused = await head.forget_damaged_job("run")
        kept = stored(head, "run"), head.core.held_where("run"), reserved(head) == before
        e1.runs = []  # cancelled, or it ended
        return refused, kept, await head.forget_damaged_job("run")

    refused, kept, forgotten = asyncio.run(main())
    assert (refused["forgotten"], refused["outcome"]) == (False, "still_runs")
    assert "e1" in refused["message"] and "`coopsched job cancel run`" in refused["message"]
    assert kept == ((True, True, True), ["e1"], True)  # nothing changed
    assert forgotten["forgotten"] and forgotten["holds_released"] == ["e1"]


def test_two_forgets_of_one_damaged_record_at_once_forget_it_once(tmp_path):
    """Both are let past the first checks while the workers are asked; the store's own check decides."""
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run"))
    damage(url, "run")

    async def main():
        head = await open_head(url, {"e1": Worker("e1")})
        answers = await asyncio.gather(*(head.forget_damaged_job("run") for _ in range(2)))
        return answers, [c["kind"] for c in head.store.changes(COOP)].count("job.forget"), reserved(head)

    answers, logged, left = asyncio.run(main())
    assert sorted(a["outcome"] for a in answers) == ["forgotten", "not_found"] and logged == 1 and left == Cost()


async def _live_job(url: str):
    """A head that holds job "run" (running on e1) in memory."""
    return await open_head(url, {"e1": Worker("e1", runs=("run",))})


async def _finished_job(url: str):
    """A head restarted after "run" finished: its readable record is in the store only."""
    first = await open_head(url, {"e1": Worker("e1")})
    await first.on_reports([report("run", "e1", 1)])
    first.store.close()
    return await open_head(url, {"e1": Worker("e1")})


REFUSED = [  # (name, the head asked, the id, the answer's outcome, what its message says to do)
    ("a job the head holds", _live_job, "run", "in_memory", "`coopsched job cancel run`"),
    ("a readable record", _finished_job, "run", "not_damaged", "reads (succeeded)"),
    ("an unknown id", _live_job, "nope", "not_found", "no job 'nope' is recorded"),
]


@pytest.mark.parametrize("make, task_id, outcome, says", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_record_that_is_not_damaged_or_not_there_is_refused_and_nothing_changes(tmp_path, make, task_id, outcome,
                                                                                  says):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run"))

    async def main():
        head = await make(url)
        before = head.store.get_job("run"), head.store.ledger_snapshot(), head.core.state_of("run")
        answer = await head.forget_damaged_job(task_id)
        after = head.store.get_job("run"), head.store.ledger_snapshot(), head.core.state_of("run")
        return answer, before, after, head.store.changes(COOP, limit=1)[0]["kind"]

    answer, before, after, last_change = asyncio.run(main())
    assert (answer["forgotten"], answer["outcome"], answer["released"]) == (False, outcome, None)
    assert says in answer["message"] and answer["message"].endswith("nothing was changed")
    assert after == before and last_change != "job.forget"


@pytest.mark.parametrize("task_id", [42, "", None, "x" * 201])
def test_a_task_id_that_is_not_one_is_refused_naming_the_field(tmp_path, task_id):
    async def main():
        head = await open_head(f"sqlite:///{tmp_path}/state.db", {})
        with pytest.raises(InvalidRequest) as caught:
            await head.forget_damaged_job(task_id)
        return str(caught.value), head.store.changes()

    message, changes = asyncio.run(main())
    assert "task_id" in message and "job-7f3a" in message and changes == []


@pytest.fixture
def head_with_a_damaged_queued_job(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    asyncio.run(ran(url, "run", "wait"))
    damage(url, "wait")
    th = ThreadedHead(store_url=url)
    th.head._workers["e1"] = Worker("e1", runs=("run",))
    yield th
    th.close()


def test_coopsched_job_forget_prints_what_it_released_and_exits_0_then_1_once_there_is_nothing(
        head_with_a_damaged_queued_job, monkeypatch, capsys):
    th = head_with_a_damaged_queued_job
    code, out, err = cli(th, monkeypatch, capsys, "job", "forget", "wait")
    assert code == 0 and out.startswith("job 'wait' (coop coop:t, member alice; stored state queued) forgotten")
    assert "its reservation in " in out and "CPU-hours" in out and "is released" in out
    code, out, err = cli(th, monkeypatch, capsys, "job", "forget", "wait")
    assert (code, out) == (1, "") and err.startswith("coopsched: no job 'wait' is recorded in the store")
    code, out, err = cli(th, monkeypatch, capsys, "--json", "job", "forget", "run")
    assert code == 1 and '"outcome": "in_memory"' in out  # (a refusal with --json: its answer, on stdout)


def test_in_signed_mode_a_member_may_not_forget_even_its_own_damaged_job_nor_another_coops_admin_its_admin_may():
    from tests.unit.test_signed_head import A, ADMIN_A, ADMIN_B, ALICE, call, make_head
    from tests.unit.test_signed_head import task as signed_task

    async def main():
        h = await make_head()
        h._workers["ea"] = Worker("ea")  # (asked whether it runs the job: it does not)
        assert (await call(h, ALICE, "submit", signed_task("a1"), b"p", []))["ok"]["admitted"]
        h.store._conn.execute("UPDATE jobs SET record = '{\"task_id\": \"a1\", \"sta' WHERE task_id = 'a1'")
        h._resync(None)  # as a restart: the head no longer holds it
        answers = {name: await call(h, key, "forget_damaged_job", "a1")
                   for name, key in (("alice", ALICE), ("admin of b", ADMIN_B))}
        kept = h.store.get_job("a1") is not None and h.store.task_hold("a1") is not None
        answers["admin of a"] = await call(h, ADMIN_A, "forget_damaged_job", "a1")
        return answers, kept, h.store.get_job("a1"), h.store.changes(A, limit=1)[0]

    answers, kept, record, change = asyncio.run(main())
    for name in ("alice", "admin of b"):
        assert answers[name]["refused"]["code"] == "forbidden", name
    assert "coop's admin or the operator" in answers["alice"]["refused"]["message"]
    assert "its own coop (coop:b)" in answers["admin of b"]["refused"]["message"]
    assert kept  # the refusals changed nothing
    assert answers["admin of a"]["ok"]["forgotten"] and record is None
    assert (change["kind"], change["actor"]) == ("job.forget", "admin:ann")
