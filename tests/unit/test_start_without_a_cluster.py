"""``coopsched start`` with no Ray cluster to join starts one that outlives the command (scheduler.local_ray)
and joins it as Ray's "auto" lookup finds it; if the head then fails to start, that cluster is stopped again,
so a failed start leaves nothing running. ``ray.init`` and the local cluster stand in for Ray: no Ray runs.
(The real cluster, started and stopped: tests/integration/test_local_ray.py.)"""

from __future__ import annotations

import pytest

from scheduler import client as client_module
from scheduler import local_ray
from scheduler.cli import main


@pytest.fixture
def no_ray_here(monkeypatch):
    calls: list = []
    joined = [False]
    started = [None]

    def init(*args, **kwargs):
        calls.append(("init", kwargs.get("address")))
        if kwargs.get("address") == "auto" and started[0] is None:
            raise ConnectionError("Could not find any running Ray instance.")
        joined[0] = True

    def shutdown():
        calls.append(("shutdown",))
        joined[0] = False

    def start_local_ray(num_cpus=None):
        calls.append(("start_local_ray", num_cpus))
        started[0] = "192.0.2.9:41000"
        return started[0]

    def head_fails(*args, **kwargs):
        calls.append(("tracker",))
        raise ConnectionError("the tracker did not start")
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: joined[0])
    monkeypatch.setattr(client_module.ray, "init", init)
    monkeypatch.setattr(client_module.ray, "shutdown", shutdown)
    monkeypatch.setattr(client_module.ray, "cluster_resources", lambda: {"CPU": 2.0})  # (the cluster it started)
    monkeypatch.setattr(local_ray, "start_local_ray", start_local_ray)
    monkeypatch.setattr(local_ray, "stop_local_ray", lambda address: calls.append(("stop_local_ray", address)))
    monkeypatch.setattr(client_module, "_started_tracker", head_fails)
    monkeypatch.setattr(client_module, "_head_exists", lambda namespace: False)
    return calls


def test_start_with_no_cluster_starts_one_joins_it_and_stops_it_again_when_the_head_fails(no_ray_here, capsys):
    code = main(["start", "--dev", "--num-cpus", "2", "--store", "memory://"])
    err = capsys.readouterr().err
    assert code == 1 and "the tracker did not start" in err
    assert "no Ray cluster runs on this machine: starting one" in err
    assert no_ray_here == [("init", "auto"), ("start_local_ray", 2), ("init", "auto"), ("tracker",), ("shutdown",),
                           ("stop_local_ray", "192.0.2.9:41000")]  # before: ray.init(num_cpus=2) in this process,
    # a cluster that stopped when the command returned


def test_stop_with_no_cluster_running_says_nothing_was_running_and_succeeds(monkeypatch, capsys):
    def init(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(client_module.ray, "init", init)
    assert main(["stop"]) == 0  # before: exit 1, "no running Ray cluster found" (a second stop, say)
    assert capsys.readouterr().out.strip() == "stopped: nothing was running (no Ray cluster runs on this machine)"
    assert main(["--address", "10.0.0.9:6379", "stop"]) == 1  # a cluster named that is not there: an error
    assert "no running Ray cluster found" in capsys.readouterr().err
