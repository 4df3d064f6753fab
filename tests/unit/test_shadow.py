"""Shadow evaluation of a proposed policy over recent jobs."""

from __future__ import annotations

from scheduler.ledger import Cost
from scheduler.shadow import shadow_evaluate
from tests.builders import START, make_executor, make_policy, make_task

FLEET = [make_executor("us1", region="us-west", trust=0.9), make_executor("eu1", region="eu-central", trust=0.5)]


def test_shadow_reports_what_a_new_policy_would_change():
    active = make_policy()
    proposed = make_policy(rules=[{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central",
                                   "tags": ["patient-data"]},
                                  {"type": "TaskLimits", "name": "small", "max_cpus": 4}])
    tasks = [(START, make_task(task_id="plain")), (START + 1, make_task(task_id="pd", tags=["patient-data"])),
             (START + 2, make_task(task_id="big", cpus=8))]
    out = {o.task_id: o for o in shadow_evaluate(active, proposed, FLEET, tasks, {})}
    assert out["plain"].change == "unchanged" and out["plain"].after == "placed on us1"
    assert out["pd"].change == "placed elsewhere" and out["pd"].after == "placed on eu1"
    assert out["big"].change == "now refused" and out["big"].after.startswith("refused: small")


def test_shadow_starts_from_real_usage_this_month():
    active = make_policy(cpu_hours_per_month=100.0)
    proposed = make_policy(cpu_hours_per_month=10.0)
    tasks = [(START, make_task(task_id="t", cpus=1, runtime=3600))]
    out = shadow_evaluate(active, proposed, FLEET, tasks, {"alice": Cost.of(cpu_hours=9.5)})
    assert out[0].change == "now refused" and "quota:cpu" in out[0].after
