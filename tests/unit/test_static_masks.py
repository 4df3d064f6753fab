"""The executor table's static masks (who may ever run a task) and admission's static fit (can one
executor hold the request, and what does the dearest such one charge) equal a plain per-executor
check, for any fleet, constraints and request.

Placement builds these masks once per constraint signature with numpy (region codes or-ed
together, one fancy-index write for executors shared with a coop) and groups the allowed
executors by shape (``scheduler.dearest``); these tests fail if such a shortcut ever disagrees
with reading each executor's spec.
"""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.versions import version_key
import scheduler.dearest as dearest_module
from scheduler.executor_spec import ExecutorSpec, ExecutorStatus
from scheduler.executor_table import ExecutorTable
from policies.rules import Constraint
from scheduler.placement import Requirements, _static, compile_requirements, static_fit
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
    "gpu_price": st.sampled_from((2.0, 10.0, 40.0)),
    "memory_mb": st.sampled_from((0, 4096, 65536)),
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
                            price_gpu_hour=e.get("gpu_price", 10.0),
                            resources=Resources(cpus=e["cpus"], gpus=e["gpus"], memory_mb=e.get("memory_mb", 0)))
        table.add(spec)
        if e["status"] is not ExecutorStatus.ACTIVE:
            table.set_status(spec.executor_id, e["status"])
        specs.append(spec)
    return table, specs


def requirements(c: dict, resources: Resources | None = None) -> Requirements:
    constraints = [Constraint(source="rule", regions=c["regions"], allow=c["allow"], deny=c["deny"])]
    req = compile_requirements(c["coop"], resources or Resources(cpus=1), constraints,
                               {"cuda": c["cuda"]} if c["cuda"] else {})
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


request = st.builds(Resources, cpus=st.sampled_from((0.5, 1, 2, 8, 16, 32, 33)), gpus=st.sampled_from((0, 0, 1, 4, 8, 9)),
                    memory_mb=st.sampled_from((0, 1024, 4096, 65536, 65537)))


@settings(max_examples=150, deadline=None)
@given(st.lists(executor, min_size=1, max_size=30), st.lists(constraint, min_size=1, max_size=4),
       st.lists(request, min_size=1, max_size=4))
def test_static_mask_and_static_fit_equal_a_plain_check_of_each_executor(executors, constraints, requests):
    table, specs = fleet(executors)
    statuses = [table.status_of(s.executor_id) for s in specs]
    for c in constraints:
        req = requirements(c)
        expected = [may_run(s, st_, c) for s, st_ in zip(specs, statuses)]
        np.testing.assert_array_equal(_static(table, req), expected, err_msg=str(c))
        # admission judges whether the task could ever run (over every registered executor, any status)
        # and prices it at the dearest executor that could: one that holds the whole request by itself
        allowed = [s for s, st_ in zip(specs, statuses) if may_run(s, st_, c, any_status=True)]
        for r in requests:
            holders = [s for s in allowed if s.resources.cpus >= r.cpus and s.resources.gpus >= r.gpus
                       and s.resources.memory_mb >= r.memory_mb]
            for direct in (dearest_module.DIRECT, 0):  # the allowed rows priced at once, and the price-order walk
                with walked(direct):
                    table.fit_memo.clear()
                    table._static_masks.clear()
                    fit = static_fit(table, requirements(c, r))
                assert fit.possible == bool(holders), (c, r, direct)
                assert fit.max_cost_per_hour == (max(r.cpus * s.price_cpu_hour + r.gpus * s.price_gpu_hour
                                                     for s in holders) if holders else 0.0), (c, r, direct)
                assert fit.count == len(allowed)


@contextlib.contextmanager
def walked(direct: int):
    """``scheduler.dearest`` pricing directly up to ``direct`` allowed executors, walking in chunks of 2 past it."""
    saved = dearest_module.DIRECT, dearest_module.FIRST_CHUNK
    dearest_module.DIRECT, dearest_module.FIRST_CHUNK = direct, 2
    try:
        yield
    finally:
        dearest_module.DIRECT, dearest_module.FIRST_CHUNK = saved


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
