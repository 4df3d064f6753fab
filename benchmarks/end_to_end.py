"""End-to-end latency and throughput: Coopsched beside bare Ray tasks, on one real Ray cluster.

Run ``python benchmarks/end_to_end.py [--quick] [--json PATH] [--profile DIR]``.

One process, one run. ``main()`` starts a local Ray instance (one raylet, 4 CPUs), runs
everything and stops everything it started, even on error. The measuring functions
(:func:`run`) take an already initialised Ray, a namespace and a :class:`Layout`, so
the integration smoke test runs them on its shared 4-raylet test cluster.

Why one raylet with 4 CPUs and not ``ray.cluster_utils.Cluster`` with 4 raylets of 1 CPU:
on this 2-core machine four raylets take ~14 s to start instead of ~5 s and keep four
worker pools and object stores competing for the same two cores, and the three modes
would not see the same capacity (bare tasks would spread over 4 nodes while pinned tasks
get one 1-CPU node). With one raylet all modes have the same 4 CPU slots: bare tasks ask
``num_cpus=1``; pinned tasks use ``NodeAffinitySchedulingStrategy(node, soft=False)``;
Coopsched has 4 executors on that node with ``{"cpus": 1}`` each, in four regions.

Modes, each for a trivial job (returns its argument) and one that sleeps 10 ms:

* ``ray``: ``ray.remote(fn).remote(x)`` then ``ray.get``;
* ``ray-affinity``: the same, pinned with ``NodeAffinitySchedulingStrategy(soft=False)``;
* ``coopsched``: ``client.submit(fn, x, ...)`` then ``JobHandle.result()``, under the
  shipped timebank policy with quota and rate limit opened up (so nothing is refused)
  and DataSovereignty, TaskLimits and ExecutorFilter rules active on every task;
* ``coopsched-map``: throughput only, ``client.map`` (the head's ``submit_many``);
* ``floor`` and ``floor-map``: the same path (client -> head -> worker -> pinned task -> tracker ->
  head -> client), built the same way, with none of Coopsched's work on it
  (``benchmarks/e2e_floor.py``; its actors' CPU is counted as head, tracker and workers). A target
  the floor misses is out of Coopsched's reach on this machine.

Latency: N sequential jobs per mode, modes interleaved in chunks so a drift in the
machine's load hits them alike. *submit->start* is the function's own ``time.time()``
at entry minus the driver's ``time.time()`` just before the submit call; *submit->result*
ends when the value is back in the driver. Throughput: M jobs submitted at once (one
call each, or one ``map``), then every result fetched (``ray.get`` of the list; for Coopsched
``Client.gather``); jobs/s = M / wall time; the median
of the repeats is reported. Every mode is warmed up first.

Coopsched keeps its state in a SQLite file (the product's default kind of store) in a
temporary directory, never in the user's default store. A job that succeeds but whose
value ``JobHandle.result()`` cannot fetch is counted as a lost result (see ``Coopsched``).

Where the time goes:

* per hop of the sequential jobs, from Ray's own task events (``ray.timeline()``: the
  start and end of every actor method and task, wall clock, same machine), matched to
  each job by its time window;
* per process in the first throughput run of each mode: CPU seconds from ``/proc``
  (driver, head, tracker, worker actors, task workers, raylet, GCS) and actor calls per job;
* ``--profile DIR``: two extra, untimed runs (sequential, then ``map``) with ``py-spy``
  sampling the head, the tracker and one worker actor.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from policies.loader import load_example  # noqa: E402
from scheduler.client import Client, shutdown  # noqa: E402
from scheduler.job_handle import JobFailed, JobHandle  # noqa: E402
from scheduler.names import HEAD_NAME, TRACKER_NAME, worker_name  # noqa: E402
from benchmarks.common import init_local_ray, write_results  # noqa: E402
from benchmarks import e2e_floor  # noqa: E402
from benchmarks.e2e_floor import Floor, start_floor, stop_floor  # noqa: E402
from benchmarks.e2e_report import LOST_AFTER_S, format_report, targets  # noqa: E402
from benchmarks.e2e_profile import (CpuMeter, PySpy, Spans, actor_pids, latency_breakdown, ms_stats,  # noqa: E402
                                    throughput_activity)

if __name__ != "__main__":  # imported (e.g. by the smoke test): Ray workers cannot import `benchmarks`
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "end_to_end.json"
NAMESPACE = "coopsched-bench"
COOP = "timebank:seattle"  # the shipped timebank policy's coop
MEMBER = "did:icn:bench"
REGIONS = ("us-west", "eu-central", "eu-central", "ap-south")
SLEEP_S = 0.010
MAX_RUNTIME_S = 60.0
RESULT_TIMEOUT_S = 300.0


# ----------------------------------------------------------------------------- the jobs
def echo(x: Any) -> tuple[Any, float]:
    """The trivial job: its argument back, with the moment it started."""
    return x, time.time()


def echo_after_10ms(x: Any) -> tuple[Any, float]:
    started = time.time()
    time.sleep(SLEEP_S)
    return x, started


VARIANTS: dict[str, Callable[[Any], tuple[Any, float]]] = {"trivial": echo, "sleep10ms": echo_after_10ms}


# ----------------------------------------------------------------------------- plan and layout
@dataclass(frozen=True)
class Plan:
    latency_jobs: int  # N sequential jobs per mode and variant
    throughput_jobs: int  # M jobs per throughput run
    repeats: int  # throughput runs per mode and variant (the median is reported)
    chunk: int  # sequential jobs per mode before switching to the next mode
    warmup_rounds: int = 2


DISPATCH_AHEAD = 8
"""The executors take 8 rounds ahead: a 1-CPU executor is handed up to 9 one-CPU jobs, starts one and
queues the rest (see ExecutorSpec.dispatch_ahead). Short jobs are what this benchmark runs; with 0 a
slot idles through every report -> tracker -> head -> dispatch round trip. ``--dispatch-ahead 0``
measures that."""

FULL = Plan(latency_jobs=200, throughput_jobs=500, repeats=3, chunk=25)
QUICK = Plan(latency_jobs=12, throughput_jobs=40, repeats=1, chunk=6, warmup_rounds=1)
SMOKE = Plan(latency_jobs=5, throughput_jobs=20, repeats=1, chunk=5, warmup_rounds=1)


@dataclass(frozen=True)
class ExecutorPlace:
    executor_id: str
    node_id: str
    region: str


@dataclass(frozen=True)
class Layout:
    """Where the executors go, which node pinned tasks target, and how the cluster was made."""

    executors: tuple[ExecutorPlace, ...]
    affinity_node: str
    description: str
    dispatch_ahead: int | str = 0  # every executor's ExecutorSpec.dispatch_ahead ("auto": the head tunes it)

    @classmethod
    def one_node(cls, node_id: str, description: str, dispatch_ahead: int | str = 0) -> Layout:
        places = tuple(ExecutorPlace(f"bench-{i}", node_id, region) for i, region in enumerate(REGIONS))
        return cls(places, node_id, description, dispatch_ahead)


# ----------------------------------------------------------------------------- the modes
@dataclass(frozen=True)
class Sample:
    """One sequential job, all times ``time.time()`` on this machine."""

    submitted: float  # just before the submit call
    accepted: float  # the submit call returned
    entered: float  # the function's first line
    returned: float  # the value is back in the driver
    job_id: str | None = None


class Mode(Protocol):
    name: str

    def one(self, fn: Callable, x: int) -> Sample: ...

    def many(self, fn: Callable, xs: Sequence[int]) -> list: ...


class BareRay:
    """Plain Ray tasks with ``num_cpus=1`` and the given options."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self._options = {"num_cpus": 1, "max_retries": 0, **options}
        self._tasks: dict[Callable, Any] = {}

    def _task(self, fn: Callable):
        if fn not in self._tasks:
            self._tasks[fn] = ray.remote(fn).options(**self._options)
        return self._tasks[fn]

    def one(self, fn: Callable, x: int) -> Sample:
        task = self._task(fn)
        submitted = time.time()
        ref = task.remote(x)
        accepted = time.time()
        value, entered = ray.get(ref)
        returned = time.time()
        _check(value, x, self.name)
        return Sample(submitted, accepted, entered, returned)

    def many(self, fn: Callable, xs: Sequence[int]) -> list:
        task = self._task(fn)
        return ray.get([task.remote(x) for x in xs])


