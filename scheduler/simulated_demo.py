"""``coopsched demo --simulated``: the decision core alone, on simulated executors, in virtual time.

No Ray: a 40-executor fleet in four regions, the shipped research-coop and timebank
policies, a day of submissions from six members; prints outcomes per member, the first
placements with their score breakdown, and what was refused and why.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter

from executors.simulated import Simulation
from policies.loader import load_example
from scheduler.tables import table

REGIONS = ("us-west", "eu-central", "eu-central", "ap-south")


def run(out=sys.stdout, seed: int = 7) -> int:
    started = time.perf_counter()
    rng = random.Random(seed)
    sim = Simulation()
    biolab, timebank = load_example("research-coop"), load_example("timebank")
    sim.core.set_policy(biolab)
    sim.core.set_policy(timebank)
    for i in range(40):
        coop = biolab.coop_id if i % 2 else timebank.coop_id
        caps = {"hipaa-compliant": "1.2"} if coop == biolab.coop_id and i % 3 else {}
        sim.add_executor({"executor_id": f"node-{i:02d}", "coop_id": coop, "region": REGIONS[i % 4],
                          "capabilities": caps, "trust": round(rng.uniform(0.3, 1.0), 2),
                          "resources": {"cpus": rng.choice([4, 8, 16]), "gpus": rng.choice([0, 0, 1])},
                          "rtt_ms": rng.uniform(1, 120)})
    members = [(biolab.coop_id, "did:icn:alice", ["patient-data"]), (biolab.coop_id, "did:icn:bob", []),
               (timebank.coop_id, "did:icn:dave", []), (timebank.coop_id, "did:icn:erin", []),
               (timebank.coop_id, "did:icn:frank", []), (biolab.coop_id, "did:icn:carol", ["clinical-trial"])]
    refused = []
    for hour in range(24):
        for coop, member, tags in members:
            for _ in range(rng.randint(1, 4)):
                task = {"coop_id": coop, "member": member, "tags": tags, "max_runtime_s": 3600,
                        "resources": {"cpus": rng.choice([1, 2, 4, 64 if rng.random() < 0.03 else 2])},
                        "priority": "high" if rng.random() < 0.05 else "normal"}
                d = sim.submit(task, duration_s=rng.uniform(300, 3000))
                if not d.admitted:
                    refused.append((member, d.reasons[0].source, d.reasons[0].message))
        sim.run(until=sim.clock() + 3600)
    sim.run()
    say = lambda *a: print(*a, file=out)  # noqa: E731
    say("Coopsched core on 40 simulated executors, one virtual day, two example policies\n")
    rows = []
    for coop, member, _ in members:
        jobs = sim.core.jobs(coop, member)
        states = Counter(j.state.value for j in jobs)
        u = sim.core.usage(coop, member)
        rows.append((coop, member, len(jobs), states["succeeded"], states["rejected"], f"{u.cpu_hours:.1f}",
                     u.quota.cpu_hours_per_month if u.quota else None, f"{u.credits:.1f}"))
    say(table(["coop", "member", "submitted", "ran", "refused", "cpu-h", "cpu-h quota", "credits"], rows))
    say("\nFIRST PLACEMENTS, WITH THE SCORE'S LARGEST FEATURES")
    say(table(["task", "member", "executor", "region", "score", "why"],
              [(p.task_id[:8], p.task.member, p.executor_id, sim.core.table.spec(p.executor_id).region, p.score,
                ", ".join(f"{k} {v:.2f}" for k, v in sorted(p.breakdown.items(), key=lambda kv: -kv[1])[:3]))
               for p in sim.placements[:6]]))
    say("\nREFUSED (first of each kind)")
    seen, rows = set(), []
    for member, source, message in refused:
        if source not in seen:
            seen.add(source)
            rows.append((member, source, message))
    say(table(["member", "rule", "reason"], rows, max_width=120))
    say(f"\n{len(sim.placements)} placements, {len(refused)} refusals in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run())
