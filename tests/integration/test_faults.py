"""Faults on a real multi-node Ray cluster: a node removed mid-run, heartbeats that stop, Redis down,
a user function that raises."""

from __future__ import annotations

import sys
import time

import pytest

from tests.waiting import wait_for
import ray

from scheduler.client import Client, shutdown
from scheduler.job_handle import JobFailed
from scheduler.names import worker_name

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.integration
COOP = "faults:coop"


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


def explode(message: str) -> None:
    time.sleep(0.3)
    raise ValueError(message)


@pytest.fixture
def faults(ray_cluster, request):
    namespace = f"coopsched-faults-{request.node.name[:16]}"
    client = Client.local(namespace=namespace, store="memory://", heartbeat_timeout_s=2.0)
    client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10}})
    yield client, namespace
    shutdown(namespace)


def test_node_removed_mid_run_task_retried_elsewhere_charged_once(faults, ray_cluster):
    client, namespace = faults
    doomed = ray_cluster.cluster.add_node(num_cpus=1, labels={"region": "us-west"})
    ray_cluster.cluster.wait_for_nodes()
    doomed_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] and
                     n["NodeManagerPort"] == doomed.node_manager_port)
    client.register_executor("doomed", coop=COOP, node_id=doomed_id, resources={"cpus": 1}, trust=1.0,
                             heartbeat_interval_s=0.5)
    client.register_executor("steady", coop=COOP, node_id=ray_cluster.nodes[3].node_id, resources={"cpus": 1},
                             trust=0.1, heartbeat_interval_s=0.5)
    job = client.submit(nap, 4.0, coop=COOP, member="ann", max_runtime_s=60, max_retries=1)
    wait_for(lambda: job.status().executor_id == "doomed" and job.status().state.value == "running",
          what="the job to start on the doomed node")
    time.sleep(0.5)
    ray_cluster.cluster.remove_node(doomed)
    assert job.result(timeout=90) == ray_cluster.nodes[3].node_id
    status = wait_for(lambda: (s := job.status()).state.value == "succeeded" and s, what="the report")
    assert status.attempts == 2 and status.executor_id == "steady"
    usage = wait_for(lambda: (u := client.usage(COOP, "ann")).tasks_completed == 1 and u.running == 0 and u,
                  what="one charge")
    assert usage.cpu_hours * 3600 == pytest.approx(status.wall_seconds, rel=1e-3)  # the lost attempt is free
    assert any(e["message"].startswith("worker of doomed") for e in
               [h.model_dump() for h in status.history])


def test_silent_executor_goes_offline_gets_no_work_then_comes_back(faults, ray_cluster):
    client, namespace = faults
    for name, node in (("quiet", 1), ("loud", 2)):
        client.register_executor(name, coop=COOP, node_id=ray_cluster.nodes[node].node_id, resources={"cpus": 1},
                                 trust=1.0 if name == "quiet" else 0.2, heartbeat_interval_s=0.3)
    quiet = ray.get_actor(worker_name("quiet"), namespace=namespace)
    ray.get(quiet.pause_heartbeats.remote(300.0))  # silent until told otherwise below: however slowly Ray
    # starts the task processes on a loaded machine, "quiet" cannot come back while the three jobs run
    wait_for(lambda: {e["executor_id"]: e["status"] for e in client.executors()}["quiet"] == "offline", 10,
          "the silent executor to be marked offline (timeout 2 s)")
    jobs = [client.submit(nap, 0.1, coop=COOP, member="ben", max_runtime_s=30) for _ in range(3)]
    ran_on = [j.result(timeout=60) for j in jobs]
    assert ran_on == [ray_cluster.nodes[2].node_id] * 3, (  # never the silent one
        [(j.status().executor_id, j.status().attempts) for j in jobs], client.executors(),
        [n.node_id for n in ray_cluster.nodes])
    ray.get(quiet.pause_heartbeats.remote(0.0))  # its heartbeats resume
    wait_for(lambda: {e["executor_id"]: e["status"] for e in client.executors()}["quiet"] == "active", 25,
          "the executor to come back when its heartbeats resume")
    assert client.submit(nap, 0.1, coop=COOP, member="ben", max_runtime_s=30).result(timeout=60) == \
        ray_cluster.nodes[1].node_id  # the most trusted executor again


