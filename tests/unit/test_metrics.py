"""Prometheus metrics read from a pure SchedulerCore driven by simulated executors (no Ray)."""

from __future__ import annotations

import sys
import threading
import urllib.request

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from executors.simulated import SimulatedRun
from policies.validation import InvalidRequest
from scheduler.core import SchedulerCore
from scheduler.metrics import SchedulerMetrics
from scheduler.usage import Outcome, UsageReport
from tests.builders import make_executor, make_policy, make_sim, make_task

STRICT, WATCH = "lab:strict", "lab:watch"


def samples(text: str) -> dict[str, dict[frozenset, float]]:
    """Sample name -> {its labels (see ``at``): value}."""
    out: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def at(**labels: str) -> frozenset:
    return frozenset(labels.items())


@pytest.fixture()
def sim():
    sim = make_sim(make_policy(STRICT, cpu_hours_per_month=1.0, max_concurrent_tasks=1), [
        make_executor("s1", coop=STRICT, region="us-west", cpus=4, price_cpu_hour=2.0),
        make_executor("s2", coop=STRICT, region="us-west", cpus=4),
        make_executor("w1", coop=WATCH, region="eu-central", cpus=8, gpus=1, trust=0.9),
        make_executor("w2", coop=WATCH, region="eu-central", cpus=8, trust=0.1)])
    sim.core.set_policy(make_policy(WATCH, mode="monitoring",
                                    rules=[{"type": "TaskLimits", "name": "small-tasks", "max_cpus": 2}]))
    sim.core.drain("s2")
    return sim


def run_known_sequence(sim, metrics: SchedulerMetrics) -> dict:
    """Three admits for alice (one fails), a strict quota rejection, a monitoring-mode violation; then a task
    lost with its executor. Returns the scrape taken after the first scheduling round."""
    for duration, outcome in ((60, Outcome.SUCCEEDED), (120, Outcome.FAILED), (30, Outcome.SUCCEEDED)):
        assert sim.submit(make_task(STRICT, "alice", runtime=600), duration_s=duration, outcome=outcome).admitted
    refused = sim.submit(make_task(STRICT, "alice", runtime=7200))  # 2 CPU-h projected > 1.0
    assert not refused.admitted and refused.reasons[0].source == "quota:cpu"
    watched = sim.submit(make_task(WATCH, "bob", cpus=4), duration_s=100)  # over small-tasks, admitted
    assert watched.admitted and not watched.warnings
    sim.step()
    running = samples(metrics.exposition())
    sim.run()
    lost = sim.submit(make_task(WATCH, "carol", max_retries=0), SimulatedRun(duration_s=50))
    sim.step()
    assert sim.core.job(lost.task_id).executor_id == "w1"
    sim.kill_executor("w1")
    return running


