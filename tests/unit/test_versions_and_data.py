"""Capability versions compare as people read them, and data named twice counts once."""

from __future__ import annotations

import pytest

from policies.versions import version_key
from scheduler.data_locality import DataCatalog

ORDERED = [  # each below the next
    ("1.2", "1.10"), ("1.9.9", "2.0"), ("2.0-rc1", "2.0"), ("2.0rc1", "2.0"), ("2.0.dev3", "2.0"),
    ("2.0-rc1", "2.0.1"), ("2021.10", "2022.1"), ("999.0", "1000.0"),
]
SAME = [("v1.2", "1.2"), ("1.2.0", "1.2"), ("1.2.3+cuda12", "1.2.3")]


@pytest.mark.parametrize("lower, higher", ORDERED)
def test_versions_order_part_by_part_with_pre_releases_below_their_release(lower, higher):
    assert version_key(lower) < version_key(higher)


@pytest.mark.parametrize("a, b", SAME)
def test_versions_that_name_the_same_release_are_equal(a, b):
    assert version_key(a) == version_key(b)


def test_a_data_key_named_twice_counts_its_bytes_once():
    catalog = DataCatalog()
    catalog.register("a", "X", 100)
    catalog.register("b", "Y", 100)
    assert catalog.fractions(("a", "a", "b")) == {"X": pytest.approx(0.5), "Y": pytest.approx(0.5)}


@pytest.mark.parametrize("version", ["20250101", "200000", "1.2.3.5", "1.100000"],
                         ids=["date stamp", "part over 99999", "fourth part", "minor over 99999"])
def test_versions_the_numeric_key_cannot_order_are_refused_where_they_enter(version):
    """The placement columns order versions by one float; what it cannot hold exactly (it would make
    20240101 equal 20250101, so an older build satisfy a newer minimum) is refused, saying why."""
    from pydantic import ValidationError

    from policies.rules import RequireCapability
    from scheduler.executor_spec import ExecutorSpec
    with pytest.raises(ValidationError, match="up to three numeric parts"):
        RequireCapability(capability="firmware", min_version=version)
    # an executor's own version may be any of them (stores of earlier releases hold such): it saturates,
    # which orders it right against every minimum that can be given
    spec = ExecutorSpec(executor_id="e", coop_id="c", region="r", capabilities={"firmware": version},
                        resources={"cpus": 1})
    assert spec.capabilities["firmware"] == version


@pytest.mark.parametrize("executor, minimum, satisfied", [
    ("20240115", "2024.1", True), ("20240115", "99999", True), ("12.2.0.1", "12.2", True),
    ("12.2.0.1", "12.3", False), ("2.0-rc1", "2.0", False), ("2.0-rc1", "2.0-rc", True)])
def test_saturated_executor_versions_compare_right_against_any_valid_minimum(executor, minimum, satisfied):
    assert (version_key(executor) >= version_key(minimum)) is satisfied


def test_a_head_restarts_on_a_store_holding_an_executor_version_of_an_earlier_release(tmp_path):
    import asyncio

    from scheduler.head import Head
    from scheduler.state_store import open_store
    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    store.put_executor({"executor_id": "gpu1", "coop_id": "coop:t", "region": "us-west", "node_id": "gpu1",
                        "resources": {"cpus": 4, "gpus": 1}, "capabilities": {"cuda": "12.2.0.1"}}, "active")
    store.close()

    async def main():
        head = Head.__new__(Head)
        await Head.__init__(head, store_url=url)
        return head

    head = asyncio.run(main())
    assert "gpu1" in head.core.table


@pytest.mark.parametrize("older, newer", [("1.9", "1.10"), ("2021.10", "2022.1"), ("99999", "99999.0.1"),
                                          ("1.2-beta", "1.2")])
def test_versions_that_are_accepted_compare_part_by_part(older, newer):
    assert version_key(older) < version_key(newer)