class Coopsched:
    """Jobs through the Coopsched client: one ``submit`` each, or one ``map`` for a batch.

    A job that succeeded but whose value ``JobHandle.result()`` cannot fetch (the head
    holds no result reference for it, and ``result()`` then polls until its timeout) is
    recorded in ``lost`` and answered with None after twice ``LOST_AFTER_S``, so one such job
    costs the run seconds, not the whole timeout."""

    def __init__(self, name: str, client: Client, batch: bool = False) -> None:
        self.name = name
        self.client = client
        self.batch = batch
        self.options = {"coop": COOP, "member": MEMBER, "resources": {"cpus": 1}, "tags": ["bench"],
                        "max_runtime_s": MAX_RUNTIME_S}
        self.lost: list[str] = []

    def one(self, fn: Callable, x: int) -> Sample | None:
        submitted = time.time()
        handle = self.client.submit(fn, x, **self.options)
        accepted = time.time()
        answer = self._result(handle)
        returned = time.time()
        if answer is None:
            return None
        value, entered = answer
        _check(value, x, self.name)
        return Sample(submitted, accepted, entered, returned, handle.id)

    def many(self, fn: Callable, xs: Sequence[int]) -> list:
        """Submit them all, then fetch every value as a user would: ``Client.gather`` (one wait at the
        head for the lot, then one ``ray.get`` of all the values, like the bare modes' ``ray.get(list)``)."""
        if self.batch:
            handles = self.client.map(fn, xs, **self.options)
        else:
            handles = [self.client.submit(fn, x, **self.options) for x in xs]
        try:
            return self.client.gather(handles, timeout=RESULT_TIMEOUT_S)
        except JobFailed:  # e.g. a value lost: job by job, so the lost ones are counted, not fatal
            return [self._result(h) for h in handles]

    def _result(self, handle: JobHandle) -> Any:
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        suspect = False
        while True:
            try:
                return handle.result(timeout=LOST_AFTER_S)
            except TimeoutError:
                if handle.status().state.value == "succeeded":  # finished, yet result() found no value
                    if suspect:  # twice: not a fetch cut short by the timeout
                        self.lost.append(handle.id)
                        return None
                    suspect = True
                if time.monotonic() > deadline:
                    raise


