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


def count_saving_when_stopped(n: int, pause_s: float, progress: str) -> dict:
    """Count to ``n`` as ``count_to`` does, saving only when asked to stop (its grace), then ending; the count
    so far is written to the file ``progress`` too, for the test to see."""
    from scheduler.checkpoint import current_task, load_checkpoint, save_checkpoint, stop_requested
    state = load_checkpoint(default={"done": 0, "began": []})
    state["began"].append((current_task().attempt, state["done"]))
    for step in range(state["done"], n):
        if stop_requested():
            save_checkpoint(state)
            return {}  # (this attempt's value is not kept)
        time.sleep(pause_s)
        state["done"] = step + 1
        with open(progress, "w") as out:
            out.write(str(state["done"]))
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
        counting = client.submit(count_to, 8, 0.25, coop="ckpt:coop", member="bo", priority="low", max_runtime_s=60)

        def saved() -> int:
            stored = store.get_checkpoint(counting.id)
            return ray.cloudpickle.loads(stored.data)["done"] if stored else 0
        wait_for(lambda: saved() >= 3, what="three steps saved")
        assert counting.checkpoint(load=True)["done"] >= 3  # (its member reads it through the client too)
        urgent = client.submit(nap, 0.1, coop="ckpt:coop", member="ow", priority="critical", max_runtime_s=60)
        assert urgent.result(timeout=30) == 0.1
        state = counting.result(timeout=60)
        assert state["done"] == 8
        (first, began_at_0), (second, resumed_at) = state["began"]  # two attempts, the second from the checkpoint
        assert (first, began_at_0, second) == (1, 0, 2) and 3 <= resumed_at < 8, state
        status = wait_for(lambda: (s := counting.status()).charged_cpu_hours > 0 and s, what="its charge")
        assert status.attempts == 2 and status.preemptions == 1
        assert wait_for(lambda: store.get_checkpoint(counting.id) is None, what="its checkpoint to go")
        assert counting.checkpoint() is None
    finally:
        store.close()
        shutdown(NS)


def test_a_task_with_a_grace_saves_when_asked_to_stop_and_its_retry_goes_on_from_there(ray_cluster, tmp_path):
    client = Client.local(namespace=NS, store=f"sqlite:///{tmp_path / 'state.db'}")
    try:
        quota = {"cpu_hours_per_month": 10, "max_concurrent_tasks": 10, "max_priority": "critical"}
        client.set_policy({"coop_id": "ckpt:grace", "default_quota": quota, "preempt_within_coop": "lower_priority"})
        client.register_executor("ckpt-grace", coop="ckpt:grace", node_id=ray_cluster.nodes[2].node_id,
                                 resources={"cpus": 1})
        progress = tmp_path / "progress"
        counting = client.submit(count_saving_when_stopped, 8, 0.25, str(progress), coop="ckpt:grace", member="bo",
                                 priority="low", max_runtime_s=60, stop_grace_s=20)
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 2, what="two steps done, none saved")
        asked = time.monotonic()
        urgent = client.submit(nap, 0.1, coop="ckpt:grace", member="ow", priority="critical", max_runtime_s=60)
        assert urgent.result(timeout=30) == 0.1
        assert time.monotonic() - asked < 15  # the stopped task ended when asked, well within its 20 s grace
        state = counting.result(timeout=60)
        (first, _), (second, resumed_at) = state["began"]
        assert (first, second, state["done"]) == (1, 2, 8) and resumed_at >= 2, state  # saved only when stopped
    finally:
        shutdown(NS)
