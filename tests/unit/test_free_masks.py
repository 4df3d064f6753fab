"""The executor table's free-resource masks (and its load mirror) stay equal to its columns.

Placement reads a kept mask per amount asked (``scheduler.free_masks``) instead of comparing
whole columns per task; these tests fail if any change of a row's free resources, or of the
table's rows, leaves a mask stale.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scheduler.free_masks as free_masks
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec, ExecutorStatus
from scheduler.executor_table import ExecutorTable
from scheduler.free_masks import EPS
from scheduler.placement import _static, fit_mask
from scheduler.tasks import Resources
from tests.builders import make_core, make_executor, make_policy, make_task

COLUMNS = ("free_cpus", "free_gpus", "free_mem", "free_gmem")
AMOUNTS = ((0.5, 1, 1.5, 2, 3, 4, 8), (1, 2, 4), (1024, 2048, 4096), (8192, 16384))  # per resource

cpus = st.sampled_from((0.5, 1, 2, 4, 8))
gpus = st.sampled_from((0, 1, 2, 4))
mem = st.sampled_from((0, 1024, 2048, 8192))
gmem = st.sampled_from((0, 8192, 16384))
ask = st.tuples(cpus, gpus, mem, gmem)
op = st.one_of(
    st.tuples(st.just("add"), ask),
    st.tuples(st.just("reserve"), st.integers(0, 40), ask),
    st.tuples(st.just("release"), st.integers(0, 40), ask),
    st.tuples(st.just("heartbeat"), st.integers(0, 40), st.integers(0, 5)),
    st.tuples(st.just("status"), st.integers(0, 40), st.sampled_from(list(ExecutorStatus))),
    st.tuples(st.just("remove"), st.integers(0, 40)),
    st.tuples(st.just("re-register"), st.integers(0, 40), ask),
    st.tuples(st.just("ask"), st.integers(0, 3), st.integers(0, 6)),
)


def executor(name: str, cpus: float, gpus: float, memory_mb: int, gpu_memory_mb: int) -> ExecutorSpec:
    return ExecutorSpec(executor_id=name, coop_id="coop", region="us-west",
                        resources=Resources(cpus=cpus, gpus=gpus, memory_mb=memory_mb, gpu_memory_mb=gpu_memory_mb))


def assert_fresh(table: ExecutorTable) -> None:
    """Every mask asked for so far equals ``free >= amount - EPS`` over the rows in use, and the rows'
    load as reserve and release read it (``row_load``) equals the columns."""
    n = table.n
    columns = [getattr(table, c)[:n] for c in COLUMNS + ("running", "reported_queue")]
    assert [list(values) for values in zip(*(c.tolist() for c in columns))] == table.row_load[:n]
    for resource, column in enumerate(COLUMNS):
        fresh = getattr(table, column)[:n]
        for amount in table.free_masks.kept(resource):
            got = table.free_masks.at_least(resource, amount)
            assert len(got) == n
            np.testing.assert_array_equal(got, fresh >= amount - EPS, err_msg=f"{column} >= {amount}")


def apply(table: ExecutorTable, step: tuple, held: dict[int, list[Resources]], names: list[str]) -> None:
    kind = step[0]
    live = [e for e in names if e in table]
    if kind == "add":
        c, g, m, gm = step[1]
        name = f"e{len(names)}"
        names.append(name)
        table.add(executor(name, c * 4, g * 2, m * 4, gm * 2))
        return
    if not live:
        return
    name = live[step[1] % len(live)]
    row = table.rows[name]
    if kind == "reserve":
        c, g, m, gm = step[2]
        r = Resources(cpus=c, gpus=g, memory_mb=m, gpu_memory_mb=gm)
        table.reserve(row, r)
        held.setdefault(row, []).append(r)
    elif kind == "release":
        if held.get(row):
            table.release(row, held[row].pop())
        else:  # a release with nothing held is clamped at the totals
            c, g, m, gm = step[2]
            table.release(row, Resources(cpus=c, gpus=g, memory_mb=m, gpu_memory_mb=gm))
    elif kind == "heartbeat":
        table.heartbeat(ExecutorOffer(executor_id=name, queue_depth=step[2]))
    elif kind == "status":
        table.set_status(name, step[2])
    elif kind == "remove":
        table.remove(name)
        held.pop(row, None)
    elif kind == "re-register":
        c, g, m, gm = step[2]
        table.update_spec(executor(name, c * 8, g * 2, m * 8, gm * 2))
        held.pop(row, None)  # its load moved with it; what was held stays reserved
    elif kind == "ask":
        resource, i = step[1], step[2]
        table.free_masks.at_least(resource, AMOUNTS[resource][i % len(AMOUNTS[resource])])


@pytest.mark.parametrize("max_amounts", [64, 2], ids=["roomy", "evicting"])
@settings(max_examples=150, deadline=None)
@given(steps=st.lists(op, min_size=1, max_size=60))
def test_masks_equal_the_columns_after_any_sequence_of_changes(max_amounts, steps):
    original = free_masks.MAX_AMOUNTS
    free_masks.MAX_AMOUNTS = max_amounts  # (hypothesis and pytest's monkeypatch fixture do not mix)
    try:
        table = ExecutorTable(capacity=16)  # grows past 16 rows
        for resource in range(4):  # some amounts asked before any executor joins
            table.free_masks.at_least(resource, AMOUNTS[resource][0])
        held: dict[int, list[Resources]] = {}
        names: list[str] = []
        for step in steps:
            apply(table, step, held, names)
            assert_fresh(table)
    finally:
        free_masks.MAX_AMOUNTS = original


def test_a_reservation_that_crosses_an_amount_flips_only_that_row():
    table = ExecutorTable()
    for name in ("a", "b"):
        table.add(make_executor(name, cpus=4))
    two = table.free_masks.at_least(0, 2)
    assert two.tolist() == [True, True]
    table.reserve(table.rows["a"], Resources(cpus=3))
    assert table.free_masks.at_least(0, 2).tolist() == [False, True]
    assert table.free_masks.at_least(0, 1).tolist() == [True, True]  # asked after: made from the columns
    table.release(table.rows["a"], Resources(cpus=3))
    assert table.free_masks.at_least(0, 2).tolist() == [True, True]


@settings(max_examples=40, deadline=None)
@given(tasks=st.lists(st.tuples(st.sampled_from((1, 2, 3, 4)), st.booleans()), min_size=1, max_size=30))
def test_fit_mask_equals_comparing_the_free_columns(tasks):
    """What placement filters on, through the core's submit, schedule, complete and drain."""
    fleet = [make_executor(f"e{i}", cpus=2 + i % 4, gpus=i % 3, memory_mb=4096 * (1 + i % 2)) for i in range(20)]
    core, clock = make_core(make_policy(max_concurrent_tasks=1000), fleet)
    table = core.table
    for i, (size, finish_one) in enumerate(tasks):
        task = make_task(cpus=size, gpus=int(size % 3 == 0), memory_mb=1024 * (size % 2))
        core.submit(task)
        core.schedule()
        req = core._jobs[task.task_id].requirements
        a, g, m, gm = req.amounts
        n = table.n
        want = (table.free_cpus[:n] >= a - EPS) & _static(table, req)
        for amount, column in ((g, table.free_gpus), (m, table.free_mem), (gm, table.free_gmem)):
            if amount > 0:
                want &= column[:n] >= amount - EPS
        np.testing.assert_array_equal(fit_mask(table, req), want)
        running = [t for t, j in core._jobs.items() if j.placement is not None and j.state.value == "running"]
        if finish_one and running:
            core.requeue(running[0], core._jobs[running[0]].placement.executor_id, "lost")
        if i % 7 == 3:
            core.drain(f"e{i % 20}")
        clock.advance(1.0)


def test_masks_follow_the_table_when_it_grows():
    table = ExecutorTable(capacity=16)
    for i in range(10):
        table.add(executor(f"e{i}", 4, 1, 4096, 0))
    for resource, amounts in enumerate(AMOUNTS):
        for amount in amounts:
            table.free_masks.at_least(resource, amount)
    for i in range(0, 10, 2):  # some rows lose what the masks ask about, before the columns are replaced
        table.reserve(table.rows[f"e{i}"], Resources(cpus=3, gpus=1, memory_mb=3072))
    for i in range(10, 40):  # twice past the capacity: the columns (and masks) are replaced twice
        table.add(executor(f"e{i}", 1 + i % 8, i % 3, 1024 * (i % 5), 8192 * (i % 2)))
        assert_fresh(table)
    for i in range(0, 40, 3):
        table.reserve(table.rows[f"e{i}"], Resources(cpus=1, memory_mb=1024))
    assert_fresh(table)
