"""Administering a coop through the client: policy history, rollback and diff; quota actions; audit samples."""

from __future__ import annotations

import sys
import time

import pytest
import ray

from policies.validation import InvalidRequest
from scheduler.client import Client, shutdown

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.integration
COOP = "admin:coop"
NS = "coopsched-admin"


def double(x: int) -> int:
    return 2 * x


@pytest.fixture(scope="module")
def admin(ray_cluster, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('admin') / 'state.db'}"
    client = Client.local(namespace=NS, store=url)
    client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1.0},
                       "audit": {"one_in": 2, "members": ["did:icn:new"]}})
    client.register_executor("adm-1", coop=COOP, node_id=ray_cluster.nodes[2].node_id, resources={"cpus": 2})
    yield client
    shutdown(NS)


def test_policy_versions_rollback_and_diff(admin):
    admin.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 5.0},
                      "audit": {"one_in": 2, "members": ["did:icn:new"]}})
    history = admin.policy_history(COOP)
    assert [v["version"] for v in history][-2:] == [len(history) - 1, len(history)]
    assert history[-1]["predecessor"] == history[-2]["version"] and history[-1]["author"] == "admin"
    changes = admin.diff_policy(COOP, a=history[-2]["version"], b=history[-1]["version"])
    assert {"path": "default_quota.cpu_hours_per_month", "op": "changed", "old": 1.0, "new": 5.0} in changes
    admin.rollback_policy(COOP, history[-2]["version"])
    assert admin.get_policy(COOP).default_quota.cpu_hours_per_month == 1.0
    assert admin.policy_history(COOP)[-1]["note"] == f"rollback to version {history[-2]['version']}"
    assert admin.changes(COOP)[0]["kind"] == "policy.set"
    with pytest.raises(KeyError, match="no policy version 999"):
        admin.rollback_policy(COOP, 999)


def test_quota_actions_act_on_the_store_and_are_logged(admin):
    admin.set_quota(COOP, "did:icn:ann", cpu_hours=0.9)
    assert admin.get_quota(COOP, "did:icn:ann").cpu_hours == pytest.approx(0.9)
    from scheduler.job_handle import PolicyViolation
    with pytest.raises(PolicyViolation, match="monthly CPU quota exceeded"):
        admin.submit(double, 1, coop=COOP, member="did:icn:ann", max_runtime_s=3600)
    admin.add_whitelist(COOP, "did:icn:ann")
    assert admin.submit(double, 2, coop=COOP, member="did:icn:ann", max_runtime_s=3600).result(timeout=60) == 4
    admin.remove_whitelist(COOP, "did:icn:ann")
    assert admin.reset_quota(COOP, "did:icn:ann").cpu_hours == 0.0
    admin.update_limit(COOP, "did:icn:ann", cpu_hours_per_month=50)
    assert admin.get_quota(COOP, "did:icn:ann").quota.cpu_hours_per_month == 50
    policy = admin.update_default_limit(COOP, max_concurrent_tasks=7)
    assert policy.default_quota.max_concurrent_tasks == 7 and policy.member_quotas["did:icn:ann"]
    kinds = [c["kind"] for c in admin.changes(COOP, limit=20)]
    for kind in ("quota.set_quota", "quota.add_whitelist", "quota.remove_whitelist", "quota.reset_quota",
                 "quota.update_limit", "quota.update_default_limit"):
        assert kind in kinds
    assert admin.clear_all(COOP) and admin.get_quota(COOP, "did:icn:ann").cpu_hours == 0.0
    with pytest.raises(InvalidRequest, match="member"):
        admin.reset_quota(COOP, "")


def test_audit_samples_members_and_one_in_n(admin):
    handles = [admin.submit(double, i, coop=COOP, member="did:icn:new", max_runtime_s=60) for i in range(2)]
    handles += [admin.submit(double, i, coop=COOP, member="did:icn:old", max_runtime_s=60) for i in range(4)]
    for h in handles:
        h.result(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = admin.audit("list", session_id=f"{COOP}/did:icn:new")
        if len(new) == 2:
            break
        time.sleep(0.2)
    assert len(new) == 2  # every job of a named member
    latest = admin.audit("latest", f"{COOP}/did:icn:new")
    assert latest["seq_no"] == 1 and latest["result"]["state"] == "succeeded"
    assert admin.audit("get", f"{COOP}/did:icn:new", 0)["member"] == "did:icn:new"
    old = admin.audit("list", session_id=f"{COOP}/did:icn:old")
    assert 1 <= len(old) <= 3  # one in two of all completions: some, not all, of old's four
    assert admin.audit("delete", f"{COOP}/did:icn:new") == 2
    assert admin.audit("latest", f"{COOP}/did:icn:new") is None


def test_vdag_plugin_rule_and_its_management_actions(admin, capsys):
    """Seed 000's quota checker, adapted as it is: refuses past its limit; `reset_quota` lets the member in again."""
    from scheduler.cli import main
    from scheduler.job_handle import PolicyViolation
    coop = "plugin:coop"
    admin.set_policy({"coop_id": coop, "default_quota": {"cpu_hours_per_month": 10},
                      "rules": [{"type": "plugin", "name": "vdag-quota",
                                 "uri": "tests.fixtures.vdag_quota:AIOSv1PolicyRule",
                                 "parameters": {"default_limit": 2}}]})
    admin.register_executor("plug-1", coop=coop, resources={"cpus": 1}, region="us-west")
    for i in range(2):
        assert admin.submit(double, i, coop=coop, member="did:icn:pat", max_runtime_s=60).result(timeout=60) == 2 * i
    with pytest.raises(PolicyViolation) as refused:
        admin.submit(double, 9, coop=coop, member="did:icn:pat", max_runtime_s=60)
    assert refused.value.decision.reasons[0].source == "vdag-quota"
    assert admin.plugin_management(coop, "vdag-quota", "get_quota", {"session_id": "did:icn:pat"})["value"] == 2
    code = main(["--namespace", NS, "policy", "mgmt", coop, "vdag-quota", "reset_quota",
                 "--data", '{"session_id": "did:icn:pat"}'])
    assert code == 0 and '"ok"' in capsys.readouterr().out
    assert admin.submit(double, 5, coop=coop, member="did:icn:pat", max_runtime_s=60).result(timeout=60) == 10
    assert any(c["kind"] == "plugin.management" for c in admin.changes(coop))
