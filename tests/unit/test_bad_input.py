"""Malformed input never gets further than validation, and the error says which field and how to fix it.

Hypothesis takes valid examples of every model the head reads from outside (policies with
every rule type, task specs, executor specs, heartbeat offers, usage reports, member quotas;
see ``tests/malformed.py``) and breaks them one place at a time: a value of the wrong type,
a huge or negative number, NaN or infinity, a megabyte string, odd unicode (RTL marks,
zero-width joiners, emoji, NUL), an unknown rule ``type``, an extra key, a missing key.
``parse`` must then either return a valid model (which survives its own JSON round trip)
or raise ``InvalidRequest`` whose every error names a path of the input and says what was
received and what is accepted; never anything else (a pydantic ``ValidationError``,
``TypeError``, ``OSError``, ``RecursionError``). The same mutations go through
``SchedulerCore`` (what the head calls), which must be left exactly as it was. No Ray.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policies.model import CoopPolicy, MemberQuota
from policies.validation import InvalidRequest, parse, quoted
from scheduler.admin import (UsedAmounts, check_coop, check_member, used_amounts, with_default_limits,
                             with_member_limits)
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec
from scheduler.head_auth import AuthSettings
from scheduler.head_results import WaitRequest
from scheduler.ledger import Cost
from scheduler.tasks import TaskSpec
from scheduler.usage import UsageReport
from tests.builders import START, make_core, make_executor, make_policy
from tests.malformed import (BAD_VALUES, EVERY_RULE_POLICY, EXAMPLES, EXECUTOR, KEY, MB_STRING, OFFER, REPORT,
                             SAFE_KEY, SHORT_MESSAGE, TAGS, TASK, Path, assert_says_how_to_fix, at, check, in_input,
                             mutations, paths, related, replaced)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_examples_are_valid(name):
    model, example = EXAMPLES[name]
    assert isinstance(parse(model, example), model)


def test_the_policy_example_has_every_rule_type():
    assert {r["type"] for r in EVERY_RULE_POLICY["rules"]} == TAGS


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", EXAMPLES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_broken_example_is_refused_with_a_message_naming_the_field(name, data):
    model, example = EXAMPLES[name]
    broken, where = data.draw(mutations(example))
    check(model, broken, where)


@pytest.mark.parametrize("name", EXAMPLES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_broken_json_text_is_refused_the_same_way(name, data):
    model, example = EXAMPLES[name]
    broken, where = data.draw(mutations(example))
    try:
        text = json.dumps(broken)
    except (TypeError, ValueError, OverflowError):
        assume(False)
    check(model, text, where)


@pytest.mark.parametrize("name", EXAMPLES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_two_broken_places_are_refused_the_same_way(name, data):
    model, example = EXAMPLES[name]
    once, _ = data.draw(mutations(example))
    if isinstance(once, dict):
        twice, _ = data.draw(mutations(once))
        check(model, twice)


@pytest.mark.parametrize("name", EXAMPLES)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                          lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEY, kids,
                                                                                   max_size=4), max_leaves=20))
@settings(max_examples=60, deadline=None)
def test_arbitrary_json_at_the_root_is_refused_or_valid(name, value):
    check(EXAMPLES[name][0], value)


# ----------------------------------------------------------------------------- megabyte strings, deep nesting
def _string_places() -> list[tuple[str, Path]]:
    out = []
    for name, (_, example) in EXAMPLES.items():
        out += [(name, p) for p in paths(example) if isinstance(at(example, p), str)]
    return out


@pytest.mark.parametrize("name, path", _string_places(), ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple)
                         else v)
def test_a_megabyte_string_anywhere_is_refused_quickly_with_a_short_message(name, path):
    model, example = EXAMPLES[name]
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as err:
        parse(model, replaced(example, path, MB_STRING))
    assert time.perf_counter() - started < 1.0
    message = str(err.value)
    assert len(message) < 1_000 and re.search(r"\(100\d{4} chars\)", message), message
    assert any(related(in_input(e.path, example), path) for e in err.value.errors), message


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_megabyte_key_is_refused_with_a_short_message(name):
    model, example = EXAMPLES[name]
    dicts = [p for p in paths(example) if isinstance(at(example, p), dict)]
    for path in dicts:
        node = dict(at(example, path))
        node[MB_STRING] = 1
        started = time.perf_counter()
        with pytest.raises(InvalidRequest) as err:
            parse(model, replaced(example, path, node))
        assert time.perf_counter() - started < 1.0
        assert len(str(err.value)) < 1_000, (path, str(err.value)[:500])


@pytest.mark.parametrize("depth", [40, 1_000, 100_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth):
    nested: Any = 1
    for _ in range(depth):
        nested = {"a": [nested]}
    for name, (model, example) in EXAMPLES.items():
        for path in paths(example)[:40]:
            if path[-1:] == ("type",) and depth > 100:
                continue  # a rule's tag: refused too, but pydantic-core reports an ignored RecursionError
                # (sys.unraisablehook) while it reprs the tag, and pytest's own hook then fails the same way
            check(model, replaced(example, path, nested), path)
    policy = replaced(EVERY_RULE_POLICY, ("rules", 8, "parameters"), {"deep": nested})
    with pytest.raises(InvalidRequest, match=r"rules\[8\].plugin.parameters"):
        parse(CoopPolicy, policy)


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_boolean_where_a_number_goes_is_refused_by_name(name):
    """Pydantic reads true as 1: a policy's ``"max_concurrent_tasks": true`` became one task at a time, a
    task's ``"cpus": true`` one CPU. Every number of every example, replaced by true or false, is refused
    naming its place (a plug-in's own parameters are free JSON: booleans are theirs to read)."""
    model, example = EXAMPLES[name]
    numbers = [p for p in paths(example) if p and "parameters" not in p
               and isinstance(at(example, p), (int, float)) and not isinstance(at(example, p), bool)]
    assert numbers
    for path in numbers:
        for flag in (True, False):
            with pytest.raises(InvalidRequest) as caught:
                parse(model, replaced(example, path, flag))
            assert "true and false are not numbers here" in str(caught.value), (path, str(caught.value))
            assert_says_how_to_fix(caught.value, replaced(example, path, flag), path)


NOT_A_NUMBER = "true and false are not numbers here"


@pytest.mark.parametrize("flag", [np.True_, np.False_])
def test_a_numpy_boolean_is_refused_like_a_python_one(flag):
    with pytest.raises(InvalidRequest, match=NOT_A_NUMBER):
        parse(TaskSpec, {"coop_id": "c", "member": "m", "resources": {"cpus": 1, "gpus": flag}}, what="task")
    with pytest.raises(InvalidRequest, match=NOT_A_NUMBER):
        parse(MemberQuota, {"max_concurrent_tasks": flag})
    with pytest.raises(InvalidRequest, match=NOT_A_NUMBER):
        parse(ExecutorSpec, {"executor_id": "e", "coop_id": "c", "region": "r", "resources": {"cpus": 8},
                             "dispatch_ahead": flag})


@pytest.mark.parametrize("model, data", [
    (UsedAmounts, {"cpu_hours": True}), (UsedAmounts, {"credits": False}),  # set_quota: true was 1 hour used
    (AuthSettings, {"window_s": True}),  # a 1 s window for signed requests
    (WaitRequest, {"task_ids": ["t"], "timeout_s": True}),  # a 1 s wait
])
def test_other_public_inputs_refuse_a_boolean_number(model, data):
    with pytest.raises(InvalidRequest, match=NOT_A_NUMBER):
        parse(model, data)


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_int_too_long_to_print_is_refused(name):
    """Python will not turn an int of more than 4,300 digits into text: the message must not try."""
    model, example = EXAMPLES[name]
    for path in [p for p in paths(example) if p and p[-1] != "type"][:30]:  # a tag: pydantic-core's own noise
        check(model, replaced(example, path, 10**5000), path)
    assert quoted(10**5000) == "<int>"


def test_plugin_parameters_are_bounded_json():
    """What the head stores and ``PluginRule.key`` sorts: JSON, at most 64 KB, keys of one type."""
    for parameters in ({"big": "x" * 70_000}, {"mixed": {1: "a", "b": 2}}, {"nan": math.nan}, {"set": {1, 2}}):
        with pytest.raises(InvalidRequest, match=r"rules\[8\].plugin.parameters"):
            parse(CoopPolicy, replaced(EVERY_RULE_POLICY, ("rules", 8, "parameters"), parameters))


# ----------------------------------------------------------------------------- fixed cases (regressions)
@pytest.mark.parametrize("zone", ["America", "x" * 300, "a/" * 100, "\x00", "../zoneinfo/UTC", "/etc/passwd",
                                  "Europe/Berlin\u200f"])
def test_a_time_zone_that_is_no_zone_is_a_validation_error(zone):
    """It used to raise IsADirectoryError ('America') or OSError (a name too long) out of parse."""
    says = r"rules\[2\].TimeWindow.timezone: received .*; accepted: .*(IANA|at most 100 char)"
    with pytest.raises(InvalidRequest, match=says):
        parse(CoopPolicy, replaced(EVERY_RULE_POLICY, ("rules", 2, "timezone"), zone))


def test_union_member_labels_are_not_in_the_path():
    """``region`` is a string or a list: the path is the field, not ``region.str`` / ``region.tuple[str, ...]``."""
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, replaced(EVERY_RULE_POLICY, ("rules", 1, "region"), ["eu-central", 5]))
    assert [e.path for e in err.value.errors] == ["rules[1].DataSovereignty.region",
                                                  "rules[1].DataSovereignty.region[1]"]
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, replaced(EVERY_RULE_POLICY, ("rules", 9, "expression"), "task.cpus >"))
    assert [e.path for e in err.value.errors] == ["rules[9].expression.expression"]  # tag, then field


