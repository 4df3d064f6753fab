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
* ``coopsched-map``: throughput only, ``client.map`` (the head's ``submit_many``).

Latency: N sequential jobs per mode, modes interleaved in chunks so a drift in the
machine's load hits them alike. *submit->start* is the function's own ``time.time()``
at entry minus the driver's ``time.time()`` just before the submit call; *submit->result*
ends when the value is back in the driver. Throughput: M jobs submitted at once (one
call each, or one ``map``), then every result fetched; jobs/s = M / wall time; the median
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
import bisect
import contextlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from policies.loader import load_example  # noqa: E402
from scheduler.client import Client, JobHandle, shutdown  # noqa: E402
from scheduler.names import HEAD_NAME, TRACKER_NAME, worker_name  # noqa: E402
from scheduler.tables import table  # noqa: E402
from benchmarks.common import init_local_ray, write_results  # noqa: E402

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
LOST_AFTER_S = 1.0  # a succeeded job still without a value after two such waits counts as a lost result
LATENCY_TARGET_X = 3.0  # Coopsched p50 submit->result <= 3x bare Ray
THROUGHPUT_TARGET = 0.5  # Coopsched jobs/s >= 50% of bare Ray


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

    @classmethod
    def one_node(cls, node_id: str, description: str) -> Layout:
        places = tuple(ExecutorPlace(f"bench-{i}", node_id, region) for i, region in enumerate(REGIONS))
        return cls(places, node_id, description)


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
        if self.batch:
            handles = self.client.map(fn, xs, **self.options)
        else:
            handles = [self.client.submit(fn, x, **self.options) for x in xs]
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
                                 resources={"cpus": 1}, trust=0.5)
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


def ms_stats(seconds: Sequence[float]) -> dict:
    if not len(seconds):
        return {"p50": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(seconds, dtype=float) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}


# ----------------------------------------------------------------------------- CPU per process
class CpuMeter:
    """CPU seconds used while a block runs by each process of this Ray cluster, grouped by role.

    Read from ``/proc`` (Linux; elsewhere the result is None). The cluster's processes are
    those whose command line names its session directory (GCS, raylets, ...) and all their
    descendants (Ray's worker processes); the Coopsched actors are told apart by their process
    ids. ``machine_cpu_s`` is the whole machine's busy CPU time (this cluster and anything
    else running on the shared machine)."""

    AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def __init__(self, actor_roles: dict[int, str]) -> None:
        self.actor_roles = actor_roles
        self.session = ray._private.worker.global_worker.node.get_session_dir_path()  # noqa: SLF001
        self.before: dict[int, tuple[str, float]] = {}
        self.after: dict[int, tuple[str, float]] = {}
        self.wall = self.machine = 0.0

    def _role(self, pid: int, cmdline: str) -> str:
        if pid == os.getpid():
            return "driver (client)"
        if pid in self.actor_roles:
            return self.actor_roles[pid]
        if "/raylet/raylet" in cmdline:
            return "raylet"
        if "gcs_server" in cmdline:
            return "gcs"
        if cmdline.startswith("ray::") and not cmdline.startswith(self.AGENTS):
            return "task workers"
        return "other ray processes"

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        procs = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        ours = {os.getpid()}
        todo = [pid for pid, (_, cmd, _) in procs.items() if self.session in cmd]
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo += children.get(pid, [])
        return {pid: (self._role(pid, procs[pid][1]), procs[pid][2]) for pid in ours if pid in procs}

    def __enter__(self) -> CpuMeter:
        self.before, self._machine0, self._wall0 = self._snapshot(), _machine_busy(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.machine = time.perf_counter() - self._wall0, _machine_busy() - self._machine0
        self.after = self._snapshot()

    def result(self, jobs: int) -> dict | None:
        if not self.after:
            return None
        by_role: dict[str, float] = {}
        for pid, (role, cpu) in self.after.items():
            by_role[role] = by_role.get(role, 0.0) + cpu - self.before.get(pid, (role, 0.0))[1]
        return {"wall_s": round(self.wall, 3), "machine_cpu_s": round(self.machine, 3),
                "cluster_cpu_s": round(sum(by_role.values()), 3),
                "by_role": {r: {"cpu_s": round(c, 3), "ms_per_job": round(c / jobs * 1e3, 3)}
                            for r, c in sorted(by_role.items(), key=lambda kv: -kv[1])}}


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, CPU seconds used) for every process ``/proc`` shows."""
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ... utime(12) stime(13)
        out[int(entry)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def _machine_busy() -> float:
    """The machine's busy CPU seconds so far (all but idle and iowait), from ``/proc/stat``."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK


