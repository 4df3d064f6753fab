"""``coopsched start --num-cpus N`` without ``--address`` when a Ray cluster runs already (``Client.local``
joins it, with the CPUs its nodes were started with) is refused, exit 2, naming --num-cpus, its value, why
and an example, before any actor is started; it was silently ignored. ``Client.local(num_cpus=N)`` is
refused the same way (``NumCpusUnused``, an ``InvalidRequest``), as ``ray.init`` refuses num_cpus with an
address. N equal to the cluster's own CPUs asks nothing that is not so, and is taken; with no cluster, a
local Ray of N CPUs is started as before. ``ray.init`` stands in for a cluster: no Ray runs."""

from __future__ import annotations

import pytest

from policies.validation import InvalidRequest
from scheduler import client as client_module
from scheduler.cli import main
from scheduler.client_local import NumCpusUnused
from scheduler.identity import generate_key, public_key_b64


class Started(Exception):
    """What ``Client.local`` would start next (the tracker): the test stops there."""


@pytest.fixture
def ray_runs(monkeypatch):
    """A Ray cluster of 8 CPUs runs: ``ray.init(address="auto")`` joins it. What Client.local asks of Ray."""
    calls: list = []
    joined = [False]

    def init(*args, **kwargs):
        calls.append(("init", kwargs.get("address")))
        joined[0] = True

    def shutdown():
        calls.append(("shutdown", None))
        joined[0] = False
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: joined[0])
    monkeypatch.setattr(client_module.ray, "init", init)
    monkeypatch.setattr(client_module.ray, "shutdown", shutdown)
    monkeypatch.setattr(client_module.ray, "cluster_resources", lambda: {"CPU": 8.0, "memory": 1e9})

    def started(*args, **kwargs):
        raise Started()
    monkeypatch.setattr(client_module, "_started_tracker", started)
    monkeypatch.setattr(client_module, "_head_exists", lambda namespace: False)
    return calls


@pytest.mark.parametrize("mode, example", [(["--dev"], "coopsched start --dev"),
                                           (["--operator-key", "op.pub"], "coopsched start --operator-key 'op.pub'")],
                         ids=["dev", "signed"])
def test_start_with_num_cpus_when_a_ray_runs_already_is_refused_naming_the_flag_its_value_why_and_an_example(
        ray_runs, monkeypatch, capsys, tmp_path, mode, example):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "op.pub").write_text(public_key_b64(generate_key()) + "\n")
    code = main(["start", "--num-cpus", "4", *mode])  # before the fix: the head started on the 8-CPU cluster
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("coopsched: --num-cpus sizes a new local Ray") and "(got --num-cpus 4)" in err
    assert "runs already" in err and "with 8 CPUs" in err and "nothing was started" in err
    assert f"e.g. {example}," in err and "ray stop" in err and "Traceback" not in err
    assert ray_runs == [("init", "auto")]  # it joined the cluster to look (then the command exits)


def test_client_local_with_num_cpus_when_a_ray_runs_already_is_refused_before_anything_starts(ray_runs):
    with pytest.raises(NumCpusUnused) as caught:
        client_module.Client.local(num_cpus=4, store="memory://")
    assert isinstance(caught.value, InvalidRequest) and caught.value.errors[0].path == "num_cpus"
    assert "4, but a Ray cluster runs already" in caught.value.errors[0].received and "8 CPUs" in str(caught.value)
    assert ray_runs == [("init", "auto"), ("shutdown", None)]


def test_client_local_with_num_cpus_in_a_process_connected_to_ray_is_refused(ray_runs, monkeypatch):
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: True)
    with pytest.raises(NumCpusUnused) as caught:
        client_module.Client.local(num_cpus=2, store="memory://")
    assert "this process is connected to a Ray cluster already, with 8 CPUs" in str(caught.value)
    assert ray_runs == []  # the caller's connection is left alone


@pytest.mark.parametrize("num_cpus", [None, 8], ids=["not given", "the cluster's own"])
def test_client_local_joins_a_running_ray_when_num_cpus_asks_nothing_else(ray_runs, num_cpus):
    with pytest.raises(Started):
        client_module.Client.local(num_cpus=num_cpus, store="memory://")
    assert ray_runs == [("init", "auto")]


def test_client_local_with_num_cpus_and_no_ray_running_starts_a_local_ray_of_that_size(ray_runs, monkeypatch):
    def init(*args, **kwargs):
        ray_runs.append(("init", kwargs.get("address"), kwargs.get("num_cpus")))
        if kwargs.get("address") == "auto":
            raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(client_module.ray, "init", init)
    with pytest.raises(Started):
        client_module.Client.local(num_cpus=4, store="memory://")
    assert ray_runs == [("init", "auto", None), ("init", None, 4)]
