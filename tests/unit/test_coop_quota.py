"""A coop's monthly budget over all its members (``CoopPolicy.coop_quota``, as Slurm's ``GrpTRESMins``): projected
as member quotas are, in every enforcement mode, beside each member's own quota. One table of cases; the store's
sums are in tests/integration/test_store_contract.py."""

from __future__ import annotations

import pytest

from policies.model import CoopPolicy
from policies.validation import InvalidRequest, parse
from scheduler.core import SchedulerCore
from scheduler.ledger import period_of
from scheduler.state_store import open_store
from scheduler.store_ledger import StoreLedger
from executors.simulated import VirtualClock
from tests.builders import START, make_core, make_executor, make_policy, make_task

COOP = "coop"
HOUR = 3600


def _policy(mode: str = "strict", **coop_quota) -> CoopPolicy:
    base = make_policy(COOP, mode=mode, cpu_hours_per_month=10.0).model_dump(mode="json")
    return CoopPolicy.model_validate({**base, "coop_quota": coop_quota or {"cpu_hours_per_month": 2.0},
                                      "quota_whitelist": ["did:icn:rescue"]})


def _submit(core, member: str, hours: float = 1.0, cpus: float = 1, coop: str = COOP):
    return core.submit(make_task(coop=coop, member=member, cpus=cpus, runtime=hours * HOUR))


# (mode, members who submit one 1-CPU-hour task each in turn, admitted?, the last decision's reason contains)
CASES = [
    ("strict", ["alice", "bob"], [True, True], None),
    ("strict", ["alice", "bob", "carol"], [True, True, False],
     "monthly CPU budget exceeded: 0 used + 2 reserved + 1 projected > 2 CPU-hours (all members of coop coop "
     "together); ask a coop admin to raise its coop_quota"),
    ("strict", ["alice", "alice", "alice"], [True, True, False], "monthly CPU budget exceeded"),  # (her own: 10)
    ("permissive", ["alice", "bob", "carol"], [True, True, True], "monthly CPU budget exceeded"),  # a warning
    ("monitoring", ["alice", "bob", "carol"], [True, True, True], None),  # admitted, only counted
    ("strict", ["alice", "bob", "did:icn:rescue"], [True, True, True], None),  # the whitelist is not held to it
]


@pytest.mark.parametrize(("mode", "members", "admitted", "says"), CASES,
                         ids=["within", "over", "one member fills it", "permissive", "monitoring", "whitelisted"])
def test_the_coop_budget_counts_every_member_together(mode, members, admitted, says):
    core, _ = make_core(_policy(mode), [make_executor("e1", cpus=8)])
    decisions = [_submit(core, m) for m in members]
    assert [d.admitted for d in decisions] == admitted
    last = decisions[-1]
    text = " ".join(r.message for r in (*last.reasons, *last.warnings))
    if says is None:
        assert not last.reasons and not last.warnings, text
    else:
        assert says in text, text
    if mode == "permissive":
        assert last.warnings and last.warnings[0].source == "coop_quota:cpu"
    if not all(admitted):
        assert last.reasons[0].source == "coop_quota:cpu" and last.reasons[0].code.value == "unavailable"


def test_a_task_larger_than_the_whole_budget_is_rejected_as_such():
    core, _ = make_core(_policy(), [make_executor("e1", cpus=8)])
    decision = _submit(core, "alice", hours=1.0, cpus=3)
    assert not decision.admitted and decision.reasons[0].code.value == "rejected"
    assert "this task alone projects 3 CPU-hours, more than the monthly CPU budget of 2 CPU-hours" in \
        decision.reasons[0].message


def test_what_a_settled_task_did_not_use_is_room_again_and_other_coops_are_not_counted():
    core, clock = make_core(_policy(), [make_executor("e1", cpus=8), make_executor("o1", coop="other")])
    core.set_policy(make_policy("other", cpu_hours_per_month=10.0))
    first = _submit(core, "alice").task_id
    assert _submit(core, "bob").admitted
    assert _submit(core, "ann", coop="other").admitted and _submit(core, "ann", coop="other").admitted
    assert not _submit(core, "carol").admitted
    [placed] = [p for p in core.schedule() if p.task_id == first]
    clock.advance(600)
    core.complete({"task_id": first, "executor_id": placed.executor_id, "coop_id": COOP, "member": "alice",
                   "started_at": clock() - 600, "ended_at": clock(), "cpu_seconds": 600, "attempt": 1,
                   "outcome": "succeeded"})  # 1/6 of an hour used of the hour reserved
    assert _submit(core, "carol", hours=0.5).admitted  # 1/6 + 1 + 1/2 <= 2
    assert not _submit(core, "dave", hours=0.5).admitted


def test_the_budget_is_counted_by_the_store_a_head_uses(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        core = SchedulerCore(clock=VirtualClock(START), ledger=StoreLedger(store))
        core.set_policy(_policy())
        core.register_executor(make_executor("e1", cpus=8))
        assert [_submit(core, m).admitted for m in ("alice", "bob", "carol")] == [True, True, False]
        used, held, _ = store.coop_standing(COOP, period_of(START))
        assert held.cpu == 2_000_000 and used.cpu == 0  # (millionths of a CPU-hour)
    finally:
        store.close()


def test_a_coop_over_its_budget_is_counted_in_the_metrics():
    from scheduler.metrics import SchedulerMetrics
    core, _ = make_core(_policy(), [make_executor("e1", cpus=8)])
    for member in ("alice", "bob", "carol"):
        _submit(core, member)
    text = SchedulerMetrics(core).exposition()
    assert 'coopsched_quota_exceeded_total{coop="coop",quota="coop_cpu"} 1.0' in text


@pytest.mark.parametrize(("value", "says"), [
    ({"cpu_hours_per_month": -1}, "coop_quota.cpu_hours_per_month: received -1"),
    ({"gpu_hours": 4}, "coop_quota.gpu_hours: received 4"),
    ({"credits_per_month": True}, "coop_quota.credits_per_month: received true"),
    (500, "coop_quota: received 500"),
])
def test_a_bad_coop_quota_is_refused_naming_the_field(value, says):
    with pytest.raises(InvalidRequest) as caught:
        parse(CoopPolicy, {"coop_id": COOP, "coop_quota": value}, what="policy")
    assert says in str(caught.value) and "example" in str(caught.value), str(caught.value)


def test_a_coops_usage_together_is_shown_against_its_budget():
    from scheduler.cli_commands import _coop_usage_rows
    core, _ = make_core(_policy(gpu_hours_per_month=4.0), [make_executor("e1", cpus=8)])
    _submit(core, "alice")
    _submit(core, "bob", hours=0.5)
    record = core.coop_usage(COOP)
    assert (record.reserved_cpu_hours, record.cpu_hours, record.quota.gpu_hours_per_month) == (1.5, 0.0, 4.0)
    rows = _coop_usage_rows(record.model_dump(mode="json")).splitlines()
    assert [r.split()[2:] for r in rows[2:]] == [["cpu-h", "0", "1.5", "none"], ["gpu-h", "0", "0", "4"],
                                                 ["credits", "0", "1.5", "none"]], rows  # (credits: 1 per CPU-h)
    assert make_core(make_policy("plain"))[0].coop_usage("plain").quota is None
