"""Malformed input sent to the real head, through the client and straight to the actor.

Straight to the actor skips the client's own validation (``client.head.submit.remote(bad)``),
as a buggy or hostile caller would. After every call: the head still answers ``ping``, the
caller got an ``InvalidRequest`` naming the field (through Ray it may arrive wrapped in a
``RayTaskError``), and nothing changed: the policies, executors, jobs, change log and the
member's usage (used, reserved, credits) are exactly as before. A job is running the whole
time, so a usage report naming it could charge someone; none may.

The single-case tests at the end pin gaps these tests once found in the head (unvalidated
heartbeats, quota values, coop ids, action names, raw policies in diff and shadow, a task
read before it was validated) and in the client's argument handling.
"""

from __future__ import annotations

import math
import sys
import time

import pytest
import ray
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policies.model import CoopPolicy, MemberQuota
from policies.validation import InvalidRequest, parse
from scheduler.admin import QUOTA_ACTIONS, used_amounts
from scheduler.client import Client, shutdown
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec
from scheduler.ledger import Cost
from scheduler.tasks import TaskSpec
from scheduler.usage import UsageReport
from tests.malformed import (BAD_VALUES, EVERY_RULE_POLICY, EXECUTOR, MB_STRING, ODD_STRINGS, OFFER, REPORT, TASK,
                             assert_says_how_to_fix, mutations, replaced, shown_key)

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.integration
NS = "coopsched-bad-input"
COOP = "bad:coop"
MEMBER = "did:icn:victim"
EXECUTOR_ID = "bad-1"
EXAMPLES_PER_CALL = settings(max_examples=25, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                    HealthCheck.data_too_large, HealthCheck.filter_too_much])

POLICY = {**EVERY_RULE_POLICY, "coop_id": COOP, "member_quotas": {},
          "default_quota": {"cpu_hours_per_month": 100.0, "gpu_hours_per_month": 10.0, "max_concurrent_tasks": 10,
                            "max_priority": "high", "credits_per_month": 1000, "default_max_runtime_s": 3600},
          "rules": [{**r, "parameters": {"limit": 3}} if r["type"] == "plugin" else r  # MaxTags takes a limit
                    for r in EVERY_RULE_POLICY["rules"]
                    if r["type"] != "ExecutorFilter" and r.get("name") != "eu-any"]}  # they would keep out bad-1
PLUGIN_RULE = next(i for i, r in enumerate(POLICY["rules"]) if r["type"] == "plugin")


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@pytest.fixture(scope="module")
def head(ray_cluster):
    """A head with a policy, an executor, some usage and a job running on it (it runs until the end)."""
    client = Client.local(namespace=NS, store="memory://", heartbeat_timeout_s=3600.0)
    try:
        client.set_policy(POLICY)
        client.register_executor(EXECUTOR_ID, coop=COOP, node_id=ray_cluster.nodes[3].node_id, resources={"cpus": 1},
                                 region="ap-south", heartbeat_interval_s=3600.0)
        client.set_quota(COOP, MEMBER, cpu_hours=0.5, gpu_hours=0.25, credits=3.0)
        job = client.submit(sleep_for, 600, coop=COOP, member=MEMBER, max_runtime_s=900, tags=["batch"])
        deadline = time.monotonic() + 30
        while job.status().state.value != "running":
            assert time.monotonic() < deadline, job.status()
            time.sleep(0.1)
        yield client, job
        job.cancel()
    finally:
        shutdown(NS)


def state(client: Client) -> tuple:
    """Everything a malformed call must leave alone."""
    h = client.head
    return tuple(ray.get([h.list_policies.remote(), h.executors.remote(), h.jobs.remote(),
                          h.usage.remote(COOP, MEMBER), h.changes.remote(COOP, 1000), h.policy_history.remote(COOP)],
                         timeout=60))


@pytest.fixture
def unchanged(head):
    """Asserts, after each call, that the head is up and nothing changed since the test began."""
    client, _ = head
    before = state(client)

    def check() -> None:
        assert ray.get(client.head.ping.remote(), timeout=30)["executors"] == 1
        after = state(client)
        for name, a, b in zip(("policies", "executors", "jobs", "usage", "changes", "history"), before, after):
            assert a == b, f"{name} changed"
    return check