def _check(value: Any, expected: Any, mode: str) -> None:
    if value != expected:
        raise AssertionError(f"{mode}: the job returned {value!r}, expected {expected!r}")


# ----------------------------------------------------------------------------- Coopsched set-up
def bench_policy(regions: Sequence[str]) -> dict:
    """The shipped timebank policy, opened up so that nothing is refused or held during the run.

    Quota and concurrency are generous and the rate limit high; the rules that shape
    placement stay on and apply to every task: DataSovereignty (the executors' regions),
    TaskLimits and an ExecutorFilter blacklist."""
    base = load_example("timebank").model_dump(mode="json")
    quota = {**base["default_quota"], "cpu_hours_per_month": 1e6, "max_concurrent_tasks": 100_000}
    rules = [{**r, "rate": 1e6, "burst": 1_000_000} if r["type"] == "RateLimit" else r for r in base["rules"]]
    rules += [{"type": "DataSovereignty", "name": "coop-regions", "region": sorted(set(regions))},
              {"type": "TaskLimits", "name": "per-task", "max_cpus": 4, "max_runtime_s": 3600},
              {"type": "ExecutorFilter", "name": "retired", "blacklist": ["retired-executor"]}]
    return {**base, "default_quota": quota, "rules": rules,
            "description": "benchmarks/end_to_end.py: timebank.json with quota and rate limit opened up"}


