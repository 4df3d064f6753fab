"""The store throughput benchmark, tiny, on the session's redis-server: every case runs and its totals add up.

It uses the shared ``redis_server`` fixture (no server of its own); the benchmark keeps its
Redis keys under a prefix of its own, removes them after each case, and puts the server's
``appendfsync`` back after the ``everysec`` cases.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import store_throughput as bench  # noqa: E402

pytestmark = pytest.mark.integration
REPORTS = 300
ROW_KEYS = {"backend", "mode", "batch", "appendfsync", "label", "reports_timed", "warmup_reports", "seconds",
            "reports_per_s", "ratio_vs_ledger", "totals"}


@pytest.fixture(scope="module")
def result(redis_server, tmp_path_factory):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    fsync_before = client.config_get("appendfsync")["appendfsync"]
    try:
        yield bench.run(REPORTS, redis_server.url, sqlite_dir=tmp_path_factory.mktemp("store-bench"))
    finally:
        assert client.config_get("appendfsync")["appendfsync"] == fsync_before
        client.close()


def test_every_case_is_measured(result):
    assert [r["label"] for r in result["rows"]] == [c.label for c in bench.cases()]
    assert result["rows"][0]["backend"] == "ledger" and result["rows"][0]["ratio_vs_ledger"] == 1
    for row in result["rows"]:
        assert ROW_KEYS <= set(row), row["label"]
        assert row["reports_timed"] == REPORTS and row["reports_per_s"] > 0 and row["ratio_vs_ledger"] > 0
    for row in (r for r in result["rows"] if r["backend"] == "redis"):
        assert row["redis_aof"] == {"appendonly": "yes", "appendfsync": row["appendfsync"]}


def test_nothing_is_lost_or_counted_twice(result):
    assert result["totals_ok"]
    for row in result["rows"]:
        totals = row["totals"]
        assert totals["ok"] and totals["mismatches"] == [], (row["label"], totals)
        assert totals["settles_accepted"] == totals["reports"] == REPORTS + row["warmup_reports"]
        assert totals["redelivered_refused"] == totals["redelivered"] > 0
        assert totals["keys_checked"] == len(bench.COOPS) * len(bench.MEMBERS)


def test_targets_and_table_are_reported(result):
    assert [(t["backend"], t["appendfsync"]) for t in result["targets"]] == [("sqlite", None), ("redis", "always")]
    for t in result["targets"]:
        assert t["rows"] and t["status"] in ("PASS", "MISS")
    table = bench.format_table(result)
    for row in result["rows"]:
        assert row["backend"] in table
    assert "PASS" in table


def test_the_benchmark_leaves_no_keys_behind(result, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert list(client.scan_iter(match="coopsched-bench:*")) == []
    finally:
        client.close()