def test_counters_and_gauges_after_a_known_sequence(sim):
    metrics = SchedulerMetrics(sim.core)
    running = run_known_sequence(sim, metrics)
    got = samples(metrics.exposition())

    table = [  # (sample, labels, want)
        ("coopsched_tasks_submitted_total", at(coop=STRICT), 4), ("coopsched_tasks_submitted_total", at(coop=WATCH), 2),
        ("coopsched_tasks_admitted_total", at(coop=STRICT), 3), ("coopsched_tasks_admitted_total", at(coop=WATCH), 2),
        ("coopsched_tasks_rejected_policy_total", at(coop=STRICT), 1),
        ("coopsched_tasks_rejected_policy_total", at(coop=WATCH), 0),
        ("coopsched_tasks_completed_total", at(coop=STRICT, outcome="succeeded"), 2),
        ("coopsched_tasks_completed_total", at(coop=STRICT, outcome="failed"), 1),
        ("coopsched_tasks_completed_total", at(coop=STRICT, outcome="timeout"), 0),
        ("coopsched_tasks_completed_total", at(coop=WATCH, outcome="succeeded"), 1),
        ("coopsched_tasks_failed_total", at(coop=STRICT, outcome="failed"), 1),
        ("coopsched_tasks_failed_total", at(coop=STRICT, outcome="lost"), 0),
        ("coopsched_tasks_failed_total", at(coop=WATCH, outcome="lost"), 1),
        ("coopsched_tasks_failed_total", at(coop=WATCH, outcome="failed"), 0),
        ("coopsched_tasks_retried_total", at(coop=WATCH), 0),
        ("coopsched_tasks_preempted_total", at(coop=WATCH, cause="reclaim"), 0),
        ("coopsched_tasks_preempted_total", at(coop=WATCH, cause="priority"), 0),
        ("coopsched_decisions_withdrawn_total", at(coop=STRICT), 0),
        ("coopsched_member_tasks_completed_total", at(coop=STRICT, member="alice"), 3),
        ("coopsched_member_tasks_completed_total", at(coop=WATCH, member="bob"), 1),
        ("coopsched_member_credits_spent_total", at(coop=STRICT, member="alice"), 2.0 * 210 / 3600),  # 2/CPU-h
        ("coopsched_member_credits_spent_total", at(coop=WATCH, member="bob"), 1.0 * 400 / 3600),
        ("coopsched_member_cpu_hours", at(coop=STRICT, member="alice"), 210 / 3600),  # the failed run counts too
        ("coopsched_member_cpu_hours", at(coop=WATCH, member="bob"), 400 / 3600),
        ("coopsched_queue_depth", at(coop=STRICT), 0), ("coopsched_queue_depth", at(coop=WATCH), 0),
        ("coopsched_executors", at(coop=STRICT, region="us-west", status="active"), 1),
        ("coopsched_executors", at(coop=STRICT, region="us-west", status="draining"), 1),
        ("coopsched_executors", at(coop=STRICT, region="us-west", status="offline"), 0),
        ("coopsched_executors", at(coop=WATCH, region="eu-central", status="active"), 1),  # w1 went with its task
        ("coopsched_executor_free_cpus", at(executor="s1", coop=STRICT, region="us-west"), 4),
        ("coopsched_executor_free_cpus", at(executor="w2", coop=WATCH, region="eu-central"), 8),
        ("coopsched_executor_cpus", at(executor="w2", coop=WATCH, region="eu-central"), 8),
        ("coopsched_executor_free_gpus", at(executor="w2", coop=WATCH, region="eu-central"), 0),
    ]
    for name, labels, want in table:
        assert got[name][labels] == pytest.approx(want, abs=1e-6), (name, dict(labels))

    # every violation, strict or only monitored, by coop, rule (the Reason's source) and mode
    # (and a 0 for each of a policy's rules, quotas and relaxations not seen yet, so increase() sees the first)
    seen = {k: v for k, v in got["coopsched_policy_violations_total"].items() if v}
    assert seen == {at(coop=STRICT, rule="quota:cpu", mode="strict"): 1.0,
                    at(coop=WATCH, rule="small-tasks", mode="monitoring"): 1.0}
    assert got["coopsched_policy_violations_total"][at(coop=WATCH, rule="quota:cpu", mode="monitoring")] == 0.0
    assert got["coopsched_policy_violations_total"][at(coop=STRICT, rule="placement", mode="strict")] == 0.0
    assert {k: v for k, v in got["coopsched_quota_exceeded_total"].items() if v} == {at(coop=STRICT, quota="cpu"): 1.0}
    assert got["coopsched_quota_exceeded_total"][at(coop=WATCH, quota="confirm")] == 0.0
    assert set(got["coopsched_member_cpu_hours"]) == {at(coop=STRICT, member="alice"), at(coop=WATCH, member="bob")}
    assert at(executor="w1", coop=WATCH, region="eu-central") not in got["coopsched_executor_free_cpus"]

    # while the first round runs: alice's other two wait (max_concurrent_tasks 1), resources are held
    assert running["coopsched_queue_depth"] == {at(coop=STRICT): 2.0, at(coop=WATCH): 0.0}
    assert running["coopsched_executor_free_cpus"][at(executor="s1", coop=STRICT, region="us-west")] == 3.0
    assert running["coopsched_executor_free_cpus"][at(executor="w1", coop=WATCH, region="eu-central")] == 4.0
    assert running["coopsched_executor_free_gpus"][at(executor="w1", coop=WATCH, region="eu-central")] == 1.0
    assert running.get("coopsched_member_cpu_hours", {}) == {}