# ----------------------------------------------------------------------------- where the time goes
@dataclass(frozen=True)
class Span:
    kind: str  # "Head.submit", "ExecutorWorker.start", "run_measured", "echo", ...
    start: float
    end: float
    process: str = ""  # Ray's worker id of the process that ran it


@dataclass
class Spans:
    """Ray's task events (``ray.timeline()``) as execution spans, indexed by kind."""

    by_kind: dict[str, list[Span]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)  # process -> when it first ran anything
    error: str | None = None
    _starts: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @classmethod
    def collect(cls) -> Spans:
        time.sleep(1.5)  # workers flush task events to the GCS every second
        quiet = logging.getLogger("ray._private.state")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "ray.timeline() will read from the dashboard in the future"
        try:
            events = ray.timeline()
        except Exception as exc:  # noqa: BLE001  # the breakdown is optional; the benchmark is not
            return cls(error=f"ray.timeline() failed: {type(exc).__name__}: {exc}")
        finally:
            quiet.setLevel(level)
        by_kind: dict[str, list[Span]] = {}
        for e in events:
            cat, name = str(e.get("cat", "")), str(e.get("name", ""))
            if e.get("ph") != "X" or not cat.startswith("task::"):
                continue
            # actor methods: cat "task::Head.submit", name "submit"; tasks: name "executors.measure.run_measured"
            # (cat carries the task's own name, e.g. "task::coopsched:<task id>:1")
            kind = cat[6:] if cat.endswith("." + name) else name.rsplit(".", 1)[-1]
            start = e["ts"] / 1e6
            by_kind.setdefault(kind, []).append(Span(kind, start, start + e["dur"] / 1e6, str(e.get("tid", ""))))
        first_seen: dict[str, float] = {}
        for spans in by_kind.values():
            spans.sort(key=lambda s: s.start)
            for span in spans:
                first_seen[span.process] = min(first_seen.get(span.process, span.start), span.start)
        return cls(by_kind, first_seen)

    def fresh_process(self, span: Span) -> bool:
        """Whether ``span`` was the first thing its process ran (Ray had to start a worker for it)."""
        return self.first_seen.get(span.process) == span.start

    def first(self, kind: str, after: float, before: float) -> Span | None:
        """The first span of ``kind`` starting in [after, before]."""
        found = self.within(kind, after, before)
        return found[0] if found else None

    def within(self, kind: str, after: float, before: float) -> list[Span]:
        spans = self.by_kind.get(kind, [])
        if kind not in self._starts:
            self._starts[kind] = [s.start for s in spans]
        starts = self._starts[kind]
        return spans[bisect.bisect_left(starts, after):bisect.bisect_right(starts, before)]


COOP_SEGMENTS = (
    ("client -> head.submit starts (validate, pickle, actor call)", "submitted", "head_submit_start"),
    ("head.submit starts -> worker.start starts (admit, place, persist, dispatch)", "head_submit_start",
     "worker_start_start"),
    ("worker.start starts -> Ray task starts (launch, lease)", "worker_start_start", "task_start"),
    ("Ray task starts -> fn entry (args, payload, measuring)", "task_start", "entered"),
    ("fn entry -> Ray task ends (return, metrics, store)", "entered", "task_end"),
    ("Ray task ends -> value in the client (wait_result, get)", "task_end", "returned"),
)
RAY_SEGMENTS = (
    ("driver submit -> Ray task starts (lease, dispatch)", "submitted", "task_start"),
    ("Ray task starts -> fn entry (args)", "task_start", "entered"),
    ("fn entry -> Ray task ends (return, store)", "entered", "task_end"),
    ("Ray task ends -> value in the driver (get)", "task_end", "returned"),
)


