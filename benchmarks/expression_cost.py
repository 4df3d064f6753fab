"""Expression rules' cost per submission, beside the same check as a Python rule and as a plug-in.

Run ``python benchmarks/expression_cost.py [--submissions N] [--json PATH]``.

One process, one run. The same admission check,

    task.cpus <= 8 && ("gpu" in task.tags || task.gpus == 0) && member != "mallory"

is written four ways and each is put, alone, in a strict policy of one ``SchedulerCore``
(4 simulated executors, generous quotas, a virtual clock):

* ``no rule``: the policy without it, the baseline;
* ``built-in Python rule``: a Python object with ``check(task, ctx)``, compiled into the
  policy as built-in rules are (``CompiledPolicy.of(policy, extra_rules=...)``);
* ``expression rule``: ``{"type": "expression", ...}`` (CEL, ``policies.expression``);
* ``plug-in rule``: the Python check as ``{"type": "plugin", ...}``, so each call crosses
  to the plug-in's thread under its time budget (``policies.plugins``);
* ``vDAG plug-in``: the same check as a vDAG ``eval`` (the adapter also dumps the task to JSON).

Each case times ``core.submit`` (``time.perf_counter_ns``, garbage collector off) over
the same N tasks (a fixed mix of sizes and tags, a third of them refused by the check)
after an untimed warm-up. The table shows p50 and p99 per submission and the p50 over
the Python rule's, which does the same work: the price of writing the check as CEL or
as a plug-in. (``no rule`` admits every task, and a refusal costs the core less than an
admission, so it is not the same work.) A second table times ``check`` alone, and the
compile cost of the expression. Figures swing by 2-3x with the machine's load: compare
rows of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executors.simulated import VirtualClock  # noqa: E402
from policies.expression import compile_expression  # noqa: E402
from policies.model import CoopPolicy  # noqa: E402
from policies.plugin_resolution import PLUGIN_MODULES_ENV, allowed_plugin_modules  # noqa: E402
from policies.reasons import Reason, rejected  # noqa: E402
from policies.rules import RateBuckets, RuleContext  # noqa: E402
from scheduler.admission import CompiledPolicy  # noqa: E402
from scheduler.core import SchedulerCore  # noqa: E402
from scheduler.executor_spec import ExecutorSpec  # noqa: E402
from scheduler.tasks import TaskSpec  # noqa: E402

EXPRESSION = 'task.cpus <= 8 && ("gpu" in task.tags || task.gpus == 0) && member != "mallory"'
MESSAGE = "at most 8 CPUs, GPU tasks tagged 'gpu', and not mallory"
START = 1_795_000_000.0
COOP = "bench"
# The plug-in variants name this module's checks by dotted path, which the core accepts only inside
# the packages the operator allows: this benchmark, as an operator, allows its own module.
os.environ[PLUGIN_MODULES_ENV] = ",".join(dict.fromkeys((*allowed_plugin_modules(), "benchmarks.expression_cost")))


class PythonCheck:
    """The expression, by hand (also the plug-in: ``benchmarks.expression_cost:PythonCheck``)."""

    label = "python"

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        ok = (task.resources.cpus <= 8 and ("gpu" in task.tags or task.resources.gpus == 0)
              and task.member != "mallory")
        return None if ok else rejected(self.label, MESSAGE)


class VdagCheck:
    """The same check in the vDAG shape."""

    def __init__(self, rule_id: str, settings: dict, parameters: dict) -> None:
        self.rule_id = rule_id

    def eval(self, parameters: dict, input_data: dict, context: dict) -> dict:
        r = input_data["resources"]
        ok = r["cpus"] <= 8 and ("gpu" in input_data["tags"] or r["gpus"] == 0) and input_data["member"] != "mallory"
        return {"allowed": True} if ok else {"allowed": False, "reason": MESSAGE}


def _policy(rules: list[dict]) -> CoopPolicy:
    return CoopPolicy(coop_id=COOP, rules=rules, default_quota={
        "cpu_hours_per_month": None, "gpu_hours_per_month": None, "max_concurrent_tasks": 1_000_000,
        "max_priority": "critical"})


CASES: dict[str, Callable[[], tuple[CoopPolicy, tuple]]] = {
    "no rule": lambda: (_policy([]), ()),
    "built-in Python rule": lambda: (_policy([]), (PythonCheck(),)),
    "expression rule": lambda: (_policy([{"type": "expression", "name": "expr", "expression": EXPRESSION,
                                          "message": MESSAGE}]), ()),
    "plug-in rule": lambda: (_policy([{"type": "plugin", "name": "plugin",
                                       "uri": "benchmarks.expression_cost:PythonCheck", "timeout_ms": 1000}]), ()),
    "vDAG plug-in": lambda: (_policy([{"type": "plugin", "name": "vdag", "uri": "benchmarks.expression_cost:VdagCheck",
                                       "timeout_ms": 1000}]), ()),
}


def tasks(n: int, seed: int = 7) -> list[TaskSpec]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gpus = rng.choice((0, 0, 0, 1))
        tags = rng.choice(((), ("gpu",), ("batch",), ("gpu", "batch")))
        member = rng.choice(("alice", "bob", "carol", "mallory")) if i % 10 == 0 else "alice"
        out.append(TaskSpec(task_id=f"b{i}", coop_id=COOP, member=member, tags=tags, max_runtime_s=600,
                            resources={"cpus": rng.choice((1, 2, 4, 8, 12)), "gpus": gpus}))
    return out


def _core(case: str) -> SchedulerCore:
    policy, extra = CASES[case]()
    core = SchedulerCore(clock=VirtualClock(START))
    core.set_policy(policy)
    if extra:
        core._policies[COOP] = CompiledPolicy.of(core.policy(COOP), extra_rules=extra)
    for i in range(4):
        core.register_executor(ExecutorSpec(executor_id=f"e{i}", coop_id=COOP, region="us-west",
                                            resources={"cpus": 64, "gpus": 4, "memory_mb": 0}))
    return core


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return ordered[len(ordered) // 2] / 1000.0, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000.0


def submission_cost(case: str, specs: list[TaskSpec], warmup: int) -> dict[str, Any]:
    core = _core(case)
    for spec in specs[:warmup]:
        core.submit(spec.model_copy(update={"task_id": "w" + spec.task_id}))
    samples, admitted = [], 0
    gc.disable()
    try:
        for spec in specs:
            began = time.perf_counter_ns()
            d = core.submit(spec)
            samples.append(time.perf_counter_ns() - began)
            admitted += d.admitted
    finally:
        gc.enable()
    p50, p99 = _percentiles(samples)
    return {"case": case, "p50_us": p50, "p99_us": p99, "mean_us": statistics.fmean(samples) / 1000.0,
            "admitted": admitted, "submissions": len(specs)}


def check_cost(specs: list[TaskSpec]) -> list[dict[str, Any]]:
    """``check`` alone, per call, for each way of writing it (what admission adds per rule)."""
    ctx = RuleContext(now=START, runtime_s=600.0, buckets=RateBuckets())
    checks = {"built-in Python rule": PythonCheck().check}
    for case in ("expression rule", "plug-in rule", "vDAG plug-in"):
        policy, _ = CASES[case]()
        rule = policy.rules[0]
        checks[case] = rule.bound().check if hasattr(rule, "bound") else rule.check
    rows = []
    for case, check in checks.items():
        for spec in specs[:200]:
            check(spec, ctx)
        samples = []
        gc.disable()
        try:
            for spec in specs:
                began = time.perf_counter_ns()
                check(spec, ctx)
                samples.append(time.perf_counter_ns() - began)
        finally:
            gc.enable()
        p50, p99 = _percentiles(samples)
        rows.append({"case": case, "p50_us": p50, "p99_us": p99})
    return rows


def compile_cost(repeats: int = 200) -> tuple[float, float]:
    samples = []
    for i in range(repeats):
        source = f"{EXPRESSION} && task.cpus != {i + 1000}.5"  # distinct strings: no cache hits
        began = time.perf_counter_ns()
        compile_expression(source)
        samples.append(time.perf_counter_ns() - began)
    return _percentiles(samples)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20_000, help="timed submissions per case")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    specs = tasks(args.submissions)
    compile_expression(EXPRESSION)  # the import of the CEL package is not a submission's cost
    rows = [submission_cost(case, specs, warmup=min(500, args.submissions)) for case in CASES]
    base = rows[1]["p50_us"]
    print(f"Per submission (SchedulerCore.submit), {args.submissions} submissions per case, "
          f"Python {platform.python_version()}, {platform.machine()}")
    print(f"{'case':<22} {'p50 us':>8} {'p99 us':>8} {'p50 - Python rule':>18} {'admitted':>9}")
    for r in rows:
        print(f"{r['case']:<22} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['p50_us'] - base:>+18.1f} "
              f"{r['admitted']:>9}")
    checks = check_cost(specs)
    print("\ncheck(task, ctx) alone")
    print(f"{'case':<22} {'p50 us':>8} {'p99 us':>8}")
    for r in checks:
        print(f"{r['case']:<22} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f}")
    c50, c99 = compile_cost()
    print(f"\ncompiling the expression (once per distinct expression): p50 {c50:.0f} us, p99 {c99:.0f} us")
    if args.json:
        args.json.write_text(json.dumps({"submission": rows, "check": checks,
                                         "compile_us": {"p50": c50, "p99": c99}}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
