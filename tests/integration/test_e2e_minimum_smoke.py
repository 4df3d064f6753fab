"""``benchmarks/e2e_minimum.py``, tiny, on the session's cluster: it measures both modes and stops its actors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import e2e_minimum  # noqa: E402

from tests.waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.integration


def _alive() -> set[str]:
    """The cluster's live actors, from the GCS (the test cluster runs no dashboard for the state API)."""
    return {actor_id for actor_id, info in ray._private.state.actors().items()  # noqa: SLF001
            if info.get("State") == "ALIVE"}


def test_the_minimum_path_reports_latency_and_throughput_beside_bare_ray_and_leaves_no_actor(ray_cluster):
    before = _alive()
    result = e2e_minimum.measure(jobs=12, repeats=1, blocks=1, warm=2, node_id=ray_cluster.nodes[0].node_id)
    assert set(result["latency_p50_ms"]) == {"bare", "minimum"} and all(v > 0 for v in result["latency_p50_ms"].values())
    assert result["latency_ratio"] > 0
    assert set(result["throughput_share"]) == {"minimum, one submit each", "minimum, submit_many"}
    assert all(v > 0 for v in result["jobs_per_s"].values())
    assert wait_for(lambda: _alive() <= before, limit_s=30, what="its actors to stop")
