"""The load benchmark, tiny, on the session's test cluster: quotas hold, admitted jobs run once, refusals are clean.

It uses the shared ``ray_cluster`` (no Ray of its own), its own namespace and a temporary
SQLite store, and stops its Coopsched actors and its prober when done. The latency figures
are reported but not asserted: on a shared 2-core machine they say more about the neighbours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import load as bench  # noqa: E402
from benchmarks.load_checks import replay_quota  # noqa: E402
from scheduler.client import shutdown  # noqa: E402

pytestmark = pytest.mark.integration
NS = "coopsched-load-smoke"


@pytest.fixture(scope="module")
def result(ray_cluster):
    executors = tuple(bench.ExecutorPlace(f"load-smoke-{n.index}", n.node_id, n.region) for n in ray_cluster.nodes)
    try:
        yield bench.run(bench.SMOKE, NS, executors, log=lambda _: None)
    finally:
        shutdown(NS)


def test_about_half_admitted_the_rest_refused(result):
    counts, plan = result["counts"], bench.SMOKE
    assert counts["submitted"] == plan.members * plan.jobs
    assert counts["errors"] == 0
    assert counts["admitted"] == plan.members * plan.fitting  # held jobs: exactly what the quota fits
    assert counts["refused"] == counts["submitted"] - counts["admitted"]


@pytest.mark.parametrize("number", ["1", "2", "3"])
def test_check_passes(result, number):
    check = next(c for c in result["checks"] if c["name"].startswith(number))
    assert check["status"] == "PASS", "\n".join(check["details"])


def test_latency_is_measured_idle_and_under_load(result):
    for row in result["latency"]:
        assert row["idle"]["n"] > 0 and row["idle"]["p50"] > 0, row
        assert row["submitting"]["n"] + row["draining"]["n"] > 0, row
        for phase in bench.PHASES:
            assert row[phase]["status"] in ("PASS", "MISS", "NO DATA")


def test_report_prints_the_figures_and_nothing_is_left_running(result):
    report = bench.format_report(result)
    for words in ("members", "jobs submitted", "admitted", "refused", "wall time", "jobs/s", "ping", "usage",
                  "status", "[PASS] 1", "[PASS] 2", "[PASS] 3"):
        assert words in report
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NS]
    assert left == []


def test_replay_catches_an_overshoot_and_a_needless_refusal():
    """The quota replay itself, on made-up records: 3 admissions against a quota that fits 2."""

    class State:
        def __init__(self, value):
            self.value = value

    class Record:
        def __init__(self, task_id, state, submitted_at, finished_at=None, charged=0.0):
            self.task_id, self.state, self.submitted_at = task_id, State(state), submitted_at
            self.finished_at, self.charged_cpu_hours = finished_at, charged

    cost, quota = 100_000, 200_000
    over = replay_quota([Record("a", "succeeded", 1.0, 9.0), Record("b", "succeeded", 2.0, 9.5),
                               Record("c", "succeeded", 3.0, 9.9)], cost, quota)
    assert [o["task_id"] for o in over["overshoots"]] == ["c"]
    freed = replay_quota([Record("a", "succeeded", 1.0, 1.5, charged=0.0),
                                Record("b", "succeeded", 2.0, 9.0), Record("c", "rejected", 3.0)], cost, quota)
    assert [n["task_id"] for n in freed["needless_refusals"]] == ["c"]  # a's settlement had freed room
    assert freed["settled_before_last_admission"] == 1 and not freed["overshoots"]
