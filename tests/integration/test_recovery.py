"""Nothing admitted, run or charged is lost when the head, the tracker or Redis restarts."""

from __future__ import annotations

import datetime as dt
import sys
import time

import pytest

from tests.waiting import wait_for
import ray

from scheduler.client import Client, shutdown
from scheduler.head import start_head
from scheduler.ledger import Cost, period_of
from scheduler.names import HEAD_NAME, TRACKER_NAME
from scheduler.state_store import open_store

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
pytestmark = pytest.mark.integration
COOP = "recovery:lab"


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture
def durable(ray_cluster, tmp_path, request):
    namespace = f"coopsched-rec-{request.node.name[:20]}"
    url = f"sqlite:///{tmp_path / 'state.db'}"
    client = Client.local(namespace=namespace, store=url)
    client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10, "max_concurrent_tasks": 1}})
    client.register_executor("rec-1", coop=COOP, node_id=ray_cluster.nodes[1].node_id, resources={"cpus": 1},
                             heartbeat_interval_s=0.5)
    yield client, namespace, url
    shutdown(namespace)


def _ping(client) -> dict | None:
    try:
        return ray.get(client.head.ping.remote(), timeout=2)
    except Exception:  # restarting
        return None


def test_head_killed_with_jobs_queued_and_running(durable):
    client, namespace, url = durable
    running = client.submit(nap, 3.0, coop=COOP, member="ana", max_runtime_s=60)
    queued = client.submit(nap, 0.5, coop=COOP, member="ana", max_runtime_s=60)
    wait_for(lambda: running.status().state.value == "running", what="the first job to start")
    assert queued.status().state.value == "queued"
    before = client._call("ping")["started_at"]
    ray.kill(ray.get_actor(HEAD_NAME, namespace=namespace), no_restart=False)  # Ray restarts it
    restarted = wait_for(lambda: (p := _ping(client)) and p["started_at"] != before and p,
                      what="a new head incarnation")
    assert restarted["recovered"]["jobs"] == 2
    assert running.result(timeout=60) == 3.0 and queued.result(timeout=60) == 0.5
    usage = wait_for(lambda: (u := client.usage(COOP, "ana")).tasks_completed == 2 and u.running == 0 and u,
                  what="both jobs to be charged")
    assert usage.cpu_hours * 3600 == pytest.approx(running.status().wall_seconds + queued.status().wall_seconds,
                                                   rel=1e-3)
    assert usage.reserved_cpu_hours == 0


def test_tracker_killed_reports_are_resent_none_lost(durable):
    client, namespace, url = durable
    job = client.submit(nap, 1.0, coop=COOP, member="ben", max_runtime_s=60)
    wait_for(lambda: job.status().state.value == "running", what="the job to start")
    ray.kill(ray.get_actor(TRACKER_NAME, namespace=namespace), no_restart=False)
    assert job.result(timeout=60) == 1.0
    usage = wait_for(lambda: (u := client.usage(COOP, "ben")).tasks_completed == 1 and u, what="the charge")
    time.sleep(1.5)  # resends after the restart must not charge twice
    again = client.usage(COOP, "ben")
    assert again.tasks_completed == 1 and again.cpu_hours == usage.cpu_hours
    store = open_store(url)
    assert len(store.reports(job.id)) == 1
    store.close()


def test_redis_restart_between_writes_loses_nothing(redis_server):
    import redis
    redis.Redis.from_url(redis_server.url).flushdb()
    store = open_store(redis_server.url)
    store.put_policy("c", {"coop_id": "c"}, "admin", 1.0)
    store.reserve("t1", "c", "m", "2026-11", Cost(5, 0, 0))
    store.settle("t0", "c", "m", "2026-11", Cost(7, 0, 1))
    store.close()
    redis_server.restart()  # AOF with appendfsync always
    store = open_store(redis_server.url)
    assert store.active_policy("c").version == 1
    assert store.standing("c", "m", "2026-11") == (Cost(7, 0, 1), Cost(5, 0, 0), 1)
    assert store.settle("t1", "c", "m", "2026-11", Cost(4, 0, 0))
    redis_server.restart()
    store2 = open_store(redis_server.url)
    assert store2.standing("c", "m", "2026-11") == (Cost(11, 0, 1), Cost(), 2)
    store.close()
    store2.close()


