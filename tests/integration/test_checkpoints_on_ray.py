"""A task stopped mid-run on a real Ray cluster (an urgent task of its coop taking its place) runs again from its
last checkpoint, not from the start: ``scheduler.checkpoint`` inside the task, the head keeping the checkpoint in
its SQLite store until the job finishes. (The head's checks, tokens and refusals: tests/unit/test_head_checkpoints.py.)
"""

from __future__ import annotations

import sys
import time

import pytest
import ray

from scheduler.client import Client, shutdown
from scheduler.state_store import open_store
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

NS = "coopsched-checkpoints"


def count_to(n: int, pause_s: float) -> dict:
    """Count to ``n``, a step every ``pause_s``, saving the count after each step; note where each attempt began."""
    from scheduler.checkpoint import current_task, load_checkpoint, save_checkpoint
    state = load_checkpoint(default={"done": 0, "began": []})
    state["began"].append((current_task().attempt, state["done"]))
    for step in range(state["done"], n):
        time.sleep(pause_s)
        state["done"] = step + 1
        assert save_checkpoint(state)
    return state


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_task_stopped_mid_run_resumes_from_its_checkpoint_and_the_checkpoint_goes_when_it_ends(ray_cluster,
                                                                                                  tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    client = Client.local(namespace=NS, store=url)
    store = open_store(url)  # (beside the head's, as a second process may open a SQLite file)
    try:
        quota = {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10, "max_priority": "critical"}
        client.set_policy({"coop_id": "ckpt:coop", "default_quota": quota, "preempt_within_coop": "lower_priority"})
        client.register_executor("ckpt-one", coop="ckpt:coop", node_id=ray_cluster.nodes[1].node_id,
                                 resources={"cpus": 1})
        counting = client.submit(count_to, 12, 0.4, coop="ckpt:coop", member="bo", priority="low", max_runtime_s=60)

        def saved() -> int:
            stored = store.get_checkpoint(counting.id)
            return ray.cloudpickle.loads(stored.data)["done"] if stored else 0
        wait_for(lambda: saved() >= 3, what="three steps saved")
        urgent = client.submit(nap, 0.1, coop="ckpt:coop", member="ow", priority="critical", max_runtime_s=60)
        assert urgent.result(timeout=30) == 0.1
        state = counting.result(timeout=60)
        assert state["done"] == 12
        (first, began_at_0), (second, resumed_at) = state["began"]  # two attempts, the second from the checkpoint
        assert (first, began_at_0, second) == (1, 0, 2) and 3 <= resumed_at < 12, state
        status = wait_for(lambda: (s := counting.status()).charged_cpu_hours > 0 and s, what="its charge")
        assert status.attempts == 2 and status.preemptions == 1
        assert wait_for(lambda: store.get_checkpoint(counting.id) is None, what="its checkpoint to go")
    finally:
        store.close()
        shutdown(NS)
