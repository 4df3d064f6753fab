"""Rule plug-ins: resolution by entry point and dotted path, the vDAG adapter, management
actions, and plug-ins that raise or overrun their budget (through the real core)."""

from __future__ import annotations

import json
import pickle
import textwrap
import time

import pytest

from policies import plugins
from policies.model import CoopPolicy
from policies.plugins import BoundPlugin, manage, resolve
from policies.priority import Priority
from policies.validation import InvalidRequest, parse
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task
from tests.fixtures import rule_plugins, vdag_quota

FIX = "tests.fixtures.rule_plugins"
QUOTA = "tests.fixtures.vdag_quota:AIOSv1PolicyRule"
FLEET = [make_executor("us1", region="us-west"), make_executor("eu1", region="eu-central")]


def plugin(uri: str, name: str = "plug", **kw) -> dict:
    return {"type": "plugin", "name": name, "uri": uri, **kw}


def core_with(*rules: dict, mode: str = "strict"):
    core, clock = make_core(make_policy(rules=list(rules), mode=mode), FLEET)
    return core


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A real distribution on sys.path declaring entry points of group ``coopsched.rules``."""
    dist = tmp_path / "coopsched_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: coopsched-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [coopsched.rules]
        quota-checker:2.0 = {QUOTA}
        quota-checker:3.0 = tests.fixtures.vdag_quota:QualityChecker
        max-tags = {FIX}:make_max_tags
        broken:1.0 = tests.fixtures.no_such_module:Rule
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# --------------------------------------------------------------------------- resolution
@pytest.mark.parametrize("uri, want", [
    ("quota-checker:2.0", vdag_quota.AIOSv1PolicyRule),       # versioned entry point, exact
    ("quota-checker:3.0", vdag_quota.QualityChecker),          # another version of the same name
    ("max-tags", rule_plugins.make_max_tags),                  # unversioned entry point, no version asked
    ("max-tags:7.1", rule_plugins.make_max_tags),              # an unversioned entry point matches any version
    (f"{FIX}:MaxTags", rule_plugins.MaxTags),                  # dotted path with a colon
    (f"{FIX}.RegionPin", rule_plugins.RegionPin),              # dotted path, dots only
    (f"{FIX}:READY", rule_plugins.READY),                      # a ready object
], ids=["ep-versioned", "ep-other-version", "ep-unversioned", "ep-unversioned-any-version", "dotted-colon",
        "dotted-dots", "ready-object"])
def test_resolution(installed, uri, want):
    assert resolve(uri) is want


@pytest.mark.parametrize("uri, says", [
    ("quota-checker:9.9", "installed versions of 'quota-checker' are quota-checker:2.0, quota-checker:3.0"),
    ("quota-checker", "installed versions of 'quota-checker' are"),   # two versions: which one?
    ("nothing-here:1.0", "no entry point 'nothing-here:1.0' and not a dotted path"),
    ("no_such_pkg.mod:Rule", "not in a plug-in package this head allows"),
    ("tests.fixtures.no_such_mod:Rule", "cannot import 'tests.fixtures.no_such_mod'"),
    (f"{FIX}:Missing", f"module '{FIX}' has no attribute 'Missing'"),
    ("broken:1.0", "entry point 'broken:1.0' = 'tests.fixtures.no_such_module:Rule'"),
], ids=["wrong-version", "ambiguous-version", "unknown", "module-not-allowed", "no-module", "no-attribute",
     "entry-point-fails"])
def test_resolution_failure_is_a_validation_error_at_uri(installed, uri, says):
    data = {"coop_id": "coop", "rules": [{"type": "TaskLimits"}, plugin(uri)]}
    policy = parse(CoopPolicy, data)  # reading a policy (a client) needs no plug-in installed
    core, _ = make_core()
    for install in (lambda: core.set_policy(data), lambda: plugins.resolve_all(policy)):
        with pytest.raises(InvalidRequest) as err:
            install()
        (field,) = err.value.errors
        assert field.path == "rules[1].plugin.uri"
        assert field.received == f'"{uri}"'
        assert says in field.accepted and "coopsched.rules" in field.accepted
        if uri != "broken:1.0":  # found, but failed to load: the load error is the news
            assert "installed: broken:1.0, max-tags, quota-checker:2.0, quota-checker:3.0" in field.accepted
        assert field.example == '"quota-checker:2.0"'
        assert str(err.value).startswith(f'invalid policy: rules[1].plugin.uri: received "{uri}"; accepted: ')
    assert core.policy("coop") is None  # nothing installed


@pytest.mark.parametrize("uri", ["quota checker:2.0", "a:b:c", "", "pkg/mod:X"])
def test_a_uri_of_the_wrong_form_fails_validation_where_it_is_read(uri):
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, {"coop_id": "c", "rules": [plugin(uri)]}, what="policy")
    (field,) = err.value.errors
    assert field.path == "rules[0].plugin.uri" and field.example == '"quota-checker:2.0"'


def test_entry_points_are_read_again_before_a_uri_is_declared_unknown(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(plugins.PluginError):
        resolve("late:1.0")
    dist = tmp_path / "late_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: late-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[coopsched.rules]\nlate:1.0 = {FIX}:MaxTags\n")
    assert resolve("late:1.0") is rule_plugins.MaxTags  # installed while "the head" runs: found


@pytest.mark.parametrize("uri, parameters, made, phases", [
    (QUOTA, {"default_limit": 5}, vdag_quota.AIOSv1PolicyRule, ("check",)),   # (rule_id, settings, parameters)
    (f"{FIX}:RegionPin", {"region": "eu-central"}, rule_plugins.RegionPin, ("constrain", "adjust")),  # parameters=
    (f"{FIX}:MaxTags", {"limit": 2}, rule_plugins.MaxTags, ("check",)),       # keyword arguments
    (f"{FIX}:make_max_tags", {}, rule_plugins.MaxTags, ("check",)),           # a factory
    (f"{FIX}:READY", {}, rule_plugins.MaxTags, ("check",)),                   # a ready object
], ids=["vdag-constructor", "parameters-argument", "keywords", "factory", "ready-object"])
def test_plugins_are_made_with_their_parameters_and_bound_to_the_phases_they_implement(uri, parameters, made,
                                                                                         phases):
    core = core_with(plugin(uri, parameters=parameters))
    rule = core.policy("coop").rules[0]
    assert isinstance(rule.runtime.instance, made)
    bound = rule.bound()
    assert isinstance(bound, BoundPlugin) and bound.label == "plug"
    assert tuple(p for p in plugins.PHASES if hasattr(bound, p)) == phases


@pytest.mark.parametrize("uri, parameters, says", [
    (f"{FIX}:MaxTags", {"limt": 2}, "unexpected keyword argument 'limt'"),
    (QUOTA, {"default_limit": "many"}, "ValueError"),
    (f"{FIX}:NotARule", {}, "has none of check, constrain"),
], ids=["unknown-parameter", "bad-value", "no-phases"])
def test_a_plugin_that_refuses_its_parameters_fails_validation_at_parameters(uri, parameters, says):
    core, _ = make_core()
    with pytest.raises(InvalidRequest) as err:
        core.set_policy({"coop_id": "c", "rules": [plugin(uri, parameters=parameters)]})
    (field,) = err.value.errors
    assert field.path == "rules[0].plugin.parameters" and says in field.accepted
    assert field.example == '{"default_limit": 100}'


def test_plugin_rule_needs_a_name():
    with pytest.raises(InvalidRequest, match=r"rules\[0\]\.plugin\.name: .* Field required"):
        parse(CoopPolicy, {"coop_id": "c", "rules": [{"type": "plugin", "uri": f"{FIX}:MaxTags"}]})


# --------------------------------------------------------------------------- vDAG adapter
def test_vdag_quota_checker_allows_then_refuses_with_its_reason():
    core = core_with(plugin(QUOTA, name="quota", parameters={"default_limit": 2, "whitelist": ["ops"]}))
    decisions = [core.submit(make_task(member="alice")) for _ in range(3)]
    assert [d.admitted for d in decisions] == [True, True, False]
    (reason,) = decisions[2].reasons
    assert (reason.code.value, reason.source) == ("unavailable", "quota")
    assert reason.message == "alice has used its 2 submissions; ask an admin to reset_quota"
    assert all(core.submit(make_task(member="ops")).admitted for _ in range(5))  # whitelisted


@pytest.mark.parametrize("answer, want", [
    ({"allowed": True}, None),
    ({}, None),                                                    # a passive policy (the quality checker)
    (None, None),
    ({"allowed": False}, ("rejected", "refused by plug-in tests.fixtures.rule_plugins:BadAnswer")),
    ({"allowed": False, "reason": "not today", "code": "unavailable"}, ("unavailable", "not today")),
    ({"allowed": False, "message": "never", "code": "rejected"}, ("rejected", "never")),
    (False, ("rejected", "refused by plug-in")),
    ({"allowed": "no"}, ("error", "expected {\"allowed\": true|false}")),
    ("yes", ("error", "answered 'yes'")),
    ({"allowed": False, "code": "maybe"}, ("error", "unknown code 'maybe'")),
], ids=["allowed", "passive", "none", "denied-default-code", "unavailable", "rejected-message", "bare-false",
        "allowed-not-bool", "not-a-dict", "unknown-code"])
def test_vdag_answers(answer, want):
    core = core_with(plugin(f"{FIX}:BadAnswer", name="vdag", parameters={"answer": answer}))
    d = core.submit(make_task())
    got = None if d.admitted else (d.reasons[0].code.value, d.reasons[0].message)
    if want is None:
        assert got is None
    else:
        assert got[0] == want[0] and want[1] in got[1] and d.reasons[0].source == "vdag"


def test_vdag_eval_sees_the_task_as_json_and_the_context():
    core = core_with(plugin("tests.fixtures.vdag_quota:QualityChecker", name="audit"))
    seen = {}
    instance = core.policy("coop").rules[0].runtime.instance
    original = instance.eval

    def spy(parameters, input_data, context):
        seen.update(input_data=input_data, context=context)
        return original(parameters, input_data, context)

    instance.eval = spy
    d = core.submit(make_task(member="alice", tags=["x"], task_id="t-vdag"))
    assert d.admitted
    data, context = seen["input_data"], seen["context"]
    assert data["task_id"] == "t-vdag" and data["member"] == data["session_id"] == "alice"
    assert data["tags"] == ["x"] and data["resources"]["cpus"] == 1.0 and data["coop_id"] == "coop"
    assert context == {"now": START, "runtime_s": 600.0, "rule": "audit", "coop_id": "coop"}
    assert manage(core.policy("coop"), "audit", "list", {})["samples"] == [{"task_id": "t-vdag", "member": "alice"}]


# --------------------------------------------------------------------------- management
def test_management_actions_change_what_the_head_admits():
    core = core_with(plugin(QUOTA, name="quota", parameters={"default_limit": 1}))
    policy = core.policy("coop")
    assert core.submit(make_task()).admitted and not core.submit(make_task()).admitted
    assert manage(policy, "quota", "get_quota", {"member": "alice"}) == {"status": "ok", "value": 1}
    assert manage(policy, "quota", "update_limit", {"session_id": "alice", "limit": 3})["status"] == "ok"
    assert [core.submit(make_task()).admitted for _ in range(3)] == [True, True, False]
    assert manage(policy, "quota", "reset_quota", {"member": "alice"})["status"] == "ok"
    assert core.submit(make_task()).admitted
    assert manage(policy, "quota", "add_whitelist", {"member": "alice"})["status"] == "ok"
    assert all(core.submit(make_task()).admitted for _ in range(5))
    assert manage(policy, "quota", "frobnicate", {}) == {"status": "error", "message": "Unknown action 'frobnicate'"}


@pytest.mark.parametrize("rule_name, action, data, path, says", [
    ("nope", "get_quota", {}, "rule", "the name of a plug-in rule of coop coop: 'quota', 'tags'"),
    ("limits", "get_quota", {}, "rule", "'limits' is a TaskLimits rule"),
    ("quota", "", {}, "action", "an action name"),
    ("quota", "get_quota", ["alice"], "data", "a JSON object"),
], ids=["unknown-rule", "not-a-plugin", "empty-action", "data-not-object"])
def test_management_mistakes_say_how_to_fix_them(rule_name, action, data, path, says):
    policy = make_policy(rules=[plugin(QUOTA, name="quota"), plugin(f"{FIX}:MaxTags", name="tags"),
                                {"type": "TaskLimits", "name": "limits"}])
    with pytest.raises(InvalidRequest) as err:
        manage(policy, rule_name, action, data)
    (field,) = err.value.errors
    assert field.path == path and says in field.accepted and field.example


@pytest.mark.parametrize("uri, action, want", [
    (f"{FIX}:RegionPin", "anything", "has no management actions"),
    (f"{FIX}:Raising", "anything", "failed in 'anything': RuntimeError: plug-in bug"),
    (f"{FIX}:MaxTags", "set_limit", None),
], ids=["no-management", "raises", "native-plugin"])
def test_management_failures_are_answers(uri, action, want):
    params = {"region": "eu-central"} if "RegionPin" in uri else {}
    policy = make_policy(rules=[plugin(uri, name="p", parameters=params)])
    out = manage(policy, "p", action, {"limit": 0})
    if want is None:
        assert out == {"status": "ok", "limit": 0}
    else:
        assert out["status"] == "error" and want in out["message"]


def test_plugin_state_survives_a_new_policy_version_that_keeps_the_rule():
    rule = plugin(QUOTA, name="quota", parameters={"default_limit": 1})
    core = core_with(rule)
    manage(core.policy("coop"), "quota", "update_default_limit", {"limit": 5})
    core.set_policy(make_policy(rules=[rule], cpu_hours_per_month=50.0))     # another version, same rule
    assert core.policy("coop").rules[0].runtime.instance.default_limit == 5
    core.set_policy(make_policy(rules=[{**rule, "timeout_ms": 80}]))           # the rule changed: made anew
    assert core.policy("coop").rules[0].runtime.instance.default_limit == 1
    other, _ = make_core(make_policy(coop="other", rules=[rule]))              # another coop: its own object
    assert other.policy("other").rules[0].runtime is not core.policy("coop").rules[0].runtime


def test_policy_with_plugins_pickles_compares_and_rebinds():
    core = core_with(plugin(f"{FIX}:MaxTags", name="tags", parameters={"limit": 1}))
    policy = core.policy("coop")
    again = pickle.loads(pickle.dumps(policy))
    assert again == policy == make_policy(rules=[plugin(f"{FIX}:MaxTags", name="tags", parameters={"limit": 1})])
    assert again.rules[0].runtime is policy.rules[0].runtime  # same coop, same rule: the live plug-in
    assert hash(policy.rules[0]) == hash(again.rules[0])


# --------------------------------------------------------------------------- native plug-ins through the core
def test_native_plugin_phases_take_part_in_admission_and_placement():
    sim = make_sim(make_policy(rules=[plugin(f"{FIX}:RegionPin", name="pin",
                                             parameters={"region": "eu-central", "boost": 2.5}),
                                      plugin(f"{FIX}:MaxTags", name="tags", parameters={"limit": 1})]), FLEET)
    d = sim.submit(make_task(priority="normal"))
    assert d.admitted and d.effective_priority == 2.5 * Priority.NORMAL.rank
    (placement,) = sim.step()
    assert placement.executor_id == "eu1"
    refused = sim.submit(make_task(tags=["a", "b"]))
    assert not refused.admitted and refused.reasons[0].message == "2 tags, at most 1; drop some"


# --------------------------------------------------------------------------- failing plug-ins
@pytest.mark.parametrize("uri, says", [
    (f"{FIX}:Raising", "failed in check: RuntimeError: plug-in bug"),
    (f"{FIX}:Exits", "plug-in raised SystemExit(3)"),
], ids=["raises", "sys-exit"])
@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_a_plugin_that_raises_is_an_error_reason(uri, says, mode):
    sim = make_sim(make_policy(rules=[plugin(uri, name="buggy")], mode=mode), FLEET)
    d = sim.submit(make_task(), duration_s=60)
    found = d.reasons if mode == "strict" else d.warnings
    assert d.admitted is (mode == "permissive")
    assert [(r.code.value, r.source) for r in found] == [("error", "buggy")] and says in found[0].message
    sim.run()
    want = JobState.SUCCEEDED if mode == "permissive" else JobState.REJECTED
    assert sim.core.job(d.task_id).state is want


def test_a_plugin_failing_in_another_phase_is_an_error_reason():
    core = core_with(plugin(f"{FIX}:RegionPin", name="pin", parameters={"region": "eu-central"}))
    runtime = core.policy("coop").rules[0].runtime
    runtime.instance.constrain = lambda task, ctx: 1 / 0
    d = core.submit(make_task())
    assert not d.admitted and d.reasons[0].code.value == "error"
    assert d.reasons[0].message == "rule failed in constrain: ZeroDivisionError: division by zero"


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_a_slow_plugin_is_an_error_reason_within_its_budget_and_then_fails_fast(mode):
    budget_s = 0.3  # wide enough apart from "at once" to hold on a loaded 2-core machine
    core = core_with(plugin(f"{FIX}:Slow", name="slow", timeout_ms=budget_s * 1000,
                            parameters={"delay_ms": 20_000 + len(mode)}),
                     mode=mode)  # parameters differ per mode: a plug-in object is shared by equal rules of a coop
    slow = core.policy("coop").rules[0].runtime.instance
    try:
        began = time.perf_counter()
        d = core.submit(make_task())
        first = time.perf_counter() - began
        found = d.reasons if mode == "strict" else d.warnings
        assert d.admitted is (mode == "permissive")
        assert [(r.code.value, r.source) for r in found] == [("error", "slow")]
        assert found[0].message == "plug-in slow exceeded its 300 ms budget"
        assert budget_s <= first < budget_s + 1.5
        began = time.perf_counter()
        d = core.submit(make_task())                     # the first call is still running: not asked again
        assert time.perf_counter() - began < budget_s / 2
        found = d.reasons if mode == "strict" else d.warnings
        assert "still running a call that overran its budget" in found[0].message
        assert slow.started == 1
    finally:
        slow.release.set()
    deadline = time.monotonic() + 5
    while core.policy("coop").rules[0].runtime.stuck and time.monotonic() < deadline:
        time.sleep(0.005)
    slow.delay_s = 0.0
    assert core.submit(make_task()).admitted and slow.started == 2  # recovered: asked again


def test_a_plugin_whose_constructor_overruns_fails_validation(monkeypatch):
    monkeypatch.setattr(plugins, "SETUP_BUDGET_S", 0.1)
    core, _ = make_core()
    with pytest.raises(InvalidRequest, match=r"rules\[0\]\.plugin\.parameters: .* starts within 0.1 s"):
        core.set_policy({"coop_id": "c", "rules": [plugin(f"{FIX}:SlowStart", parameters={"seconds": 1})]})


def test_plugin_calls_do_not_leave_threads_behind_when_policies_go():
    import gc
    import threading
    before = threading.active_count()
    for i in range(20):
        make_core(make_policy(coop=f"gone{i}", rules=[plugin(f"{FIX}:MaxTags", name="tags")]))
    gc.collect()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_a_detached_policy_leaves_the_live_plugins_alone():
    core = core_with(plugin(QUOTA, name="quota", parameters={"default_limit": 1}))
    live = core.policy("coop")
    dry, _ = make_core(plugins.detached(live), FLEET)
    assert dry.submit(make_task()).admitted and not dry.submit(make_task()).admitted  # counted in the copy only
    assert manage(live, "quota", "get_quota", {"member": "alice"})["value"] == 0
    assert core.submit(make_task()).admitted



@pytest.mark.parametrize("phase, value", [("constrain", "oops"), ("hold_until", "later"), ("adjust", "nan"),
                                          ("adjust", -1.0)])
def test_a_plug_in_answering_the_wrong_kind_of_thing_is_an_error_reason_not_a_crash(phase, value):
    core = core_with(plugin(f"{FIX}:WrongKind", parameters={"phase": phase, "value": value}))
    decision = core.submit(make_task())
    assert not decision.admitted and decision.reasons[0].code.value == "error"
    assert phase in decision.reasons[0].message



def test_a_dry_run_copy_of_a_ready_object_plug_in_has_an_object_of_its_own():
    core = core_with(plugin(f"{FIX}:READY", name="ready"))
    live = core.policy("coop")
    dry = plugins.detached(live)
    assert dry.rules[0].runtime.instance is not live.rules[0].runtime.instance


def test_a_plugin_start_gate_holding_one_member_does_not_hold_another():
    """The scheduler kept one gate answer per (coop, priority, tags) for a round, so a plug-in gate that
    holds bob's tasks held alice's too (reason: 'held by a time window'). Built-in time windows still
    share one answer; a plug-in gate is asked per task."""
    rules = [{"type": "plugin", "name": "bob-later", "uri": f"{FIX}:MemberGate", "parameters": {"member": "bob"},
              "timeout_ms": 2000}]
    core, _ = make_core(make_policy(rules=rules), [make_executor("e", cpus=8)])
    bob, alice = make_task(member="bob"), make_task(member="alice")
    assert core.submit(bob).admitted and core.submit(alice).admitted
    assert [p.task_id for p in core.schedule()] == [alice.task_id], core.job(alice.task_id).reason
    assert core.job(bob.task_id).state is JobState.DEFERRED


@pytest.mark.parametrize("uri, parameters", [
    ("os:system", {"command": "touch {marker}"}),
    ("subprocess:run", {"args": ["touch", "{marker}"]}),
    ("tests.fixtures.rule_plugins:MaxTags", {}),
], ids=["os.system", "subprocess.run", "a test plug-in outside the allowed packages"])
def test_a_policy_names_code_only_where_the_operator_allows_it(uri, parameters, tmp_path, monkeypatch):
    """A coop admin writes policies: a dotted path anywhere would run any importable function with the
    rule's parameters, as the head. Outside COOPSCHED_PLUGIN_MODULES (and never in the standard
    library) the policy is refused before anything is called."""
    monkeypatch.setenv(plugins.PLUGIN_MODULES_ENV, "some_other_pkg" if "tests" in uri else "os,subprocess")
    marker = tmp_path / "ran"
    params = json.loads(json.dumps(parameters).replace("{marker}", str(marker)))
    core, _ = make_core()
    with pytest.raises(InvalidRequest) as err:
        core.set_policy({"coop_id": "coop", "rules": [{"type": "plugin", "name": "x", "uri": uri,
                                                        "parameters": params}]})
    assert err.value.errors[0].path == "rules[0].plugin.uri"
    assert core.policy("coop") is None and not marker.exists()


def test_a_bare_name_does_not_bind_to_a_lone_versioned_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "one_version_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: one-version-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[coopsched.rules]\nsolo-checker:2.0 = tests.fixtures.rule_plugins:MaxTags\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.resolve("solo-checker:2.0") is not None
    with pytest.raises(plugins.PluginNotFound):
        plugins.resolve("solo-checker")


@pytest.mark.parametrize("uri", ["tests.fixtures.rule_plugins:threading._os.popen",
                                 "tests.fixtures.rule_plugins:threading.Thread"],
                         ids=["private path to os.popen", "a class of a module it imports"])
def test_an_allowed_package_does_not_lend_out_what_it_imports(uri, tmp_path):
    marker = tmp_path / "ran"
    core, _ = make_core()
    with pytest.raises(InvalidRequest) as err:
        core.set_policy({"coop_id": "coop", "rules": [{"type": "plugin", "name": "x", "uri": uri,
                                                        "parameters": {"cmd": f"touch {marker}"}}]})
    assert err.value.errors[0].path == "rules[0].plugin.uri"
    assert not marker.exists()
