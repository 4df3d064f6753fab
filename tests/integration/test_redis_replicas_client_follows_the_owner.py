"""A client asks a job's cancel or result of the head replica that admitted it, whichever replica it is
connected to (scheduler.replicas): the other replicas answer ``JobOfAnotherHead`` and the handle follows it.
Real Ray actors, a real Redis; the heads in namespaces of their own, as ``Client(namespace=...)`` reaches them.
The head's side of it, without Ray: tests/integration/test_redis_replicas_own_their_jobs.py."""

from __future__ import annotations

import datetime as dt
import sys

import pytest
import ray
import redis

from scheduler.client import Client, JobCancelled, shutdown
from scheduler.head import start_head

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

COOP = "shared:follow"


def double(x: int) -> int:
    return 2 * x


def test_a_handle_got_through_another_replica_cancels_the_job_on_its_own_head(ray_cluster, redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    closed_hour = (dt.datetime.now(dt.timezone.utc).hour + 12) % 24  # jobs are admitted, then held
    policy = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 20},
              "rules": [{"type": "TimeWindow", "allowed_hours": [closed_hour], "action": "defer"}]}
    namespaces = ("coopsched-follow-a", "coopsched-follow-b", "coopsched-follow-gone")
    heads = [start_head(namespace=n, store_url=redis_server.url) for n in namespaces]
    try:
        for i, head in enumerate(heads):
            ray.get(head.set_policy.remote(policy))
            ray.get(head.register_executor.remote({"executor_id": f"follow-{i}", "coop_id": COOP,
                                                   "region": "us-west", "resources": {"cpus": 4}}))
        for task_id, head in (("held-on-a", heads[0]), ("held-on-gone", heads[2])):
            decision = ray.get(head.submit.remote({"task_id": task_id, "coop_id": COOP, "member": "ines",
                                                   "resources": {"cpus": 1}, "max_runtime_s": 60}))
            assert decision["admitted"]
        through_b = Client(namespace=namespaces[1])
        handle = through_b.job("held-on-a")
        assert handle.status().state.value == "deferred"
        assert handle.cancel() == "cancelled"  # before: B answered "deferred", and A kept it held
        assert ray.get(heads[0].status.remote("held-on-a"))["state"] == "cancelled"
        with pytest.raises(JobCancelled):
            handle.result(timeout=30)
        assert through_b.job("held-on-a").status().state.value == "cancelled"  # any replica reads the store

        ray.kill(heads[2], no_restart=True)  # its owner is gone for good: a clear error, nothing changed
        with pytest.raises(ConnectionError, match="coopsched-follow-gone/coopsched-head.*is not running"):
            through_b.job("held-on-gone").cancel()
        assert through_b.job("held-on-gone").status().state.value == "deferred"
    finally:
        for head in heads:
            ray.kill(head, no_restart=True)


def test_a_result_asked_through_another_replica_comes_from_the_head_that_ran_the_job(ray_cluster, redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    owner, other = "coopsched-follow-owner", "coopsched-follow-other"
    through_owner = Client.local(namespace=owner, store=redis_server.url)  # head, tracker and a worker there
    start_head(namespace=other, store_url=redis_server.url)
    try:
        through_owner.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10}})
        through_owner.register_executor("follow-r1", coop=COOP, node_id=ray_cluster.nodes[1].node_id,
                                        resources={"cpus": 1})
        job = through_owner.submit(double, 21, coop=COOP, member="ines", max_runtime_s=60)
        # before: the other head waited on it, then said it "succeeded but its result is no longer available"
        assert Client(namespace=other).job(job.id).result(timeout=60) == 42
        assert job.result(timeout=30) == 42
    finally:
        shutdown(owner)
        shutdown(other)