def start_coopsched(namespace: str, layout: Layout, store_url: str) -> Client:
    """A fresh head, tracker and one worker actor per executor of ``layout``, keeping state in ``store_url``."""
    shutdown(namespace)  # leftovers of an interrupted run in this namespace would skew the numbers
    client = Client.local(namespace=namespace, store=store_url)
    client.set_policy(bench_policy([e.region for e in layout.executors]))
    for e in layout.executors:
        client.register_executor(e.executor_id, coop=COOP, region=e.region, node_id=e.node_id,
                                 resources={"cpus": 1}, trust=0.5, dispatch_ahead=layout.dispatch_ahead)
    return client


# ----------------------------------------------------------------------------- measuring
def warm_up(modes: Sequence[Mode], rounds: int, width: int) -> None:
    """Start the worker processes, export the functions, warm every code path of every mode."""
    for _ in range(rounds):
        for mode in modes:
            for fn in VARIANTS.values():
                mode.many(fn, list(range(width)))
                for i in range(3):
                    mode.one(fn, i)


def measure_latency(modes: Sequence[Mode], fn: Callable, jobs: int, chunk: int) -> dict[str, list[Sample]]:
    """Sequential jobs, ``chunk`` per mode in turn; a job whose value was lost leaves no sample."""
    samples: dict[str, list[Sample]] = {m.name: [] for m in modes}
    done = 0
    while done < jobs:
        step = min(chunk, jobs - done)
        for mode in modes:
            samples[mode.name] += [s for s in (mode.one(fn, done + i) for i in range(step)) if s is not None]
        done += step
    return samples


@dataclass
class ThroughputRun:
    jobs: int
    started: float
    ended: float
    cpu: dict | None = None  # CpuMeter.result, for the metered runs
    lost: int = 0  # jobs that succeeded without a value the client could fetch

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / (self.ended - self.started)


def measure_throughput(modes: Sequence[Mode], fn: Callable, jobs: int, repeats: int,
                       meter: Callable[[], CpuMeter] | None = None) -> dict[str, list[ThroughputRun]]:
    """``repeats`` rounds over the modes; the first round's runs are CPU-metered when ``meter`` is given."""
    runs: dict[str, list[ThroughputRun]] = {m.name: [] for m in modes}
    xs = list(range(jobs))
    for round_ in range(repeats):
        for mode in modes:
            time.sleep(0.2)  # let the previous mode's background work (reports, settling) drain
            cpu = meter() if meter is not None and round_ == 0 else None
            with cpu if cpu is not None else contextlib.nullcontext():
                started = time.time()
                values = mode.many(fn, xs)
                ended = time.time()
            got = [(x, v) for x, v in zip(xs, values) if v is not None]
            _check([v[0] for _, v in got], [x for x, _ in got], mode.name)
            runs[mode.name].append(ThroughputRun(jobs, started, ended, cpu.result(jobs) if cpu else None,
                                                 lost=len(xs) - len(got)))
    return runs


def latency_stats(samples: Sequence[Sample]) -> dict:
    return {"jobs": len(samples),
            "submit_to_start_ms": ms_stats([s.entered - s.submitted for s in samples]),
            "submit_to_result_ms": ms_stats([s.returned - s.submitted for s in samples]),
            "submit_call_ms": ms_stats([s.accepted - s.submitted for s in samples])}


def throughput_stats(runs: Sequence[ThroughputRun]) -> dict:
    """The median over the runs in which no result was lost (each lost one stalls its run by
    ``2 * LOST_AFTER_S``), over all runs if every run lost one."""
    clean = [r.jobs_per_s for r in runs if not r.lost] or [r.jobs_per_s for r in runs]
    return {"jobs": runs[0].jobs, "runs_jobs_per_s": [round(r.jobs_per_s, 1) for r in runs],
            "runs_lost_results": [r.lost for r in runs], "jobs_per_s": round(float(np.median(clean)), 1),
            "cpu_first_run": runs[0].cpu}