def coop_points(spans: Spans, s: Sample) -> dict[str, float] | None:
    """The moments one sequential Coopsched job passed each hop; None when an event is missing."""
    submit = spans.first("Head.submit", s.submitted, s.returned)
    start = spans.first("ExecutorWorker.start", submit.start if submit else s.submitted, s.returned)
    task = spans.first("run_measured", start.start if start else s.submitted, s.returned)
    if not (submit and start and task):
        return None
    wait = spans.first("Head.wait_result", s.accepted, s.returned)
    points = {"submitted": s.submitted, "head_submit_start": submit.start, "head_submit_end": submit.end,
              "accepted": s.accepted, "worker_start_start": start.start, "worker_start_end": start.end,
              "task_start": task.start, "entered": s.entered, "task_end": task.end, "returned": s.returned,
              "fresh_process": float(spans.fresh_process(task))}
    if wait is not None:
        points["wait_result_start"], points["wait_result_end"] = wait.start, wait.end
    return points


def ray_points(spans: Spans, s: Sample, kind: str) -> dict[str, float] | None:
    task = spans.first(kind, s.submitted, s.returned)
    if task is None:
        return None
    return {"submitted": s.submitted, "task_start": task.start, "entered": s.entered, "task_end": task.end,
            "returned": s.returned, "fresh_process": float(spans.fresh_process(task))}


def breakdown(points: list[dict[str, float]], segments) -> dict:
    """Each hop's statistics over the jobs, and the hops of the slowest job."""
    rows = [{"segment": name, **ms_stats([p[b] - p[a] for p in points])} for name, a, b in segments]
    slowest = max(points, key=lambda p: p["returned"] - p["submitted"], default=None)
    return {"matched_jobs": len(points), "segments": rows,
            "total_ms": ms_stats([p["returned"] - p["submitted"] for p in points]),
            "jobs_on_a_fresh_worker_process": int(sum(p["fresh_process"] for p in points)),
            "slowest_job_ms": {name: round((slowest[b] - slowest[a]) * 1e3, 3) for name, a, b in segments}
            if slowest else None}


def latency_breakdown(spans: Spans, samples: dict[str, list[Sample]], fn: Callable) -> dict:
    coop = [p for p in (coop_points(spans, s) for s in samples.get("coopsched", ())) if p]
    bare = [p for p in (ray_points(spans, s, fn.__name__) for s in samples.get("ray", ())) if p]
    out = {"coopsched": breakdown(coop, COOP_SEGMENTS), "ray": breakdown(bare, RAY_SEGMENTS)}
    extra = [("head.submit span (admit, place, persist, reply)", "head_submit_start", "head_submit_end"),
             ("client has the decision after head.submit starts", "head_submit_start", "accepted"),
             ("worker.start span", "worker_start_start", "worker_start_end"),
             ("head.wait_result hands the ref over, after the Ray task ends (<0: before)", "task_end",
              "wait_result_end")]
    out["coopsched"]["other"] = [{"segment": name, **ms_stats([p[b] - p[a] for p in coop if b in p])}
                                 for name, a, b in extra]
    if spans.error:
        out["error"] = spans.error
    return out


def throughput_activity(spans: Spans, runs: dict[str, list[ThroughputRun]], user_kinds: dict[str, str],
                        slots: dict[str, float]) -> dict:
    """Per mode, in its first run's window: how busy the CPU slots were and which actor methods ran.

    A method's span runs from when its actor starts it to when it returns; for the async
    Coopsched actors that includes awaiting (and waiting for the event loop), so spans
    overlap and are no CPU measure (the CPU meter is)."""
    out = {}
    for mode, mode_runs in runs.items():
        run = mode_runs[0]
        wall = run.ended - run.started
        methods = {}
        for kind in sorted(spans.by_kind):
            found = spans.within(kind, run.started, run.ended) if "." in kind else []
            if found:
                durations = [s.end - s.start for s in found]
                methods[kind] = {"calls": len(found), "p50_ms": round(float(np.median(durations)) * 1e3, 3)}
        tasks = spans.within(user_kinds[mode], run.started, run.ended)
        busy = sum(s.end - s.start for s in tasks)
        out[mode] = {"wall_s": round(wall, 3), "jobs": run.jobs, "tasks_seen": len(tasks),
                     "slot_busy_fraction": round(busy / (slots[mode] * wall), 3),
                     "slot_idle_per_job_ms": round((slots[mode] * wall - busy) / run.jobs * 1e3, 3),
                     "actor_methods": methods}
    return out


