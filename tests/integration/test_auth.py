"""Signed requests on real Ray: a head in signed mode verifies every call; refusals are counted in /metrics;
a usage report signed by the wrong executor charges nobody; a development-mode head labels every answer."""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

import pytest
import ray

from scheduler.client import Client, shutdown
from scheduler.head_auth import DEV_MODE_LABEL, AccessRefused
from scheduler.identity import generate_key, public_key_b64, sign_request
from scheduler.names import TRACKER_NAME
from tests.integration.test_metrics import at, moved, scrape
from tests.waiting import settled, wait_for, wait_state

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
pytestmark = pytest.mark.integration
NS, NS_DEV = "coopsched-auth", "coopsched-auth-dev"
COOP, OTHER = "auth:a", "auth:b"
ALICE, BOB = "did:icn:alice", "did:icn:bob"


def double(x: int) -> int:
    return 2 * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module")
def signed(ray_cluster, tmp_path_factory):
    keys = SimpleNamespace(**{name: generate_key() for name in ("operator", "admin", "alice", "bob", "ex1", "ex2")})
    store = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'state.db'}"
    operator = Client.local(namespace=NS, store=store, key=keys.operator, metrics_port=0)
    try:
        operator.add_key(public_key_b64(keys.admin), coop=COOP, role="admin", id="ann")
        admin = Client(namespace=NS, key=keys.admin, _connect=False)
        admin.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10}})
        for member, key in ((ALICE, keys.alice), (BOB, keys.bob)):
            admin.add_key(public_key_b64(key), coop=COOP, role="member", id=member)
        for i, (executor, key) in enumerate((("auth-1", keys.ex1), ("auth-2", keys.ex2))):
            admin.register_executor(executor, coop=COOP, node_id=ray_cluster.nodes[i + 1].node_id,
                                    resources={"cpus": 1}, executor_key=key, heartbeat_interval_s=0.5)
        yield SimpleNamespace(keys=keys, operator=operator, admin=admin,
                              alice=Client(namespace=NS, key=keys.alice, _connect=False),
                              address=operator._call("metrics_address"))
    finally:
        shutdown(NS)


def refusal(answer: dict) -> str:
    assert "refused" in answer, answer
    return answer["refused"]["code"]


def test_a_signed_member_submits_and_gets_its_result(signed):
    assert signed.alice.submit(double, 21, coop=COOP, member=ALICE, max_runtime_s=60).result(timeout=60) == 42
    assert signed.alice.dev_mode is False
    me = signed.alice.whoami()["principal"]
    assert (me["role"], me["coop_id"], me["subject"]) == ("member", COOP, ALICE)
    assert settled(signed.alice, COOP, ALICE).tasks_completed >= 1
    assert [j.member for j in signed.alice.jobs()] == [ALICE] * len(signed.alice.jobs())  # narrowed to itself


def test_unsigned_forged_replayed_expired_unknown_and_forbidden_requests_are_refused_and_counted(signed):
    head, alice_key = signed.alice.head, signed.keys.alice
    before = scrape(signed.address)
    args = (COOP, ALICE)

    with pytest.raises(AccessRefused) as unsigned:
        Client(namespace=NS, _connect=False).usage(*args)
    assert unsigned.value.code == "unsigned" and "keys new" in unsigned.value.message
    with pytest.raises(Exception, match="unsigned"):  # a bare Ray handle call, no envelope at all
        ray.get(head.ping.remote())

    envelope = sign_request(alice_key, "usage", args, {}, now=time.time())
    forged = ray.get(head.usage.remote(COOP, BOB, _request={"signed": envelope}))  # arguments altered
    assert refusal(forged) == "forged"
    assert "ok" in ray.get(head.usage.remote(*args, _request={"signed": envelope}))
    assert refusal(ray.get(head.usage.remote(*args, _request={"signed": envelope}))) == "replayed"
    stale = sign_request(alice_key, "usage", args, {}, now=time.time() - 600)
    assert refusal(ray.get(head.usage.remote(*args, _request={"signed": stale}))) == "expired"
    with pytest.raises(AccessRefused, match="not registered"):
        Client(namespace=NS, key=generate_key(), _connect=False).usage(*args)

    jobs_before = len(signed.admin.jobs(COOP))
    with pytest.raises(AccessRefused, match="submits only as itself"):
        signed.alice.submit(double, 1, coop=COOP, member=BOB)
    with pytest.raises(AccessRefused, match="reads only its own"):
        signed.alice.usage(COOP, BOB)
    with pytest.raises(AccessRefused, match="manages only its own coop"):
        signed.admin.set_policy({"coop_id": OTHER})
    assert len(signed.admin.jobs(COOP)) == jobs_before and signed.operator.get_policy(OTHER) is None
    assert signed.admin.usage(COOP, BOB).tasks_completed == 0

    after = scrape(signed.address)
    got = {reason: moved(before, after, "coopsched_requests_refused_total", at(reason=reason))
           for reason in ("unsigned", "forged", "replayed", "expired", "unknown_key", "forbidden")}
    assert got == {"unsigned": 2, "forged": 1, "replayed": 1, "expired": 1, "unknown_key": 1, "forbidden": 3}


