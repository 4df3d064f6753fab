"""The executor table's static masks (who may ever run a task) and their summaries equal a plain
per-executor check, for any fleet and any constraints.

Placement builds these masks once per constraint signature with numpy (region codes or-ed
together, one fancy-index write for executors shared with a coop, one gather per summary
column); these tests fail if such a shortcut ever disagrees with reading each executor's spec.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.versions import version_key
from scheduler.executor_spec import ExecutorSpec, ExecutorStatus
from scheduler.executor_table import ExecutorTable
from policies.rules import Constraint
from scheduler.placement import Requirements, _static, _summary, compile_requirements
from scheduler.tasks import Resources

REGIONS = tuple(f"region-{i}" for i in range(12))  # more than in_regions' or-ed codes (8): both paths
COOPS = ("coop-a", "coop-b", "coop-c")

executor = st.fixed_dictionaries({
    "coop": st.sampled_from(COOPS),
    "region": st.sampled_from(REGIONS),
    "open_to": st.lists(st.sampled_from(COOPS + ("*",)), max_size=2, unique=True),
    "cuda": st.sampled_from((None, "11.8", "12.0", "12.4")),
    "cpus": st.sampled_from((1, 2, 8, 32)),
    "gpus": st.sampled_from((0, 1, 8)),
    "price": st.sampled_from((0.5, 1.0, 3.0)),
    "status": st.sampled_from((ExecutorStatus.ACTIVE, ExecutorStatus.ACTIVE, ExecutorStatus.DRAINING)),
})
constraint = st.fixed_dictionaries({
    "coop": st.sampled_from(COOPS),
    "regions": st.none() | st.frozensets(st.sampled_from(REGIONS + ("nowhere",)), min_size=1, max_size=11),
    "cuda": st.sampled_from((None, "12.0")),
    "allow": st.none() | st.frozensets(st.integers(0, 30).map(lambda i: f"e{i}"), max_size=6),
    "deny": st.frozensets(st.integers(0, 30).map(lambda i: f"e{i}"), max_size=4),
})


def fleet(executors: list[dict]) -> tuple[ExecutorTable, list[ExecutorSpec]]:
    table, specs = ExecutorTable(), []
    for i, e in enumerate(executors):
        spec = ExecutorSpec(executor_id=f"e{i}", coop_id=e["coop"], region=e["region"], open_to=tuple(e["open_to"]),
                            capabilities={"cuda": e["cuda"]} if e["cuda"] else {}, price_cpu_hour=e["price"],
                            resources=Resources(cpus=e["cpus"], gpus=e["gpus"]))
        table.add(spec)
        if e["status"] is not ExecutorStatus.ACTIVE:
            table.set_status(spec.executor_id, e["status"])
        specs.append(spec)
    return table, specs


def requirements(c: dict) -> Requirements:
    constraints = [Constraint(source="rule", regions=c["regions"], allow=c["allow"], deny=c["deny"])]
    req = compile_requirements(c["coop"], Resources(cpus=1), constraints, {"cuda": c["cuda"]} if c["cuda"] else {})
    assert isinstance(req, Requirements)
    return req


def may_run(spec: ExecutorSpec, status: ExecutorStatus, c: dict, any_status: bool = False) -> bool:
    """The plain reading of one executor against the constraints (what the masks must equal); with
    ``any_status``, whether it could ever run there (drained and offline executors count)."""
    cuda = spec.capabilities.get("cuda")
    return ((any_status or status is ExecutorStatus.ACTIVE)
            and (spec.coop_id == c["coop"] or "*" in spec.open_to or c["coop"] in spec.open_to)
            and (c["regions"] is None or spec.region in c["regions"])
            and (c["cuda"] is None or (cuda is not None and version_key(cuda) >= version_key(c["cuda"])))
            and (c["allow"] is None or spec.executor_id in c["allow"])
            and spec.executor_id not in c["deny"])


@settings(max_examples=150, deadline=None)
@given(st.lists(executor, min_size=1, max_size=30), st.lists(constraint, min_size=1, max_size=4))
def test_static_mask_and_summary_equal_a_plain_check_of_each_executor(executors, constraints):
    table, specs = fleet(executors)
    statuses = [table.status_of(s.executor_id) for s in specs]
    for c in constraints:
        req = requirements(c)
        expected = [may_run(s, st_, c) for s, st_ in zip(specs, statuses)]
        np.testing.assert_array_equal(_static(table, req), expected, err_msg=str(c))
        # admission's summary judges whether the task could ever run: over every registered executor
        allowed = [s for s, st_ in zip(specs, statuses) if may_run(s, st_, c, any_status=True)]
        summary = _summary(table, req)
        if not allowed:
            assert summary == (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            continue
        assert summary == (len(allowed), max(s.resources.cpus for s in allowed), max(s.resources.gpus for s in allowed),
                           0.0, 0.0, max(s.price_cpu_hour for s in allowed), max(s.price_gpu_hour for s in allowed))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(REGIONS), max_size=20),
       st.lists(st.sampled_from(REGIONS + ("nowhere",)), max_size=13, unique=True))
def test_in_regions_equals_isin_for_few_and_many_regions(extra, asked):
    rows = list(REGIONS) + extra  # every region present: asking for 9 or more takes the np.isin path
    table, _ = fleet([{"coop": "coop-a", "region": r, "open_to": [], "cuda": None, "cpus": 1, "gpus": 0,
                       "price": 1.0, "status": ExecutorStatus.ACTIVE} for r in rows])
    np.testing.assert_array_equal(table.in_regions(asked), [r in asked for r in rows])
    np.testing.assert_array_equal(table.region_indicator(tuple(sorted(set(asked)))),
                                  [1.0 if r in asked else 0.0 for r in rows])
