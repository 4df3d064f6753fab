"""The workload of ``benchmarks/placement_latency.py``: the fleet, the policies and the tasks.

The fleet is shaped like a real GPU cluster (Alibaba's openb trace: its share of CPU-only
nodes, GPUs per node and GPU models), spread over six regions and four cooperatives; the
two policies carry all seven built-in rule types; the tasks mix CPU and GPU jobs, tagged
data, capabilities and locality hints, like a research coop's. Everything is drawn from a
seeded ``random.Random``, so a run is repeatable.
"""

from __future__ import annotations

import random

from policies.model import CoopPolicy, MemberQuota, ScoringWeights
from policies.rules import (DataSovereignty, ExecutorFilter, MemberPriority, RateLimit, RequireCapability,
                            TaskLimits, TimeWindow)
from scheduler.executor_spec import ExecutorSpec
from scheduler.tasks import Hints, Resources, TaskSpec

SEED = 20261118

# Alibaba openb (1,523 nodes): 310 without GPUs, then 24 / 518 / 54 / 617 nodes with 1 / 2 / 4 / 8 GPUs.
CPU_ONLY_SHARE = 0.20
GPU_COUNTS = ((1, 24), (2, 518), (4, 54), (8, 617))
# GPU models by node count; memory per GPU in MB (G2 and G3 are not public parts: 16 and 24 GB assumed).
GPU_MODELS = (("G2", 549, 16384), ("T4", 404, 16384), ("P100", 134, 16384), ("V100-16", 43, 16384),
              ("V100-32", 42, 32768), ("G3", 39, 24576), ("A10", 2, 24576))
REGIONS = (("us-west", 25), ("us-east", 20), ("eu-central", 20), ("eu-west", 10), ("ap-south", 15),
           ("ap-northeast", 10))
OWNERS = ("research:biolab", "timebank:seattle", "housing:greenfield", "mutual-aid:oakland")
POLICY_COOPS = ("research:biolab", "timebank:seattle")
MEMBERS = tuple(f"did:icn:member-{i:02d}" for i in range(11)) + ("did:icn:alice",)
DATASETS = tuple(f"dataset:{name}" for name in ("genomes-2026", "imaging-ct", "climate-era5", "lidar-city",
                                                "speech-corpus", "protein-folds", "census-eu", "traffic-2025"))


def _weighted(rng: random.Random, table):
    return rng.choices([t[0] for t in table], weights=[t[1] for t in table])[0]


def build_fleet(n: int, seed: int = SEED) -> list[ExecutorSpec]:
    """``n`` executors shaped like the openb fleet; the same ``seed`` gives the same fleet."""
    rng = random.Random(seed * 1_000_003 + n)
    specs = []
    for i in range(n):
        gpus = 0 if rng.random() < CPU_ONLY_SHARE else _weighted(rng, GPU_COUNTS)
        if rng.random() < 0.7:
            cpus, mem_gib = rng.choice((96, 104)), rng.choice((384, 448, 512))
        else:
            cpus, mem_gib = rng.choice((16, 24, 32, 48, 64, 80, 96, 104)), rng.choice((120, 192, 256, 384, 768))
        gmem, labels = 0, {}
        if gpus:
            model = rng.choices(GPU_MODELS, weights=[m[1] for m in GPU_MODELS])[0]
            gmem, labels = gpus * model[2], {"gpu_model": model[0]}
        region = _weighted(rng, REGIONS)
        caps: dict[str, str] = {}
        if rng.random() < 0.30:
            caps["hipaa-compliant"] = "0.9" if rng.random() < 0.1 else f"1.{rng.randrange(4)}"
        if rng.random() < 0.25:
            caps["secure-execution"] = f"1.{rng.randrange(10)}" if rng.random() < 0.2 else f"2.{rng.randrange(3)}"
        if rng.random() < (0.6 if region.startswith("eu-") else 0.1):
            caps["gdpr-compliant"] = "1.0"
        if gpus:
            caps["cuda"] = rng.choice(("11.8", "12.0", "12.2", "12.4"))
        owner = rng.choice(OWNERS)
        u = rng.random()
        open_to = ("*",) if u < 0.65 else tuple(c for c in OWNERS if c != owner)[:2] if u < 0.85 else ()
        specs.append(ExecutorSpec(
            executor_id=f"exec-{i:06d}", coop_id=owner, region=region, capabilities=caps,
            trust=round(rng.uniform(0.3, 1.0), 4), rtt_ms=round(rng.uniform(1.0, 120.0), 2),
            resources=Resources(cpus=cpus, gpus=gpus, memory_mb=mem_gib * 1024, gpu_memory_mb=gmem),
            price_cpu_hour=round(rng.uniform(0.5, 2.0), 3), price_gpu_hour=round(rng.uniform(5.0, 20.0), 2),
            labels=labels, open_to=open_to))
    return specs


