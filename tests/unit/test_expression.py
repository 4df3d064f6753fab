"""Expression rules (CEL): outcomes, the activation, validation errors with positions,
compiled once per expression, and the benchmark's smoke run."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

from policies import expression
from policies.expression import ExpressionRule, compile_expression
from policies.model import CoopPolicy
from policies.rules import RateBuckets, RuleContext
from policies.validation import InvalidRequest, parse
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task

ROOT = Path(__file__).resolve().parents[2]
FLEET = [make_executor("e1", cpus=16)]


def ctx(now: float = START, runtime: float = 600) -> RuleContext:
    return RuleContext(now=now, runtime_s=runtime, buckets=RateBuckets())


def outcome(rule: ExpressionRule, **task) -> tuple[str, str] | None:
    reason = rule.check(make_task(**task), ctx())
    return None if reason is None else (reason.code.value, reason.message)


# --------------------------------------------------------------------------- outcomes
@pytest.mark.parametrize("rule, task, want", [
    ({"expression": 'task.cpus <= 8 && "gpu" in task.tags'}, {"cpus": 4, "tags": ["gpu"]}, None),
    ({"expression": 'task.cpus <= 8 && "gpu" in task.tags', "message": "small GPU-tagged tasks only"},
     {"cpus": 12, "tags": ["gpu"]}, ("rejected", "small GPU-tagged tasks only")),
    ({"expression": "task.cpus <= 8"}, {"cpus": 12}, ("rejected", "this coop requires task.cpus <= 8")),
    ({"expression": "hour >= 20", "code": "unavailable", "message": "night jobs only"}, {},
     ("unavailable", "night jobs only")),
    ({"expression": "task.cpus + 1.0"}, {}, ("error", "gave float 2.0, not a bool")),
    ({"expression": 'task.tags[0] == "gpu"'}, {"tags": []}, ("error", "failed on this task: IndexError")),
    ({"expression": "task.cpus + 1 > 2.0"}, {}, ("error", "failed on this task: TypeError")),
    ({"expression": "task.cpus <= 1", "tags": ["big"]}, {"cpus": 4}, None),             # rule does not apply
    ({"expression": "task.cpus <= 1", "tags": ["big"]}, {"cpus": 4, "tags": ["big"]},
     ("rejected", "this coop requires task.cpus <= 1")),
], ids=["true", "false-message", "false-default-message", "false-unavailable", "not-a-bool", "index-error",
        "type-error", "untagged-task-skipped", "tagged-task-checked"])
def test_expression_outcomes(rule, task, want):
    got = outcome(ExpressionRule(name="expr", **rule), **task)
    if want is None or got is None:
        assert got == want
    else:
        assert got[0] == want[0] and want[1] in got[1]


@pytest.mark.parametrize("source, task", [
    ('task.cpus == 2.0 && task.gpus == 1.0 && task.memory_mb == 512 && task.gpu_memory_mb == 0', {}),
    ('task.priority == "high" && task.priority_rank == 3', {"priority": "high"}),
    ('task.tags == ["a", "b"] && task.tags.exists(t, t == "b")', {"tags": ["a", "b"]}),
    ("task.max_runtime_s == 600.0", {}),
    ('task.name == null && task.task_id == "t-expr"', {}),
    ('task.capabilities["cuda"] == "12.0" && task.capabilities["fpga"] == ""', {}),
    ('"genomes" in task.data', {}),
    ('member == "alice" && coop_id == "coop"', {}),
    ("hour == 11 && weekday == 3", {}),                   # START is Wednesday 11:06 UTC
    ("now.getHours() == 11 && now.getMinutes() == 6", {}),
    ('"cpus" in task && task["gpus"] == 1.0', {}),        # the whole map
], ids=["resources", "priority", "tags", "runtime", "name-id", "capabilities", "data", "member-coop", "hour-weekday",
        "now", "map-itself"])
def test_activation(source, task):
    spec = make_task(**{"cpus": 2, "gpus": 1, "memory_mb": 512, "task_id": "t-expr",
                        "capabilities": {"cuda": "12.0", "fpga": None}, "hints": {"data": ["genomes"]}, **task})
    assert compile_expression(source).evaluate(spec, ctx()) is True


@pytest.mark.parametrize("source, variables, fields", [
    ("task.cpus <= 8", [], ["cpus"]),
    ('task.cpus <= 8 && "gpu" in task.tags && task.cpus > 0.5', [], ["cpus", "tags"]),
    ('member != "mallory"', ["member"], None),
    ('"cpus" in task', [], "all"),
    ('member == "task.name" && hour < 5', ["hour", "member"], None),  # "task." inside a string is not a read
], ids=["one-field", "two-fields", "no-task", "whole-map", "string-literal"])
def test_only_what_an_expression_reads_is_built(source, variables, fields):
    compiled = compile_expression(source)
    assert sorted(name for name, _ in compiled.variables) == variables
    got = None if compiled.task_fields is None else [name for name, _ in compiled.task_fields]
    assert got == (list(expression.TASK_FIELDS) if fields == "all" else fields)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("source, says", [
    ("task.cpus >", "syntax error at line 1, column 12: mismatched input '<EOF>'"),
    ("task.cpus <= 8 &&\n  (task.gpus > ", "syntax error at line 2, column 16"),
    ("task.cpus ## 2", "syntax error at line 1, column 11: token recognition error at: '#'"),
    ("nosuch > 3", "unknown variable at line 1, column 1: 'nosuch'; the variables are task, member, coop_id"),
    ("task.cpus > 1 &&\n task.cpuz > 3", "unknown field at line 2, column 7: task.cpuz; task has cpus, gpus"),
], ids=["syntax-eof", "syntax-line-2", "bad-token", "unknown-variable", "unknown-field"])
def test_a_bad_expression_fails_validation_at_its_position(source, says):
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, {"coop_id": "c", "rules": [{"type": "TaskLimits"}, {"type": "TaskLimits"},
                                                     {"type": "expression", "expression": source}]}, what="policy")
    (field,) = err.value.errors
    assert field.path == "rules[2].expression.expression"
    assert field.received == json.dumps(source)
    assert field.accepted.startswith("a CEL boolean expression (") and says in field.accepted
    assert field.example == '"task.cpus <= 8 && \\"gpu\\" in task.tags"'


def test_the_error_message_reads_as_documented():
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, {"coop_id": "c", "rules": [{"type": "expression", "expression": "task.cpus >"}]},
              what="policy")
    assert str(err.value).startswith(
        'invalid policy: rules[0].expression.expression: received "task.cpus >"; accepted: a CEL boolean '
        "expression (syntax error at line 1, column 12: ")
    assert str(err.value).endswith('; example: "task.cpus <= 8 && \\"gpu\\" in task.tags"')


@pytest.mark.parametrize("rule", [
    {"expression": ""},
    {"expression": "true", "code": "error"},
    {"expression": "true", "tags": "gpu"},
], ids=["empty", "code-error-not-allowed", "tags-not-a-list"])
def test_other_fields_are_validated(rule):
    with pytest.raises(InvalidRequest):
        parse(CoopPolicy, {"coop_id": "c", "rules": [{"type": "expression", **rule}]})


# --------------------------------------------------------------------------- through the core
@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_an_expression_that_fails_is_an_error_reason_strict_rejects_permissive_admits(mode):
    sim = make_sim(make_policy(rules=[{"type": "expression", "name": "broken", "expression": "task.tags[0] == 'x'"}],
                               mode=mode), FLEET)
    d = sim.submit(make_task(), duration_s=60)
    found = d.reasons if mode == "strict" else d.warnings
    assert d.admitted is (mode == "permissive")
    assert [(r.code.value, r.source) for r in found] == [("error", "broken")]
    sim.run()
    assert sim.core.job(d.task_id).state is (JobState.SUCCEEDED if mode == "permissive" else JobState.REJECTED)


def test_expression_compiled_once_per_expression_not_per_submission():
    source = 'task.cpus <= 4.0 && !("compiled-once-probe" in task.tags)'
    before = expression.compilations()
    policy = make_policy(rules=[{"type": "expression", "name": "small", "expression": source}])
    core, _ = make_core(policy, FLEET)
    decisions = [core.submit(make_task(cpus=1 + i % 8)) for i in range(40)]
    assert sum(d.admitted for d in decisions) == 20
    core.set_policy(policy.model_dump(mode="json"))                     # the same policy again (a restart)
    core.set_policy(make_policy(rules=[{"type": "expression", "expression": source}], cpu_hours_per_month=9.0))
    parse(CoopPolicy, policy.model_dump(mode="json"))                    # `coopsched policy validate`
    assert core.submit(make_task(cpus=5)).reasons[0].source == "expression"
    assert expression.compilations() - before == 1


def test_policy_with_expressions_pickles_and_compares():
    policy = make_policy(rules=[{"type": "expression", "name": "small", "expression": "task.cpus <= 4"}])
    again = pickle.loads(pickle.dumps(policy))
    assert again == policy and hash(again.rules[0]) == hash(policy.rules[0])
    assert again.rules[0].check(make_task(cpus=8), ctx()).code.value == "rejected"


# --------------------------------------------------------------------------- benchmark
def test_expression_cost_benchmark_smoke(capsys):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import expression_cost
    rows = expression_cost.main(["--submissions", "200"])
    names = [r["case"] for r in rows]
    assert names[:3] == ["no rule", "built-in Python rule", "expression rule"]
    assert all(r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"] for r in rows)
    assert "expression rule" in capsys.readouterr().out



def test_comments_are_not_code_whatever_they_hold():
    apostrophe = ExpressionRule(expression="true // don't forget\n && task.gpus == 0.0")
    assert apostrophe.check(make_task(gpus=0), ctx()) is None  # the quote opened no string
    mention = ExpressionRule(expression="task.cpus <= 8.0 // see task.limits")  # no field task.limits read
    assert mention.check(make_task(cpus=2), ctx()) is None
