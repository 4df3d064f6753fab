"""Coop administration through the head (scheduler/head_admin.py, scheduler/head.py) and the CLI, on
the real ``Head`` class in-process (tests/head_in_process.py): no Ray."""
from __future__ import annotations

import json

import pytest

from tests.head_in_process import ThreadedHead, cli
from policies.validation import InvalidRequest
from scheduler.executor_spec import ExecutorStatus
from scheduler.ledger import Cost, Ledger
from scheduler.sqlite_store import SqliteStore
from scheduler.store_ledger import StoreLedger

COOP = "coop:admin"
POLICY = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 10}}


@pytest.fixture
def th():
    threaded = ThreadedHead()
    yield threaded
    threaded.close()


def spec(executor_id: str = "e1", **kw) -> dict:
    return {"executor_id": executor_id, "coop_id": COOP, "region": "us-west", "node_id": "n1",
            "resources": {"cpus": 2}, **kw}


# ----------------------------------------------------------------------------- clear_all / members
def test_clear_all_forgets_the_usage_of_a_member_who_has_no_jobs(th):
    """`quota set` gives bob usage without any job; `quota clear-all` ("forget every member's usage
    this month") must forget it too. It only walks members found in the job table."""
    th.call("set_policy", POLICY)
    th.call("quota", "set_quota", COOP, "did:icn:bob", cpu_hours=5.0)
    assert th.call("usage", COOP, "did:icn:bob")["cpu_hours"] == pytest.approx(5.0)
    cleared = th.call("quota", "clear_all", COOP)
    assert th.call("usage", COOP, "did:icn:bob")["cpu_hours"] == 0.0, cleared


def test_quota_list_shows_a_member_who_has_usage_this_month(th):
    """`quota list COOP` ("every member's usage this month") omits a member whose usage was set
    by an admin but who never submitted."""
    th.call("set_policy", POLICY)
    th.call("quota", "set_quota", COOP, "did:icn:bob", cpu_hours=5.0)
    assert "did:icn:bob" in [u["member"] for u in th.call("members", COOP)]


# ----------------------------------------------------------------------------- executors
def test_set_trust_does_not_bring_an_offline_executor_back(th):
    """An executor marked offline (no heartbeat: its worker may be dead) must stay offline when an
    admin only changes its trust; set_trust goes through core.register_executor, which makes every
    non-draining executor ACTIVE again (and writes ACTIVE to the store)."""
    th.call("register_executor", spec())
    core = th.head.core
    core.liveness.last_seen["e1"] -= 10_000  # silent for a long time
    assert core.mark_offline(30.0) == ["e1"]
    th.call("set_trust", "e1", 0.9)
    assert core.table.status_of("e1") is ExecutorStatus.OFFLINE
    assert dict((s["executor_id"], st) for s, st in th.head.store.executors())["e1"] == "offline"


@pytest.mark.parametrize("argv", [["executor", "drain", "no-such-executor"],
                                  ["executor", "remove", "no-such-executor"],
                                  ["executor", "set-trust", "no-such-executor", "0.5"]],
                         ids=["drain", "remove", "set-trust"])
def test_cli_an_unknown_executor_is_named_as_unknown(th, monkeypatch, capsys, argv):
    """A bare KeyError from the executor table reaches the user as `coopsched: no-such-executor`:
    nothing says the executor is not registered or where to look (`coopsched executor list`)."""
    code, out, err = cli(th, monkeypatch, capsys, *argv)
    assert code != 0
    assert "not registered" in err or "no executor" in err, err


# ----------------------------------------------------------------------------- policy diff
def test_cli_policy_diff_with_a_version_that_does_not_exist_is_refused(th, monkeypatch, capsys):
    """`policy diff --coop C --base 99 --to 1`: version 99 does not exist; the head diffs null against
    version 1 and the command prints "(root) changed null -> {...}" with exit 0."""
    th.call("set_policy", POLICY)
    code, out, err = cli(th, monkeypatch, capsys, "policy", "diff", "--coop", COOP, "--base", "99", "--to", "1",
                         "--json")
    assert code != 0, out
    assert "99" in err


# ----------------------------------------------------------------------------- quota set
def test_cli_quota_set_of_one_amount_keeps_the_others(th, monkeypatch, capsys):
    """`quota set C M --gpu-hours 5` zeroes the member's CPU-hours and credits (the unset flags are
    None, then `or 0.0`): correcting one amount silently hands the member back their CPU quota."""
    th.call("set_policy", POLICY)
    th.call("quota", "set_quota", COOP, "did:icn:bob", cpu_hours=40.0, gpu_hours=1.0, credits=30.0)
    code, out, err = cli(th, monkeypatch, capsys, "quota", "set", COOP, "did:icn:bob", "--gpu-hours", "5", "--json")
    assert code == 0, err
    usage = json.loads(out)
    assert usage["gpu_hours"] == pytest.approx(5.0)
    assert usage["cpu_hours"] == pytest.approx(40.0) and usage["credits"] == pytest.approx(30.0)


def test_cli_quota_set_without_any_amount_is_a_usage_error(th, monkeypatch, capsys):
    """`quota set C M` with no amount wipes the member's usage (exit 0); `quota limit` without a limit
    is refused with exit 2."""
    th.call("set_policy", POLICY)
    th.call("quota", "set_quota", COOP, "did:icn:bob", cpu_hours=40.0)
    code, out, err = cli(th, monkeypatch, capsys, "quota", "set", COOP, "did:icn:bob")
    assert code == 2, out
    assert th.call("usage", COOP, "did:icn:bob")["cpu_hours"] == pytest.approx(40.0)


# ----------------------------------------------------------------------------- job list
def test_cli_job_list_with_an_unknown_status_is_bad_input(th, monkeypatch, capsys):
    """`job list --status runing` (a typo) printed an empty table with exit 0 instead of naming the
    accepted states; the head refuses it too (for the Python client)."""
    with pytest.raises(SystemExit) as exit_:
        cli(th, monkeypatch, capsys, "job", "list", "--status", "runing")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "runing" in err and "running" in err
    with pytest.raises(InvalidRequest, match="state.*runing.*running"):
        th.call("jobs", state="runing")


# ----------------------------------------------------------------------------- ledger reset
def test_reset_means_the_same_in_the_memory_ledger_and_the_store_ledger(tmp_path):
    """UsageLedger.reset: the in-memory Ledger forgets the month's completed count; StoreLedger (the
    head's ledger) keeps it, so `quota reset` leaves tasks_completed > 0 for a "forgotten" month."""
    now = 1_780_000_000.0
    results = []
    for ledger in (Ledger(), StoreLedger(SqliteStore(f"sqlite:///{tmp_path / 's.db'}"))):
        ledger.reserve("t1", COOP, "m", Cost.of(1.0), now)
        ledger.settle("t1", COOP, "m", Cost.of(0.5), now + 10)
        ledger.reset(COOP, "m", now + 20)
        s = ledger.standing(COOP, "m", now + 30)
        results.append((s.used, s.reserved, s.tasks_completed))
    assert results[0] == results[1]
