"""One table per built-in rule: the rule alone, through the real admission and placement."""

from __future__ import annotations

import pytest

from policies.rules import MemberPriority, RateBuckets, RuleContext, TaskLimits, TimeWindow
from policies.validation import InvalidRequest, parse
from policies.model import CoopPolicy
from scheduler.core import SchedulerCore
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task

HOUR = 3600.0
FLEET = [
    make_executor("us1", region="us-west", trust=0.9),
    make_executor("eu1", region="eu-central", caps={"hipaa-compliant": "1.2"}),
    make_executor("eu2", region="eu-central", caps={"hipaa-compliant": "0.9"}),
    make_executor("ap1", region="ap-south", caps={"secure-execution": "2.1"}),
]


def ctx(now: float = START, runtime: float = 600) -> RuleContext:
    return RuleContext(now=now, runtime_s=runtime, buckets=RateBuckets())


def placed_on(rules: list[dict], task, fleet=FLEET) -> str | None:
    sim = make_sim(make_policy(rules=rules), fleet)
    d = sim.submit(task)
    if not d.admitted:
        return None
    placed = sim.step()
    return placed[0].executor_id if placed else None


# --------------------------------------------------------------------------- DataSovereignty
def test_the_unconstrained_choice_is_us1():  # what the rules' tag-free rows expect
    assert placed_on([], make_task(tags=["public"])) == "us1"


@pytest.mark.parametrize("rule, tags, allowed", [
    ({"region": "eu-central", "tags": ["patient-data"]}, ["patient-data"], {"eu1", "eu2"}),
    ({"region": "eu-central", "tags": ["patient-data"]}, ["public"], {"us1"}),  # where it goes with no rule
    ({"region": "eu-central"}, [], {"eu1", "eu2"}),  # no tags: every task
    ({"region": ["eu-central", "ap-south"]}, [], {"eu1", "eu2", "ap1"}),
], ids=["tagged", "other-tag-free", "untagged-rule-all-tasks", "several-regions"])
def test_data_sovereignty(rule, tags, allowed):
    chosen = placed_on([{"type": "DataSovereignty", **rule}], make_task(tags=tags))
    assert chosen in allowed