# ----------------------------------------------------------------------------- the run
def run(plan: Plan, namespace: str, layout: Layout, log: Callable[[str], None] = print,
        profile_dir: Path | None = None, store_url: str | None = None) -> dict:
    """Measure every mode on the Ray cluster this process is connected to.

    Coopsched keeps its state in ``store_url``; by default a SQLite file (the product's
    default kind of store) in a temporary directory, removed afterwards, so the run neither
    reads nor pollutes the user's default store. The Coopsched actors of ``namespace`` are
    stopped before this returns or raises."""
    started = time.perf_counter()
    scratch = None
    if store_url is None:
        scratch = tempfile.mkdtemp(prefix="coopsched-bench-")
        store_url = f"sqlite:///{scratch}/state.db"
    result: dict[str, Any] = {"meta": {"plan": plan.__dict__, "cluster": layout.description,
                                       "executors": [e.__dict__ for e in layout.executors],
                                       "dispatch_ahead": layout.dispatch_ahead,
                                       "namespace": namespace, "store": "sqlite file (temporary)" if scratch
                                       else store_url, "git": _git_state(), "python": platform.python_version(),
                                       "ray": ray.__version__, "cpus": os.cpu_count(), "load_start": _load()}}
    pinned = NodeAffinitySchedulingStrategy(layout.affinity_node, soft=False)
    bare, affinity = BareRay("ray"), BareRay("ray-affinity", scheduling_strategy=pinned)
    node_cpus = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")}
    executors = float(len(layout.executors))
    slots = {"ray": sum(node_cpus.values()), "ray-affinity": node_cpus.get(layout.affinity_node, 1.0),
             "floor": executors, "floor-map": executors, "coopsched": executors, "coopsched-map": executors}
    log(f"starting Coopsched in namespace {namespace!r}: head, tracker, {len(layout.executors)} executors")
    floor_actors: list = []
    try:
        client = start_coopsched(namespace, layout, store_url)
        coop, coop_map = Coopsched("coopsched", client), Coopsched("coopsched-map", client, batch=True)
        floor_actors = start_floor(namespace, [(e.node_id, 1) for e in layout.executors])
        floor, floor_map = Floor("floor", namespace), Floor("floor-map", namespace, batch=True)
        sequential: list[Mode] = [bare, affinity, floor, coop]
        batched: list[Mode] = [bare, affinity, floor, floor_map, coop, coop_map]
        log("warming up every mode")
        warm_up(batched, plan.warmup_rounds, width=2 * len(layout.executors))
        workers = [worker_name(e.executor_id) for e in layout.executors]
        floor_workers = e2e_floor.worker_names(len(layout.executors))
        pids = actor_pids(namespace, [HEAD_NAME, TRACKER_NAME, *workers, e2e_floor.HEAD, e2e_floor.TRACKER,
                                      *floor_workers])
        roles = {pid: "head actor" if name in (HEAD_NAME, e2e_floor.HEAD) else "tracker actor"
                 if name in (TRACKER_NAME, e2e_floor.TRACKER) else "worker actors" for name, pid in pids.items()}
        result["variants"], result["breakdown"] = {}, {}
        for variant, fn in VARIANTS.items():
            log(f"{variant}: latency, {plan.latency_jobs} sequential jobs per mode")
            samples = measure_latency(sequential, fn, plan.latency_jobs, plan.chunk)
            result["breakdown"].setdefault("latency", {})[variant] = latency_breakdown(Spans.collect(), samples, fn)
            log(f"{variant}: throughput, {plan.throughput_jobs} jobs at once x {plan.repeats} per mode")
            runs = measure_throughput(batched, fn, plan.throughput_jobs, plan.repeats, lambda: CpuMeter(roles))
            if variant == "trivial":
                kinds = {"ray": fn.__name__, "ray-affinity": fn.__name__, "floor": "_run", "floor-map": "_run",
                         "coopsched": "run_measured", "coopsched-map": "run_measured"}
                result["breakdown"]["throughput"] = throughput_activity(Spans.collect(), runs, kinds, slots)
            result["variants"][variant] = {
                m.name: {"latency": latency_stats(samples[m.name]) if m.name in samples else None,
                         "throughput": throughput_stats(runs[m.name])} for m in batched}
        result["lost_results"] = {"jobs": coop.lost + coop_map.lost, "note": (
            "jobs that succeeded but whose value JobHandle.result() could not fetch: the head holds no "
            "result reference for them and result() polls wait_result until its timeout")}
        if profile_dir is not None:
            result["profile"] = profile_runs(namespace, layout, client, plan, profile_dir, log)
    finally:
        stop_floor(floor_actors)
        shutdown(namespace)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    result["targets"] = targets(result)
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    result["meta"]["load_end"] = _load()
    return result


