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


@pytest.fixture
def no_cluster(monkeypatch):
    """No Ray cluster runs: ``ray.init`` fails as it does when there is none to join (for checks that must
    answer before anything connects)."""
    import ray

    def init(*args, **kwargs):  # what ray.init(address="auto") raises when nothing runs
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
