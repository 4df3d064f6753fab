"""Placement latency: how long the core takes to admit and place one task, beside a plain reference.

Run ``python benchmarks/placement_latency.py [--quick] [--json PATH] [--profile]``.

One process, one run, on fleets of 100 to 100,000 simulated executors shaped like
Alibaba's openb GPU cluster (see ``/work/shared/traces/README.md``), built from a fixed
seed, under two coop policies with all seven rule types active and quotas that never
reject. It measures, with ``time.perf_counter_ns``, a warm-up and the garbage
collector off inside timed loops:

1. per fleet size, admission + placement of one task (``core.submit(task)`` then
   ``core.schedule()`` with that single task queued; the task is completed afterwards,
   untimed, so the fleet stays in steady state); then the same decisions paired with
   ``benchmarks.reference`` (core timed first, then the reference on its own mirrored
   state), every paired decision checked for agreement;
2. policy evaluation alone (``scheduler.admission.evaluate``) against the reference's
   admission checks;
3. a backlog of queued tasks placed by ``core.schedule()`` in rounds, against the
   reference replaying a sample of the same placements.

Tasks reach the core as ``TaskSpec`` objects (validated by the client before they
travel), so the timings do not include parsing JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.reference import RefChoice, ReferenceScheduler  # noqa: E402
from executors.simulated import VirtualClock  # noqa: E402
from policies.model import CoopPolicy  # noqa: E402
from policies.rules import RateBuckets  # noqa: E402
from scheduler.admission import CompiledPolicy, evaluate  # noqa: E402
from scheduler.core import SchedulerCore  # noqa: E402
from scheduler.executor_spec import ExecutorSpec  # noqa: E402
from scheduler.tasks import TaskSpec  # noqa: E402
from scheduler.usage import UsageReport  # noqa: E402
from benchmarks.common import steady_work, write_results  # noqa: E402
from benchmarks.placement_report import format_table, targets  # noqa: E402
from benchmarks.placement_workload import (SEED, build_datasets, build_fleet, build_policies,  # noqa: E402
                                           build_tasks)

TIE_TOLERANCE = 1e-9
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "placement_latency.json"

# ----------------------------------------------------------------------------- a core and its mirror
@dataclass
class Bench:
    """A core on a virtual clock and a reference scheduler holding the same state."""

    core: SchedulerCore
    clock: VirtualClock
    ref: ReferenceScheduler
    specs: list[ExecutorSpec]
    policies: list[CoopPolicy]
    fit_cache: dict = field(default_factory=dict)


def make_bench(n: int, seed: int = SEED, load_tasks: int | None = None,
               policies: list[CoopPolicy] | None = None) -> Bench:
    """Register ``n`` executors in a core and the reference, then load the fleet with running tasks."""
    specs = build_fleet(n, seed)
    policies = policies if policies is not None else build_policies(specs, seed)
    data = build_datasets(specs, seed)
    clock = VirtualClock()
    core = SchedulerCore(clock=clock, executor_capacity=n)
    ref = ReferenceScheduler(policies, data)
    for p in policies:
        core.set_policy(p)
    for key, copies in data.items():
        for node, size in copies.items():
            core.data_locator.register(key, node, size)  # type: ignore[attr-defined]
    for s in specs:
        core.register_executor(s)
        ref.add_executor(s)
    rng = random.Random(seed + n)
    for s in rng.sample(specs, max(1, n // 100)):
        core.drain(s.executor_id)
        ref.drain(s.executor_id)
    for s in rng.sample(specs, max(1, n // 10)):  # heartbeats reporting a local queue
        depth = rng.randint(1, 5)
        core.update_executor({"executor_id": s.executor_id, "queue_depth": depth})
        ref.heartbeat(s.executor_id, depth)
    bench = Bench(core, clock, ref, specs, policies)
    load = min(n // 2, 2000) if load_tasks is None else load_tasks  # tasks left running on the fleet
    if load:
        background = build_tasks(load, specs, seed + 3, f"bg{n}")
        for t in background:
            core.submit(t)
            mirror_admission(bench, t)
        for p in core.schedule():
            bench.ref.place(p.task, bench.ref.find(p.executor_id))
        for t in background:  # what does not fit now leaves the queue
            if t.task_id in core.queue:
                core.cancel(t.task_id)
                ref.release(t.task_id)
    assert len(core.queue) == 0
    return bench


def mirror_admission(bench: Bench, task: TaskSpec) -> None:
    """Record in the reference what the core decided at admission (cost from the core's ledger)."""
    reservation = bench.core.ledger.reservation(task.task_id)
    if reservation is not None:
        c = reservation.cost
        bench.ref.admit(task, (c.cpu, c.gpu, c.credits), bench.clock())


def finish(bench: Bench, task: TaskSpec, executor_id: str | None) -> None:
    """Complete a placed task in both (or cancel a queued one), so the fleet returns to steady state."""
    core, ref = bench.core, bench.ref
    if executor_id is None:
        if task.task_id in core.queue:
            core.cancel(task.task_id)
            ref.release(task.task_id)
        return
    now = bench.clock()
    wall = (task.max_runtime_s or 3600.0) * 0.5
    report = UsageReport(task_id=task.task_id, executor_id=executor_id, coop_id=task.coop_id, member=task.member,
                         started_at=now, ended_at=now + wall, cpu_seconds=task.resources.cpus * wall,
                         gpu_seconds=task.resources.gpus * wall)
    core.complete(report)
    ref.complete(task, report.cpu_seconds, report.gpu_seconds, report.ended_at)


# ----------------------------------------------------------------------------- agreement
@dataclass
class Agreement:
    compared: int = 0
    same_executor: int = 0
    both_refused: int = 0
    both_unplaced: int = 0  # admitted by both, placed by neither (deferred, at a limit, or nothing free)
    ties: int = 0
    mismatches: list[dict] = field(default_factory=list)

    @property
    def agreed(self) -> int:
        return self.same_executor + self.both_refused + self.both_unplaced + self.ties

    def as_dict(self) -> dict:
        return {"compared": self.compared, "agreed": self.agreed, "same_executor": self.same_executor,
                "ties": self.ties, "both_refused": self.both_refused, "both_unplaced": self.both_unplaced,
                "mismatches": len(self.mismatches),
                "first_mismatches": self.mismatches[:5]}


def reconcile(bench: Bench, task: TaskSpec, core_admitted: bool, core_executor: str | None,
              choice: RefChoice, agreement: Agreement) -> None:
    """Check the reference against the core for one decision, then make the reference hold the core's outcome.

    Agreement: both refuse; or both admit and place it on the same executor; or both admit it
    and leave it unplaced; or the executors differ but the reference scores them equal within
    1e-9 (a tie).
    """
    ref = bench.ref
    agreement.compared += 1
    ref_admitted = choice.admission.admitted
    if choice.placed:  # judge the choice on the state before it
        ref.unplace(task)
    if ref_admitted != core_admitted:
        agreement.mismatches.append({"task": task.task_id, "core_admitted": core_admitted,
                                     "ref_admitted": ref_admitted, "ref_violations": choice.admission.violations})
        if ref_admitted:
            ref.release(task.task_id)
        else:
            mirror_admission(bench, task)
    elif not core_admitted:
        agreement.both_refused += 1
    elif core_executor is None and choice.executor_id is None:
        agreement.both_unplaced += 1
    elif core_executor == choice.executor_id:
        agreement.same_executor += 1
    elif core_executor is not None and choice.index is not None:
        theirs = ref.score_of(task, ref.find(core_executor))
        if abs(theirs - choice.score) <= TIE_TOLERANCE:  # type: ignore[operator]
            agreement.ties += 1
        else:
            agreement.mismatches.append({"task": task.task_id, "core": core_executor, "core_score_by_ref": theirs,
                                         "ref": choice.executor_id, "ref_score": choice.score})
    else:
        agreement.mismatches.append({"task": task.task_id, "core": core_executor, "ref": choice.executor_id})
    if core_executor is not None:
        ref.place(task, ref.find(core_executor))


def core_decision(bench: Bench, task: TaskSpec) -> tuple[bool, str | None, int, int]:
    """One timed core decision: submit, then schedule the single queued task. Returns (admitted,
    executor or None, submit ns, schedule ns)."""
    core = bench.core
    t0 = time.perf_counter_ns()
    decision = core.submit(task)
    t1 = time.perf_counter_ns()
    placed = core.schedule()
    t2 = time.perf_counter_ns()
    executor = None
    for p in placed:
        if p.task_id == task.task_id:
            executor = p.executor_id
    return decision.admitted, executor, t1 - t0, t2 - t1


def reference_decision(bench: Bench, task: TaskSpec) -> tuple[RefChoice, int, int]:
    """One timed reference decision on its own state: admission checks, then filter, score, pick and
    record. Returns (choice, admission ns, placement ns)."""
    ref, now = bench.ref, bench.clock()
    t0 = time.perf_counter_ns()
    adm = ref.check_submission(task, now)
    t1 = time.perf_counter_ns()
    choice = ref.decide_placement(task, adm, now)
    ref.commit(task, choice, now)
    t2 = time.perf_counter_ns()
    return choice, t1 - t0, t2 - t1


def agreement_run(n: int, decisions: int, seed: int = SEED, policies: list[CoopPolicy] | None = None,
                  load_tasks: int | None = None) -> Agreement:
    """Untimed: ``decisions`` tasks decided by the core and by the reference, each checked (for tests)."""
    bench = make_bench(n, seed, load_tasks=load_tasks, policies=policies)
    agreement = Agreement()
    for t in build_tasks(decisions, bench.specs, seed + 1, f"a{n}"):
        bench.clock.advance(0.001)
        admitted, executor, _, _ = core_decision(bench, t)
        choice, _, _ = reference_decision(bench, t)
        reconcile(bench, t, admitted, executor, choice, agreement)
        finish(bench, t, executor)
    return agreement


# ----------------------------------------------------------------------------- measurements
def stats_us(samples_ns: list[int]) -> dict:
    if not samples_ns:
        return {"samples": 0, "p50_us": None, "p99_us": None, "mean_us": None, "max_us": None}
    a = np.asarray(samples_ns, dtype=float) / 1e3
    return {"samples": int(a.size), "p50_us": round(float(np.percentile(a, 50)), 2),
            "p99_us": round(float(np.percentile(a, 99)), 2), "mean_us": round(float(a.mean()), 2),
            "max_us": round(float(a.max()), 2)}


class _NoGC:
    def __enter__(self):
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        gc.enable()


def measure_decisions(bench: Bench, core_samples: int, paired_samples: int, warmup: int, seed: int,
                      profile: int = 0) -> dict:
    """Steady-state admission + placement latency, core alone and paired with the reference."""
    n = len(bench.specs)
    total = warmup + core_samples + paired_samples + profile
    tasks = build_tasks(total, bench.specs, seed, f"d{n}")
    clock = bench.clock
    warm, core_only = tasks[:warmup], tasks[warmup:warmup + core_samples]
    paired = tasks[warmup + core_samples:warmup + core_samples + paired_samples]
    profiled = tasks[warmup + core_samples + paired_samples:]

    outcomes = {"placed": 0, "admitted, no free executor": 0, "refused": 0}

    def core_step(task: TaskSpec) -> tuple[int, int, int]:
        clock.advance(0.001)
        c0 = time.thread_time_ns()
        admitted, executor, submit_ns, schedule_ns = core_decision(bench, task)
        cpu_ns = time.thread_time_ns() - c0
        outcomes["placed" if executor else "admitted, no free executor" if admitted else "refused"] += 1
        if admitted:
            mirror_admission(bench, task)
            if executor is not None:
                bench.ref.place(task, bench.ref.find(executor))
        finish(bench, task, executor)
        return submit_ns, schedule_ns, cpu_ns

    for t in warm:
        core_step(t)
    for t in warm[:3]:  # the reference's code paths, once
        bench.ref.decide(t, clock())
    core_ns: list[int] = []
    submit_ns: list[int] = []
    schedule_ns: list[int] = []
    cpu_ns: list[int] = []
    steady_ns: list[int] = []
    clock_ns = time.perf_counter_ns
    for _ in range(50):
        steady_work()
    with _NoGC():
        for t in core_only:
            a, b, c = core_step(t)
            submit_ns.append(a)
            schedule_ns.append(b)
            core_ns.append(a + b)
            cpu_ns.append(c)
            s0 = clock_ns()
            steady_work()
            steady_ns.append(clock_ns() - s0)

    agreement = Agreement()
    paired_core_ns: list[int] = []
    ref_ns: list[int] = []
    ref_adm_ns: list[int] = []
    ref_place_ns: list[int] = []
    with _NoGC():
        for t in paired:
            clock.advance(0.001)
            admitted, executor, a, b = core_decision(bench, t)
            paired_core_ns.append(a + b)
            choice, ra, rb = reference_decision(bench, t)
            ref_ns.append(ra + rb)
            ref_adm_ns.append(ra)
            ref_place_ns.append(rb)
            reconcile(bench, t, admitted, executor, choice, agreement)
            finish(bench, t, executor)

    out = {"executors": n, "core": stats_us(core_ns), "core_cpu_time": stats_us(cpu_ns),
           "steady_work": stats_us(steady_ns),
           "core_submit": stats_us(submit_ns),
           "core_schedule": stats_us(schedule_ns), "core_paired": stats_us(paired_core_ns),
           "reference": stats_us(ref_ns), "reference_admission": stats_us(ref_adm_ns),
           "reference_placement": stats_us(ref_place_ns), "agreement": agreement.as_dict(),
           "outcomes": outcomes, "loaded_running_tasks": sum(len(bench.core.running_on(s.executor_id))
                                                             for s in bench.specs)}
    cp, rp = out["core_paired"]["p50_us"], out["reference"]["p50_us"]
    out["ratio_p50"] = round(rp / cp, 1) if cp and rp else None
    cs, rs = out["core_schedule"]["p50_us"], out["reference_placement"]["p50_us"]
    out["ratio_placement_p50"] = round(rs / cs, 1) if cs and rs else None
    if profiled:  # only core.submit + core.schedule run under the profiler
        prof = cProfile.Profile()
        with _NoGC():
            for t in profiled:
                clock.advance(0.001)
                prof.enable()
                decision = bench.core.submit(t)
                placed = bench.core.schedule()
                prof.disable()
                executor = placed[0].executor_id if placed else None
                if decision.admitted:
                    mirror_admission(bench, t)
                    if executor is not None:
                        bench.ref.place(t, bench.ref.find(executor))
                finish(bench, t, executor)
        out["profile"] = profile_table(prof, len(profiled))
    return out


def measure_policy_eval(bench: Bench, samples: int, ref_samples: int, full_ref_samples: int, seed: int) -> dict:
    """``scheduler.admission.evaluate`` alone, against the reference's admission checks on the same tasks.

    Each task is evaluated twice by the core: as submitted (the core's caches as they stand)
    and straight again (its static fit surely cached). The reference is timed with its
    static-fit scan (per call, the plain way) and with that scan cached (rules + quota only).
    """
    n = len(bench.specs)
    tasks = build_tasks(samples + 50, bench.specs, seed, f"e{n}")
    compiled = {p.coop_id: CompiledPolicy.of(p) for p in bench.policies}
    core, ref = bench.core, bench.ref
    now = bench.clock()
    buckets = RateBuckets()
    for t in tasks[:50]:  # warm-up
        evaluate(t, compiled[t.coop_id], core.ledger, core.table, buckets, now)
        evaluate(t, compiled[t.coop_id], core.ledger, core.table, buckets, now)
    timed = tasks[50:]
    core_ns, cpu_ns, again_ns, verdicts = [], [], [], []
    with _NoGC():
        for t in timed:
            policy = compiled[t.coop_id]
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            v = evaluate(t, policy, core.ledger, core.table, buckets, now)
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            evaluate(t, policy, core.ledger, core.table, buckets, now)
            t2 = time.perf_counter_ns()
            core_ns.append(t1 - t0)
            cpu_ns.append(c1 - c0)
            again_ns.append(t2 - t1)
            verdicts.append(v)
    full_ns, cached_ns, agree = [], [], 0
    with _NoGC():
        for t in timed[:full_ref_samples]:
            t0 = time.perf_counter_ns()
            ref.check_submission(t, now, None)
            full_ns.append(time.perf_counter_ns() - t0)
    for t in timed[:ref_samples]:  # fill the reference's cache (a fleet scan per new requirement), untimed
        ref.check_submission(t, now, bench.fit_cache)
    with _NoGC():
        for t, v in zip(timed[:ref_samples], verdicts):
            t0 = time.perf_counter_ns()
            a = ref.check_submission(t, now, bench.fit_cache)
            cached_ns.append(time.perf_counter_ns() - t0)
            agree += same_verdict(v, a)
    return {"executors": n, "core": stats_us(core_ns), "core_cpu_time": stats_us(cpu_ns),
            "core_static_fit_cached": stats_us(again_ns),
            "reference_rules_quota": stats_us(cached_ns), "reference_with_fleet_scan": stats_us(full_ns),
            "agreement": {"compared": len(cached_ns), "agreed": agree},
            "admitted": sum(v.admitted for v in verdicts), "tasks": len(verdicts)}


def same_verdict(v, a) -> bool:
    """The core's ``Verdict`` and the reference's ``RefAdmission`` say the same thing."""
    return (v.admitted == a.admitted and abs(v.effective_priority - a.effective_priority) < 1e-12
            and (v.cost.cpu, v.cost.gpu, v.cost.credits) == a.cost and v.not_before == a.not_before
            and sorted(r.source for r in v.violations) == sorted(a.violations)
            and sorted(r.source for r in v.hard) == sorted(a.hard))


def measure_backlog(n_executors: int, n_tasks: int, ref_samples: int, seed: int) -> dict:
    """``n_tasks`` queued at once on ``n_executors``: placements per second of ``core.schedule()``."""
    bench = make_bench(n_executors, seed, load_tasks=0)
    core, ref, clock = bench.core, bench.ref, bench.clock
    tasks = build_tasks(n_tasks, bench.specs, seed + 5, f"q{n_executors}")
    reqs = {}
    for t in tasks:  # submissions are not timed here; the reference admits them too (its requirements)
        core.submit(t)
        mirror_admission(bench, t)
        reqs[t.task_id] = ref.requirements(t, clock())
    queued = len(core.queue)
    every = max(1, queued // max(1, ref_samples))
    sched_ns, placed_total, rounds = 0, 0, 0
    ref_ns: list[int] = []
    agreement = Agreement()
    k = 0
    with _NoGC():
        while len(core.queue) and rounds < 50:
            rounds += 1
            clock.advance(1.0)
            t0 = time.perf_counter_ns()
            placements = core.schedule()
            sched_ns += time.perf_counter_ns() - t0
            placed_total += len(placements)
            if not placements:
                break
            for p in placements:  # replay in the core's order on the reference's mirror
                task = p.task
                if k % every == 0:
                    r0 = time.perf_counter_ns()
                    best = ref.choose(task, reqs[task.task_id])
                    if best is not None:
                        ref.place(task, best[0])
                    ref_ns.append(time.perf_counter_ns() - r0)
                    choice = RefChoice(admission=None, index=best[0] if best else None,  # type: ignore[arg-type]
                                       executor_id=ref.executors[best[0]]["id"] if best else None,
                                       score=best[1] if best else None, placed=best is not None)
                    _check_backlog(bench, task, p.executor_id, choice, agreement)
                else:
                    ref.place(task, ref.find(p.executor_id))
                k += 1
            for p in placements:  # the round's tasks finish (untimed) and free their executors
                finish(bench, p.task, p.executor_id)
    core_rate = placed_total / (sched_ns / 1e9) if sched_ns else None
    ref_mean_ns = sum(ref_ns) / len(ref_ns) if ref_ns else None
    ref_rate = 1e9 / ref_mean_ns if ref_mean_ns else None
    return {"executors": n_executors, "tasks": n_tasks, "queued": queued, "placed": placed_total, "rounds": rounds,
            "core_schedule_s": round(sched_ns / 1e9, 3), "core_decisions_per_s": round(core_rate) if core_rate else None,
            "reference": stats_us(ref_ns), "reference_decisions_per_s": round(ref_rate) if ref_rate else None,
            "ratio": round(core_rate / ref_rate, 1) if core_rate and ref_rate else None,
            "agreement": agreement.as_dict()}


def _check_backlog(bench: Bench, task: TaskSpec, core_executor: str, choice: RefChoice,
                   agreement: Agreement) -> None:
    ref = bench.ref
    agreement.compared += 1
    if choice.placed:
        ref.unplace(task)
    if choice.executor_id == core_executor:
        agreement.same_executor += 1
    elif choice.index is not None and abs(ref.score_of(task, ref.find(core_executor)) - choice.score) \
            <= TIE_TOLERANCE:  # type: ignore[operator]
        agreement.ties += 1
    else:
        agreement.mismatches.append({"task": task.task_id, "core": core_executor, "ref": choice.executor_id})
    ref.place(task, ref.find(core_executor))


def profile_table(prof: cProfile.Profile, decisions: int, top: int = 14) -> dict:
    """The functions with the most own time and the most cumulative time, per decision (profiler on)."""
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, calls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if func == "disable" or "_lsprof" in func:
            continue
        rows.append({"function": f"{_short(file)}:{line}({func})", "calls_per_decision": round(calls / decisions, 2),
                     "own_us": round(tt / decisions * 1e6, 2), "cum_us": round(ct / decisions * 1e6, 2)})
    total = sum(r["own_us"] for r in rows)
    return {"decisions": decisions, "total_us": round(total, 1),
            "by_own_time": sorted(rows, key=lambda r: -r["own_us"])[:top],
            "by_cumulative_time": sorted(rows, key=lambda r: -r["cum_us"])[:top]}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/main/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# ----------------------------------------------------------------------------- targets and report
@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    core_samples: dict[int, int]
    paired_samples: dict[int, int]
    warmup: int
    eval_samples: int
    eval_ref: dict[int, int]
    eval_full_ref: dict[int, int]
    backlog: tuple[int, int, int]  # executors, tasks, reference samples
    profile: int
    load_cap: int = 2000  # running tasks loaded on the fleet before measuring (at most half the executors)


FULL = Plan(sizes=(100, 1_000, 10_000, 100_000),
            core_samples={100: 2000, 1_000: 2000, 10_000: 1000, 100_000: 300},
            paired_samples={100: 1000, 1_000: 400, 10_000: 120, 100_000: 100},
            warmup=100, eval_samples=2000, eval_ref={100: 2000, 1_000: 1000, 10_000: 300, 100_000: 60},
            eval_full_ref={100: 500, 1_000: 200, 10_000: 40, 100_000: 10},
            backlog=(1_000, 10_000, 400), profile=0)
QUICK = Plan(sizes=(100, 1_000, 10_000),
             core_samples={100: 300, 1_000: 300, 10_000: 100},
             paired_samples={100: 100, 1_000: 60, 10_000: 20},
             warmup=20, eval_samples=300, eval_ref={100: 300, 1_000: 100, 10_000: 20},
             eval_full_ref={100: 50, 1_000: 20, 10_000: 5},
             backlog=(1_000, 1_000, 100), profile=0, load_cap=300)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def run(plan: Plan, quick: bool, seed: int = SEED, log=None) -> dict:
    started = time.perf_counter()
    result: dict = {"meta": {"quick": quick, "seed": seed, "python": platform.python_version(),
                             "numpy": np.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
                             "load_start": _load()},
                    "fleets": [], "policy_eval": []}
    for n in plan.sizes:
        t0 = time.perf_counter()
        bench = make_bench(n, seed, load_tasks=min(n // 2, plan.load_cap))
        built = time.perf_counter() - t0
        fleet = measure_decisions(bench, plan.core_samples[n], plan.paired_samples[n], plan.warmup, seed + n,
                                  profile=plan.profile if n in (1_000, 100_000) else 0)
        fleet["setup_s"] = round(built, 2)
        result["fleets"].append(fleet)
        result["policy_eval"].append(measure_policy_eval(bench, plan.eval_samples, plan.eval_ref[n],
                                                         plan.eval_full_ref[n], seed + 2 * n))
        if log:
            log(f"  {n:>7,} executors: setup {built:.1f} s, total {time.perf_counter() - t0:.1f} s, "
                f"core p50 {fleet['core']['p50_us']} us, ref p50 {fleet['reference']['p50_us']} us")
        del bench
        gc.collect()
    ex, tasks, samples = plan.backlog
    result["backlog"] = measure_backlog(ex, tasks, samples, seed)
    result["targets"] = targets(result)
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    result["meta"]["load_end"] = _load()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (up to 10,000 executors)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default {DEFAULT_JSON})")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N extra core decisions at 1,000 and 100,000 executors (cProfile)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.profile:
        plan = Plan(**{**plan.__dict__, "profile": args.profile})
    result = run(plan, args.quick, args.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    table = format_table(result)
    result["table"] = table
    print(table)
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
