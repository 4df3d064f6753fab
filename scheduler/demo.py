"""``coopsched demo``: two cooperatives sharing a four-node Ray cluster on this machine.

It starts four raylets labelled us-west, eu-central (x2, one of them HIPAA-certified)
and ap-south, registers an executor on each for two cooperatives, applies the shipped
research-coop and timebank policies, submits jobs from several members and prints where
each job ran and why, which were refused and why, which waited and why, and what each
member was charged. Everything it starts, it stops.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from policies.loader import load_example
from scheduler.head_auth import DEV_MODE_LABEL
from scheduler.tables import table

REGIONS = [("us-west", {}), ("eu-central", {"hipaa-compliant": "1.2"}), ("eu-central", {}), ("ap-south", {})]


def genome_stats(n: int) -> dict[str, Any]:
    """A little real CPU work; reports where it ran."""
    import ray
    digest = b""
    for i in range(n):
        digest = hashlib.sha256(digest + i.to_bytes(4, "little")).digest()
    return {"node": ray.get_runtime_context().get_node_id(), "digest": digest.hex()[:8]}


def sleepy_sum(seconds: float, values: list[int]) -> int:
    time.sleep(seconds)
    return sum(values)


def run(out=sys.stdout) -> int:
    import ray
    from ray.cluster_utils import Cluster

    from scheduler.client import Client, shutdown
    from scheduler.job_handle import PolicyViolation

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.monotonic()
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    say("Coopsched demo: starting a 4-node Ray cluster on this machine ...")
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 2, "labels": {"region": REGIONS[0][0]}, "include_dashboard": False,
        "object_store_memory": 80 * 1024 * 1024})
    try:
        for region, _ in REGIONS[1:]:
            cluster.add_node(num_cpus=2, labels={"region": region}, object_store_memory=80 * 1024 * 1024)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="coopsched", log_to_driver=False)
        client = Client.local(store="memory://")  # development mode: the demo uses no keys
        if client.dev_mode:
            say(f"*** {DEV_MODE_LABEL} ***")
        nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerPort"])
        return _scenario(client, nodes, say, started, PolicyViolation)
    finally:
        try:
            shutdown()
        except Exception:
            pass
        ray.shutdown()
        cluster.shutdown()
        say(f"stopped the cluster ({time.monotonic() - started:.1f} s in all)")


def _scenario(client, nodes, say, started, PolicyViolation) -> int:
    biolab, timebank = load_example("research-coop"), load_example("timebank")
    client.set_policy(biolab)
    client.set_policy(timebank)
    region_of: dict[str, str] = {}
    labelled = {}
    for node in nodes:
        labelled.setdefault(node["Labels"]["region"], []).append(node)
    plan = [("us-west-1", "us-west", 0, timebank.coop_id, {}, 0.8, ["*"]),
            ("eu-central-1", "eu-central", 0, biolab.coop_id, {"hipaa-compliant": "1.2"}, 0.9, []),
            ("eu-central-2", "eu-central", 1, biolab.coop_id, {}, 0.7, [timebank.coop_id]),
            ("ap-south-1", "ap-south", 0, timebank.coop_id, {}, 0.6, [])]
    for executor_id, region, index, coop, caps, trust, open_to in plan:
        node = labelled[region][index]
        client.register_executor(executor_id, coop=coop, node_id=node["NodeID"], capabilities=caps, trust=trust,
                                 open_to=open_to, heartbeat_interval_s=1.0)
        region_of[executor_id] = region
    say(table(["executor", "coop", "region", "capabilities", "trust", "open to"],
              [(e, c, r, ", ".join(f"{k}={v}" for k, v in cap.items()), t, ", ".join(o))
               for e, r, _, c, cap, t, o in plan]))
    say("")
    say(f"policies: {biolab.coop_id} (strict: patient-data stays in eu-central, hipaa-compliant>=1.0, "
        f"per-task limits) and {timebank.coop_id} (strict: 10 CPU-h/member, 3 at once, normal priority max)")

    submissions = [
        ("did:icn:alice", biolab.coop_id, genome_stats, (200_000,), {"tags": ["patient-data"], "max_runtime_s": 120}),
        ("did:icn:bob", biolab.coop_id, genome_stats, (100_000,), {"max_runtime_s": 120}),
        ("did:icn:carol", biolab.coop_id, genome_stats, (10,), {"resources": {"cpus": 64}}),
        ("did:icn:dave", timebank.coop_id, sleepy_sum, (1.0, [1, 2]), {"max_runtime_s": 60}),
        ("did:icn:dave", timebank.coop_id, sleepy_sum, (1.0, [3, 4]), {"max_runtime_s": 60}),
        ("did:icn:dave", timebank.coop_id, sleepy_sum, (1.0, [5, 6]), {"max_runtime_s": 60}),
        ("did:icn:dave", timebank.coop_id, sleepy_sum, (0.5, [7, 8]), {"max_runtime_s": 60}),
        ("did:icn:erin", timebank.coop_id, sleepy_sum, (0.1, [1]), {"priority": "critical"}),
        ("did:icn:erin", timebank.coop_id, sleepy_sum, (0.1, [1]), {"resources": {"cpus": 2},
                                                                     "max_runtime_s": 6 * 3600}),
        ("did:icn:frank", timebank.coop_id, genome_stats, (50_000,), {"hints": {"regions": ["ap-south"]},
                                                                       "max_runtime_s": 60}),
    ]
    handles, refused = [], []
    for member, coop, fn, args, options in submissions:
        try:
            handles.append((member, coop, client.submit(fn, *args, coop=coop, member=member, **options)))
        except PolicyViolation as exc:
            refused.append((member, coop, exc.decision))
    for _, _, h in handles:
        try:
            h.result(timeout=60)
        except Exception as exc:  # shown in the table below
            say(f"job {h.id} ended with {type(exc).__name__}")
    _wait_settled(client, [h for _, _, h in handles])

    say("\nWHERE EACH JOB RAN, AND WHY (the placement score's largest features)")
    rows = []
    for member, coop, h in handles:
        s = h.status()
        placement = (h.explain() or {}).get("placement") or {}
        top = sorted(placement.get("breakdown", {}).items(), key=lambda kv: -kv[1])[:3]
        rows.append((h.id[:8], member, s.name, s.state.value, s.executor_id, region_of.get(s.executor_id or "", "-"),
                     ", ".join(f"{k} {v:.2f}" for k, v in top), f"{s.wall_seconds or 0:.2f}s"))
    say(table(["job", "member", "function", "state", "executor", "region", "why there", "ran"], rows))

    say("\nREFUSED, AND WHY")
    say(table(["member", "coop", "code", "rule", "reason"],
              [(m, c, d.code.value, d.reasons[0].source, d.reasons[0].message) for m, c, d in refused], max_width=110))

    say("\nWAITED, AND WHY")
    waited = []
    for member, _, h in handles:
        for event in h.status().history:
            if event.message.startswith("waiting"):
                waited.append((h.id[:8], member, event.message))
                break
    say(table(["job", "member", "reason it waited"], waited, max_width=110))

    say("\nUSAGE CHARGED THIS MONTH (CPU-hours = cores x wall time)")
    members = sorted({(c, m) for m, c, _ in handles})
    rows = []
    for coop, member in members:
        u = client.usage(coop, member)
        quota = u.quota.cpu_hours_per_month if u.quota else None
        rows.append((coop, member, u.tasks_completed, f"{u.cpu_hours * 3600:.2f} CPU-s", f"{u.credits:.4f}", quota))
    say(table(["coop", "member", "tasks", "cpu used", "credits", "cpu-h quota"], rows))
    ok = all(h.status().state.value == "succeeded" for _, _, h in handles) and len(refused) == 3
    say(f"\ndemo {'finished' if ok else 'FINISHED WITH SURPRISES'} in {time.monotonic() - started:.1f} s")
    if client.dev_mode:
        say(f"*** {DEV_MODE_LABEL} ***")
    return 0 if ok else 1


def _wait_settled(client, handles, limit_s: float = 15.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if all(h.status().state.finished for h in handles):
            return
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(run())
