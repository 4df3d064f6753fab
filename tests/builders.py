"""Small builders for table-driven tests: ``make_task(cpus=2, tags=["gdpr"])`` and friends."""

from __future__ import annotations

import itertools
from typing import Any

from executors.simulated import Simulation, VirtualClock
from policies.model import CoopPolicy
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorSpec
from scheduler.tasks import TaskSpec

START = 1_795_000_000.0  # Wed 2026-11-18 11:06:40 UTC
_ids = itertools.count(1)


def make_task(coop: str = "coop", member: str = "alice", cpus: float = 1, gpus: float = 0, memory_mb: int = 0,
              priority: str = "normal", tags: tuple[str, ...] | list[str] = (), runtime: float | None = 600,
              **kw: Any) -> TaskSpec:
    kw.setdefault("task_id", f"t{next(_ids)}")
    return TaskSpec(coop_id=coop, member=member, priority=priority, tags=tuple(tags), max_runtime_s=runtime,
                    resources={"cpus": cpus, "gpus": gpus, "memory_mb": memory_mb}, **kw)


def make_executor(executor_id: str, coop: str = "coop", region: str = "us-west", cpus: float = 8, gpus: float = 0,
                  memory_mb: int = 0, caps: dict[str, str] | None = None, trust: float = 0.5, **kw: Any) -> ExecutorSpec:
    return ExecutorSpec(executor_id=executor_id, coop_id=coop, region=region, trust=trust,
                        capabilities=caps or {}, resources={"cpus": cpus, "gpus": gpus, "memory_mb": memory_mb},
                        **kw)


def make_policy(coop: str = "coop", rules: list[dict] | tuple = (), mode: str = "strict",
                members: dict[str, dict] | None = None, **quota: Any) -> CoopPolicy:
    default = {"cpu_hours_per_month": 100.0, "gpu_hours_per_month": 100.0, "max_concurrent_tasks": 100,
               "max_priority": "critical"}
    default.update(quota)
    return CoopPolicy(coop_id=coop, rules=list(rules), enforcement_mode=mode, default_quota=default,
                      member_quotas=members or {})


def make_core(policy: CoopPolicy | None = None, executors: list[ExecutorSpec] = (), start: float = START
              ) -> tuple[SchedulerCore, VirtualClock]:
    clock = VirtualClock(start)
    core = SchedulerCore(clock=clock)
    if policy is not None:
        core.set_policy(policy)
    for e in executors:
        core.register_executor(e)
    return core, clock


def make_sim(policy: CoopPolicy | None = None, executors: list[ExecutorSpec] = (), start: float = START) -> Simulation:
    core, clock = make_core(policy, executors, start)
    return Simulation(core=core, clock=clock)