def test_an_executor_joined_without_a_key_gets_a_new_pair_and_its_key_goes_with_it(signed, ray_cluster):
    before = scrape(signed.address)
    signed.admin.register_executor("auth-3", coop=COOP, node_id=ray_cluster.nodes[3].node_id, resources={"cpus": 1},
                                   heartbeat_interval_s=0.2)
    keys = [k for k in signed.admin.list_keys() if k["subject"] == "auth-3"]
    assert [(k["role"], k["coop_id"]) for k in keys] == [("executor", COOP)]
    time.sleep(1.0)  # a few signed heartbeats
    after = scrape(signed.address)
    assert sum(moved(before, after, "coopsched_requests_refused_total", at(reason=r))
               for r in ("unsigned", "unknown_key", "forged", "expired", "replayed", "forbidden")) == 0
    signed.admin.remove_executor("auth-3")
    assert not [k for k in signed.admin.list_keys() if k["subject"] == "auth-3"]
    assert any(c["kind"] == "key.remove" and c["detail"]["subject"] == "auth-3" for c in signed.admin.changes(COOP))


def test_a_usage_report_signed_by_the_wrong_executor_is_refused_and_charges_nobody(signed):
    job = signed.alice.submit(nap, 2.0, coop=COOP, member=ALICE, max_runtime_s=60)
    status = wait_for(lambda: (s := job.status()).state.value == "running" and s, what="the job to start")
    ran_on, attempt = status.executor_id, status.attempts
    other, other_key = ("auth-2", signed.keys.ex2) if ran_on == "auth-1" else ("auth-1", signed.keys.ex1)
    before = scrape(signed.address)
    tracker = ray.get_actor(TRACKER_NAME, namespace=NS)
    now = time.time()
    forged = {"task_id": job.id, "executor_id": ran_on, "coop_id": COOP, "member": ALICE, "started_at": now - 3600,
              "ended_at": now, "cpu_seconds": 3600.0, "gpu_seconds": 0.0, "cpu_time_s": 0.0, "peak_memory_mb": 0.0,
              "credits": None, "outcome": "succeeded", "attempt": attempt, "error": None}
    # signed by the other executor while naming the one it ran on; then honestly signed by the other one
    assert ray.get(tracker.report.remote(forged, sign_request(other_key, "report", (forged,), {}, now=now)))
    claimed = {**forged, "executor_id": other}
    assert ray.get(tracker.report.remote(claimed, sign_request(other_key, "report", (claimed,), {}, now=now)))
    assert job.status().state.value == "running"  # neither settled it
    assert job.result(timeout=60) == 2.0  # the real report still arrives and is settled
    status = wait_state(job, "succeeded")
    assert 0 < status.charged_cpu_hours < 0.01  # about 2 s of one CPU, not the forged hour
    after = scrape(signed.address)
    assert moved(before, after, "coopsched_requests_refused_total", at(reason="forbidden")) == 1
    assert moved(before, after, "coopsched_usage_reports_refused_total",
                 at(reason="not placed on this executor")) == 1


def test_development_mode_labels_every_answer(ray_cluster, capsys):
    from scheduler.cli import main
    try:
        client = Client.local(namespace=NS_DEV, store="memory://")
        raw = ray.get(client.head.ping.remote(_request={"signed": None}))
        assert raw["dev_mode"] is True and client.dev_mode is True
        assert DEV_MODE_LABEL in capsys.readouterr().err
        assert main(["--namespace", NS_DEV, "executor", "list", "--json"]) == 0
        out, err = capsys.readouterr()
        assert DEV_MODE_LABEL in err and out.strip() == "[]"  # the label on stderr; --json stays parseable
    finally:
        shutdown(NS_DEV)


def test_keys_from_the_command_line_and_exit_4_when_refused(signed, tmp_path, capsys):
    from scheduler.cli import main
    from scheduler.identity import save_key_pair
    admin_file, _ = save_key_pair(signed.keys.admin, tmp_path, "ann")
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "carol"]) == 0
    carol_pub = capsys.readouterr().out.splitlines()[0]
    base = ["--namespace", NS, "--key", str(admin_file), "keys"]
    assert main([*base, "add", "--coop", COOP, "--role", "member", "--id", "did:icn:carol",
                 str(tmp_path / "carol.pub")]) == 0
    assert "registered: member did:icn:carol of coop auth:a" in capsys.readouterr().out
    assert main([*base, "add", "--coop", OTHER, "--role", "member", "--id", "x", carol_pub]) == 4
    assert "refused (forbidden)" in capsys.readouterr().err
    assert main([*base, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert "did:icn:carol" in {k["subject"] for k in listed} and {k["coop_id"] for k in listed} == {COOP}
    assert any(c["kind"] == "key.add" and c["actor"] == "admin:ann" for c in signed.admin.changes(COOP))
    assert main(["--namespace", NS, "keys", "list"]) == 4  # no key at all: unsigned
    assert "unsigned" in capsys.readouterr().err


def test_a_restarted_head_still_knows_the_keys(signed):
    """Last in this module: the head is killed and Ray restarts it from the same store."""
    from scheduler.names import HEAD_NAME
    before = signed.operator._call("ping")["started_at"]
    ray.kill(ray.get_actor(HEAD_NAME, namespace=NS), no_restart=False)
    wait_for(lambda: _started_at(signed.alice) not in (None, before), what="a new head incarnation")
    assert signed.alice.submit(double, 4, coop=COOP, member=ALICE, max_runtime_s=60).result(timeout=60) == 8
    with pytest.raises(AccessRefused, match="submits only as itself"):
        signed.alice.submit(double, 1, coop=COOP, member=BOB)


def _started_at(client: Client) -> float | None:
    try:
        return ray.get(client.head.ping.remote(_request={"signed": sign_request(
            client._key, "ping", (), {}, now=time.time())}), timeout=2)["ok"]["started_at"]
    except Exception:  # restarting
        return None