def test_two_head_replicas_on_redis_cannot_overshoot_a_quota(ray_cluster, redis_server):
    """Two heads admit for the same coop concurrently; Redis' atomic reserve keeps the sum within the quota."""
    import redis
    redis.Redis.from_url(redis_server.url).flushdb()
    namespace = "coopsched-replicas"
    closed_hour = (dt.datetime.now(dt.timezone.utc).hour + 12) % 24  # tasks are admitted, then held
    policy = {"coop_id": "shared:quota", "default_quota": {"cpu_hours_per_month": 20, "max_concurrent_tasks": 1000},
              "rules": [{"type": "TimeWindow", "allowed_hours": [closed_hour], "action": "defer"}]}
    heads = [start_head(namespace=namespace, name=f"replica-{i}", store_url=redis_server.url) for i in range(2)]
    try:
        for head in heads:
            ray.get(head.set_policy.remote(policy))
            ray.get(head.register_executor.remote({"executor_id": "big", "coop_id": "shared:quota",
                                                   "region": "us-west", "resources": {"cpus": 64}}))
        tasks = [{"task_id": f"r{i}", "coop_id": "shared:quota", "member": "zoe", "resources": {"cpus": 1},
                  "max_runtime_s": 3600} for i in range(60)]
        refs = [heads[i % 2].submit.remote(t) for i, t in enumerate(tasks)]  # interleaved, all in flight
        decisions = ray.get(refs)
        admitted = [d for d in decisions if d["admitted"]]
        assert len(admitted) == 20
        assert {d["reasons"][0]["source"] for d in decisions if not d["admitted"]} <= {"quota:cpu", "quota"}
        store = open_store(redis_server.url)
        used, held, _ = store.standing("shared:quota", "zoe", period_of(time.time()))
        assert (used + held).cpu == Cost.of(cpu_hours=20).cpu  # exactly the quota, never more
        store.close()
    finally:
        for head in heads:
            ray.kill(head, no_restart=True)


def test_finished_jobs_leave_the_heads_memory_and_are_answered_from_the_store(ray_cluster, tmp_path):
    namespace = "coopsched-rec-forget"
    client = Client.local(namespace=namespace, store=f"sqlite:///{tmp_path / 'state.db'}", keep_finished_jobs=2)
    try:
        client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10}})
        client.register_executor("rec-f", coop=COOP, node_id=ray_cluster.nodes[1].node_id, resources={"cpus": 1})
        handles = [client.submit(nap, 0.01 * i, coop=COOP, member="mo", max_runtime_s=60) for i in range(5)]
        assert [h.result(timeout=60) for h in handles] == [0.01 * i for i in range(5)]
        first = handles[0]
        wait_for(lambda: client.ping()["jobs_in_memory"] <= 2, what="the head to forget the oldest jobs")
        used = wait_for(lambda: (u := client.usage(COOP, "mo")).tasks_completed == 5 and u, what="all settled")
        # the first job is no longer in memory: the store answers for it
        assert first.status().state.value == "succeeded"
        assert first.explain()["summary"].startswith(f"{first.id} -> rec-f")
        assert client.job(first.id).result(timeout=30) == 0.0  # a fresh handle: its value from the worker
        again = client.submit(nap, 9.0, coop=COOP, member="mo", max_runtime_s=60, task_id=first.id)
        assert again.decision == first.decision  # idempotent by task id: the first decision, nothing new run
        time.sleep(0.5)
        assert client.usage(COOP, "mo") == used and client.ping()["queued"] == 0
    finally:
        shutdown(namespace)
