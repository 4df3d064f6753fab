"""A local Ray cluster that outlives the command that started it: what ``coopsched start`` starts when none runs.

``ray.init()`` with no cluster to join starts Ray inside the calling process and stops it when that process
exits. ``coopsched start`` did that, so once it returned nothing was left running: the next command found no
cluster and told the user to run ``coopsched start``. Now the command runs ``ray start --head --block`` in a
session of its own, which keeps the cluster up until it is sent SIGTERM (it then drains the node and stops
every process it started, workers and actors included). Its pid and address are kept in Coopsched's data
directory (``local-ray.json``), and ``coopsched stop`` ends it once no Coopsched actor is left on it.

It is Ray's default head node: on this machine's address, with Ray's token authentication (a driver needs the
token ``ray start`` keeps in ``~/.ray/auth_token``; a development-mode head is open to anyone who has it). More
machines join it as any Ray cluster (``ray start --address HOST:PORT`` there); ``coopsched stop`` never stops a
cluster it did not start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scheduler.state_store import data_dir

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 45.0  # (ray start drains the node for up to 30 s before it stops its processes)
_STARTED = "Ray runtime started"


def _marker() -> Path:
    return data_dir() / "local-ray.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # (PermissionError: someone else's process has that pid now)
        return False
    try:  # an exited process its parent has not reaped yet (a zombie) still answers the signal
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # (no /proc: not Linux)
        return True


def _bootstrap_file() -> Path:
    """Where ``ray start`` writes the address that ``ray.init(address="auto")`` reads (Ray's temp directory)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def drop_stale_bootstrap() -> str | None:
    """Remove Ray's record of the last cluster started here if nothing listens at its address any more; that
    address, or None. With no Ray process running, ``ray.init(address="auto")`` connects to the recorded address
    and waits for it for ever, and a cluster stopped by a signal (or killed) leaves the record behind; with one
    running, Ray finds it without the record."""
    if os.environ.get("RAY_ADDRESS"):
        return None  # (the user named the cluster: Ray asks that one)
    path = _bootstrap_file()
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return None
    except (OSError, ValueError):
        pass
    try:
        path.unlink(missing_ok=True)
    except OSError:  # (another user's Ray temp directory: left as it is, and ray.init may wait)
        return None
    return address


def start_local_ray(num_cpus: int | None = None) -> str:
    """Start a one-node Ray cluster on this machine that runs until ``stop_local_ray``; its address
    (``HOST:PORT``). ``RuntimeError`` with the end of Ray's log if it does not come up."""
    port = _free_port()
    log_path = data_dir() / "local-ray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head", "--block",
               "--port", str(port), "--disable-usage-stats",
               "--include-dashboard=false"] + ([] if num_cpus is None else ["--num-cpus", str(num_cpus)])
    with open(log_path, "w") as log:  # (the child keeps its own descriptor)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # not in the terminal's group: ^C there spares it
    deadline = time.monotonic() + START_TIMEOUT_S
    while _STARTED not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                _terminate(process.pid)
            drop_stale_bootstrap()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"a local Ray cluster did not start (`ray start --head`, log {log_path}):\n{tail}")
        time.sleep(0.1)
    address = _bootstrap_file().read_text().strip()  # (what ray start wrote: this node's address and the port)
    _marker().write_text(json.dumps({"address": address, "pid": process.pid}))
    return address


def started_here(address: str | None) -> dict | None:
    """What ``start_local_ray`` recorded, if it started the cluster at ``address`` and that is still running."""
    try:
        started = json.loads(_marker().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(started, dict) or started.get("address") != address or not isinstance(started.get("pid"), int):
        return None
    return started if _alive(started["pid"]) and _runs_ray_start(started["pid"]) else None


def _runs_ray_start(pid: int) -> bool:
    """Whether ``pid`` is still the ``ray start`` that ``start_local_ray`` ran (not another process that was
    given its pid since): it is never sent a signal otherwise."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # (no /proc: not Linux)
        return True
    return b"ray.scripts.scripts" in b" ".join(argv) and b"start" in argv and b"--head" in argv


def stop_local_ray(address: str) -> bool:
    """Stop the cluster at ``address`` if ``start_local_ray`` started it (call ``ray.shutdown()`` first);
    whether it did. A cluster it did not start is left alone."""
    started = started_here(address)
    if started is None:
        return False
    _terminate(started["pid"])
    _marker().unlink(missing_ok=True)
    drop_stale_bootstrap()  # (`ray start --block` stopped by a signal leaves Ray's record of it)
    return True


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        try:  # (our own child, in the call that started it: reap it, or it lingers as a zombie)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