def test_odd_unicode_is_escaped_in_the_message():
    with pytest.raises(InvalidRequest) as err:
        parse(TaskSpec, {**TASK, "priority": "high\u202e\x00"})
    message = str(err.value)
    assert "\u202e" not in message and "\x00" not in message and "\\u202e" in message
    with pytest.raises(InvalidRequest) as err:
        parse(ExecutorSpec, {**EXECUTOR, "labels": {"rack": 1, "\u200fkey": "v"}, "bogus\x00": 1})
    assert "\x00" not in str(err.value) and "bogus\\x00" in str(err.value)


def test_many_errors_are_counted_not_all_spelled_out():
    bad = {**EVERY_RULE_POLICY, "rules": [{"type": "Nope"}] * 500}
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, bad)
    assert len(err.value.errors) == 500 and "and 490 more errors" in str(err.value)
    assert len(str(err.value)) < 5_000


def test_usage_times_stay_within_the_calendar():
    """A report from year 10^300 used to pass validation, and the ledger cannot name its month."""
    with pytest.raises(InvalidRequest, match="ended_at"):
        parse(UsageReport, {**REPORT, "started_at": START, "ended_at": 1e300})


def test_a_heartbeat_cannot_overflow_the_executor_table():
    with pytest.raises(InvalidRequest, match="gpu_memory_used_mb"):
        parse(ExecutorOffer, {**OFFER, "gpu_memory_used_mb": 10**30})