def build_policies(specs: list[ExecutorSpec], seed: int = SEED) -> list[CoopPolicy]:
    """Two strict coop policies with all seven rule types; quotas and rate limits that never bite."""
    rng = random.Random(seed + 7)
    blacklist = tuple(sorted(s.executor_id for s in rng.sample(specs, max(1, len(specs) // 100))))
    rules = (
        DataSovereignty(name="gdpr", region="eu-central", tags=("patient-data",)),
        DataSovereignty(name="eu-only", region=("eu-central", "eu-west"), tags=("eu-data",)),
        TimeWindow(name="weekday-daytime", allowed_hours=tuple(range(6, 22)), allowed_days=(1, 2, 3, 4, 5),
                   priorities=("low", "normal"), action="reject"),
        MemberPriority(name="alice-first", member="did:icn:alice", multiplier=2.0),
        RequireCapability(name="hipaa", capability="hipaa-compliant", min_version="1.0", tags=("patient-data",)),
        RequireCapability(name="secure", capability="secure-execution", min_version="2.0", tags=("secure",)),
        ExecutorFilter(name="blocklist", blacklist=blacklist),
        RateLimit(name="submissions", rate=1e6, burst=1_000_000),
        TaskLimits(name="per-task", max_cpus=64, max_gpus=8, max_memory_mb=512 * 1024, max_runtime_s=86400),
    )
    quota = MemberQuota(cpu_hours_per_month=1e9, gpu_hours_per_month=1e9, credits_per_month=1e12,
                        max_concurrent_tasks=1_000_000, max_priority="high", default_max_runtime_s=3600)
    return [
        CoopPolicy(coop_id="research:biolab", rules=rules, default_quota=quota, enforcement_mode="strict"),
        CoopPolicy(coop_id="timebank:seattle", rules=rules, default_quota=quota, enforcement_mode="strict",
                   scoring_weights=ScoringWeights(trust=0.35, capacity=0.25, queue=0.10, rtt=0.10, data=0.10,
                                                  hints=0.10)),
    ]


def build_tasks(count: int, specs: list[ExecutorSpec], seed: int, prefix: str) -> list[TaskSpec]:
    """A mix like a research coop's: CPU jobs, GPU jobs (1-8 GPUs), tagged data, capabilities, hints."""
    rng = random.Random(seed)
    regions = [r for r, _ in REGIONS]
    tasks = []
    for i in range(count):
        if rng.random() < 0.55:
            res = Resources(cpus=rng.choice((1, 2, 4, 8, 16)), memory_mb=rng.choice((1, 4, 8, 16, 32, 64)) * 1024)
        else:
            gpus = rng.choices((1, 2, 4, 8), weights=(50, 30, 15, 5))[0]
            res = Resources(cpus=min(64, gpus * rng.choice((2, 4, 8))), gpus=gpus,
                            memory_mb=gpus * rng.choice((8, 16, 32)) * 1024,
                            gpu_memory_mb=gpus * 8192 if rng.random() < 0.5 else 0)
        u = rng.random()
        tags = (("patient-data",) if u < 0.12 else ("patient-data", "eu-data") if u < 0.17 else
                ("eu-data",) if u < 0.22 else ("secure",) if u < 0.32 else ("batch",))
        caps: dict[str, str | None] = {}
        if rng.random() < 0.08:
            caps["gdpr-compliant"] = None
        if res.gpus and rng.random() < 0.2:
            caps["cuda"] = "12.0"
        u = rng.random()
        hints = (Hints(regions=(rng.choice(regions),)) if u < 0.08 else
                 Hints(executors=tuple(s.executor_id for s in rng.sample(specs, min(2, len(specs))))) if u < 0.12
                 else Hints(data=(rng.choice(DATASETS),)) if u < 0.17 else Hints())
        tasks.append(TaskSpec(
            task_id=f"{prefix}-{i:06d}", coop_id=rng.choices(POLICY_COOPS, weights=(60, 40))[0],
            member=rng.choice(MEMBERS), resources=res, tags=tags, capabilities=caps, hints=hints,
            priority=rng.choices(("low", "normal", "high"), weights=(20, 65, 15))[0],
            max_runtime_s=rng.choice((600.0, 1800.0, 3600.0, 7200.0))))
    return tasks


def build_datasets(specs: list[ExecutorSpec], seed: int) -> dict[str, dict[str, int]]:
    rng = random.Random(seed + 11)
    return {key: {s.node_id or s.executor_id: rng.randrange(1, 50) * 2**30
                  for s in rng.sample(specs, min(len(specs), rng.randint(1, 3)))} for key in DATASETS}
