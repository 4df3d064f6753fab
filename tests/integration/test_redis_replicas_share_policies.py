"""Two head actors on one real Redis: a policy set or removed through one decides the other's admissions within
``POLICY_REFRESH_S`` of its watchdog (scheduler.policy_sync). The interleavings, on SQLite without Ray:
tests/unit/test_head_replicas_share_policies.py."""

from __future__ import annotations

import time

import pytest
import ray
import redis

from scheduler.head import WATCH_INTERVAL_S, start_head
from scheduler.policy_sync import POLICY_REFRESH_S
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

COOP = "shared:policies"


def test_a_policy_set_or_removed_through_one_head_actor_applies_on_the_other(ray_cluster, redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    namespace = "coopsched-policy-replicas"
    heads = [start_head(namespace=namespace, name=f"policy-replica-{i}", store_url=redis_server.url)
             for i in range(2)]
    task = {"coop_id": COOP, "member": "ana", "resources": {"cpus": 2}, "max_runtime_s": 60}
    try:
        first = ray.get(heads[1].submit.remote({**task, "task_id": "before"}))  # (its first call: its watchdog starts)
        assert first["admitted"] is False and "no scheduling policy" in first["reasons"][0]["message"]
        ray.get(heads[0].set_policy.remote({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10},
                                            "rules": [{"type": "TaskLimits", "max_cpus": 1}]}))
        set_at = time.monotonic()
        wait_for(lambda: ray.get(heads[1].get_policy.remote(COOP)), limit_s=30, what="the other head to take it")
        took = time.monotonic() - set_at
        refused = ray.get(heads[1].submit.remote({**task, "task_id": "after"}))
        assert refused["admitted"] is False and refused["reasons"][0]["source"] == "TaskLimits"
        assert ray.get(heads[0].remove_policy.remote(COOP))
        wait_for(lambda: ray.get(heads[1].get_policy.remote(COOP)) is None, limit_s=30,
                 what="the other head to drop it")
        # the watchdog's cadence, with room for a loaded 2-core machine (the unit tests pin the intervals)
        assert took < POLICY_REFRESH_S + WATCH_INTERVAL_S + 5.0
    finally:
        for head in heads:
            ray.kill(head, no_restart=True)
