"""``coopsched start`` on a machine where no Ray runs starts a cluster that outlives the command
(scheduler.local_ray), and ``coopsched stop`` stops it, leaving nothing behind. Before, ``start`` ran Ray inside
its own process (``ray.init``), so the cluster was gone once it returned and the next command found none.

A real ``ray start --head`` beside the session's cluster, driven by the real CLI in subprocesses. (The branch of
``start`` that sees no cluster at all cannot run here, where the session's cluster runs: this starts the cluster
as that branch does, then names it with ``--address``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.local_ray import _bootstrap_file, drop_stale_bootstrap, started_here

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def cli(env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def bootstrap_kept():
    """Ray's record of the last cluster started here, as it was before the test (the local cluster writes its own)."""
    path = _bootstrap_file()
    before = path.read_text() if path.exists() else None
    yield
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)


def test_a_local_cluster_started_for_coopsched_runs_after_the_command_and_stop_stops_it(ray_cluster, tmp_path,
                                                                                         monkeypatch, bootstrap_kept):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    if (Path.home() / ".ray" / "auth_token").exists():  # the cluster then uses it (ray start finds it), and Ray
        env["RAY_AUTH_MODE"] = "token"  # sends it to a cluster named by --address only when told to
    started = subprocess.run([sys.executable, "-c", "from scheduler.local_ray import start_local_ray; "
                              "print(start_local_ray(num_cpus=1))"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)  # (as `coopsched start` does, in a process that then exits)
    assert started.returncode == 0, started.stderr
    address = started.stdout.strip().splitlines()[-1]
    record = started_here(address)
    assert record is not None and json.loads((tmp_path / "coopsched" / "local-ray.json").read_text()) == record
    pid = record["pid"]
    try:
        ns = ["--address", address, "--namespace", "coopsched-local-ray"]
        up = cli(env, *ns, "start", "--dev", "--store", "memory://", "--json")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["ray_address"] == address  # the cluster that process started, still up
        assert "Connecting to existing Ray cluster" not in up.stderr  # (Ray's connection lines are not shown)
        listed = cli(env, *ns, "policy", "list", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
        other = ["--address", address, "--namespace", "coopsched-local-ray-2"]
        assert cli(env, *other, "start", "--dev", "--store", "memory://").returncode == 0
        kept = cli(env, *other, "stop")  # another namespace's head still runs on it: the cluster stays
        assert kept.returncode == 0 and "keeps running for Coopsched in namespace(s) coopsched-local-ray" in kept.stdout
        assert started_here(address) is not None
        down = cli(env, *ns, "stop")
        assert down.returncode == 0, down.stderr
        assert f"and the local Ray cluster at {address} that `coopsched start` started" in down.stdout
        deadline = time.monotonic() + 30
        while started_here(address) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started_here(address) is None and not (tmp_path / "coopsched" / "local-ray.json").exists()
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
        assert drop_stale_bootstrap() is None  # its record went with it: nothing left for ray.init to wait on
    finally:
        if started_here(address) is not None:
            os.kill(pid, 15)


def test_a_record_of_a_cluster_that_is_gone_is_dropped_so_ray_init_does_not_wait_on_it(bootstrap_kept, tmp_path):
    path = _bootstrap_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("127.0.0.1:1")  # (nothing listens on port 1)
    assert drop_stale_bootstrap() == "127.0.0.1:1" and not path.exists()
    assert drop_stale_bootstrap() is None


def test_only_the_cluster_recorded_as_started_here_is_one_stop_may_stop(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "coopsched").mkdir()
    ray_start = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ray.scripts.scripts",
                                  "start", "--head"])  # (stands in for `ray start`: its command line only)
    try:
        record = {"address": "10.0.0.9:6380", "pid": ray_start.pid}
        (tmp_path / "coopsched" / "local-ray.json").write_text(json.dumps(record))
        assert started_here("10.0.0.7:6380") is None  # another cluster's address: not the one recorded
        assert started_here("10.0.0.9:6380") == record
        (tmp_path / "coopsched" / "local-ray.json").write_text(json.dumps({**record, "pid": os.getpid()}))
        assert started_here("10.0.0.9:6380") is None  # its pid now another process's (this test's): never signalled
    finally:
        ray_start.kill()
        ray_start.wait()
