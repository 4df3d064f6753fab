"""The shipped example policies: each loads, round-trips, and does what its description says.

Behaviour runs through the real ``SchedulerCore`` driven by ``executors.simulated`` in
virtual time. No Ray.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from executors.simulated import DEFAULT_START, Simulation, VirtualClock
from policies.loader import EXAMPLES_DIR, example_names, load_example, load_policy
from policies.model import CoopPolicy, EnforcementMode
from policies.reasons import ReasonCode
from policies.rules import BUILTIN_RULES
from scheduler.tasks import JobState

EXAMPLES = ("basic-cooperative", "executor-filtering", "gdpr-compliant", "housing-coop",
            "permissive-development", "research-coop", "tiered-membership", "time-restricted", "timebank")
ALICE, BOB = "did:icn:alice", "did:icn:bob"
BUILDING = "did:icn:building-automation-system"
GUEST = "did:icn:guest-amara-okafor"
PI = "did:icn:uppsala-pi-karlsson"
_ids = itertools.count(1)


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def make_task(member: str = ALICE, *, cpus: float = 1, priority: str = "normal", tags: tuple[str, ...] = (),
              runtime_s: float = 600, task_id: str | None = None, **extra) -> dict:
    """A task without a coop: ``Fleet.submit`` fills in the example's coop id."""
    return dict(task_id=task_id or f"t{next(_ids)}", member=member, resources={"cpus": cpus}, priority=priority,
                tags=list(tags), max_runtime_s=runtime_s, **extra)


def make_executor(executor_id: str, *, region: str = "eu-central", cpus: float = 4, trust: float = 0.5,
                  price: float = 1.0, **caps: str) -> dict:
    """An executor of the example's coop; keyword arguments are capabilities (``_`` reads as ``-``)."""
    return dict(executor_id=executor_id, region=region, resources={"cpus": cpus}, trust=trust,
                price_cpu_hour=price, capabilities={k.replace("_", "-"): v for k, v in caps.items()})


class Fleet:
    """One example policy installed in a simulated core, with its executors."""

    def __init__(self, example: str, executors: list[dict], start: float = DEFAULT_START) -> None:
        self.policy = load_example(example)
        self.coop = self.policy.coop_id
        self.sim = Simulation(clock=VirtualClock(start))
        self.core = self.sim.core
        self.core.set_policy(self.policy)
        for spec in executors:
            self.sim.add_executor({**spec, "coop_id": self.coop})

    def submit(self, task: dict, duration_s: float = 60.0):
        return self.sim.submit({**task, "coop_id": self.coop}, duration_s=duration_s)

    def ran_on(self) -> dict[str, str]:
        return {p.task_id: p.executor_id for p in self.sim.placements}

    def order(self) -> list[str]:
        return [p.task.member for p in self.sim.placements]


