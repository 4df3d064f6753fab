"""The head's Prometheus endpoint on real Ray: scraped over HTTP, parsed, counters moved by exactly the work done."""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest

from tests.waiting import settled, wait_state
from prometheus_client.parser import text_string_to_metric_families

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

from scheduler.client import Client, shutdown  # noqa: E402
from scheduler.job_handle import JobFailed, PolicyViolation  # noqa: E402

pytestmark = pytest.mark.integration
NS = "coopsched-metrics"
LAB, WATCH = "metrics:lab", "metrics:watch"


def double(x: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)  # long enough to be charged something (charges are kept in millionths of an hour)
    return 2 * x


def boom() -> None:
    raise ValueError("boom")


def scrape(address: str) -> dict[str, dict[frozenset, float]]:
    """Sample name -> {labels: value}, from http://127.0.0.1:PORT/metrics (the head binds every interface)."""
    port = address.rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def at(**labels: str) -> frozenset:
    return frozenset(labels.items())


def moved(before: dict, after: dict, name: str, labels: frozenset) -> float:
    return after.get(name, {}).get(labels, 0.0) - before.get(name, {}).get(labels, 0.0)


@pytest.fixture(scope="module")
def coop(ray_cluster):
    client = Client.local(namespace=NS, store="memory://", metrics_port=0)
    try:
        client.set_policy({"coop_id": LAB, "enforcement_mode": "strict",
                           "default_quota": {"cpu_hours_per_month": 0.5, "max_concurrent_tasks": 10}})
        client.set_policy({"coop_id": WATCH, "enforcement_mode": "monitoring",
                           "rules": [{"type": "TaskLimits", "name": "small-tasks", "max_cpus": 1}]})
        nodes = ray_cluster.nodes
        client.register_executor("m-lab", coop=LAB, node_id=nodes[1].node_id, resources={"cpus": 2},
                                 heartbeat_interval_s=0.5)
        client.register_executor("m-watch", coop=WATCH, node_id=nodes[2].node_id, resources={"cpus": 2},
                                 heartbeat_interval_s=0.5)
        address = ray.get(client.head.metrics_address.remote())
        yield client, address, {"m-lab": nodes[1].region, "m-watch": nodes[2].region}
    finally:
        shutdown(NS)


def test_scraped_counters_move_by_exactly_the_work_done(coop):
    client, address, region = coop
    before = scrape(address)

    ok = [client.submit(double, i, coop=LAB, member="alice", max_runtime_s=30) for i in range(3)]
    failing = client.submit(boom, coop=LAB, member="alice", max_runtime_s=30)
    with pytest.raises(PolicyViolation) as refused:  # 1 CPU-hour projected > the 0.5 quota
        client.submit(double, 0, coop=LAB, member="alice", max_runtime_s=3600)
    assert refused.value.decision.reasons[0].source == "quota:cpu"
    watched = client.submit(double, 5, 1.0, coop=WATCH, member="bob", resources={"cpus": 2}, max_runtime_s=30)
    assert watched.decision.admitted and not watched.warnings  # monitoring: only the metrics know

    wait_state(watched, "running")
    during = scrape(address)
    assert during["coopsched_executor_free_cpus"][at(executor="m-watch", coop=WATCH, region=region["m-watch"])] == 0

    assert [h.result(timeout=60) for h in ok] == [0, 2, 4] and watched.result(timeout=60) == 10
    with pytest.raises(JobFailed, match="boom"):
        failing.result(timeout=60)
    alice, bob = settled(client, LAB, "alice"), settled(client, WATCH, "bob")
    after = scrape(address)

    exact = [  # (sample, labels, how much it moved)
        ("coopsched_tasks_submitted_total", at(coop=LAB), 5), ("coopsched_tasks_submitted_total", at(coop=WATCH), 1),
        ("coopsched_tasks_admitted_total", at(coop=LAB), 4), ("coopsched_tasks_admitted_total", at(coop=WATCH), 1),
        ("coopsched_tasks_rejected_policy_total", at(coop=LAB), 1),
        ("coopsched_tasks_rejected_policy_total", at(coop=WATCH), 0),
        ("coopsched_policy_violations_total", at(coop=LAB, rule="quota:cpu", mode="strict"), 1),
        ("coopsched_policy_violations_total", at(coop=WATCH, rule="small-tasks", mode="monitoring"), 1),
        ("coopsched_quota_exceeded_total", at(coop=LAB, quota="cpu"), 1),
        ("coopsched_quota_exceeded_total", at(coop=WATCH, quota="cpu"), 0),
        ("coopsched_tasks_completed_total", at(coop=LAB, outcome="succeeded"), 3),
        ("coopsched_tasks_completed_total", at(coop=LAB, outcome="failed"), 1),
        ("coopsched_tasks_completed_total", at(coop=WATCH, outcome="succeeded"), 1),
        ("coopsched_tasks_failed_total", at(coop=LAB, outcome="failed"), 1),
        ("coopsched_tasks_failed_total", at(coop=LAB, outcome="timeout"), 0),
        ("coopsched_tasks_failed_total", at(coop=WATCH, outcome="failed"), 0),
        ("coopsched_member_tasks_completed_total", at(coop=LAB, member="alice"), 4),
        ("coopsched_member_tasks_completed_total", at(coop=WATCH, member="bob"), 1),
        ("coopsched_policy_evaluation_seconds_count", at(), 6),  # every admission, the refused one too
        ("coopsched_placement_seconds_count", at(), 5),
    ]
    for name, labels, want in exact:
        assert moved(before, after, name, labels) == want, (name, dict(labels))

    charged = {LAB: sum(h.status().charged_credits for h in ok + [failing]), WATCH: watched.status().charged_credits}
    assert charged[LAB] > 0
    for coop_id, member in ((LAB, "alice"), (WATCH, "bob")):
        spent = moved(before, after, "coopsched_member_credits_spent_total", at(coop=coop_id, member=member))
        assert spent == pytest.approx(charged[coop_id], abs=1e-5)
    assert moved(before, after, "coopsched_policy_evaluation_seconds_sum", at()) > 0

    # gauges: this month's usage from the ledger, an empty queue, both executors active and free again
    assert after["coopsched_member_cpu_hours"][at(coop=LAB, member="alice")] == pytest.approx(alice.cpu_hours)
    assert after["coopsched_member_cpu_hours"][at(coop=WATCH, member="bob")] == pytest.approx(bob.cpu_hours)
    assert bob.cpu_hours * 3600 >= 2.0  # 2 CPUs for at least a second
    assert after["coopsched_queue_depth"][at(coop=LAB)] == 0 and after["coopsched_queue_depth"][at(coop=WATCH)] == 0
    for executor_id, coop_id in (("m-lab", LAB), ("m-watch", WATCH)):
        where = dict(coop=coop_id, region=region[executor_id])
        assert after["coopsched_executors"][at(status="active", **where)] == 1
        assert after["coopsched_executor_free_cpus"][at(executor=executor_id, **where)] == 2
        assert after["coopsched_executor_cpus"][at(executor=executor_id, **where)] == 2
