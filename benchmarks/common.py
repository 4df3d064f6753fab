"""What every benchmark script shares: a private local Ray, writing its results, and a fixed workload that
shows the machine's own spread."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def init_local_ray(num_cpus: int, namespace: str) -> str:
    """Start a new single-raylet Ray of its own and return its node id.

    ``address="local"``: always a new instance; ``ray.init()`` alone joins any cluster another
    process on this machine started (e.g. a test session's cluster) and would measure theirs.
    """
    import ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, namespace=namespace, include_dashboard=False,
             log_to_driver=False, object_store_memory=256 * 1024 * 1024)
    return ray.get_runtime_context().get_node_id()


def write_results(path: Path, result: dict, say: Callable[[str], None] = print, suffix: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    say(f"\nwrote {path}{suffix}")


def steady_work() -> int:
    """The same few tens of microseconds of interpreted Python and numpy every time: timed beside a measured
    step, its spread is the machine's own (other tenants, frequency), not the code's."""
    total = 0
    for i in range(600):
        total += i * i
    return total + int(_STEADY.argmax()) + int(np.count_nonzero(_STEADY > 500.0))


_STEADY = np.arange(1000.0)
