"""Administering a coop with the `coopsched` command against a real head (in-process, real Ray)."""

from __future__ import annotations

import json

import pytest

from scheduler.cli import main
from scheduler.client import Client, shutdown
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
NS = "coopsched-cli"
COOP = "timebank:seattle"


@pytest.fixture(scope="module")
def head(ray_cluster):
    client = Client.local(namespace=NS, store="memory://")
    yield client
    shutdown(NS)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--namespace", NS, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_a_coop_administered_from_the_command_line(head, capsys, tmp_path):
    code, out, _ = run(capsys, "policy", "set", "policies/examples/timebank.json")
    assert code == 0 and "version 1" in out
    assert run_json(capsys, "policy", "list")[0]["coop_id"] == COOP
    code, out, _ = run(capsys, "executor", "join", "--id", "cli-1", "--coop", COOP, "--region", "us-west",
                       "--capability", "secure-execution=2.1", "--trust", "0.7")
    assert code == 0 and "joined coop timebank:seattle in us-west" in out
    assert run_json(capsys, "executor", "list")[0]["capabilities"] == {"secure-execution": "2.1"}
    assert run(capsys, "executor", "set-trust", "cli-1", "0.9")[1].strip() == "executor cli-1: trust 0.9"
    code, _, err = run(capsys, "executor", "join", "--id", "cli-2", "--coop", COOP, "--region", "us-west",
                       "--dispatch-ahead", "lots")
    assert code == 2 and "--dispatch-ahead takes a whole number from 0 to 16" in err and "'lots'" in err
    code, out, _ = run(capsys, "executor", "join", "--id", "cli-2", "--coop", COOP, "--region", "us-west",
                       "--dispatch-ahead", "2", "--json")
    assert code == 0 and json.loads(out)["dispatch_ahead"] == 2
    assert run(capsys, "executor", "remove", "cli-2")[0] == 0

    code, out, err = run(capsys, "job", "submit", "math:factorial", "--args", "[5]", "--coop", COOP,
                         "--member", "did:icn:alice", "--max-runtime", "60", "--wait")
    assert code == 0 and out.strip() == "120" and "running" in err  # progress on stderr
    jobs = run_json(capsys, "job", "list", "--coop", COOP)
    job_id = jobs[0]["task_id"]
    assert run_json(capsys, "job", "explain", job_id)["placement"]["executor_id"] == "cli-1"
    code, out, _ = run(capsys, "job", "status", job_id)
    assert code == 0 and "queued" in out and "running" in out
    assert "attempts 1, last on cli-1; charged " in out and "stopped to make room" not in out
    assert run_json(capsys, "job", "queue", "--coop", COOP) == []  # through the Ray actor: nothing waits now

    code, _, err = run(capsys, "job", "submit", "math:factorial", "--args", "[5]", "--coop", COOP,
                       "--member", "did:icn:alice", "--priority", "critical")
    assert code == 3 and "refused by policy" in err and "quota:priority" in err
    code, _, err = run(capsys, "job", "submit", "no.such.module:fn", "--coop", COOP, "--member", "m")
    assert code == 2 and "cannot find no.such.module:fn" in err
    code, _, err = run(capsys, "job", "submit", "math:factorial", "--args", "5", "--coop", COOP, "--member", "m")
    assert code == 2 and "--args takes a JSON list" in err


def test_quota_and_history_commands(head, capsys, tmp_path):
    run(capsys, "policy", "set", "policies/examples/timebank.json")
    usage = run_json(capsys, "quota", "set", COOP, "did:icn:bob", "--cpu-hours", "9.5")
    assert usage["cpu_hours"] == pytest.approx(9.5)
    assert run_json(capsys, "usage", COOP, "did:icn:bob")["cpu_hours"] == pytest.approx(9.5)
    assert run_json(capsys, "quota", "reset", COOP, "did:icn:bob")["cpu_hours"] == 0
    assert run_json(capsys, "quota", "limit", COOP, "did:icn:bob", "--cpu-hours-per-month", "40")["quota"][
        "cpu_hours_per_month"] == 40
    run(capsys, "quota", "whitelist", "add", COOP, "did:icn:bob")
    assert "did:icn:bob" in json.loads(run(capsys, "policy", "show", COOP)[1])["quota_whitelist"]
    code, _, err = run(capsys, "quota", "limit", COOP, "did:icn:bob")
    assert code == 2 and "give at least one limit" in err

    stricter = json.loads(open("policies/examples/timebank.json").read())
    stricter["default_quota"]["max_concurrent_tasks"] = 1
    path = tmp_path / "stricter.json"
    path.write_text(json.dumps(stricter))
    diff = run_json(capsys, "policy", "diff", str(path))
    assert {"path": "default_quota.max_concurrent_tasks", "op": "changed", "old": 3, "new": 1} in diff
    dry = run_json(capsys, "policy", "set", str(path), "--dry-run")
    assert isinstance(dry, list)  # replayed jobs; nothing changed
    assert json.loads(run(capsys, "policy", "show", COOP)[1])["default_quota"]["max_concurrent_tasks"] == 3
    history = run_json(capsys, "policy", "history", COOP)
    code, out, _ = run(capsys, "policy", "rollback", COOP, str(history[0]["version"]))
    assert code == 0 and "rolled back" in out
    kinds = [c["kind"] for c in run_json(capsys, "changes", COOP)]
    assert "quota.set_quota" in kinds and "policy.set" in kinds


def test_start_in_signed_mode_beside_a_head_running_in_development_mode_says_so_and_fails(head, capsys):
    from scheduler.identity import generate_key, public_key_b64
    code, _, err = run(capsys, "start", "--operator-key", public_key_b64(generate_key()))
    assert code == 1 and "already running in development mode" in err and "coopsched stop" in err


def test_stop_stops_the_tracker_when_no_head_runs(ray_cluster, capsys):
    """`coopsched stop` built a Client first, which fails when the head is gone: the tracker (and any
    workers) it should stop were left running, with exit 1."""
    import ray

    from scheduler.names import TRACKER_NAME
    from scheduler.tracker import start_tracker
    ns = "coopsched-cli-headless"
    tracker = start_tracker(namespace=ns, store_url="memory://")
    ray.get(tracker.__ray_ready__.remote(), timeout=60)
    code = main(["--namespace", ns, "stop"])
    out, err = capsys.readouterr()
    assert code == 0 and TRACKER_NAME in out, err

    def gone() -> bool:
        return TRACKER_NAME not in [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                                    if a.get("namespace") == ns]
    wait_for(gone, 30, "the tracker stopped")


def test_status_shows_the_cluster_the_head_and_what_it_holds(head, capsys):
    code, out, _ = run(capsys, "status")
    assert code == 0 and f"running in namespace '{NS}', development mode" in out
    assert out.startswith("ray cluster") and "executors" in out and "queued" in out
    data = run_json(capsys, "status")
    assert data["namespace"] == NS and data["head"]["mode"] == "development" and data["nodes"] >= 4
    assert data["started_by_coopsched"] is False  # the test session's cluster: `coopsched stop` leaves it alone
    assert data["head"]["executors"] == sum(data["head"]["executors_by_status"].values())
    code = main(["--namespace", "coopsched-cli-no-head", "status"])
    out = capsys.readouterr().out
    assert code == 1 and "none in namespace 'coopsched-cli-no-head': start one with `coopsched start --dev`" in out
    assert NS in out.split("also here")[1]  # where a head does run