def test_counter_families_are_counters_and_gauges_are_gauges(sim):
    metrics = SchedulerMetrics(sim.core)
    run_known_sequence(sim, metrics)
    types = {f.name: f.type for f in text_string_to_metric_families(metrics.exposition())}
    for name, kind in types.items():
        assert name.startswith("coopsched_")
        if kind == "counter":
            assert not name.endswith("_total")  # the parser strips it; the samples carry it
    assert types["coopsched_tasks_submitted"] == "counter"
    assert types["coopsched_policy_violations"] == "counter"
    assert types["coopsched_member_credits_spent"] == "counter"
    for gauge in ("coopsched_queue_depth", "coopsched_executors", "coopsched_executor_free_cpus",
                  "coopsched_executor_free_gpus", "coopsched_member_cpu_hours"):
        assert types[gauge] == "gauge"
    for histogram in ("coopsched_policy_evaluation_seconds", "coopsched_placement_seconds"):
        assert types[histogram] == "histogram"


def test_histograms_observe_admission_and_each_placement(sim):
    metrics = SchedulerMetrics(sim.core)
    for _ in range(2):
        with metrics.policy_evaluation.time():
            sim.submit(make_task(WATCH, "bob"), duration_s=10)
    metrics.placed(len(sim.step()), 0.004)  # one round placed both: 2 ms each
    metrics.placed(0, 1.0)  # a round that placed nothing is not a placement
    got = samples(metrics.exposition())
    assert got["coopsched_policy_evaluation_seconds_count"][at()] == 2
    assert 0 < got["coopsched_policy_evaluation_seconds_sum"][at()] < 1
    assert got["coopsched_placement_seconds_count"][at()] == 2
    assert got["coopsched_placement_seconds_sum"][at()] == pytest.approx(0.004)
    assert got["coopsched_placement_seconds_bucket"][at(le="0.0025")] == 2
    assert got["coopsched_placement_seconds_bucket"][at(le="0.001")] == 0


def test_each_core_has_its_own_registry_and_server(sim):
    other = make_sim(make_policy("other"), [make_executor("o1", coop="other")])
    a, b = SchedulerMetrics(sim.core), SchedulerMetrics(other.core)
    sim.submit(make_task(WATCH, "bob"))
    try:
        addresses = [m.serve(0, "127.0.0.1") for m in (a, b)]
        assert addresses[0] != addresses[1] and all(x.startswith("127.0.0.1:") for x in addresses)
        scraped = [samples(urllib.request.urlopen(f"http://{x}/metrics", timeout=10).read().decode())
                   for x in addresses]
        assert scraped[0]["coopsched_tasks_submitted_total"][at(coop=WATCH)] == 1
        assert scraped[1]["coopsched_tasks_submitted_total"] == {at(coop="other"): 0}
        with pytest.raises(OSError, match=r"cannot serve Prometheus metrics on 127.0.0.1:\d+: .*0 for any free one"):
            SchedulerMetrics(other.core).serve(int(addresses[0].rsplit(":", 1)[1]), "127.0.0.1")
    finally:
        a.close()
        b.close()
    names = {s.name for family in prometheus_client.REGISTRY.collect() for s in family.samples}
    assert not any(n.startswith("coopsched_") for n in names)  # never the process-global registry


@pytest.mark.parametrize("port", [-1, 65536, "9464", 9464.0])
def test_a_bad_port_says_what_is_accepted(sim, port):
    with pytest.raises(InvalidRequest, match=r"metrics_port: received .*accepted: a TCP port 1-65535, or 0"):
        SchedulerMetrics(sim.core).serve(port)