# ----------------------------------------------------------------------------- quota management actions
@pytest.mark.parametrize("values", [{"cpu_hours": "lots"}, {"cpu_hours": -1}, {"gpu_hours": math.nan},
                                    {"credits": math.inf}, {"credits": 10**30}, {"cpu_hourz": 1.0},
                                    {"cpu_hours": [1]}, {"cpu_hours": MB_STRING}])
def test_set_quota_amounts_are_validated(values):
    field = next(iter(values))
    with pytest.raises(InvalidRequest, match=rf"invalid quota action: {field}: received .*; accepted: "):
        used_amounts(values, Cost())


def test_set_quota_amounts_when_valid():
    current = Cost.of(7.0, 3.0, 4.0)
    assert used_amounts({"cpu_hours": 2, "credits": 1.5}, current) == Cost.of(2.0, 3.0, 1.5)  # the rest stay
    assert used_amounts({"gpu_hours": 0}, current) == Cost.of(7.0, 0.0, 4.0)
    with pytest.raises(InvalidRequest, match="cpu_hours: received nothing; accepted: at least one of"):
        used_amounts({}, current)


@pytest.mark.parametrize("bad", [None, "", 5, ["did:icn:alice"], {"a": 1}, "x" * 201, MB_STRING])
def test_coop_and_member_of_a_quota_action_are_checked(bad):
    for checker, field in ((check_coop, "coop_id"), (check_member, "member")):
        with pytest.raises(InvalidRequest, match=rf"{field}: received .*; accepted: .*1-200 characters") as err:
            checker(bad)
        assert len(str(err.value)) < 300