# ----------------------------------------------------------------------------- py-spy (optional)
def actor_pids(namespace: str, names: Sequence[str]) -> dict[str, int]:
    """Process ids of named actors of ``namespace``, from the GCS actor table (a private Ray API)."""
    table_ = ray._private.state.actors()  # noqa: SLF001
    out = {}
    for name in names:
        try:
            actor_id = ray.get_actor(name, namespace=namespace)._actor_id.hex()  # noqa: SLF001
        except ValueError:
            continue
        info = table_.get(actor_id, {})
        if info.get("State") == "ALIVE" and info.get("Pid"):
            out[name] = int(info["Pid"])
    return out


class PySpy:
    """``py-spy record`` of some processes while a block runs; raw (collapsed) stacks, summarised."""

    def __init__(self, directory: Path, pids: dict[str, int], rate: int = 200) -> None:
        self.directory, self.pids, self.rate = directory, pids, rate
        self._procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> PySpy:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.directory / f"{name.replace(':', '_')}.txt"
            proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                                     "--nonblocking", "--output", str(out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._procs[name] = (proc, out)
        time.sleep(1.0)  # py-spy attaches
        return self

    def __exit__(self, *exc) -> None:
        for proc, _ in self._procs.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in self._procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def summary(self, wall_s: float, top: int = 10) -> dict:
        return {name: summarise_stacks(out, top, self.rate, wall_s) for name, (_, out) in self._procs.items()}


# Innermost frames of a thread that waits rather than works (py-spy cannot always tell).
IDLE_LEAVES = ("Worker.main_loop", "EpollSelector.select", "Condition.wait", "BaseEventLoop.time")


def summarise_stacks(path: Path, top: int, rate: int, wall_s: float) -> dict:
    """py-spy's samples of one process, idle ones set aside: which Coopsched method the time
    belongs to (the outermost Coopsched frame), and where inside it goes (the innermost
    Coopsched frame and what it calls). ``active_threads`` is active samples / (rate x wall):
    about how many threads were busy on average."""
    if not path.exists():
        return {"error": f"no output at {path}"}
    entry: dict[str, int] = {}
    hot: dict[str, int] = {}
    total = active = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames or frames[-1].split(" (")[0] in IDLE_LEAVES:
            continue  # a native thread with no Python frame, or a thread waiting
        active += n
        ours = [i for i, f in enumerate(frames) if f.split(" (")[-1].startswith(("scheduler/", "executors/",
                                                                                "policies/"))]
        key = _name(frames[ours[0]]) if ours else "(Ray and asyncio only)"
        entry[key] = entry.get(key, 0) + n
        if ours:
            inner = frames[ours[-1]]
            callee = frames[ours[-1] + 1] if ours[-1] + 1 < len(frames) else "(itself)"
            k = f"{_name(inner)} -> {_name(callee)}"
            hot[k] = hot.get(k, 0) + n

    def ranked(d: dict[str, int]) -> list[dict]:
        return [{"function": f, "share": round(n / max(active, 1), 3)}
                for f, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "active_samples": active, "active_threads": round(active / (rate * wall_s), 2),
            "by_coopsched_entry": ranked(entry), "by_innermost_call": ranked(hot), "raw": str(path)}


def _name(frame: str) -> str:
    return frame.split(" (")[0]


def _frame(frame: str) -> str:
    name, _, location = frame.partition(" (")
    return f"{name} ({_short(location)}" if location else name


def _short(location: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


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
                                       "namespace": namespace, "store": "sqlite file (temporary)" if scratch
                                       else store_url, "git": _git_state(), "python": platform.python_version(),
                                       "ray": ray.__version__, "cpus": os.cpu_count(), "load_start": _load()}}
    pinned = NodeAffinitySchedulingStrategy(layout.affinity_node, soft=False)
    bare, affinity = BareRay("ray"), BareRay("ray-affinity", scheduling_strategy=pinned)
    node_cpus = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")}
    slots = {"ray": sum(node_cpus.values()), "ray-affinity": node_cpus.get(layout.affinity_node, 1.0),
             "coopsched": float(len(layout.executors)), "coopsched-map": float(len(layout.executors))}
    log(f"starting Coopsched in namespace {namespace!r}: head, tracker, {len(layout.executors)} executors")
    try:
        client = start_coopsched(namespace, layout, store_url)
        coop, coop_map = Coopsched("coopsched", client), Coopsched("coopsched-map", client, batch=True)
        sequential: list[Mode] = [bare, affinity, coop]
        batched: list[Mode] = [bare, affinity, coop, coop_map]
        log("warming up every mode")
        warm_up(batched, plan.warmup_rounds, width=2 * len(layout.executors))
        workers = [worker_name(e.executor_id) for e in layout.executors]
        pids = actor_pids(namespace, [HEAD_NAME, TRACKER_NAME, *workers])
        roles = {pid: "head actor" if name == HEAD_NAME else "tracker actor" if name == TRACKER_NAME
                 else "worker actors" for name, pid in pids.items()}
        result["variants"], result["breakdown"] = {}, {}
        for variant, fn in VARIANTS.items():
            log(f"{variant}: latency, {plan.latency_jobs} sequential jobs per mode")
            samples = measure_latency(sequential, fn, plan.latency_jobs, plan.chunk)
            result["breakdown"].setdefault("latency", {})[variant] = latency_breakdown(Spans.collect(), samples, fn)
            log(f"{variant}: throughput, {plan.throughput_jobs} jobs at once x {plan.repeats} per mode")
            runs = measure_throughput(batched, fn, plan.throughput_jobs, plan.repeats, lambda: CpuMeter(roles))
            if variant == "trivial":
                kinds = {"ray": fn.__name__, "ray-affinity": fn.__name__, "coopsched": "run_measured",
                         "coopsched-map": "run_measured"}
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