def refusal(ref) -> InvalidRequest:
    """The ``InvalidRequest`` a call ended with, unwrapped from Ray's ``RayTaskError``."""
    try:
        answer = ray.get(ref, timeout=60)
    except Exception as exc:  # noqa: BLE001 - which one is what is being tested
        cause = getattr(exc, "cause", None) or exc
        assert isinstance(cause, InvalidRequest), f"{type(exc).__name__}: {str(exc)[:2000]}"
        assert str(cause) in str(exc)
        return cause
    pytest.fail(f"the head accepted it: {str(answer)[:500]}")


def refused_locally(model, data) -> bool:
    try:
        parse(model, data)
    except InvalidRequest:
        return True
    return False


# ----------------------------------------------------------------------------- straight to the head
@EXAMPLES_PER_CALL
@given(data=st.data())
def test_submit_refuses_a_broken_task(head, unchanged, data):
    client, _ = head
    task = {**TASK, "coop_id": COOP, "member": MEMBER, "task_id": "never-admitted"}
    broken, where = data.draw(mutations(task))
    assume(refused_locally(TaskSpec, broken))  # what validation accepts may legitimately change state
    assert_says_how_to_fix(refusal(client.head.submit.remote(broken)), broken, where)
    unchanged()


@EXAMPLES_PER_CALL
@given(data=st.data())
def test_set_policy_refuses_a_broken_policy(head, unchanged, data):
    client, _ = head
    broken, where = data.draw(mutations(POLICY))
    assume(refused_locally(CoopPolicy, broken))
    assert_says_how_to_fix(refusal(client.head.set_policy.remote(broken)), broken, where)
    unchanged()


@EXAMPLES_PER_CALL
@given(data=st.data())
def test_register_executor_refuses_a_broken_spec(head, unchanged, data):
    client, _ = head
    spec = {**EXECUTOR, "executor_id": EXECUTOR_ID, "coop_id": COOP, "region": "ap-south"}
    broken, where = data.draw(mutations(spec))
    assume(refused_locally(ExecutorSpec, broken))
    assert_says_how_to_fix(refusal(client.head.register_executor.remote(broken)), broken, where)
    unchanged()


@EXAMPLES_PER_CALL
@given(data=st.data())
def test_heartbeat_refuses_a_broken_offer_from_a_known_executor(head, unchanged, data):
    client, _ = head
    broken, where = data.draw(mutations({**OFFER, "executor_id": EXECUTOR_ID}))
    assume(isinstance(broken, dict) and broken.get("executor_id") == EXECUTOR_ID)  # other offers: see the single cases below
    assume(refused_locally(ExecutorOffer, broken))
    assert_says_how_to_fix(refusal(client.head.heartbeat.remote(broken)), broken, where)
    unchanged()


@EXAMPLES_PER_CALL
@given(data=st.data())
def test_a_broken_usage_report_charges_nobody(head, unchanged, data):
    client, job = head
    running = job.status()
    report = {**REPORT, "task_id": job.id, "executor_id": EXECUTOR_ID, "coop_id": COOP, "member": MEMBER,
              "started_at": running.started_at, "ended_at": running.started_at + 5.0, "outcome": "succeeded",
              "attempt": running.attempts}
    broken, where = data.draw(mutations(report))
    assume(refused_locally(UsageReport, broken))  # a valid report would settle the running job
    assert_says_how_to_fix(refusal(client.head.on_report.remote(broken)), broken, where)
    unchanged()


@EXAMPLES_PER_CALL
@given(action=st.sampled_from(["update_limit", "update_default_limit"]),
       field=st.sampled_from(sorted(MemberQuota.model_fields)) | st.sampled_from(["cpu_hours", "bogus", "é\u200d"]),
       value=st.sampled_from(BAD_VALUES))