def test_user_function_that_raises_is_failed_with_traceback_and_charged(faults, ray_cluster):
    client, _ = faults
    client.register_executor("boom", coop=COOP, node_id=ray_cluster.nodes[1].node_id, resources={"cpus": 1})
    job = client.submit(explode, "the sample was empty", coop=COOP, member="cid", max_runtime_s=30)
    with pytest.raises(JobFailed, match="ValueError: the sample was empty"):
        job.result(timeout=60)
    status = wait_for(lambda: (s := job.status()).state.value == "failed" and s, what="the failure to be recorded")
    assert "Traceback" in status.error and "the sample was empty" in status.error
    assert status.charged_cpu_hours * 3600 >= 0.3  # the time it ran is charged
    assert client.usage(COOP, "cid").tasks_completed == 1


def test_redis_down_admissions_answer_unavailable_and_nothing_is_lost(ray_cluster, redis_server):
    import redis

    from scheduler.job_handle import PolicyViolation
    redis.Redis.from_url(redis_server.url).flushdb()
    namespace = "coopsched-faults-redis"
    client = Client.local(namespace=namespace, store=redis_server.url)
    try:
        client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 10}})
        client.register_executor("r-1", coop=COOP, node_id=ray_cluster.nodes[2].node_id, resources={"cpus": 1})
        first = client.submit(nap, 0.1, coop=COOP, member="dee", max_runtime_s=60)
        assert first.result(timeout=60)
        before = wait_for(lambda: (u := client.usage(COOP, "dee")).tasks_completed == 1 and u, what="the charge")
        redis_server.stop()
        try:
            started = time.monotonic()
            with pytest.raises(PolicyViolation) as refused:
                client.submit(nap, 0.1, coop=COOP, member="dee", max_runtime_s=60)
            reason = refused.value.decision.reasons[0]
            assert reason.code.value == "unavailable" and reason.source == "store"
            assert "unreachable" in reason.message and time.monotonic() - started < 30
            time.sleep(2)
        finally:
            redis_server.start()
        after = client.submit(nap, 0.1, coop=COOP, member="dee", max_runtime_s=60)
        assert after.result(timeout=60)
        usage = wait_for(lambda: (u := client.usage(COOP, "dee")).tasks_completed == 2 and u, what="the second charge")
        assert usage.cpu_hours > before.cpu_hours and usage.reserved_cpu_hours == 0
        assert client.get_policy(COOP) is not None
    finally:
        shutdown(namespace)


class _TrackerThatCannotStart:
    def __init__(self, **kwargs):
        raise RuntimeError("database is locked")  # as SQLite answered once when the head opened the file too


def test_a_tracker_that_fails_to_start_is_started_again_before_the_head(ray_cluster, monkeypatch):
    """Seen once in CI: the tracker died at birth while it and the head opened one new SQLite file, and
    no usage report was ever delivered (executors never freed, jobs queued for good). Client.local now
    waits for the tracker to be up, and starts it again if its start failed."""
    import scheduler.client as client_module
    from scheduler.names import TRACKER_NAME
    ns, calls = "coopsched-tracker-retry", []
    real = client_module.start_tracker

    def flaky(namespace, store_url):
        calls.append(namespace)
        if len(calls) == 1:
            return ray.remote(_TrackerThatCannotStart).options(name=TRACKER_NAME, namespace=namespace,
                                                              lifetime="detached", num_cpus=0).remote()
        return real(namespace=namespace, store_url=store_url)
    monkeypatch.setattr(client_module, "start_tracker", flaky)
    client = Client.local(namespace=ns, store="memory://")
    try:
        assert len(calls) == 2
        tracker = ray.get_actor(TRACKER_NAME, namespace=ns)
        assert ray.get(tracker.__ray_ready__.remote(), timeout=60)
        assert client.ping()["executors"] == 0
    finally:
        shutdown(ns)