def targets(result: dict) -> list[dict]:
    out = []
    for variant, modes in result["variants"].items():
        ray_p50 = modes["ray"]["latency"]["submit_to_result_ms"]["p50"]
        coop_p50 = modes["coopsched"]["latency"]["submit_to_result_ms"]["p50"]
        ratio = coop_p50 / ray_p50
        out.append({"variant": variant, "target": "p50 submit->result coopsched / ray <= 3x",
                    "value": round(ratio, 2), "limit": LATENCY_TARGET_X, "status": _status(ratio <= LATENCY_TARGET_X)})
        for mode in ("coopsched", "coopsched-map"):
            share = modes[mode]["throughput"]["jobs_per_s"] / modes["ray"]["throughput"]["jobs_per_s"]
            out.append({"variant": variant, "target": f"jobs/s {mode} / ray >= 50%", "value": round(share, 3),
                        "limit": THROUGHPUT_TARGET, "status": _status(share >= THROUGHPUT_TARGET)})
    return out


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ----------------------------------------------------------------------------- the report
def format_report(result: dict) -> str:
    m = result["meta"]
    lines = [f"Coopsched end to end ({m['cluster']}; python {m['python']}, ray {m['ray']}, {m['cpus']} cores, "
             f"{m['seconds']:.0f} s, load average {m['load_start']} -> {m['load_end']})", ""]
    rows = []
    for variant, modes in result["variants"].items():
        for mode, r in modes.items():
            lat = r["latency"]
            start = f"{_ms(lat['submit_to_start_ms']['p50'])} / {_ms(lat['submit_to_start_ms']['p99'])}" if lat else "-"
            done = f"{_ms(lat['submit_to_result_ms']['p50'])} / {_ms(lat['submit_to_result_ms']['p99'])}" if lat else "-"
            rows.append((variant, mode, start, done, f"{r['throughput']['jobs_per_s']:,.0f}"))
    lines.append(table(["variant", "mode", "submit->start p50/p99 ms", "submit->result p50/p99 ms", "jobs/s"], rows))
    p = m["plan"]
    lines.append(f"  latency: {p['latency_jobs']} sequential jobs per mode; throughput: {p['throughput_jobs']} jobs "
                 f"at once, median of {p['repeats']} run(s) (all runs in the JSON)")
    lost = result.get("lost_results", {}).get("jobs", [])
    if lost:
        lines.append(f"  LOST RESULTS: {len(lost)} Coopsched job(s) succeeded but JobHandle.result() could not fetch "
                     f"their value (it polls until its timeout); each stalled its run ~{2 * LOST_AFTER_S:.0f} s here. "
                     "Throughput medians skip runs with a lost result when a clean run exists.")
    lines += ["", "Targets (Coopsched against bare Ray tasks)"]
    for t in result["targets"]:
        value = f"{t['value']:.2f}x" if "submit->result" in t["target"] else f"{t['value']:.0%}"
        lines.append(f"  [{t['status']}] {t['variant']:<10} {t['target']:<45} {value}")
    for variant, lat in result.get("breakdown", {}).get("latency", {}).items():
        lines += ["", f"Where a sequential {variant} job's time goes (each hop's p50 and p99 over the jobs, ms; "
                  "from Ray's task events)"]
        for mode in ("coopsched", "ray"):
            b = lat[mode]
            rows = [(r["segment"], _ms(r["p50"]), _ms(r["p99"])) for r in b["segments"]]
            rows.append(("total (submit -> value)", _ms(b["total_ms"]["p50"]), _ms(b["total_ms"]["p99"])))
            lines.append(table([f"{mode} ({b['matched_jobs']} jobs)", "p50", "p99"], rows))
            if b["jobs_on_a_fresh_worker_process"]:
                lines.append(f"  ({b['jobs_on_a_fresh_worker_process']} job(s) ran on a worker process Ray had just "
                             "started)")
            for r in b.get("other", ()):
                lines.append(f"  ({r['segment']}: p50 {_ms(r['p50'])} ms)")
        if lat.get("error"):
            lines.append(f"  ({lat['error']})")
    lines.append("")
    thr = result.get("breakdown", {}).get("throughput")
    trivial = result["variants"].get("trivial", {})
    if thr and trivial:
        lines.append("Throughput, trivial jobs, first run of each mode: CPU ms per job by process (all on this machine),")
        lines.append("CPU slots busy running the job's Ray task, and actor method calls per job")
        roles = ["driver (client)", "head actor", "tracker actor", "worker actors", "task workers", "raylet", "gcs",
                 "other ray processes"]
        rows = []
        for mode, a in thr.items():
            cpu = trivial[mode]["throughput"].get("cpu_first_run") or {}
            by = cpu.get("by_role", {})
            calls = sum(v["calls"] for v in a["actor_methods"].values()) / a["jobs"]
            rows.append((mode, f"{a['jobs'] / a['wall_s']:,.0f}", *[_ms(by.get(r, {}).get("ms_per_job")) for r in roles],
                         f"{cpu.get('machine_cpu_s', 0) / max(cpu.get('wall_s', 1), 1e-9) / (m['cpus'] or 1):.0%}",
                         f"{a['slot_busy_fraction']:.0%}", f"{calls:.1f}"))
        lines.append(table(["mode", "jobs/s", "driver", "head", "tracker", "workers", "tasks", "raylet", "gcs", "other",
                            "machine busy", "slots busy", "calls/job"], rows))
        lines.append("")
    for run_name, prof in (result.get("profile") or {}).items():
        lines += ["", f"py-spy, an extra {run_name} run of {prof['jobs']} trivial jobs ({prof['wall_s']} s, untimed): "
                  "share of samples by the outermost Coopsched function on the stack"]
        for name, s in prof["processes"].items():
            if "by_coopsched_entry" not in s:
                lines.append(f"  {name}: {s.get('error')}")
                continue
            lines.append(f"  {name}: {s['active_threads']:.2f} threads busy on average; by method: " + "; ".join(
                f"{r['function']} {r['share']:.0%}" for r in s["by_coopsched_entry"][:6]))
            lines.append("    innermost Coopsched call: " + "; ".join(
                f"{r['function']} {r['share']:.0%}" for r in s["by_innermost_call"][:5]))
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


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
def start_local_ray(num_cpus: int = 4) -> Layout:
    node_id = init_local_ray(num_cpus, NAMESPACE)
    return Layout.one_node(node_id, f"one raylet, {num_cpus} CPUs, 4 executors of 1 CPU on it")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N and M; well under a minute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default {DEFAULT_JSON})")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="add an untimed map run with py-spy sampling the head, tracker and one worker into DIR")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    say = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    say("starting a local Ray instance (one raylet, 4 CPUs) ...")
    try:
        layout = start_local_ray()
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