@settings(max_examples=80, deadline=None)
@given(field=st.sampled_from(sorted(MemberQuota.model_fields)), value=st.sampled_from(BAD_VALUES),
       extra=st.none() | SAFE_KEY)
def test_update_limit_values_are_validated(field, value, extra):
    policy = parse(CoopPolicy, EVERY_RULE_POLICY)
    limits = {field: value} if extra is None else {extra: value}
    for change in (lambda: with_member_limits(policy, "did:icn:alice", limits),
                   lambda: with_default_limits(policy, limits)):
        try:
            changed = change()
        except InvalidRequest as exc:
            assert "received" in str(exc) and "accepted" in str(exc) and len(str(exc)) < SHORT_MESSAGE
            assert exc.errors[0].path in (field, extra)
        else:
            assert check(CoopPolicy, changed.model_dump(mode="json")) == changed


# ----------------------------------------------------------------------------- the core is left as it was
def _state(core) -> tuple:
    return ([p.model_dump(mode="json") for p in core.policies()],
            [(s.model_dump(mode="json"), st_.value, n) for s, st_, n in core.executors()],
            sorted((j.task_id, j.state.value) for j in core.jobs()),
            core.usage("research:biolab", "did:icn:alice").model_dump(mode="json"),
            core.table.reported_queue.tolist(), core.table.rtt_ms.tolist(), core.table.trust.tolist())


@pytest.fixture(scope="module")
def running_core():
    """A core with a policy, an executor and one task running on it (so a report could charge someone)."""
    rules = [r for r in EVERY_RULE_POLICY["rules"] if r["type"] in ("TaskLimits", "expression")]
    rules.append({**EVERY_RULE_POLICY["rules"][8], "parameters": {"limit": 3}})  # MaxTags takes only a limit
    policy = make_policy(coop="research:biolab", rules=rules)
    core, clock = make_core(policy, [make_executor("exec-berlin-1", coop="research:biolab", cpus=8)])
    decision = core.submit({**TASK, "resources": {"cpus": 1}, "tags": ["batch"], "capabilities": {},
                            "hints": {}, "priority": "normal"})
    assert decision.admitted, decision
    (placement,) = core.schedule()
    assert placement.executor_id == "exec-berlin-1"
    return core


CORE_CALLS = {
    "policy": "set_policy",
    "task": "submit",
    "executor": "register_executor",
    "offer": "update_executor",
    "report": "complete",
}


@pytest.mark.parametrize("name", CORE_CALLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_core_refuses_broken_input_and_changes_nothing(running_core, name, data):
    model, example = EXAMPLES[name]
    broken, where = data.draw(mutations(example))
    assume(check(model, broken, where) is None)  # only what validation refuses: valid input may change state
    before = _state(running_core)
    with pytest.raises(InvalidRequest):
        getattr(running_core, CORE_CALLS[name])(broken)
    assert _state(running_core) == before


def test_a_policy_file_with_a_megabyte_name_is_refused_with_a_short_message():
    from policies.loader import load_policy
    with pytest.raises(InvalidRequest) as err:
        load_policy(MB_STRING)
    message = str(err.value)
    assert len(message) < 1_000 and "a readable JSON file" in message, message[:300]


@pytest.mark.parametrize("field, value", [("cpus", 0.00001), ("gpus", 0.00005)])
def test_a_fraction_ray_cannot_count_is_refused_at_the_door(field, value):
    """Ray refuses CPU or GPU amounts that round to nothing in its 0.0001 units: such a task was admitted,
    then failed at every executor's launch (and, before the worker survived it, wedged its queue)."""
    with pytest.raises(InvalidRequest, match=rf"{field}: received {value}; accepted: .*at least 0.0001"):
        parse(TaskSpec, {"coop_id": "c", "member": "m", "resources": {"cpus": 1, field: value}})
    assert parse(TaskSpec, {"coop_id": "c", "member": "m", "resources": {"cpus": 0.0001, "gpus": 0}}).resources.cpus
