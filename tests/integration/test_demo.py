"""The README's first command: `coopsched demo` runs its own 4-node Ray cluster, prints where each job
ran and why, what was refused and why, what waited and why, and the usage charged; exits 0; leaves no
process behind. Run as a subprocess (its own Ray cluster, beside the test session's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _raylets() -> set[int]:
    pids = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "raylet":
                        pids.add(int(pid))
            except OSError:
                pass
    return pids


@pytest.mark.timeout(240)
def test_the_demo_shows_every_decision_exits_0_and_stops_its_cluster():
    before = _raylets()  # the test session's own cluster
    done = subprocess.run([sys.executable, "-c", "import sys; from scheduler.cli import main; sys.exit(main())",
                           "demo"], capture_output=True, text=True, timeout=200,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    out = done.stdout
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for section in ("WHERE EACH JOB RAN, AND WHY", "REFUSED, AND WHY", "WAITED, AND WHY", "USAGE CHARGED THIS MONTH"):
        assert section in out
    assert "eu-central-1  eu-central" in out  # the patient-data jobs ran where the GDPR rule says
    assert "quota:cpu" in out and "max_concurrent_tasks" in out
    assert "stopped the cluster" in out
    assert _raylets() <= before  # its four raylets are gone
