"""The placement benchmark's reference agrees with the core, and ``--quick`` produces its report. No Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import placement_latency as bench  # noqa: E402
from benchmarks.placement_workload import POLICY_COOPS  # noqa: E402
from benchmarks import reference  # noqa: E402
from policies.model import CoopPolicy, MemberQuota  # noqa: E402
from policies.rules import (DataSovereignty, ExecutorFilter, MemberPriority, RateLimit,  # noqa: E402
                            RequireCapability, TaskLimits, TimeWindow)


def tight_policies(mode: str) -> list[CoopPolicy]:
    """Every rule type, set so that some tasks are refused, deferred or held at a limit.

    The virtual clock starts on a Wednesday at 09:46 UTC: the ``nights`` window is closed
    (low-priority tasks are refused) and ``weekends`` holds high-priority tasks.
    """
    rules = (
        DataSovereignty(name="gdpr", region="eu-central", tags=("patient-data",)),
        DataSovereignty(name="us-only", region="us-west", tags=("eu-data",)),  # conflicts with gdpr on both tags
        TimeWindow(name="nights", allowed_hours=(0, 1, 2, 3), priorities=("low",), action="reject"),
        TimeWindow(name="weekends", allowed_days=(0, 6), priorities=("high",), action="defer"),
        MemberPriority(member="did:icn:alice", multiplier=3.0),
        RequireCapability(name="hipaa", capability="hipaa-compliant", min_version="1.2", tags=("patient-data",)),
        RequireCapability(name="secure", capability="secure-execution", min_version="2.0", tags=("secure",)),
        ExecutorFilter(name="blocklist", blacklist=tuple(f"exec-{i:06d}" for i in range(0, 200, 7))),
        RateLimit(name="rate", rate=0.5, burst=25, per="coop"),
        TaskLimits(name="limits", max_cpus=8, max_gpus=2),
    )
    quota = MemberQuota(cpu_hours_per_month=40.0, gpu_hours_per_month=12.0, credits_per_month=900,
                        max_concurrent_tasks=2, max_priority="normal")
    return [CoopPolicy(coop_id=c, rules=rules, default_quota=quota, enforcement_mode=mode)
            for c in POLICY_COOPS]


def test_reference_places_like_the_core_on_200_executors() -> None:
    agreement = bench.agreement_run(200, 100)
    assert agreement.mismatches == []
    assert agreement.compared == agreement.agreed == 100
    assert agreement.same_executor >= 90  # real choices, not only refusals or ties


@pytest.mark.parametrize("mode", ["strict", "permissive", "monitoring"])
def test_reference_decides_like_the_core_when_rules_bite(mode: str) -> None:
    agreement = bench.agreement_run(200, 120, policies=tight_policies(mode), load_tasks=30)
    assert agreement.mismatches == []
    assert agreement.compared == agreement.agreed == 120
    assert agreement.same_executor > 0
    assert agreement.both_unplaced > 0  # deferred, or the member at max_concurrent_tasks
    if mode == "strict":
        assert agreement.both_refused > 0
    else:
        assert agreement.both_refused == 0  # violations are warnings or counts, never refusals


def test_agreement_check_notices_a_different_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "RTT_SCALE_MS", 10.0)  # the core halves the RTT score at 50 ms
    agreement = bench.agreement_run(200, 60)
    assert agreement.mismatches


def test_quick_run_reports_every_figure_and_target(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results" / "placement.json"
    result = bench.main(["--quick", "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["targets"] == result["targets"]
    assert set(result) >= {"meta", "fleets", "policy_eval", "backlog", "targets", "table"}
    assert [f["executors"] for f in result["fleets"]] == [100, 1_000, 10_000]
    for fleet in result["fleets"]:
        assert {"core", "core_cpu_time", "core_submit", "core_schedule", "core_paired", "reference",
                "reference_admission", "reference_placement", "ratio_p50", "agreement", "steady_work"} <= set(fleet)
        assert fleet["steady_work"]["samples"] == fleet["core"]["samples"]  # the machine's spread, beside each
        assert fleet["core"]["samples"] > 0 and fleet["core"]["p99_us"] >= fleet["core"]["p50_us"] > 0
        assert fleet["agreement"]["agreed"] == fleet["agreement"]["compared"] > 0
    for ev in result["policy_eval"]:
        assert {"core", "core_static_fit_cached", "reference_rules_quota", "reference_with_fleet_scan"} <= set(ev)
        assert ev["agreement"]["agreed"] == ev["agreement"]["compared"] > 0
    backlog = result["backlog"]
    assert backlog["placed"] > 0 and backlog["core_decisions_per_s"] > 0
    assert backlog["agreement"]["agreed"] == backlog["agreement"]["compared"] > 0
    assert [t["target"] for t in result["targets"]] == [
        "decision p99 <= 100 us at 1,000 executors",
        "decision p99 <= 1 ms at 100,000 executors",
        ">= 30x the reference at 10,000 executors (p50 ratio)",
        "policy evaluation <= 20 us per submission (p50, worst fleet)",
    ]
    assert {t["status"] for t in result["targets"]} <= {"met", "missed", "n/a"}
    assert "fixed work's p99/p50 beside it" in result["targets"][0]["note"]
    for t in result["targets"]:  # every status follows from the figure printed beside it
        if t["value"] is not None:
            within = t["value"] >= t["limit"] if t["unit"] == "x" else t["value"] <= t["limit"]
            assert t["status"] == ("met" if within else "missed")
            assert f"[{t['status']:>6}] {t['target']}" in printed
    assert result["targets"][1]["status"] == "n/a"  # a quick run stops at 10,000 executors
    for heading in ("Admission + placement", "Policy evaluation", "Backlog", "Targets"):
        assert heading in printed