def test_a_scrape_reads_again_when_the_queue_changes_under_it(sim, monkeypatch):
    metrics = SchedulerMetrics(sim.core)
    sim.submit(make_task(STRICT, "alice"))
    real, calls = sim.core.queue.depth_by_coop, []

    def racing():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return real()

    monkeypatch.setattr(sim.core.queue, "depth_by_coop", racing)
    assert samples(metrics.exposition())["coopsched_queue_depth"][at(coop=STRICT)] == 1
    assert len(calls) == 2


def test_scrapes_from_another_thread_while_the_core_churns(sim):
    """The HTTP server's thread collects while the head's loop changes the queue, table and counters."""
    metrics, errors, scrapes, stop = SchedulerMetrics(sim.core), [], [], threading.Event()

    def scrape_until_stopped():
        while not stop.is_set():
            try:
                scrapes.append(samples(metrics.exposition()))
            except Exception as exc:  # noqa: BLE001  # what the test looks for
                errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    scraper = threading.Thread(target=scrape_until_stopped)
    scraper.start()
    try:
        for i in range(300):
            sim.submit(make_task(WATCH, f"m{i % 7}", cpus=1), duration_s=5)
            if i % 20 == 0:
                sim.add_executor(make_executor(f"x{i}", coop=WATCH, region="ap-south", cpus=2))
            if i % 20 == 10:
                sim.kill_executor(f"x{i - 10}")
            sim.run(until=sim.clock() + 1)
    finally:
        stop.set()
        scraper.join()
        sys.setswitchinterval(old)
    assert errors == [] and len(scrapes) > 1
    final = samples(metrics.exposition())
    assert final["coopsched_tasks_submitted_total"][at(coop=WATCH)] == 300


def test_a_removed_executor_is_never_reported_with_the_values_of_the_one_that_took_its_row():
    """The scrape checked a row was still executor X, then read its columns: if X was removed and Y took the
    row in between (the head's loop runs meanwhile), X was reported with Y's CPUs."""
    core = SchedulerCore()
    core.set_policy(make_policy())
    core.register_executor(make_executor("big", cpus=64, region="us-west"))
    table, real_status_of, switched = core.table, core.table.status_of, []

    def status_of(executor_id):  # the scrape is pre-empted right after this read
        status = real_status_of(executor_id)
        if not switched:
            switched.append(executor_id)
            core.remove_executor("big")
            core.register_executor(make_executor("small", cpus=4, region="ap-south"))  # takes big's row
        return status
    table.status_of = status_of
    text = SchedulerMetrics(core).exposition()
    cpus = {s.labels["executor"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "coopsched_executor_cpus" for s in f.samples}
    assert cpus.get("big", 64.0) == 64.0, cpus


def test_a_scrape_answers_when_the_store_cannot_be_read(tmp_path):
    """member_cpu_hours reads the ledger's store: when it could not be read, the whole scrape failed (HTTP
    500), store_resyncs_total included. Now only that family is left out."""
    from scheduler.sqlite_store import SqliteStore
    from scheduler.store_ledger import StoreLedger

    class FlakyStore:
        def __init__(self, store):
            self.store, self.down = store, False

        def __getattr__(self, name):
            attr = getattr(self.store, name)
            if not callable(attr):
                return attr

            def call(*a, **k):
                if self.down:
                    raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
                return attr(*a, **k)
            return call

    store = FlakyStore(SqliteStore(f"sqlite:///{tmp_path}/s.db"))
    core = SchedulerCore(ledger=StoreLedger(store))
    core.set_policy(make_policy())
    core.register_executor(make_executor("e1"))
    core.submit(make_task(member="alice"))
    (p,) = core.schedule()
    core.complete(UsageReport(task_id=p.task.task_id, executor_id="e1", coop_id="coop", member="alice",
                              started_at=1.0, ended_at=2.0, cpu_seconds=1.0))
    metrics = SchedulerMetrics(core)
    port = metrics.serve(0, addr="127.0.0.1").rsplit(":", 1)[1]
    try:
        store.down = True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            body = answer.read().decode()
        assert answer.status == 200 and "coopsched_executor_cpus" in body and "coopsched_store_resyncs" in body
        assert "coopsched_member_cpu_hours{" not in body
    finally:
        metrics.close()
