"""Unit tests need no Ray: one that connects to (or starts) a Ray cluster by accident, e.g. through
``ray.get_actor`` reached by a head method, fails here, before it can slow the suite or break the
integration tests' own cluster in the same session. (In a full run the integration tests' cluster
may already be up when the unit tests run: only a cluster that a unit test brought up counts.)"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _no_ray_started():
    ray = sys.modules.get("ray")
    was = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if not was and ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("this unit test started or joined a Ray cluster; unit tests run without Ray "
                    "(stand in for actors, as tests/head_in_process.py does)")
