"""The promised public names, and nothing else, in each package's ``__all__``."""

from __future__ import annotations

import importlib

import pytest

PROMISED = {
    "scheduler": ["Decision", "ExecutorOffer", "ExecutorSpec", "ExecutorStatus", "Hints", "JobState", "JobStatus",
                  "Outcome", "Placement", "Priority", "QueuePosition", "Reason", "ReasonCode", "Resources", "SchedulerCore", "TaskSpec",
                  "UsageRecord", "UsageReport"],
    "policies": ["CoopPolicy", "CoopQuota", "DataSovereignty", "EnforcementMode", "ExecutorFilter", "ExpressionRule",
                 "InvalidRequest", "MemberPriority", "MemberQuota", "PluginRule", "Priority", "RateLimit", "RequireCapability", "ResourceAmounts", "ScoringWeights",
                 "TaskLimits", "TimeWindow", "load_example", "load_policy"],
    "executors": ["FakeGpu", "FakeNvml", "GpuInfo", "NodeInventory", "SimulatedRun", "Simulation", "VirtualClock",
                  "discover_node"],
}


@pytest.mark.parametrize("package", sorted(PROMISED))
def test_exports_are_the_intended_ones(package):
    module = importlib.import_module(package)
    assert module.__all__ == PROMISED[package]
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_decision_core_imports_neither_ray_nor_a_store_client():
    import subprocess
    import sys
    code = ("import sys; import scheduler.core, scheduler.placement, scheduler.queue, scheduler.ledger, "
            "scheduler.admission, scheduler.scheduling_round, scheduler.dearest, scheduler.held_capacity, "
            "scheduler.damaged_records, scheduler.shadow, scheduler.admin, scheduler.identity, "
            "scheduler.authorization, scheduler.store_rate_buckets, scheduler.policy_sync, scheduler.fair_borrowing, "
            "scheduler.making_room, scheduler.sharing_limits, scheduler.ahead_tuning, policies, executors.simulated; "
            "bad = [m for m in ('ray', 'redis', 'sqlite3') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_policy_json_schema_exports():
    from policies.model import CoopPolicy
    schema = CoopPolicy.model_json_schema()
    assert "enforcement_mode" in schema["properties"]
    assert {"DataSovereignty", "TimeWindow", "MemberPriority", "RequireCapability", "ExecutorFilter",
            "RateLimit", "TaskLimits"} <= set(schema["$defs"])


def test_policy_reference_doc_is_current():
    """docs/policy-reference.md is generated from the models: regenerate with `python -m policies.reference`."""
    from pathlib import Path

    from policies.reference import render
    doc = Path(__file__).resolve().parents[2] / "docs" / "policy-reference.md"
    assert doc.read_text() == render(), "run: python -m policies.reference > docs/policy-reference.md"