def test_quota_limit_changes_refuse_bad_limits(head, unchanged, action, field, value):
    client, _ = head
    limits = {**POLICY["default_quota"], field: value}
    assume(refused_locally(MemberQuota, limits))
    exc = refusal(client.head.quota.remote(action, COOP, MEMBER, **{field: value}))
    assert [e.path for e in exc.errors] == [shown_key(field)], str(exc)
    assert_says_how_to_fix(exc, {field: value}, (field,))
    unchanged()


MEMBER_ACTIONS = ("get_quota", "reset_quota", "set_quota", "update_limit", "add_whitelist", "remove_whitelist")


@EXAMPLES_PER_CALL
@given(action=st.sampled_from([v for v in BAD_VALUES if len(repr(v)) < 100]) | st.text(max_size=20)
       | st.sampled_from(MEMBER_ACTIONS),
       member=st.sampled_from(["", None, 5, ["did:icn:x"], "x" * 201, MB_STRING]))
def test_quota_refuses_an_unknown_action_or_a_bad_member(head, unchanged, action, member):
    client, _ = head
    if action in MEMBER_ACTIONS:
        exc = refusal(client.head.quota.remote(action, COOP, member))
        assert exc.errors[0].path == "member", str(exc)
    else:
        assume(action not in QUOTA_ACTIONS)  # clear_all, update_default_limit: well-formed, they act
        exc = refusal(client.head.quota.remote(action, COOP, MEMBER))  # long ones: see the single cases below
        assert exc.errors[0].path == "action", str(exc)
    assert "received" in str(exc) and "accepted" in str(exc) and len(str(exc)) < 500
    unchanged()


@EXAMPLES_PER_CALL
@given(rule=st.sampled_from(["max-tags", "gdpr", "nope", "", None, 5, MB_STRING, *ODD_STRINGS[1:5]]),
       action=st.sampled_from(["set_limit", "", None, 5, ["set_limit"]]),
       payload=st.sampled_from([{"limit": 5}, None, [1, 2], "limit=5", 5, {"limit": 7}]))
def test_plugin_management_refuses_a_bad_rule_action_or_data(head, unchanged, rule, action, payload):
    client, _ = head
    assume(not (rule == "max-tags" and isinstance(action, str) and action
                and isinstance(payload, (dict, type(None)))))  # a well-formed action: it may change the plug-in
    assume(not (rule == "max-tags" and isinstance(action, str) and action and not payload))  # the head sends {}
    exc = refusal(client.head.plugin_management.remote(COOP, rule, action, payload))
    assert exc.errors[0].path in ("rule", "action", "data"), str(exc)
    assert "received" in str(exc) and "accepted" in str(exc) and len(str(exc)) < 1000
    unchanged()


# ----------------------------------------------------------------------------- through the client
SUBMIT_FIELDS = {"resources": "resources", "priority": "priority", "tags": "tags", "max_runtime_s": "max_runtime_s",
                 "hints": "hints", "capabilities": "capabilities", "max_retries": "max_retries",
                 "task_id": "task_id", "name": "name", "coop": "coop_id", "member": "member"}


def client_refuses(client: Client, **kwargs) -> bool:
    """Whether the client's own validation (what ``submit`` runs before it sends) refuses these arguments."""
    try:
        client._task(sleep_for, (0,), {}, **kwargs)
    except InvalidRequest:
        return True
    return False


@EXAMPLES_PER_CALL
@given(field=st.sampled_from(sorted(SUBMIT_FIELDS)), value=st.sampled_from(BAD_VALUES) | st.text(max_size=10),
       where=st.sampled_from(["", "cpus", "gpus", "memory_mb", "regions", "data", "cuda"]))
def test_client_submit_refuses_bad_arguments_before_sending(head, unchanged, field, value, where):
    client, _ = head
    if field in ("resources", "hints", "capabilities") and where:
        value = {where: value}  # one bad entry inside the dict
    kwargs = {"coop": COOP, "member": MEMBER, "max_runtime_s": 60, field: value}
    assume(client_refuses(client, **kwargs))  # a valid submission would be admitted: not this test's subject
    with pytest.raises(InvalidRequest) as err:
        client.submit(sleep_for, 0, **kwargs)
    message = str(err.value)
    assert "received" in message and "accepted" in message and len(message) < 2500, message
    assert err.value.errors[0].path.split(".")[0].split("[")[0] == SUBMIT_FIELDS[field], message
    unchanged()