def profile_runs(namespace: str, layout: Layout, client: Client, plan: Plan, directory: Path,
                 log: Callable[[str], None]) -> dict:
    """Two extra, untimed runs of trivial jobs with py-spy sampling the head, the tracker and one
    worker actor: sequential ``submit().result()`` jobs, then one ``map`` of M jobs."""
    names = [HEAD_NAME, TRACKER_NAME, worker_name(layout.executors[0].executor_id)]
    pids = actor_pids(namespace, names)
    runs = {"sequential": (Coopsched("coopsched", client), plan.latency_jobs),
            "map": (Coopsched("coopsched-map", client, batch=True), plan.throughput_jobs)}
    out = {}
    for name, (mode, jobs) in runs.items():
        log(f"profiling an extra {name} run of {jobs} jobs with py-spy: {pids}")
        with PySpy(directory / name, pids) as spy:
            t0 = time.time()
            if name == "sequential":
                for i in range(jobs):
                    mode.one(echo, i)
            else:
                mode.many(echo, list(range(jobs)))
            wall = time.time() - t0
        out[name] = {"jobs": jobs, "wall_s": round(wall, 3), "processes": spy.summary(wall)}
    return out


def _git_state() -> dict:
    """The commit measured and the files changed in the working tree (others edit while this runs)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "changed": [line[3:] for line in dirty]}


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ----------------------------------------------------------------------------- main
def _ahead(text: str) -> int | str:
    return "auto" if text == "auto" else int(text)


def start_local_ray(num_cpus: int = 4, dispatch_ahead: int | str = 0) -> Layout:
    node_id = init_local_ray(num_cpus, NAMESPACE)
    ahead = f", dispatch_ahead={dispatch_ahead}" if dispatch_ahead else ""
    return Layout.one_node(node_id, f"one raylet, {num_cpus} CPUs, 4 executors of 1 CPU on it{ahead}", dispatch_ahead)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N and M; well under a minute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default {DEFAULT_JSON})")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="add an untimed map run with py-spy sampling the head, tracker and one worker into DIR")
    parser.add_argument("--dispatch-ahead", type=_ahead, default=DISPATCH_AHEAD, metavar="K",
                        help=f"the executors' dispatch_ahead (default {DISPATCH_AHEAD}; 0: only what fits now; "
                             "auto: the head sets it from what it measures)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    say = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    say("starting a local Ray instance (one raylet, 4 CPUs) ...")
    try:
        layout = start_local_ray(dispatch_ahead=args.dispatch_ahead)
        say(f"Ray up after {time.perf_counter() - t0:.1f} s")
        result = run(plan, NAMESPACE, layout, log=say, profile_dir=args.profile)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    result["meta"]["quick"] = args.quick
    result["meta"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    say("")
    say(format_report(result))
    write_results(args.json, result, say, f" ({result['meta']['total_seconds']} s in all)")
    return result


if __name__ == "__main__":
    main()
