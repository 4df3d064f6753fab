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
