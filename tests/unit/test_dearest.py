"""Admission prices a task's credits at the dearest executor that could run it: one its rules allow whose
resources hold the whole request (issue 2: "credits at the highest price among feasible executors").

Before, the projection took the highest CPU price and the highest GPU price among every executor the
rules allowed, also from different executors and from ones too small for the task (an upper bound),
so a credit-limited member was refused tasks that fit; and "could ever run" took each resource from
any executor, so a task no single executor could hold was admitted and refused only later."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import scheduler.dearest as dearest_module
from scheduler.dearest import Allowed, Dearest, dearest
from scheduler.executor_spec import ExecutorSpec
from scheduler.executor_table import ExecutorTable
from scheduler.tasks import Resources
from tests.builders import make_core, make_executor, make_policy, make_task


def test_a_dear_executor_too_small_for_the_task_does_not_price_it():
    core, _ = make_core(make_policy(credits_per_month=10.0),
                        [make_executor("small-dear", cpus=1, price_cpu_hour=50.0),
                         make_executor("big-cheap", cpus=8, price_cpu_hour=1.0)])
    d = core.submit(make_task(cpus=4, runtime=3600))  # 4 CPU-hours at 1 credit: 4 credits (at 50: 200)
    assert d.admitted, d.reasons
    assert core.ledger.reservation(d.task_id).cost.credit_amount == 4.0


def test_cpu_and_gpu_prices_come_from_the_same_executor():
    core, _ = make_core(make_policy(credits_per_month=100.0),
                        [make_executor("cpu-dear", cpus=8, gpus=1, price_cpu_hour=10.0, price_gpu_hour=1.0),
                         make_executor("gpu-dear", cpus=8, gpus=1, price_cpu_hour=1.0, price_gpu_hour=20.0)])
    d = core.submit(make_task(cpus=2, gpus=1, runtime=3600))  # cpu-dear 21, gpu-dear 22 (the old bound: 40)
    assert d.admitted, d.reasons
    assert core.ledger.reservation(d.task_id).cost.credit_amount == 22.0


def test_a_task_no_single_executor_can_hold_is_refused_at_admission():
    core, _ = make_core(make_policy(), [make_executor("cpus", cpus=16), make_executor("gpus", cpus=1, gpus=4)])
    d = core.submit(make_task(cpus=8, gpus=2))
    assert not d.admitted
    assert d.reasons[0].source == "placement" and "can ever run" in d.reasons[0].message
    assert core.ledger.reservation(d.task_id) is None


def test_a_price_change_reprices_the_next_admission():
    core, _ = make_core(make_policy(), [make_executor("e", cpus=4, price_cpu_hour=1.0)])
    first = core.submit(make_task(cpus=1, runtime=3600))
    core.register_executor(make_executor("e", cpus=4, price_cpu_hour=3.0))
    second = core.submit(make_task(cpus=1, runtime=3600))
    assert [core.ledger.reservation(d.task_id).cost.credit_amount for d in (first, second)] == [1.0, 3.0]


def _table(rows: list[tuple[float, float, float, float]]) -> ExecutorTable:
    """(cpus, gpus, CPU price, GPU price) per executor."""
    table = ExecutorTable()
    for i, (cpus, gpus, pc, pg) in enumerate(rows):
        table.add(make_executor(f"e{i}", cpus=cpus, gpus=gpus, price_cpu_hour=pc, price_gpu_hour=pg))
    return table


@pytest.fixture
def walk(monkeypatch):
    """Price by walking the price order, two rows at a time, however few executors are allowed."""
    monkeypatch.setattr(dearest_module, "DIRECT", 0)
    monkeypatch.setattr(dearest_module, "FIRST_CHUNK", 2)


def test_the_gpu_walk_goes_on_while_a_cheaper_gpu_could_still_cost_more(walk):
    # by GPU price: e0, e1 first; e4 (GPU price 10, CPU price 3) costs most for 32 CPUs + 1 GPU
    table = _table([(32, 1, 0.5, 40.0), (32, 1, 0.5, 39.0), (32, 1, 0.5, 12.0), (32, 1, 0.5, 11.0),
                    (32, 1, 3.0, 10.0), (32, 1, 0.5, 1.0)])
    allowed = Allowed.of(table, np.ones(table.n, dtype=bool))
    assert dearest(table, allowed, (32.0, 1.0, 0, 0)).price_per_hour == 32 * 3.0 + 10.0
    assert dearest(table, allowed, (1.0, 1.0, 0, 0)).price_per_hour == 0.5 + 40.0


def test_the_cpu_walk_skips_dear_rows_that_are_not_allowed_or_too_small(walk):
    table = _table([(2, 0, 9.0, 0.0), (64, 0, 8.0, 0.0), (64, 0, 7.0, 0.0), (64, 0, 1.0, 0.0), (1, 0, 0.5, 0.0)])
    mask = np.array([True, False, True, True, True])
    allowed = Allowed.of(table, mask)
    assert dearest(table, allowed, (4.0, 0.0, 0, 0)).price_per_hour == 4 * 7.0
    assert dearest(table, allowed, (1.0, 0.0, 0, 0)).price_per_hour == 9.0
    assert not dearest(table, allowed, (65.0, 0.0, 0, 0)).possible


@pytest.mark.parametrize("how", ["priced directly", "walked"])
def test_new_amounts_held_by_the_same_executors_cost_no_pass_over_them(monkeypatch, how):
    if how == "walked":
        monkeypatch.setattr(dearest_module, "DIRECT", 0)
    table = _table([(2, 0, 9.0, 0.0), (8, 0, 4.0, 0.0), (16, 2, 3.0, 20.0), (64, 4, 1.0, 15.0)])
    allowed = Allowed.of(table, np.ones(table.n, dtype=bool))
    looks = []
    for name in ("_walk", "_candidates"):
        real = getattr(dearest_module, name)
        monkeypatch.setattr(dearest_module, name, lambda *a, real=real, name=name: looks.append(name) or real(*a))
    # 3, 5 and 7.5 CPUs: held by the 8-, 16- and 64-CPU executors alike (the dearest per CPU: 4.0)
    assert [dearest(table, allowed, (c, 0.0, 0, 0)).price_per_hour for c in (3.0, 5.0, 7.5)] == [12.0, 20.0, 30.0]
    assert len(looks) == 1  # one look (a numpy pass, or a walk of the price order) for them all
    assert dearest(table, allowed, (9.0, 0.0, 0, 0)).price_per_hour == 9 * 3.0
    assert dearest(table, allowed, (3.0, 1.0, 0, 0)).price_per_hour == 3 * 3.0 + 20.0
    assert dearest(table, allowed, (6.0, 2.0, 0, 0)).price_per_hour == 6 * 3.0 + 2 * 20.0  # also 3 CPUs per GPU
    # other holders: a look of their own; with GPUs, priced directly: one per CPUs-per-GPU ratio (3 CPUs per GPU
    # above, twice), walked: one per CPUs and GPUs
    assert looks == (["_candidates"] * 3 if how == "priced directly" else ["_walk"] * 4)
    fresh = Allowed.of(table, np.ones(table.n, dtype=bool))  # each answer as a first look would give it
    for amounts in [(c, 0.0, 0, 0) for c in (3.0, 5.0, 7.5, 9.0)] + [(3.0, 1.0, 0, 0), (6.0, 2.0, 0, 0)]:
        fresh.answers.clear()
        fresh.candidates.clear()
        assert dearest(table, fresh, amounts) == dearest(table, allowed, amounts)
    assert not dearest(table, allowed, (65.0, 0.0, 0, 0)).possible


def _full_table(rows: list[tuple[float, float, float, float, float, float]]) -> ExecutorTable:
    """(cpus, gpus, memory GiB, GPU memory GiB, CPU price, GPU price) per executor."""
    table = ExecutorTable()
    for i, (cpus, gpus, mem, gmem, pc, pg) in enumerate(rows):
        table.add(ExecutorSpec(executor_id=f"e{i}", coop_id="coop", region="us-west", price_cpu_hour=pc,
                               price_gpu_hour=pg, resources=Resources(cpus=cpus, gpus=gpus, memory_mb=int(mem * 1024),
                                                                      gpu_memory_mb=int(gmem * 1024))))
    return table


prices = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 12.5, 20.0]),
                   st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_subnormal=False))
full_rows = st.lists(st.tuples(st.sampled_from([1.0, 2.0, 8.0, 16.0, 64.0]), st.sampled_from([0.0, 1.0, 2.0, 8.0]),
                               st.sampled_from([1.0, 4.0, 64.0]), st.sampled_from([0.0, 8.0, 80.0]), prices, prices),
                     min_size=1, max_size=16)
full_amounts = st.tuples(st.sampled_from([0.5, 1.0, 3.0, 4.0, 16.0, 65.0]), st.sampled_from([0.0, 0.0, 1.0, 2.0, 3.0, 9.0]),
                         st.sampled_from([0, 0, 1024, 4096, 65536, 70000]), st.sampled_from([0, 0, 8192, 81920, 90000]))


@settings(max_examples=300, deadline=None)
@given(rows=full_rows, asked=st.lists(full_amounts, min_size=1, max_size=6))
def test_a_direct_pricing_gives_numpys_answer(rows, asked):
    """Pricing few allowed executors by the candidates kept per class of requests and CPUs-per-GPU ratio gives
    exactly the answer of comparing them all in numpy (the same float), however many requests came before."""
    table = _full_table(rows)
    allowed = Allowed.of(table, np.ones(table.n, dtype=bool))
    assert allowed.columns is not None  # (few allowed: priced directly)
    for amounts in asked:
        want = _priced(allowed.columns, amounts)
        assert dearest(table, allowed, amounts) == want, amounts


def _priced(columns: tuple[np.ndarray, ...], amounts: tuple) -> Dearest:
    """The plain answer: every allowed executor that holds ``amounts`` priced, the highest taken (numpy)."""
    cpus_col, gpus_col, mem_col, gmem_col, price_cpu, price_gpu = columns
    ok = dearest_module._holds(cpus_col, gpus_col, mem_col, gmem_col, amounts)
    if not ok.any():
        return dearest_module.IMPOSSIBLE
    cpus, gpus = amounts[0], amounts[1]
    return Dearest(True, float((cpus * price_cpu[ok] + gpus * price_gpu[ok]).max()))