# ----------------------------------------------------------------------------- files
def test_exactly_the_nine_examples_ship():
    assert example_names() == sorted(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_and_round_trips(name):
    from_file = load_policy(EXAMPLES_DIR / f"{name}.json")
    assert load_example(name) == from_file
    assert from_file.description and len(from_file.description) > 40
    assert CoopPolicy.model_validate_json(from_file.model_dump_json()) == from_file
    members = set(from_file.member_quotas) | {r.member for r in from_file.rules if r.type == "MemberPriority"}
    assert all(m.startswith("did:icn:") for m in members)
    assert ":" in from_file.coop_id


def test_every_rule_type_and_enforcement_mode_is_shown():
    policies = [load_example(n) for n in EXAMPLES]
    assert {r.type for p in policies for r in p.rules} == {cls.__name__ for cls in BUILTIN_RULES}
    assert {p.enforcement_mode for p in policies} == set(EnforcementMode)


# ----------------------------------------------------------------------------- admission table
ONE_BIG = [make_executor("exec-main", cpus=64, hipaa_compliant="1.0")]  # fits every example
ADMISSION = [
    # id, example, task, admitted, code or effective priority, reason source
    ("tiered-regular-normal", "tiered-membership", make_task(BOB), True, 2.0, None),
    ("tiered-regular-high", "tiered-membership", make_task(BOB, priority="high"), False, "rejected",
     "quota:priority"),
    ("tiered-building-critical-x2", "tiered-membership",
     make_task("did:icn:riverside-building-automation", priority="critical"), True, 8.0, None),
    ("tiered-emergency-critical-x3", "tiered-membership",
     make_task("did:icn:riverside-emergency-services", priority="critical"), True, 12.0, None),
    ("tiered-guest-low", "tiered-membership", make_task(GUEST, priority="low"), True, 1.0, None),
    ("tiered-guest-normal", "tiered-membership", make_task(GUEST), False, "rejected", "quota:priority"),
    ("tiered-guest-over-10h", "tiered-membership", make_task(GUEST, priority="low", cpus=4, runtime_s=3 * 3600),
     False, "rejected", "quota:cpu"),
    ("housing-building-critical-x3", "housing-coop", make_task(BUILDING, priority="critical"), True, 12.0, None),
    ("housing-resident-critical", "housing-coop", make_task(ALICE, priority="critical"), False, "rejected",
     "quota:priority"),
    ("housing-resident-over-5h", "housing-coop", make_task(ALICE, cpus=2, runtime_s=3 * 3600), False,
     "rejected", "quota:cpu"),
    ("timebank-high", "timebank", make_task(ALICE, priority="high"), False, "rejected", "quota:priority"),
    ("timebank-alone-over-10h", "timebank", make_task(ALICE, runtime_s=11 * 3600), False, "rejected", "quota:cpu"),
    ("research-64-cpus", "research-coop", make_task(ALICE, cpus=64), False, "rejected", "per-task-limits"),
    ("research-3-days", "research-coop", make_task(ALICE, runtime_s=3 * 86400), False, "rejected",
     "per-task-limits"),
    ("research-critical", "research-coop", make_task(ALICE, priority="critical"), False, "rejected",
     "quota:priority"),
]


@pytest.mark.parametrize("example, task, admitted, want, source", [c[1:] for c in ADMISSION],
                         ids=[c[0] for c in ADMISSION])
def test_admission_decisions(example, task, admitted, want, source):
    fleet = Fleet(example, ONE_BIG)
    decision = fleet.submit(task)
    assert decision.admitted is admitted, decision.summary()
    if admitted:
        assert decision.effective_priority == want
        assert fleet.core.job(task["task_id"]).state is JobState.QUEUED
    else:
        assert decision.code.value == want
        assert [r.source for r in decision.reasons] == [source]
        assert fleet.core.job(task["task_id"]).state is JobState.REJECTED


# ----------------------------------------------------------------------------- enforcement modes
MODES = [
    # id, example, its mode, task, violated rule
    ("monitoring-priority", "basic-cooperative", "monitoring", make_task(priority="critical"), "quota:priority"),
    ("monitoring-task-size", "basic-cooperative", "monitoring", make_task(cpus=32), "fair-task-size"),
    ("monitoring-runtime", "basic-cooperative", "monitoring", make_task(runtime_s=2 * 86400), "fair-task-size"),
    ("permissive-priority", "permissive-development", "permissive", make_task(priority="critical"),
     "quota:priority"),
    ("permissive-task-size", "permissive-development", "permissive", make_task(cpus=32), "advisory-size"),
    ("permissive-runtime", "permissive-development", "permissive", make_task(runtime_s=8 * 3600),
     "advisory-size"),
]


@pytest.mark.parametrize("example, mode, task, rule", [c[1:] for c in MODES], ids=[c[0] for c in MODES])
def test_non_strict_modes_admit_violations(example, mode, task, rule):
    fleet = Fleet(example, [make_executor("exec-big", cpus=64)])
    assert fleet.policy.enforcement_mode.value == mode
    decision = fleet.submit(task)
    assert decision.admitted and decision.reasons == ()
    assert fleet.core.counters.violations[(fleet.coop, rule, mode)] == 1
    status = fleet.core.job(task["task_id"])
    if mode == "permissive":  # the member sees the violation; the history records it
        assert [w.source for w in decision.warnings] == [rule]
        assert status.warnings == decision.warnings
        assert status.history[0].message.startswith("admitted with warnings: ")  # the warnings, in the history
        assert status.warnings and status.warnings[0].message in status.history[0].message
    else:  # monitoring: only counted
        assert decision.warnings == () and status.warnings == ()
        assert status.history[0].message == "admitted"
    fleet.sim.run()
    assert fleet.core.job(task["task_id"]).state is JobState.SUCCEEDED
    assert fleet.ran_on() == {task["task_id"]: "exec-big"}


def test_basic_cooperative_sixth_task_waits_and_usage_is_cores_times_hours():
    fleet = Fleet("basic-cooperative", [make_executor("exec-eastside-1", cpus=16, price=2.0)])
    tasks = [make_task(cpus=2, runtime_s=3600) for _ in range(6)]
    for t in tasks:
        assert fleet.submit(t, duration_s=1800).admitted
    assert len(fleet.sim.step()) == 5
    assert "max_concurrent_tasks (5)" in fleet.core.job(tasks[5]["task_id"]).reason
    fleet.sim.run()
    usage = fleet.sim.usage(fleet.coop, ALICE)
    assert (usage.cpu_hours, usage.credits, usage.tasks_completed) == (pytest.approx(6.0), pytest.approx(12.0), 6)
    assert usage.reserved_cpu_hours == 0 and usage.running == 0


# ----------------------------------------------------------------------------- placement rules
GDPR_FLEET = [
    make_executor("exec-fra-1", trust=0.6, gdpr_compliant="1.0", encryption="1.0"),
    make_executor("exec-fra-2", trust=0.9, encryption="2.0"),                    # no GDPR certification
    make_executor("exec-fra-3", trust=1.0, gdpr_compliant="0.9", encryption="1.0"),  # certification too old
    make_executor("exec-sea-1", region="us-west", trust=0.95, gdpr_compliant="1.2", encryption="1.0"),
    make_executor("exec-sea-2", region="us-west", trust=1.0),                    # no encryption
]


@pytest.mark.parametrize("tags, allowed, first", [
    (("patient-data",), {"exec-fra-1"}, "exec-fra-1"),
    (("clinical-trial", "imaging"), {"exec-fra-1"}, "exec-fra-1"),
    ((), {"exec-fra-1", "exec-fra-2", "exec-fra-3", "exec-sea-1"}, "exec-fra-3"),
    (("imaging",), {"exec-fra-1", "exec-fra-2", "exec-fra-3", "exec-sea-1"}, "exec-fra-3"),
], ids=["patient-data", "clinical-trial", "untagged", "other-tag"])
def test_gdpr_tagged_data_stays_on_certified_eu_executors(tags, allowed, first):
    fleet = Fleet("gdpr-compliant", GDPR_FLEET)
    members = itertools.cycle((ALICE, BOB, "did:icn:carmen"))  # 3 x 5 concurrent: room on every executor
    tasks = [make_task(next(members), tags=tags, cpus=2) for _ in range(12)]
    for t in tasks:
        assert fleet.submit(t).admitted
    fleet.sim.run()
    ran_on = fleet.ran_on()
    assert ran_on[tasks[0]["task_id"]] == first
    assert set(ran_on.values()) == allowed  # 12 tasks of 2 CPUs fill every allowed executor
    assert all(fleet.core.job(t["task_id"]).state is JobState.SUCCEEDED for t in tasks)


def test_gdpr_strict_rejects_patient_data_without_a_certified_eu_executor():
    fleet = Fleet("gdpr-compliant", [e for e in GDPR_FLEET if e["executor_id"] != "exec-fra-1"])
    decision = fleet.submit(make_task(tags=("patient-data",)))
    assert not decision.admitted and decision.code is ReasonCode.UNAVAILABLE
    assert "gdpr-processor" in decision.reasons[0].message
    assert fleet.submit(make_task()).admitted  # untagged work is unaffected


EXEC_FILTER_FLEET = [
    make_executor("exec-vault-fra-1", cpus=2, secure_execution="2.0"),               # the only eligible one
    make_executor("exec-vault-fra-2", cpus=64, trust=1.0, secure_execution="1.9"),   # too old
    make_executor("exec-vault-ams-1", cpus=64, trust=1.0, secure_execution="3.1"),   # whitelisted, quarantined
    make_executor("exec-kiosk-07", cpus=64, trust=1.0, secure_execution="3.0"),      # blacklisted
    make_executor("exec-public-1", cpus=64, trust=1.0, secure_execution="3.0"),      # not whitelisted
]


def test_executor_filtering_never_uses_blacklisted_unlisted_or_old_executors():
    fleet = Fleet("executor-filtering", EXEC_FILTER_FLEET)
    tasks = [make_task(ALICE if i % 2 else BOB) for i in range(6)]
    for t in tasks:
        assert fleet.submit(t).admitted
    assert len(fleet.sim.step()) == 2  # exec-vault-fra-1 has 2 CPUs; the rest wait for it
    waiting = fleet.core.job(tasks[-1]["task_id"]).reason
    assert "quarantine" in waiting and "trusted-hosts" in waiting and "secure-enclave" in waiting
    fleet.sim.run()
    assert set(fleet.ran_on().values()) == {"exec-vault-fra-1"}
    assert all(p.runners_up == () for p in fleet.sim.placements)


def test_executor_filtering_rejects_when_no_allowed_executor_exists():
    fleet = Fleet("executor-filtering", EXEC_FILTER_FLEET[1:])
    decision = fleet.submit(make_task())
    assert not decision.admitted and decision.code is ReasonCode.UNAVAILABLE
    assert decision.reasons[0].source == "placement" and "quarantine" in decision.reasons[0].message


RESEARCH_FLEET = [
    make_executor("exec-biolab-eu", cpus=16, trust=0.5, price=12.0, hipaa_compliant="1.0"),
    make_executor("exec-biolab-old", cpus=16, trust=1.0, price=1.0, hipaa_compliant="0.9"),
    make_executor("exec-biolab-us", region="us-west", cpus=16, trust=0.9, price=1.0, hipaa_compliant="2.0"),
]


@pytest.mark.parametrize("tags, want", [(("patient-data",), "exec-biolab-eu"), ((), "exec-biolab-us")],
                         ids=["patient-data-eu-only", "untagged-best-hipaa"])
def test_research_coop_placement(tags, want):
    fleet = Fleet("research-coop", RESEARCH_FLEET)
    task = make_task(tags=tags)
    assert fleet.submit(task).admitted
    fleet.sim.run()
    assert fleet.ran_on() == {task["task_id"]: want}
    assert "exec-biolab-old" not in {o.executor_id for o in fleet.sim.placements[0].runners_up}


def test_research_coop_credits_bind_on_projected_cost_then_settle_on_measured():
    fleet = Fleet("research-coop", RESEARCH_FLEET)
    big = dict(cpus=8, runtime_s=6 * 3600, tags=("clinical-trial",))  # 48 CPU-h, 576 credits projected
    first, second = make_task(**big), make_task(**big)
    assert fleet.submit(first, duration_s=3600).admitted
    decision = fleet.submit(second)
    assert not decision.admitted and decision.code is ReasonCode.UNAVAILABLE
    assert [r.source for r in decision.reasons] == ["quota:credits"]  # CPU (96 <= 100 h) still fits
    fleet.sim.run()
    usage = fleet.sim.usage(fleet.coop, ALICE)
    assert (usage.cpu_hours, usage.credits) == (pytest.approx(8.0), pytest.approx(96.0))
    assert fleet.submit(make_task(**big)).admitted  # 96 + 576 <= 1000 now


def test_research_coop_members_share_the_labs_monthly_allocation():
    """Each member's 80 CPU-hours fit their own 100, but the fourth passes the lab's 300 for all of them."""
    fleet = Fleet("research-coop", RESEARCH_FLEET)
    long = dict(cpus=8, runtime_s=10 * 3600)  # 80 CPU-h projected each (credits within each member's 1000)
    members = (ALICE, BOB, "did:icn:carol", "did:icn:dave")
    decisions = [fleet.submit(make_task(member, **long)) for member in members]
    assert [d.admitted for d in decisions] == [True, True, True, False]
    assert [r.source for r in decisions[-1].reasons] == ["coop_quota:cpu"]
    assert "(all members of coop research:biolab together)" in decisions[-1].reasons[0].message
    assert fleet.core.coop_usage(fleet.coop).reserved_cpu_hours == pytest.approx(240.0)


# ----------------------------------------------------------------------------- time windows
WED_DAY, WED_NIGHT = utc("2026-11-18T10:00:00"), utc("2026-11-18T20:00:00")  # 11:00 / 21:00 Stockholm
SAT_DAY = utc("2026-11-21T12:00:00")
WINDOWS = [
    # id, start, member, priority, state after the first step, held until (UTC)
    ("low-weekday-day-deferred", WED_DAY, ALICE, "low", JobState.DEFERRED, "2026-11-18T19:00:00"),
    ("normal-weekday-day-deferred", WED_DAY, ALICE, "normal", JobState.DEFERRED, "2026-11-18T19:00:00"),
    ("low-weeknight-runs", WED_NIGHT, ALICE, "low", JobState.RUNNING, None),
    ("low-saturday-held-to-monday", SAT_DAY, ALICE, "low", JobState.DEFERRED, "2026-11-22T23:00:00"),
    ("high-saturday-runs", SAT_DAY, ALICE, "high", JobState.RUNNING, None),
    ("critical-weekday-runs", WED_DAY, PI, "critical", JobState.RUNNING, None),
    ("high-weekday-refused", WED_DAY, ALICE, "high", JobState.REJECTED, None),
]


@pytest.mark.parametrize("start, member, priority, state, held_until", [c[1:] for c in WINDOWS],
                         ids=[c[0] for c in WINDOWS])
def test_time_restricted_windows(start, member, priority, state, held_until):
    fleet = Fleet("time-restricted", [make_executor("exec-uppsala-1", region="eu-north")], start=start)
    task = make_task(member, priority=priority)
    decision = fleet.submit(task, duration_s=300)
    fleet.sim.step()
    job = fleet.core.job(task["task_id"])
    assert job.state is state
    if state is JobState.REJECTED:
        assert decision.code is ReasonCode.UNAVAILABLE and decision.reasons[0].source == "weekend-high"
        assert "resubmit at 2026-11-20 23:00 UTC" in decision.reasons[0].message  # Sat 00:00 Stockholm
        return
    assert decision.not_before == (utc(held_until) if held_until else None)
    fleet.sim.run()
    job = fleet.core.job(task["task_id"])
    assert job.state is JobState.SUCCEEDED
    assert job.started_at == (utc(held_until) if held_until else start)


def test_housing_maintenance_waits_for_the_night_but_building_automation_does_not():
    fleet = Fleet("housing-coop", ONE_BIG)  # DEFAULT_START: Wednesday 11:06 in London
    maintenance, heating = make_task(ALICE, priority="low"), make_task(BUILDING, priority="low")
    urgent = make_task(BUILDING, priority="critical")
    for t in (maintenance, heating, urgent):
        assert fleet.submit(t).admitted
    fleet.sim.step()
    states = [fleet.core.job(t["task_id"]).state for t in (maintenance, heating, urgent)]
    assert states == [JobState.DEFERRED, JobState.DEFERRED, JobState.RUNNING]
    fleet.sim.run()
    assert fleet.core.job(maintenance["task_id"]).started_at == utc("2026-11-18T22:00:00")


def test_housing_building_automation_runs_before_residents():
    fleet = Fleet("housing-coop", [make_executor("exec-boiler-room", cpus=1)])
    residents = [make_task(m) for m in (ALICE, BOB, ALICE, BOB)]
    building = [make_task(BUILDING) for _ in range(2)]
    for t in residents + building:  # the building's tasks arrive last
        assert fleet.submit(t).admitted
    assert fleet.core.job(building[0]["task_id"]).effective_priority == 6.0
    fleet.sim.run()
    assert fleet.order()[:2] == [BUILDING, BUILDING]
    assert sorted(fleet.order()[2:]) == [ALICE, ALICE, BOB, BOB]



NEIGHBOUR = "did:icn:neighbour-bo"  # a member of the timebank next door, which borrows the housing coop's machine


@pytest.mark.parametrize("member, priority, reclaimed", [(BUILDING, "critical", True), (ALICE, "normal", False)],
                         ids=["building-critical-takes-it-back", "resident-normal-waits"])
def test_housing_reclaims_its_machine_from_a_neighbours_lower_priority_task(member, priority, reclaimed):
    fleet = Fleet("housing-coop", [{**make_executor("exec-boiler-room", cpus=2), "open_to": ["*"]}])
    timebank = load_example("timebank")
    fleet.core.set_policy(timebank)
    batch = make_task(NEIGHBOUR, cpus=2, runtime_s=3600)
    assert fleet.sim.submit({**batch, "coop_id": timebank.coop_id}, duration_s=1800).admitted
    fleet.sim.run(until=DEFAULT_START + 600)  # the neighbour's batch job borrows the idle machine
    assert fleet.core.job(batch["task_id"]).state is JobState.RUNNING
    own = make_task(member, cpus=2, priority=priority)
    assert fleet.submit(own, duration_s=60).admitted
    fleet.sim.run()
    ran = [(p.task_id, p.attempt) for p in fleet.sim.placements]
    neighbour = fleet.sim.usage(timebank.coop_id, NEIGHBOUR)
    if reclaimed:  # stopped after 10 minutes, uncharged; run again once the building's task is done
        assert ran == [(batch["task_id"], 1), (own["task_id"], 1), (batch["task_id"], 2)]
        assert fleet.core.job(own["task_id"]).started_at == DEFAULT_START + 600
        assert any("reclaims it" in e.message for e in fleet.core.job(batch["task_id"]).history)
        assert neighbour.cpu_hours == pytest.approx(1.0)  # 2 cores x the last attempt's 30 minutes
    else:  # a resident's normal task does not stop a neighbour's normal one: it waits for its end
        assert ran == [(batch["task_id"], 1), (own["task_id"], 1)]
        assert fleet.core.job(own["task_id"]).started_at == DEFAULT_START + 1800
        assert neighbour.cpu_hours == pytest.approx(1.0)
    assert all(job.state is JobState.SUCCEEDED for job in (fleet.core.job(t["task_id"]) for t in (batch, own)))

def test_tiered_membership_multipliers_order_the_queue():
    fleet = Fleet("tiered-membership", [make_executor("exec-riverside-1", cpus=1)])
    arrivals = [(GUEST, "low"), (BOB, "normal"), ("did:icn:riverside-building-automation", "high"),
                ("did:icn:riverside-emergency-services", "high")]
    for member, priority in arrivals:
        assert fleet.submit(make_task(member, priority=priority)).admitted
    fleet.sim.run()
    assert fleet.order() == [m for m, _ in reversed(arrivals)]  # 9 > 6 > 2 > 1


EMERGENCY = "did:icn:riverside-emergency-services"


@pytest.mark.parametrize("member, priority, preempted", [(EMERGENCY, "critical", True), (BOB, "normal", False)],
                         ids=["emergency-critical-stops-a-regular-task", "regular-normal-waits"])
def test_tiered_membership_urgent_task_stops_a_lower_tier_task_when_every_machine_is_busy(member, priority,
                                                                                          preempted):
    fleet = Fleet("tiered-membership", [make_executor("exec-riverside-1", cpus=2)])
    regular = make_task(ALICE, cpus=2, runtime_s=3600)
    assert fleet.submit(regular, duration_s=1800).admitted
    fleet.sim.run(until=DEFAULT_START + 600)
    urgent = make_task(member, cpus=2, priority=priority)
    assert fleet.submit(urgent, duration_s=60).admitted
    fleet.sim.run()
    ran = [(p.task_id, p.attempt) for p in fleet.sim.placements]
    if preempted:  # 3 x critical = 12 > 2: the regular task stops after 10 minutes, uncharged, and runs again
        assert ran == [(regular["task_id"], 1), (urgent["task_id"], 1), (regular["task_id"], 2)]
        assert fleet.core.job(urgent["task_id"]).started_at == DEFAULT_START + 600
    else:  # normal (2) does not stop normal (2): it waits for the end
        assert ran == [(regular["task_id"], 1), (urgent["task_id"], 1)]
        assert fleet.core.job(urgent["task_id"]).started_at == DEFAULT_START + 1800
    assert fleet.sim.usage(fleet.coop, ALICE).cpu_hours == pytest.approx(1.0)  # 2 cores x one run of 30 minutes


# ----------------------------------------------------------------------------- timebank
def test_timebank_fourth_concurrent_task_waits():
    fleet = Fleet("timebank", [make_executor("exec-capitol-hill", cpus=8)])
    tasks = [make_task() for _ in range(4)]
    for t in tasks:
        assert fleet.submit(t, duration_s=300).admitted
    fleet.sim.step()
    assert [fleet.core.job(t["task_id"]).state for t in tasks] == [JobState.RUNNING] * 3 + [JobState.QUEUED]
    assert "max_concurrent_tasks (3)" in fleet.core.job(tasks[3]["task_id"]).reason
    assert fleet.sim.usage(fleet.coop, ALICE).running == 3
    fleet.sim.run()
    assert fleet.core.job(tasks[3]["task_id"]).started_at == DEFAULT_START + 300
    # the ledger keeps millionths of an hour, rounded per task
    assert fleet.sim.usage(fleet.coop, ALICE).cpu_hours == pytest.approx(4 * 300 / 3600, abs=1e-5)


def test_timebank_quota_counts_projected_use_then_resets_next_month():
    fleet = Fleet("timebank", [make_executor("exec-capitol-hill", cpus=8)])
    first = make_task(cpus=2, runtime_s=3 * 3600)  # 6 CPU-hours projected
    assert fleet.submit(first, duration_s=3600).admitted
    over = fleet.submit(make_task(cpus=2, runtime_s=3 * 3600))  # 6 + 6 > 10
    assert not over.admitted and over.code is ReasonCode.UNAVAILABLE
    assert over.reasons[0].source == "quota:cpu" and "2026-12-01" in over.reasons[0].message
    assert fleet.submit(make_task(BOB, cpus=2, runtime_s=3 * 3600)).admitted  # quotas are per member
    fleet.sim.run()
    assert fleet.sim.usage(fleet.coop, ALICE).cpu_hours == pytest.approx(2.0)  # measured replaced projected
    assert fleet.submit(make_task(cpus=2, runtime_s=3 * 3600)).admitted  # 2 + 6 <= 10
    assert not fleet.submit(make_task(cpus=2, runtime_s=5400)).admitted  # 2 used + 6 reserved + 3 > 10
    fleet.sim.clock.set(utc("2026-12-01T00:00:00"))
    usage = fleet.sim.usage(fleet.coop, ALICE)
    assert (usage.period, usage.cpu_hours, usage.reserved_cpu_hours) == ("2026-12", 0.0, 0.0)
    assert fleet.submit(make_task(cpus=2, runtime_s=3 * 3600)).admitted


def test_timebank_rate_limit_allows_a_burst_of_five_then_one_per_five_seconds():
    fleet = Fleet("timebank", [make_executor("exec-capitol-hill", cpus=8)])
    decisions = [fleet.submit(make_task(runtime_s=60)) for _ in range(6)]
    assert [d.admitted for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].code is ReasonCode.UNAVAILABLE and decisions[-1].reasons[0].source == "submission-rate"
    assert fleet.submit(make_task(BOB, runtime_s=60)).admitted  # buckets are per member
    fleet.sim.clock.advance(4.0)
    assert not fleet.submit(make_task(runtime_s=60)).admitted
    fleet.sim.clock.advance(1.0)
    assert fleet.submit(make_task(runtime_s=60)).admitted