@EXAMPLES_PER_CALL
@given(data=st.data())
def test_client_set_policy_refuses_a_broken_policy(head, unchanged, data):
    client, _ = head
    broken, where = data.draw(mutations(POLICY))
    assume(refused_locally(CoopPolicy, broken))
    if isinstance(broken, str) and not broken.lstrip().startswith("{"):  # the client reads it as a file path
        with pytest.raises(InvalidRequest, match=r"^invalid policy file .*received .*; accepted: ") as err:
            client.set_policy(broken)
        assert len(str(err.value)) < 1_000, str(err.value)[:300]
    else:
        with pytest.raises(InvalidRequest) as err:
            client.set_policy(broken)
        assert_says_how_to_fix(err.value, broken, where)
    unchanged()


@pytest.mark.parametrize("limits", [{"cpu_hours_per_month": -1}, {"cpu_hours_per_month": math.nan},
                                    {"max_concurrent_tasks": 10**30}, {"max_priority": "god"},
                                    {"cpu_hours_per_mnth": 5}])
def test_client_update_limit_refuses_bad_limits(head, unchanged, limits):
    client, _ = head
    with pytest.raises(InvalidRequest, match=rf"invalid quota limits: {next(iter(limits))}: received"):
        client.update_limit(COOP, MEMBER, **limits)
    with pytest.raises(InvalidRequest, match=rf"invalid quota limits: {next(iter(limits))}: received"):
        client.update_default_limit(COOP, **limits)
    unchanged()


@pytest.mark.parametrize("field, value", [("trust", 1.5), ("trust", math.nan), ("price_cpu_hour", -1.0),
                                          ("rtt_ms", math.inf), ("capabilities", {"cuda": "twelve"}),
                                          ("labels", {"rack": MB_STRING}), ("open_to", ["*", ""])])
def test_client_register_executor_refuses_bad_arguments(ray_cluster, head, unchanged, field, value):
    client, _ = head
    with pytest.raises(InvalidRequest, match=rf"invalid executor: {field}"):
        client.register_executor(EXECUTOR_ID, coop=COOP, node_id=ray_cluster.nodes[3].node_id, region="ap-south",
                                 resources={"cpus": 1}, heartbeat_interval_s=3600.0, **{field: value})
    unchanged()


def test_a_policy_whose_plug_in_cannot_be_made_is_not_installed(head, unchanged):
    """Valid in form, refused at install: an unknown plug-in URI, parameters the plug-in refuses."""
    client, _ = head
    i = PLUGIN_RULE
    for rule, field in (({**POLICY["rules"][i], "uri": "no.such.module:Rule"}, "uri"),
                        ({**POLICY["rules"][i], "parameters": {"limit": 3, "surprise": True}}, "parameters")):
        policy = replaced(POLICY, ("rules", i), rule)
        assert not refused_locally(CoopPolicy, policy)
        exc = refusal(client.head.set_policy.remote(policy))
        assert exc.errors[0].path == f"rules[{i}].plugin.{field}", str(exc)
        unchanged()


# ----------------------------------------------------------------------------- what the head itself must fix
HEAD_GAP = "scheduler/head.py: {} (see the bad-input report)"


@pytest.mark.parametrize("offer", [None, "exec", [1], {"executor_id": ["bad-1"]},
                                   {"executor_id": "no-such-executor", "queue_depth": -1},
                                   {"executor_id": MB_STRING}],
                         ids=["none", "string", "list", "unhashable-id", "unknown-id-bad-depth", "megabyte-id"])
def test_heartbeat_validates_before_looking_the_executor_up(head, unchanged, offer):
    client, _ = head
    assert_says_how_to_fix(refusal(client.head.heartbeat.remote(offer)), offer)
    unchanged()


