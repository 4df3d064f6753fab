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
    with pytest.raises(ValidationError):
        ExecutorSpec(executor_id="e", coop_id="c", region="r", capabilities={"firmware": version},
                     resources={"cpus": 1})


def test_a_numbered_pre_release_is_refused_as_a_minimum_since_its_number_is_not_compared():
    from pydantic import ValidationError

    from policies.rules import RequireCapability
    assert version_key("2.0-rc1") == version_key("2.0-rc2") < version_key("2.0")
    with pytest.raises(ValidationError, match="pre-release without a number"):
        RequireCapability(capability="cuda", min_version="2.0-rc2")
    assert RequireCapability(capability="cuda", min_version="2.0-rc").min_version == "2.0-rc"


@pytest.mark.parametrize("older, newer", [("1.9", "1.10"), ("2021.10", "2022.1"), ("99999", "99999.0.1"),
                                          ("1.2-beta", "1.2")])
def test_versions_that_are_accepted_compare_part_by_part(older, newer):
    assert version_key(older) < version_key(newer)
