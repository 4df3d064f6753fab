"""The end-to-end benchmark, tiny, on the session's 4-raylet cluster: every mode and target is reported.

It uses the shared ``ray_cluster`` (no Ray of its own), its own namespace and a temporary
SQLite store, and stops its Coopsched actors when done.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import end_to_end as bench  # noqa: E402
from benchmarks.e2e_profile import COOP_SEGMENTS  # noqa: E402
from scheduler.client import shutdown  # noqa: E402

pytestmark = pytest.mark.integration
NS = "coopsched-bench-smoke"
MODES = {"ray", "ray-affinity", "floor", "floor-map", "coopsched", "coopsched-map"}
SEQUENTIAL = {"ray", "ray-affinity", "floor", "coopsched"}


@pytest.fixture(scope="module")
def result(ray_cluster):
    nodes = ray_cluster.nodes
    layout = bench.Layout(tuple(bench.ExecutorPlace(f"smoke-{n.index}", n.node_id, n.region) for n in nodes),
                          affinity_node=nodes[0].node_id, description="the integration test cluster")
    try:
        yield bench.run(bench.SMOKE, NS, layout, log=lambda _: None)
    finally:
        shutdown(NS)


def test_every_mode_reports_positive_latencies_and_throughput(result):
    assert set(result["variants"]) == set(bench.VARIANTS)
    for variant, modes in result["variants"].items():
        assert set(modes) == MODES, variant
        for mode, r in modes.items():
            assert r["throughput"]["jobs"] == bench.SMOKE.throughput_jobs
            assert r["throughput"]["jobs_per_s"] > 0
            if mode not in SEQUENTIAL:
                assert r["latency"] is None
                continue
            lat = r["latency"]
            assert lat["jobs"] == bench.SMOKE.latency_jobs
            for key in ("submit_to_start_ms", "submit_to_result_ms"):
                assert 0 < lat[key]["p50"] <= lat[key]["p99"], (variant, mode, key, lat[key])
            assert lat["submit_to_start_ms"]["p50"] < lat["submit_to_result_ms"]["p99"]


def test_targets_compare_coopsched_with_bare_ray(result):
    targets = {(t["variant"], t["target"]) for t in result["targets"]}
    assert len(targets) == 3 * len(bench.VARIANTS)
    for t in result["targets"]:
        assert t["value"] > 0 and t["status"] in ("PASS", "MISS")


def test_every_target_is_also_judged_for_the_floor(result):
    """The floor (the same path with none of Coopsched's work) ran its jobs to their right values (Floor
    checks each) and is judged against every target, so a report tells what is out of reach."""
    for t in result["targets"]:
        assert t["floor_value"] > 0 and t["floor_status"] in ("PASS", "MISS"), t
    floor = result["variants"]["trivial"]["floor"]["latency"]["submit_to_result_ms"]["p50"]
    assert floor > result["variants"]["trivial"]["ray"]["latency"]["submit_to_result_ms"]["p50"]


@pytest.mark.parametrize("variant", sorted(bench.VARIANTS))
def test_latency_breakdown_accounts_for_the_hops(result, variant):
    latency = result["breakdown"]["latency"][variant]
    coop = latency["coopsched"]
    assert coop["matched_jobs"] > 0, latency.get("error")
    assert [r["segment"] for r in coop["segments"]] == [name for name, _, _ in COOP_SEGMENTS]
    assert all(r["p50"] is not None for r in coop["segments"])
    assert coop["total_ms"]["p50"] > 0
    assert latency["ray"]["matched_jobs"] > 0


def test_throughput_runs_are_cpu_metered(result):
    activity = result["breakdown"]["throughput"]
    assert set(activity) == MODES
    cpu = result["variants"]["trivial"]["coopsched"]["throughput"]["cpu_first_run"]
    assert cpu is not None and cpu["cluster_cpu_s"] > 0
    assert "head actor" in cpu["by_role"] and "worker actors" in cpu["by_role"]


def test_report_names_every_mode_and_nothing_is_left_running(result):
    report = bench.format_report(result)
    for mode in MODES:
        assert mode in report
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NS]
    assert left == []