@pytest.mark.parametrize("values", [{"cpu_hours": "lots"}, {"cpu_hours": -1.0}, {"gpu_hours": -0.5},
                                    {"credits": math.nan}, {"credits": math.inf}, {"cpu_hours": 10**30},
                                    {"cpu_hourz": 1.0}],
                         ids=["string", "negative-cpu", "negative-gpu", "nan", "inf", "huge", "unknown-key"])
def test_set_quota_refuses_bad_amounts(head, unchanged, values):
    client, _ = head
    with pytest.raises(InvalidRequest):
        used_amounts(values, Cost())  # the validation the head should run (scheduler/admin.py)
    try:
        exc = refusal(client.head.quota.remote("set_quota", COOP, MEMBER, **values))
        assert exc.errors[0].path == next(iter(values)), str(exc)
        unchanged()
    finally:  # today -1 and an unknown key are written: put the member's standing back for the tests after
        client.set_quota(COOP, MEMBER, cpu_hours=0.5, gpu_hours=0.25, credits=3.0)


@pytest.mark.parametrize("action", [MB_STRING, 10**5000], ids=["megabyte-string", "int-without-repr"])
def test_a_long_quota_action_gives_a_short_message(head, unchanged, action):
    client, _ = head
    exc = refusal(client.head.quota.remote(action, COOP, MEMBER))
    assert exc.errors[0].path == "action" and len(str(exc)) < 1000
    unchanged()


@pytest.mark.parametrize("call", ["quota", "plugin_management"])
def test_the_coop_id_of_an_admin_action_is_checked(head, unchanged, call):
    client, _ = head
    if call == "quota":
        ref = client.head.quota.remote("get_quota", [COOP], MEMBER)
    else:
        ref = client.head.plugin_management.remote({"coop": COOP}, "max-tags", "set_limit", {"limit": 1})
    assert refusal(ref).errors[0].path == "coop_id"
    unchanged()


@pytest.mark.parametrize("call", ["diff_policy", "shadow_policy"])
def test_dry_runs_refuse_a_broken_policy_with_invalid_request(head, unchanged, call):
    client, _ = head
    broken = replaced(POLICY, ("default_quota", "cpu_hours_per_month"), -1)
    ref = (client.head.diff_policy.remote(COOP, broken) if call == "diff_policy"
           else client.head.shadow_policy.remote(broken))
    assert_says_how_to_fix(refusal(ref), broken, ("default_quota", "cpu_hours_per_month"))
    unchanged()


def test_submit_with_data_refs_validates_the_task_first(head, unchanged):
    client, _ = head
    ref = ray.put(b"data")
    assert_says_how_to_fix(refusal(client.head.submit.remote(None, None, [ref])), None)
    unchanged()


@pytest.mark.parametrize("kwargs", [{"tags": 5}, {"hints": 5}, {"hints": "x"}, {"hints": {"data": 5}}],
                         ids=["tags-int", "hints-int", "hints-string", "hints-data-int"])
def test_client_submit_validates_tags_and_hints_before_reading_them(head, unchanged, kwargs):
    client, _ = head
    with pytest.raises(InvalidRequest, match=next(iter(kwargs))):
        client.submit(sleep_for, 0, coop=COOP, member=MEMBER, max_runtime_s=60, **kwargs)
    unchanged()


@pytest.mark.parametrize("call, args", [
    ("wait_results", ("job-1", 1.0)), ("wait_results", ([1, 2], 1.0)), ("wait_results", ([MB_STRING[:10]] * 10_001, 1.0)),
    ("wait_results", (["job-1"], "soon")), ("wait_results", (["job-1"], math.nan)), ("wait_results", (["job-1"], -1.0)),
    ("wait_result", ("job-1", "soon")), ("wait_result", ("job-1", 10**9)),
], ids=["ids-string", "ids-ints", "too-many-ids", "timeout-string", "timeout-nan", "timeout-negative",
        "one-timeout-string", "one-timeout-huge"])
def test_waiting_for_results_refuses_bad_arguments(head, unchanged, call, args):
    client, _ = head
    error = refusal(getattr(client.head, call).remote(*args))
    assert error.errors[0].path.split("[")[0] in ("task_ids", "timeout_s"), str(error)
    assert "accepted" in str(error) and "example" in str(error)
    unchanged()