def test_data_sovereignty_rules_intersect_and_conflicts_name_both():
    rules = [{"type": "DataSovereignty", "name": "gdpr", "region": ["eu-central", "us-west"]},
             {"type": "DataSovereignty", "name": "eu-only", "region": "eu-central"}]
    assert placed_on(rules, make_task()) in {"eu1", "eu2"}
    core, _ = make_core(make_policy(rules=[{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central"},
                                           {"type": "DataSovereignty", "name": "us-law", "region": "us-west"}]), FLEET)
    d = core.submit(make_task())
    assert not d.admitted and d.code.value == "rejected"
    assert "gdpr" in d.reasons[0].message and "us-law" in d.reasons[0].message


# --------------------------------------------------------------------------- TimeWindow
NIGHT = [22, 23, 0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("window, priority, now_offset_h, want", [
    ({"allowed_hours": NIGHT}, "normal", 0, "unavailable"),        # 11:06 UTC: closed
    ({"allowed_hours": NIGHT}, "normal", 14, None),                # 01:06 UTC: open
    ({"allowed_hours": NIGHT, "priorities": ["low"]}, "normal", 0, None),  # other priorities unaffected
    ({"allowed_days": [0, 6]}, "normal", 0, "unavailable"),        # Wednesday: weekend only
    ({"allowed_hours": [9], "timezone": "America/Los_Angeles"}, "normal", 0, "unavailable"),  # 03:06 in LA
    ({"allowed_hours": [3], "timezone": "America/Los_Angeles"}, "normal", 0, None),
], ids=["closed", "open", "other-priority", "weekend-only", "tz-closed", "tz-open"])
def test_time_window_reject(window, priority, now_offset_h, want):
    rule = TimeWindow(**window)
    reason = rule.check(make_task(priority=priority), ctx(START + now_offset_h * HOUR))
    assert (reason.code.value if reason else None) == want


def test_time_window_defer_holds_until_open_then_runs():
    sim = make_sim(make_policy(rules=[{"type": "TimeWindow", "allowed_hours": NIGHT, "action": "defer"}]), FLEET)
    d = sim.submit(make_task(), duration_s=60)
    assert d.admitted and d.not_before is not None
    assert sim.core.job(d.task_id).state is JobState.DEFERRED
    assert sim.step() == []
    sim.run()
    job = sim.core.job(d.task_id)
    assert job.state is JobState.SUCCEEDED
    assert job.started_at == d.not_before == 1_795_039_200.0  # 22:00 UTC the same day


@pytest.mark.parametrize("bad, field", [
    ({"allowed_hours": [24]}, "allowed_hours"), ({"allowed_days": [7]}, "allowed_days"),
    ({"timezone": "Mars/Olympus"}, "timezone"), ({"action": "later"}, "action"),
], ids=["hour", "day", "zone", "action"])
def test_time_window_validation_names_the_field(bad, field):
    with pytest.raises(InvalidRequest) as err:
        parse(CoopPolicy, {"coop_id": "c", "rules": [{"type": "TimeWindow", **bad}]})
    assert field in str(err.value)


# --------------------------------------------------------------------------- MemberPriority
@pytest.mark.parametrize("member, multiplier, want", [
    ("did:icn:bas", 3.0, 3.0), ("did:icn:alice", 3.0, 1.0), ("did:icn:bas", 0.5, 0.5),
], ids=["matching", "other-member", "demote"])
def test_member_priority(member, multiplier, want):
    rule = MemberPriority(member="did:icn:bas", multiplier=multiplier)
    assert rule.adjust(make_task(member=member), ctx()) == want


def test_member_priority_orders_the_queue():
    sim = make_sim(make_policy(rules=[{"type": "MemberPriority", "member": "bas", "multiplier": 3.0}]),
                   [make_executor("only", cpus=1)])
    first = sim.submit(make_task(member="alice", priority="high"))   # rank 3
    boosted = sim.submit(make_task(member="bas", priority="normal"))  # rank 2 x 3 = 6
    blocker = sim.submit(make_task(member="carol", priority="critical"))  # rank 4
    assert boosted.effective_priority == 6.0
    placed = sim.step()
    assert [p.task_id for p in placed] == [boosted.task_id]
    assert {first.task_id, blocker.task_id} <= {j.task_id for j in sim.core.jobs(state="queued")}


# --------------------------------------------------------------------------- RequireCapability
@pytest.mark.parametrize("rule, tags, allowed", [
    ({"capability": "hipaa-compliant", "min_version": "1.0"}, [], {"eu1"}),
    ({"capability": "hipaa-compliant"}, [], {"eu1", "eu2"}),
    ({"capability": "hipaa-compliant", "min_version": "1.0", "tags": ["phi"]}, ["other"], {"us1"}),  # as with no rule
    ({"capability": "secure-execution", "min_version": "2.0"}, [], {"ap1"}),
    ({"capability": "quantum"}, [], {None}),
], ids=["min-version", "any-version", "tag-not-carried", "other-cap", "nobody-has-it"])
def test_require_capability(rule, tags, allowed):
    assert placed_on([{"type": "RequireCapability", **rule}], make_task(tags=tags)) in allowed


def test_task_level_capabilities_also_filter():
    assert placed_on([], make_task(capabilities={"hipaa-compliant": "1.1"})) == "eu1"


# --------------------------------------------------------------------------- ExecutorFilter
@pytest.mark.parametrize("rule, allowed", [
    ({"whitelist": ["eu2", "ap1"]}, {"eu2", "ap1"}),
    ({"blacklist": ["us1"]}, {"eu1", "eu2", "ap1"}),
    ({"whitelist": ["eu2", "us1"], "blacklist": ["us1"]}, {"eu2"}),
    ({"whitelist": ["ghost"]}, {None}),
], ids=["whitelist", "blacklist", "both", "unknown-only"])
def test_executor_filter(rule, allowed):
    assert placed_on([{"type": "ExecutorFilter", **rule}], make_task()) in allowed


def test_blacklisted_executor_never_gets_work_even_when_best():
    sim = make_sim(make_policy(rules=[{"type": "ExecutorFilter", "blacklist": ["us1"]}]), FLEET)
    for _ in range(12):
        sim.submit(make_task(), duration_s=30)
    sim.run()
    assert sim.placements and all(p.executor_id != "us1" for p in sim.placements)


# --------------------------------------------------------------------------- RateLimit
@pytest.mark.parametrize("rate, burst, per, submits, gap_s, admitted", [
    (1.0, 3, "member", 5, 0.0, 3),
    (1.0, 3, "member", 5, 1.0, 5),
    (0.5, 1, "member", 4, 1.0, 2),
    (1.0, 2, "coop", 4, 0.0, 2),
], ids=["burst", "refills", "slow-refill", "per-coop"])
def test_rate_limit(rate, burst, per, submits, gap_s, admitted):
    core, clock = make_core(make_policy(rules=[{"type": "RateLimit", "rate": rate, "burst": burst, "per": per}]), FLEET)
    members = ["alice", "bob"]
    decisions = []
    for i in range(submits):
        decisions.append(core.submit(make_task(member=members[i % 2] if per == "coop" else "alice")))
        clock.advance(gap_s)
    assert sum(d.admitted for d in decisions) == admitted
    refused = [d for d in decisions if not d.admitted]
    assert all(d.code.value == "unavailable" and "retry in" in d.reasons[0].message for d in refused)


def test_rate_limit_does_not_spend_tokens_on_refused_tasks():
    core, _ = make_core(make_policy(rules=[{"type": "RateLimit", "rate": 0.001, "burst": 1},
                                           {"type": "TaskLimits", "max_cpus": 2}]), FLEET)
    assert not core.submit(make_task(cpus=4)).admitted  # refused by TaskLimits
    assert core.submit(make_task(cpus=1)).admitted      # the token is still there


# --------------------------------------------------------------------------- TaskLimits
@pytest.mark.parametrize("limits, task_kw, ok", [
    ({"max_cpus": 4}, {"cpus": 4}, True),
    ({"max_cpus": 4}, {"cpus": 4.5}, False),
    ({"max_gpus": 0}, {"gpus": 1}, False),
    ({"max_memory_mb": 1024}, {"memory_mb": 2048}, False),
    ({"max_runtime_s": 600}, {"runtime": 601}, False),
    ({"max_runtime_s": 600}, {"runtime": None}, False),  # quota default (3600 s) counts when none declared
], ids=["at-limit", "cpus", "gpus", "memory", "runtime", "default-runtime"])
def test_task_limits(limits, task_kw, ok):
    rule = TaskLimits(**limits)
    task = make_task(**task_kw)
    reason = rule.check(task, ctx(runtime=task.max_runtime_s or 3600))
    assert (reason is None) == ok
    if reason:
        assert reason.code.value == "rejected"


def test_rule_that_raises_is_an_error_reason_not_a_crash():
    class Broken:
        label = "broken-plugin"

        def check(self, task, ctx):
            raise RuntimeError("boom")

    from scheduler.admission import CompiledPolicy
    core, _ = make_core(make_policy(), FLEET)
    core._policies["coop"] = CompiledPolicy.of(core.policy("coop"), extra_rules=(Broken(),))
    d = core.submit(make_task())
    assert not d.admitted and d.reasons[0].code.value == "error" and "boom" in d.reasons[0].message


def test_time_window_governs_starts_not_only_admission():
    """A task admitted in an open window that is still queued at the close waits for the next opening."""
    sim = make_sim(make_policy(rules=[{"type": "TimeWindow", "allowed_hours": [11, 12], "action": "defer"}]),
                   [make_executor("only", cpus=1)])
    first = sim.submit(make_task(runtime=7200), duration_s=7000)  # 11:06 -> 13:03
    second = sim.submit(make_task(runtime=7200), duration_s=60)
    sim.run()
    started = sim.core.job(second.task_id).started_at
    assert sim.core.job(first.task_id).started_at == START
    assert started == 1_795_086_000.0  # 11:00 UTC next day, not 13:03 today


def test_time_window_opens_on_time_in_half_hour_zones():
    rule = TimeWindow(allowed_hours=[20, 21], timezone="Asia/Kolkata", action="defer")
    opening = rule.next_opening(1_795_000_000.0)  # 16:36 IST
    assert opening == 1_795_012_200.0  # 14:30 UTC = 20:00 IST, not 15:00 UTC


def test_two_unnamed_rate_limits_each_keep_their_own_bucket():
    """A burst limit and a sustained one on the same member: each takes its own token per admission."""
    rules = [{"type": "RateLimit", "rate": 0.001, "burst": 10}, {"type": "RateLimit", "rate": 0.001, "burst": 100}]
    core, _ = make_core(make_policy(rules=rules), [make_executor("a", cpus=64)])
    assert sum(core.submit(make_task()).admitted for _ in range(20)) == 10


# ----------------------------------------------------------------------------- RateLimit buckets over time
def _rate_core(rules, mode, t):
    core = SchedulerCore(clock=lambda: t[0])
    core.set_policy(make_policy(rules=rules, mode=mode))
    core.register_executor(make_executor("one", cpus=64))
    return core


def test_a_rate_limit_refills_nothing_twice_when_the_clock_steps_back():
    """rate 0.01/s, burst 2: the bucket stored the stepped-back time as its last refill, so the same 100 s
    were refilled again once the clock came back: one submission more than the rule allows."""
    t = [START]
    core = _rate_core([{"type": "RateLimit", "rate": 0.01, "burst": 2}], "strict", t)
    assert core.submit(make_task()).admitted
    t[0] = START - 100
    assert core.submit(make_task()).admitted
    t[0] = START
    assert not core.submit(make_task()).admitted


def test_a_permissive_rate_limit_leaves_no_debt_behind_a_burst():
    """Over-limit submissions a permissive policy let through drove the bucket to -99: a member who then
    slowed down was still warned ('retry in 95 s'), and refused outright once the policy turned strict."""
    t = [START]
    rules = [{"type": "RateLimit", "rate": 1.0, "burst": 1}]
    core = _rate_core(rules, "permissive", t)
    for _ in range(100):
        core.submit(make_task())
    t[0] += 5.0
    calm = core.submit(make_task())
    assert calm.admitted and not calm.warnings, calm.warnings
    for _ in range(100):
        core.submit(make_task())
    core.set_policy(make_policy(rules=rules, mode="strict"))
    t[0] += 5.0
    assert core.submit(make_task()).admitted


# --- RateLimit edges

def test_two_identical_unnamed_rate_limits_are_one_limit_not_a_halved_burst():
    one = {"type": "RateLimit", "rate": 0.001, "burst": 4}
    core, _ = make_core(make_policy(rules=[one, dict(one)]), [make_executor("e1", cpus=64)])
    assert sum(core.submit(make_task(runtime=1)).admitted for _ in range(6)) == 4


def test_a_rate_limited_member_who_retries_when_told_is_admitted():
    import re
    core, clock = make_core(make_policy(rules=[{"type": "RateLimit", "rate": 3.0, "burst": 1}]),
                            [make_executor("e1", cpus=64)])
    assert core.submit(make_task(runtime=1)).admitted
    refused = core.submit(make_task(runtime=1))
    assert not refused.admitted and "submit_many" not in refused.reasons[0].message  # batches pay per task too
    wait = float(re.search(r"retry in ([0-9.]+) s", refused.reasons[0].message).group(1))
    assert wait >= 1 / 3  # rounded up, never down
    clock.advance(wait)
    assert core.submit(make_task(runtime=1)).admitted


# --- the exported JSON Schema says no more than the model does

@pytest.mark.parametrize("doc", [
    {"coop_id": "c", "rules": [{"region": "eu-central"}]},
    {"coop_id": "c", "rules": [{"rate": 2.0}]},
    {"coop_id": "c", "rules": [{"type": "TimeWindow", "allowed_hours": [25]}]},
    {"coop_id": "c", "rules": [{"type": "TimeWindow", "allowed_days": [7]}]},
], ids=["sovereignty without type", "rate limit without type", "hour 25", "day 7"])
def test_the_exported_schema_refuses_what_the_model_refuses(doc):
    import jsonschema
    with pytest.raises(InvalidRequest):
        parse(CoopPolicy, doc, what="policy")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, CoopPolicy.model_json_schema())


def test_every_shipped_example_passes_the_exported_schema():
    import json
    from pathlib import Path

    import jsonschema
    schema = CoopPolicy.model_json_schema()
    examples = sorted((Path(__file__).resolve().parents[2] / "policies" / "examples").glob("*.json"))
    assert len(examples) >= 9
    for path in examples:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_a_default_runtime_above_a_task_limit_is_refused_when_the_policy_is_read():
    policy = {"coop_id": "c", "rules": [{"type": "TaskLimits", "max_runtime_s": 1800}],
              "default_quota": {"default_max_runtime_s": 3600}}
    with pytest.raises(InvalidRequest, match="default_quota.default_max_runtime_s is 3600 s, above rules"):
        parse(CoopPolicy, policy, what="policy")
    member = {**policy, "default_quota": {"default_max_runtime_s": 600},
              "member_quotas": {"bob": {"default_max_runtime_s": 7200}}}
    with pytest.raises(InvalidRequest, match="member_quotas.bob.default_max_runtime_s"):
        parse(CoopPolicy, member, what="policy")
    ok = parse(CoopPolicy, {**policy, "default_quota": {"default_max_runtime_s": 1800}}, what="policy")
    assert ok.default_quota.default_max_runtime_s == 1800


def test_a_tasks_own_capability_minimum_must_be_a_version():
    from scheduler.tasks import TaskSpec
    with pytest.raises(InvalidRequest, match="capability 'cuda'"):
        parse(TaskSpec, {"coop_id": "c", "member": "m", "capabilities": {"cuda": "latest"}}, what="task")
    assert parse(TaskSpec, {"coop_id": "c", "member": "m", "capabilities": {"cuda": "12.1", "nfs": None}},
                 what="task").capabilities == {"cuda": "12.1", "nfs": None}
