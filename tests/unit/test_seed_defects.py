"""Each of the seed design's seven known defects, fixed, with a test named after it."""

from __future__ import annotations

import json

from scheduler.core import SchedulerCore
from scheduler.ledger import Cost, Ledger
from scheduler.tasks import JobState
from tests.builders import START, make_core, make_executor, make_policy, make_sim, make_task

DEC_1 = 1_796_083_200.0
FLEET = [make_executor("us1", region="us-west", cpus=16), make_executor("eu1", region="eu-central", cpus=16)]
OVER_PRIORITY = make_task(priority="critical")  # violates max_priority "normal"


def test_monitoring_is_not_permissive():
    outcomes = {}
    for mode in ("strict", "permissive", "monitoring"):
        core, _ = make_core(make_policy(mode=mode, max_priority="normal"), FLEET)
        d = core.submit(OVER_PRIORITY.model_copy(update={"task_id": f"p-{mode}"}))
        outcomes[mode] = (d.admitted, len(d.warnings), sum(core.counters.violations.values()),
                          core.job(d.task_id).warnings)
    assert outcomes["strict"][:3] == (False, 0, 1)
    assert outcomes["permissive"][:3] == (True, 1, 1)       # admitted, warned, recorded on the job
    assert outcomes["permissive"][3][0].source == "quota:priority"
    assert outcomes["monitoring"][:3] == (True, 0, 1)       # admitted, only counted
    assert outcomes["monitoring"][3] == ()


def test_rollover_on_read_does_not_lock_members_out():
    sim = make_sim(make_policy(cpu_hours_per_month=1.0), FLEET, start=DEC_1 - 2 * 3600)
    first = sim.submit(make_task(runtime=3600), duration_s=3600)
    sim.run()
    assert sim.core.job(first.task_id).state is JobState.SUCCEEDED
    refused = sim.submit(make_task(runtime=600))
    assert not refused.admitted and "2026-12-01" in refused.reasons[0].message
    sim.clock.set(DEC_1 + 60)  # nothing written since the month changed
    assert sim.core.usage("coop", "alice").period == "2026-12"
    assert sim.core.usage("coop", "alice").cpu_hours == 0.0
    assert sim.submit(make_task(runtime=600)).admitted


def test_quota_checked_with_projected_cost():
    core, _ = make_core(make_policy(cpu_hours_per_month=10.0), FLEET)
    core.ledger.settle("history", "coop", "alice", Cost.of(cpu_hours=9.5), START)
    d = core.submit(make_task(cpus=1, runtime=3600))  # 9.5 used + 1.0 projected > 10
    assert not d.admitted
    assert "9.5 used + 0 reserved + 1 projected > 10 CPU-hours" in d.reasons[0].message
    # and one burst of submissions can never overshoot: 20 x 1 CPU-hour against 10
    core2, _ = make_core(make_policy(cpu_hours_per_month=10.0), FLEET)
    admitted = sum(core2.submit(make_task(cpus=1, runtime=3600)).admitted for _ in range(20))
    assert admitted == 10


def test_cpu_hours_are_cores_times_wall_time():
    sim = make_sim(make_policy(), FLEET)
    d = sim.submit(make_task(cpus=4, runtime=3600), duration_s=1800)
    sim.run()
    usage = sim.core.usage("coop", "alice")
    assert usage.cpu_hours == 2.0  # 4 cores x 0.5 h, not 0.5 h of wall time
    assert sim.core.job(d.task_id).charged_cpu_hours == 2.0


def test_priority_multiplier_applies_after_the_cap_to_a_numeric_priority():
    policy = make_policy(max_priority="normal",
                         rules=[{"type": "MemberPriority", "member": "bas", "multiplier": 3.0}])
    core, _ = make_core(policy, FLEET)
    over = core.submit(make_task(member="bas", priority="high"))
    assert not over.admitted and over.reasons[0].source == "quota:priority"  # cap on the requested priority
    ok = core.submit(make_task(member="bas", priority="normal"))
    assert ok.admitted and ok.effective_priority == 6.0  # 2 x 3: numeric, above critical's 4, not an enum clamp


def test_sovereignty_tags_are_respected():
    policy = make_policy(rules=[{"type": "DataSovereignty", "region": "eu-central", "tags": ["patient-data"]}])
    sim = make_sim(policy, [make_executor("us1", region="us-west", trust=1.0),
                            make_executor("eu1", region="eu-central", trust=0.1)])
    tagged = sim.submit(make_task(tags=["patient-data"]))
    untagged = sim.submit(make_task(tags=["weather"]))
    sim.step()
    assert sim.core.job(tagged.task_id).executor_id == "eu1"
    assert sim.core.job(untagged.task_id).executor_id == "us1"  # the seed sent every task to eu-central


def test_usage_is_not_kept_only_in_memory(tmp_path):
    """The ledger's facts survive a restart of the core through their persisted form."""
    sim = make_sim(make_policy(cpu_hours_per_month=2.0), FLEET)
    sim.submit(make_task(cpus=1, runtime=3600), duration_s=3600)
    sim.run()
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(sim.core.ledger.snapshot()))
    restarted = SchedulerCore(clock=sim.clock)
    restarted.ledger = Ledger.restore(json.loads(path.read_text()))
    restarted.set_policy(make_policy(cpu_hours_per_month=2.0))
    for e in FLEET:
        restarted.register_executor(e)
    assert restarted.usage("coop", "alice").cpu_hours == 1.0
    assert not restarted.submit(make_task(cpus=2, runtime=3600)).admitted  # 1 used + 2 > 2
