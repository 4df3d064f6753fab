"""Where the time goes in ``benchmarks/end_to_end.py``: CPU per process, hops per job, py-spy.

* :class:`CpuMeter`: CPU seconds per process from ``/proc`` (driver, head, tracker, worker
  actors, task workers, raylet, GCS) over a block, and how busy the machine was;
* :class:`Spans`: Ray's own task events (``ray.timeline()``: the start and end of every actor
  method and task, wall clock, same machine), matched to each sequential job by its time
  window (:func:`latency_breakdown`), and the CPU slots' activity in a throughput run
  (:func:`throughput_activity`);
* :class:`PySpy`: ``py-spy record`` of some processes while a block runs, summarised by the
  Coopsched method the time belongs to.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray

if TYPE_CHECKING:
    from benchmarks.end_to_end import Sample, ThroughputRun

REPOSITORY = str(Path(__file__).resolve().parent.parent) + "/"


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
    kind: str  # "Head.submit", "ExecutorWorker.start_many", "run_measured", "echo", ...
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
    ("head.submit starts -> worker.start_many starts (admit, place, persist, dispatch)", "head_submit_start",
     "worker_start_start"),
    ("worker.start_many starts -> Ray task starts (launch, lease)", "worker_start_start", "task_start"),
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
    start = spans.first("ExecutorWorker.start_many", submit.start if submit else s.submitted, s.returned)
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
             ("worker.start_many span", "worker_start_start", "worker_start_end"),
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
    for marker in ("/site-packages/", REPOSITORY, "/lib/python3.11/"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location
