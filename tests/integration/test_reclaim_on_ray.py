"""Running tasks stopped to make room on a real Ray cluster (an owner reclaiming its executor from a borrower; a
coop's urgent task taking the room of its own task of lower priority): the stopped task is killed at its worker,
the task it made room for runs there at once, and the stopped one runs again afterwards, charged once, for its
last attempt only. And an owner's lending limit keeping part of its executors for it without stopping anything.
(The choice of what to stop: tests/unit/test_reclaim.py and test_preempt_within_coop.py; the limits:
tests/unit/test_sharing_limits.py; the head's side with stand-in workers: tests/unit/test_head_reclaims_an_executor.py.)"""

from __future__ import annotations

import sys
import time

import pytest
import ray

from scheduler.client import Client, shutdown
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

NS = "coopsched-reclaim"


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


@pytest.mark.parametrize("ahead", [0, 1], ids=["no queue", "taking work ahead"])
def test_an_owner_takes_its_executor_back_from_a_borrowers_running_task(ray_cluster, ahead):
    client = Client.local(namespace=NS, store="memory://")
    try:
        quota = {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10}
        client.set_policy({"coop_id": "reclaim:owner", "default_quota": quota, "reclaim": "any"})
        client.set_policy({"coop_id": "reclaim:borrower", "default_quota": quota})
        node = ray_cluster.nodes[1].node_id
        client.register_executor("reclaim-owned", coop="reclaim:owner", node_id=node, resources={"cpus": 1},
                                 open_to=("*",), dispatch_ahead=ahead)  # (ahead: a queue it must not wait in)
        borrowed = client.submit(nap, 5.0, coop="reclaim:borrower", member="bo", max_runtime_s=60)
        wait_for(lambda: borrowed.status().state.value == "running", what="the borrower's task to start")
        time.sleep(1.0)  # it runs there now
        asked = time.monotonic()
        mine = client.submit(nap, 0.1, coop="reclaim:owner", member="ow", max_runtime_s=60)
        assert mine.result(timeout=30) == node
        assert time.monotonic() - asked < 3.5  # it did not wait for the borrower's task to end (4 s more)
        assert borrowed.result(timeout=60) == node  # run again once the owner's was done
        status = wait_for(lambda: (s := borrowed.status()).charged_cpu_hours > 0 and s, what="its charge")
        assert status.attempts == 2 and any("preempted on reclaim-owned" in e.message for e in status.history)
        assert status.charged_cpu_hours * 3600 < 7.0  # its last attempt's 5 s, not the stopped one's too
    finally:
        shutdown(NS)


def test_an_urgent_task_stops_its_coops_running_task_of_lower_priority(ray_cluster):
    client = Client.local(namespace=NS, store="memory://")
    try:
        quota = {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10, "max_priority": "critical"}
        client.set_policy({"coop_id": "preempt:coop", "default_quota": quota, "preempt_within_coop": "lower_priority"})
        node = ray_cluster.nodes[1].node_id
        client.register_executor("preempt-one", coop="preempt:coop", node_id=node, resources={"cpus": 1})
        batch = client.submit(nap, 5.0, coop="preempt:coop", member="bo", priority="low", max_runtime_s=60)
        wait_for(lambda: batch.status().state.value == "running", what="the batch task to start")
        time.sleep(1.0)
        asked = time.monotonic()
        urgent = client.submit(nap, 0.1, coop="preempt:coop", member="ow", priority="critical", max_runtime_s=60)
        assert urgent.result(timeout=30) == node
        assert time.monotonic() - asked < 3.5  # it did not wait for the batch task to end (4 s more)
        assert batch.result(timeout=60) == node  # run again after the urgent one
        status = wait_for(lambda: (s := batch.status()).charged_cpu_hours > 0 and s, what="its charge")
        assert status.attempts == 2 and status.preemptions == 1
        assert any(f"for task {urgent.id} of its coop" in e.message for e in status.history)
        assert status.charged_cpu_hours * 3600 < 7.0  # its last attempt's 5 s only
    finally:
        shutdown(NS)


def test_a_lending_limit_keeps_part_of_an_owners_executors_for_it(ray_cluster):
    """The owner lends at most half of its two executors: a borrower's second job waits for its first (with the
    limit as its reason) though the other executor is idle, and the owner's own job takes that one at once."""
    client = Client.local(namespace=NS, store="memory://")
    try:
        quota = {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10}
        client.set_policy({"coop_id": "lend:owner", "default_quota": quota, "lending_limit": 0.5})
        client.set_policy({"coop_id": "lend:borrower", "default_quota": quota})
        node = ray_cluster.nodes[1].node_id
        for name in ("lend-a", "lend-b"):
            client.register_executor(name, coop="lend:owner", node_id=node, resources={"cpus": 1}, open_to=("*",))
        first = client.submit(nap, 2.0, coop="lend:borrower", member="bo", max_runtime_s=60)
        second = client.submit(nap, 0.1, coop="lend:borrower", member="bo", max_runtime_s=60)
        wait_for(lambda: first.status().state.value == "running", what="the borrower's first job to start")
        waiting = second.status()
        assert waiting.state.value == "queued" and "lending_limit" in waiting.reason, waiting.reason
        mine = client.submit(nap, 0.1, coop="lend:owner", member="ow", max_runtime_s=60)
        assert mine.result(timeout=30) == node  # the executor kept for its owner
        assert second.result(timeout=60) == node
        done = [first.status(), second.status()]
        assert done[1].started_at >= done[0].finished_at - 0.5  # it ran once the first had given its half back
    finally:
        shutdown(NS)
