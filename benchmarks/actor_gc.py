"""Garbage-collection pauses in the head actor: a full collection, with start-up state frozen and without.

Run ``python benchmarks/actor_gc.py [--jobs N] [--json PATH]``.

One run on a local Ray (one raylet, 2 CPUs, ``memory://`` store, one executor of 1 CPU): the head's
full collection (``gc.collect()``, timed inside the head actor with ``time.perf_counter``, three
times, the median kept) idle and again after ``--jobs`` trivial jobs have run (the head keeps up to
``keep_finished_jobs`` of them in memory). Each point is measured as the head runs (its start-up
state frozen by ``scheduler.heap.freeze_long_lived``) and, as the baseline in the same process,
with that state unfrozen for the measurement (``gc.unfreeze``, then frozen again), which is what
a full collection cost before the freeze. Ratio: baseline / frozen.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from scheduler.client import Client, shutdown  # noqa: E402
from scheduler.names import HEAD_NAME  # noqa: E402

NS = "coopsched-gc-bench"
COOP = "gc-bench"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "actor_gc.json"


def _pauses(actor_self) -> dict:
    """Inside the head: a full collection as it runs (frozen start-up state) and with that state unfrozen."""
    import gc
    import time as t

    def collect_ms() -> float:
        times = []
        for _ in range(3):
            t0 = t.perf_counter()
            gc.collect()
            times.append((t.perf_counter() - t0) * 1e3)
        return sorted(times)[1]

    frozen = gc.get_freeze_count()
    scanned = len(gc.get_objects())
    with_freeze = collect_ms()
    gc.unfreeze()
    try:
        baseline = collect_ms()
    finally:
        gc.freeze()
    return {"frozen_objects": frozen, "scanned_objects": scanned, "full_collection_ms": round(with_freeze, 2),
            "unfrozen_full_collection_ms": round(baseline, 2),
            "ratio": round(baseline / with_freeze, 1) if with_freeze >= 0.5 else None}  # (not of a ~0 ms pause)


def _trivial(i: int) -> int:
    return i


def run(jobs: int) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    client = Client.local(num_cpus=2, namespace=NS, store="memory://")
    try:
        client.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1e6,
                                                              "max_concurrent_tasks": 1_000_000}})
        client.register_executor("gc-bench-1", coop=COOP, region="local", resources={"cpus": 1}, dispatch_ahead=8)
        head = ray.get_actor(HEAD_NAME, namespace=NS)
        idle = ray.get(head.__ray_call__.remote(_pauses), timeout=120)
        t0 = time.perf_counter()
        handles = client.map(_trivial, range(jobs), coop=COOP, member="bench", max_runtime_s=60)
        client.gather(handles, timeout=600)
        ran_s = time.perf_counter() - t0
        loaded = ray.get(head.__ray_call__.remote(_pauses), timeout=120)
        loaded["jobs_in_memory"] = ray.get(head.__ray_call__.remote(lambda h: h.core.jobs_in_memory()), timeout=60)
        return {"jobs": jobs, "jobs_seconds": round(ran_s, 1), "idle": idle, "after_jobs": loaded}
    finally:
        shutdown(NS)
        ray.shutdown()


def report(result: dict) -> str:
    lines = [f"Head full garbage collection (median of 3), idle and after {result['jobs']:,} trivial jobs",
             " point        | objects scanned | frozen  | frozen start-up (ms) | unfrozen, baseline (ms) | ratio",
             "-" * 98]
    for label, key in (("idle", "idle"), (f"{result['jobs']:,} jobs", "after_jobs")):
        r = result[key]
        lines.append(f" {label:<12} | {r['scanned_objects']:>15,} | {r['frozen_objects']:>7,} | "
                     f"{r['full_collection_ms']:>20.1f} | {r['unfrozen_full_collection_ms']:>23.1f} | "
                     f"{r['ratio'] if r['ratio'] is not None else '-':>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="trivial jobs to run before the second point")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    result = run(args.jobs)
    print(report(result))
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
