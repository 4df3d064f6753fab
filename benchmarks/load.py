"""Load: many members submit at once against quotas that admit about half of their jobs.

Run ``python benchmarks/load.py [--members 50] [--jobs 200] [--threads N] [--no-hold] [--dev]
[--quick] [--json PATH]``.

One process, one run. ``main()`` starts a local Ray instance (``address="local"``, one
raylet, 4 CPUs), runs :func:`run` and stops everything it started, even on error.
:func:`run` takes an already initialised Ray, a namespace and the executors' places, so the
integration smoke test runs it, tiny, on its shared test cluster.

The set-up. Coopsched keeps its state in a SQLite file in a temporary directory (never the
user's default store). The head verifies every request: the operator starts it with a key,
registers one key pair per member, and each member submits through its own ``Client``
signed with its own key (``--dev``: development mode, nothing signed or verified). One coop, strict policy, no rate limit, ``max_concurrent_tasks``
1,000,000; 4 executors of 1 CPU. Every job asks for 1 CPU x ``max_runtime_s`` 360 s, so
admission reserves 0.1 CPU-hour for it; every member's monthly quota is 0.1 x (jobs // 2)
CPU-hours (10.0 for 200 jobs): exactly half of each member's jobs fit.

The load. Every member's jobs are submitted with single ``Client.submit`` calls (not
``Client.map``: a batch with a refused item raises ``PolicyViolation`` and returns none of the
admitted handles), from one thread per member by default (``--threads N``: N threads, each
cycling over its share of the members), all released by one barrier.

The hold. The measured charge of a trivial job is milliseconds, far below its 0.1 CPU-h
reservation, so every job that settles during the burst frees room for about one more
admission and "about half" would drift with the machine's speed. By default each job
therefore waits (polling a file, up to ``HOLD_LIMIT_S``) until every submission has been
answered: the 4 executors hold one job each, everything else queues, nothing settles during
the burst, and exactly ``jobs // 2`` admissions per member are right, no more (an overshoot)
and no fewer (a needless refusal). ``--no-hold`` lets jobs run and settle while submissions
continue; then only the replay below judges the quota.

Each job returns ``(member, index, a uuid made inside the task)`` and appends the same line
to a runs log in the temporary directory (one ``O_APPEND`` write, so lines from concurrent
tasks never mix; every process of the run is on this machine). A job that ran twice leaves
two lines even though ``result()`` can only return one value.

Latency of other calls. A prober actor in its own process (so the driver's 50 submitting
threads do not compete with it for one GIL) runs a thread that calls the head in rounds:
``ping``, ``usage`` (of the members in turn) and ``status`` of a finished job, pausing
``PROBE_PAUSE_S`` between rounds. ``IDLE_ROUNDS`` rounds before the load give the idle
figures; then it probes until every admitted job has finished and settled. Samples are split
into *submitting* (until the last submission is answered) and *draining* (the admitted jobs
run, their results are fetched and their usage settles). Target: p50 under load <= 5x the
idle p50, per call and phase. Every ``usage`` answer seen under load is also checked against
the quota.

The checks, once every admitted job has finished and the ledger has settled:

1. quota: no overshoot, projected or settled. For every member: settled + reserved <= quota
   (at the end and in every ``usage`` answer the prober saw); the job records replayed in
   time order (admission reserves 0.1, settlement replaces that with the charge) never have
   used + reserved over the quota after an admission; with the hold, admitted x 0.1 <= quota.
2. exactly once: every admitted job's result came back, each admitted job left exactly one
   line in the runs log with the uuid its result carries, uuids are unique, no refused job
   ran, no stray runs, and each member's ``tasks_completed`` equals its admitted count.
3. refusals: every refused submission carries a ``quota`` reason, its job record is
   ``rejected`` with nothing charged, each member's settled usage is exactly the sum of its
   admitted jobs' charges, and the replay shows every refusal was needed at its moment.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from scheduler.client import Client, shutdown  # noqa: E402
from scheduler.job_handle import JobHandle, PolicyViolation  # noqa: E402
from scheduler.identity import generate_key, private_key_pem, public_key_b64  # noqa: E402
from scheduler.ledger import to_units  # noqa: E402
from scheduler.tables import table  # noqa: E402
from benchmarks.common import init_local_ray, write_results  # noqa: E402
from benchmarks.load_checks import (CPUS_PER_JOB, JOB_CPU_HOURS, MAX_RUNTIME_S, check_exactly_once,  # noqa: E402
                                    check_quota, check_refusals, replay_quota)

if __name__ != "__main__":  # imported (e.g. by the smoke test): Ray workers cannot import `benchmarks`
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAMESPACE = "coopsched-load"
COOP = "load:coop"
WARMUP_MEMBER = "did:icn:load-warmup"
HOLD_LIMIT_S = 300.0  # a held job goes on after this even if the burst is not over (max_runtime_s is 360)
IDLE_ROUNDS = 60
PROBE_PAUSE_S = 0.02
LATENCY_TARGET_X = 5.0
RESULT_TIMEOUT_S = 900.0
SETTLE_TIMEOUT_S = 120.0
PROBED_CALLS = ("ping", "usage", "status")
PHASES = ("submitting", "draining")


# ----------------------------------------------------------------------------- plan and places
@dataclass(frozen=True)
class Plan:
    members: int
    jobs: int  # per member
    threads: int | None = None  # submitting threads; None: one per member
    hold: bool = True  # jobs wait until every submission is answered
    signed: bool = True  # every member signs with its own registered key (False: development mode)

    @property
    def fitting(self) -> int:
        """Jobs per member the quota admits."""
        return self.jobs // 2

    @property
    def quota_cpu_hours(self) -> float:
        return JOB_CPU_HOURS * self.fitting

    @property
    def thread_count(self) -> int:
        return max(1, min(self.threads or self.members, self.members))

    def member_names(self) -> list[str]:
        return [f"did:icn:load-{i:03d}" for i in range(self.members)]


FULL = Plan(members=50, jobs=200)
QUICK = Plan(members=10, jobs=40)
SMOKE = Plan(members=5, jobs=20)


@dataclass(frozen=True)
class ExecutorPlace:
    executor_id: str
    node_id: str
    region: str


def one_node(node_id: str, count: int = 4, region: str = "local") -> tuple[ExecutorPlace, ...]:
    return tuple(ExecutorPlace(f"load-{i}", node_id, region) for i in range(count))


# ----------------------------------------------------------------------------- the job
def load_job(member: str, index: int, release_file: str | None, runs_log: str) -> tuple[str, int, str]:
    """Wait for the release (if held), log this run with a fresh uuid, return it."""
    if release_file:
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not os.path.exists(release_file) and time.monotonic() < deadline:
            time.sleep(0.005)
    run_id = uuid.uuid4().hex
    fd = os.open(runs_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{member}\t{index}\t{run_id}\n".encode())
    finally:
        os.close(fd)
    return member, index, run_id


def read_runs(runs_log: Path) -> list[tuple[str, int, str]]:
    if not runs_log.exists():
        return []
    runs = []
    for line in runs_log.read_text(encoding="utf-8").splitlines():
        member, index, run_id = line.split("\t")
        runs.append((member, int(index), run_id))
    return runs


# ----------------------------------------------------------------------------- the prober
class HeadProber:
    """Times calls another client makes to the head, from a thread in its own process."""

    def __init__(self, namespace: str, members: Sequence[str], finished_task_id: str,
                 key_pem: bytes | None = None) -> None:
        self.client = Client(namespace=namespace, key=key_pem)
        self.members = list(members)
        self.finished = self.client.job(finished_task_id)
        self._samples: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = 0

    def rounds(self, count: int, pause_s: float) -> list[dict]:
        samples: list[dict] = []
        for _ in range(count):
            samples += self._one_round()
            time.sleep(pause_s)
        return samples

    def start(self, pause_s: float) -> bool:
        self._stop.clear()
        self._samples = []

        def loop() -> None:
            while not self._stop.is_set():
                self._samples += self._one_round()
                self._stop.wait(pause_s)

        self._thread = threading.Thread(target=loop, name="head-prober", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> list[dict]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        return self._samples

    def _one_round(self) -> list[dict]:
        member = self.members[self._round % len(self.members)]
        self._round += 1
        out = []
        for call in PROBED_CALLS:
            at, started = time.time(), time.perf_counter()
            sample: dict[str, Any] = {"call": call, "at": at}
            try:
                if call == "ping":
                    self.client.ping()
                elif call == "usage":
                    u = self.client.usage(COOP, member)
                    sample["usage"] = {"member": member, "used": u.cpu_hours, "reserved": u.reserved_cpu_hours,
                                       "quota": u.quota.cpu_hours_per_month if u.quota else None}
                else:
                    self.finished.status()
            except Exception as exc:  # recorded, not fatal: the report counts them
                sample["error"] = f"{type(exc).__name__}: {exc}"[:300]
            sample["ms"] = (time.perf_counter() - started) * 1000.0
            out.append(sample)
        return out


# ----------------------------------------------------------------------------- set-up
def load_policy(plan: Plan) -> dict:
    return {"coop_id": COOP, "enforcement_mode": "strict",
            "default_quota": {"cpu_hours_per_month": plan.quota_cpu_hours, "gpu_hours_per_month": 0.0,
                              "credits_per_month": None, "max_concurrent_tasks": 1_000_000,
                              "default_max_runtime_s": MAX_RUNTIME_S},
            "description": f"benchmarks/load.py: {JOB_CPU_HOURS:g} CPU-h per job, quota for {plan.fitting} "
                           f"of {plan.jobs} jobs per member"}


@dataclass
class Coopsched:
    """The operator's client and one client per member (each with its own key when signed)."""

    operator: Client
    members: dict[str, Client]
    operator_key_pem: bytes | None = None


def start_coopsched(namespace: str, executors: Sequence[ExecutorPlace], store_url: str, plan: Plan) -> Coopsched:
    """Head, tracker, policy and executors; when ``plan.signed``, the head verifies every request
    and each member gets a key pair, registered by the operator, that signs its calls."""
    shutdown(namespace)  # leftovers of an interrupted run in this namespace
    operator_key = generate_key() if plan.signed else None
    client = Client.local(namespace=namespace, store=store_url, key=operator_key)
    client.set_policy(load_policy(plan))
    for e in executors:
        client.register_executor(e.executor_id, coop=COOP, region=e.region, node_id=e.node_id,
                                 resources={"cpus": CPUS_PER_JOB}, trust=0.5)
    members: dict[str, Client] = {}
    for member in [WARMUP_MEMBER, *plan.member_names()]:
        key = generate_key() if plan.signed else None
        if key is not None:
            client.add_key(public_key_b64(key), coop=COOP, role="member", id=member)
        members[member] = Client(namespace=namespace, key=key) if key is not None else client
    return Coopsched(client, members, private_key_pem(operator_key) if operator_key is not None else None)


def job_options(member: str) -> dict:
    return {"coop": COOP, "member": member, "resources": {"cpus": CPUS_PER_JOB}, "max_runtime_s": MAX_RUNTIME_S,
            "name": "load_job"}


def warm_up(cs: Coopsched, executors: int, runs_log: Path) -> str:
    """Start the task worker processes and leave a finished job for the prober's ``status`` calls."""
    client = cs.members[WARMUP_MEMBER]
    handles = [client.submit(load_job, WARMUP_MEMBER, i, None, str(runs_log), **job_options(WARMUP_MEMBER))
               for i in range(2 * executors)]
    for h in handles:
        h.result(timeout=120)
    return handles[0].id


# ----------------------------------------------------------------------------- the burst
@dataclass
class Submission:
    member: str
    index: int
    ms: float
    handle: JobHandle | None = None
    refusal: dict | None = None  # the Decision, as JSON
    error: str | None = None
    result: tuple | None = None
    result_error: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.member, self.index


def submit_all(clients: dict[str, Client], plan: Plan, release_file: str | None, runs_log: str) -> list[Submission]:
    """Every member's jobs, from ``plan.thread_count`` threads released together."""
    members = plan.member_names()
    shares = [members[k::plan.thread_count] for k in range(plan.thread_count)]
    barrier = threading.Barrier(len(shares))

    def submit_share(share: list[str]) -> list[Submission]:
        out = []
        barrier.wait()
        for index in range(plan.jobs):
            for member in share:
                started = time.perf_counter()
                s = Submission(member, index, 0.0)
                try:
                    s.handle = clients[member].submit(load_job, member, index, release_file, runs_log, **job_options(member))
                except PolicyViolation as exc:
                    s.refusal = exc.decision.model_dump(mode="json")
                except Exception as exc:  # an error is neither an admission nor a refusal: check 2 reports it
                    s.error = f"{type(exc).__name__}: {exc}"[:500]
                s.ms = (time.perf_counter() - started) * 1000.0
                out.append(s)
        return out

    with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="submit") as pool:
        return [s for part in pool.map(submit_share, shares) for s in part]


def fetch_results(admitted: list[Submission], threads: int) -> None:
    def fetch(s: Submission) -> None:
        try:
            s.result = tuple(s.handle.result(timeout=RESULT_TIMEOUT_S))
        except Exception as exc:
            s.result_error = f"{type(exc).__name__}: {exc}"[:500]

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="result") as pool:
        list(pool.map(fetch, admitted))


def wait_settled(client: Client, admitted: Counter, members: Sequence[str]) -> dict[str, Any]:
    """Each member's usage once nothing is reserved or running and every admitted job is counted."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        usage = {m: client.usage(COOP, m) for m in members}
        if all(u.reserved_cpu_hours == 0 and u.running == 0 and u.tasks_completed >= admitted[m]
               for m, u in usage.items()) or time.monotonic() > deadline:
            return usage
        time.sleep(0.2)


# ----------------------------------------------------------------------------- latency figures
def latency_figures(idle: list[dict], load: list[dict], phase_ends: dict[str, float]) -> list[dict]:
    """Per call: idle p50/p99 and, per phase, p50/p99, p50 ratio to idle and PASS/MISS."""

    def phase_of(at: float) -> str | None:
        start = phase_ends["load_start"]
        for phase in PHASES:
            if start <= at < phase_ends[phase]:
                return phase
            start = phase_ends[phase]
        return None

    def stats(samples: list[dict]) -> dict:
        ms = np.array([s["ms"] for s in samples if "error" not in s])
        return {"n": int(ms.size), "errors": sum(1 for s in samples if "error" in s),
                "p50": float(np.percentile(ms, 50)) if ms.size else None,
                "p99": float(np.percentile(ms, 99)) if ms.size else None}

    out = []
    for call in PROBED_CALLS:
        row = {"call": call, "idle": stats([s for s in idle if s["call"] == call])}
        for phase in PHASES:
            p = stats([s for s in load if s["call"] == call and phase_of(s["at"]) == phase])
            if p["p50"] is not None and row["idle"]["p50"]:
                p["x_idle"] = p["p50"] / row["idle"]["p50"]
                p["status"] = "PASS" if p["x_idle"] <= LATENCY_TARGET_X else "MISS"
            else:
                p["x_idle"], p["status"] = None, "NO DATA"
            row[phase] = p
        out.append(row)
    return out


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ----------------------------------------------------------------------------- the run
def run(plan: Plan, namespace: str, executors: Sequence[ExecutorPlace], log: Callable[[str], None] = print,
        store_url: str | None = None) -> dict:
    """Run the load on the Ray cluster this process is connected to; the Coopsched actors of
    ``namespace`` and the prober are stopped before this returns or raises."""
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="coopsched-load-"))
    store_url = store_url or f"sqlite:///{scratch}/state.db"
    release_file = scratch / "released"
    runs_log, warm_log = scratch / "runs.log", scratch / "warmup.log"
    members = plan.member_names()
    prober = None
    result: dict[str, Any] = {"meta": {"plan": {**plan.__dict__, "threads": plan.thread_count,
                                                "quota_cpu_hours": plan.quota_cpu_hours},
                                       "job_cpu_hours": JOB_CPU_HOURS, "executors": [e.__dict__ for e in executors],
                                       "submission": "Client.submit, one call per job", "namespace": namespace,
                                       "auth": "signed, a key per member" if plan.signed else "development mode",
                                       "python": platform.python_version(), "ray": ray.__version__,
                                       "cpus": os.cpu_count(), "load_start": _load()}}
    try:
        log(f"starting Coopsched in namespace {namespace!r}: head, tracker, {len(executors)} executors")
        cs = start_coopsched(namespace, executors, store_url, plan)
        client = cs.operator
        log("warming up")
        finished_id = warm_up(cs, len(executors), warm_log)
        prober = ray.remote(num_cpus=0)(HeadProber).remote(namespace, members, finished_id, cs.operator_key_pem)
        log(f"idle latency: {IDLE_ROUNDS} rounds of {', '.join(PROBED_CALLS)}")
        idle = ray.get(prober.rounds.remote(IDLE_ROUNDS, PROBE_PAUSE_S))
        ray.get(prober.start.remote(PROBE_PAUSE_S))
        log(f"submitting {plan.members} members x {plan.jobs} jobs from {plan.thread_count} threads"
            + (" (jobs held until every submission is answered)" if plan.hold else ""))
        load_start = time.time()
        submissions = submit_all(cs.members, plan, str(release_file) if plan.hold else None, str(runs_log))
        submitted_at = time.time()
        release_file.touch()
        admitted_subs = [s for s in submissions if s.handle is not None]
        admitted = Counter(s.member for s in admitted_subs)
        log(f"{len(submissions)} answered in {submitted_at - load_start:.1f} s: {len(admitted_subs)} admitted; "
            "fetching results")
        fetch_results(admitted_subs, min(16, plan.thread_count))
        usage = wait_settled(client, admitted, members)
        done_at = time.time()
        load_samples = ray.get(prober.stop.remote())
        log(f"all admitted jobs finished after {done_at - load_start:.1f} s; checking")

        records = {m: client.jobs(COOP, m) for m in members}
        statuses = {st.task_id: st for rs in records.values() for st in rs}
        admitted_ids = {s.handle.id for s in admitted_subs}
        charged = {m: sum(to_units(st.charged_cpu_hours) for st in rs if st.task_id in admitted_ids)
                   for m, rs in records.items()}
        replays = {m: replay_quota(rs, to_units(JOB_CPU_HOURS), to_units(plan.quota_cpu_hours))
                   for m, rs in records.items()}
        probe_usage = [s["usage"] for s in load_samples if "usage" in s]
        checks = [check_quota(plan, admitted, usage, replays, probe_usage),
                  check_exactly_once(submissions, read_runs(runs_log), usage, admitted,
                                     {t: st for t, st in statuses.items() if t in admitted_ids}),
                  check_refusals(submissions, statuses, usage, charged, replays)]
        submit_ms = [s.ms for s in submissions]
        phase_ends = {"load_start": load_start, "submitting": submitted_at, "draining": done_at}
        result.update({
            "counts": {"members": plan.members, "submitted": len(submissions), "admitted": len(admitted_subs),
                       "refused": sum(1 for s in submissions if s.refusal is not None),
                       "errors": sum(1 for s in submissions if s.error is not None),
                       "settled_during_burst": sum(r["settled_before_last_admission"] for r in replays.values())},
            "timing": {"submitting_s": submitted_at - load_start, "draining_s": done_at - submitted_at,
                       "wall_s": done_at - load_start,
                       "submissions_per_s": len(submissions) / max(submitted_at - load_start, 1e-9),
                       "admitted_jobs_per_s": len(admitted_subs) / max(done_at - load_start, 1e-9),
                       "submit_ms": {"p50": _pct(submit_ms, 50), "p99": _pct(submit_ms, 99)}},
            "latency": latency_figures(idle, load_samples, phase_ends),
            "checks": [c.as_dict() for c in checks],
        })
    finally:
        release_file.touch()  # never leave held jobs waiting
        if prober is not None:
            ray.kill(prober)
        shutdown(namespace)
        shutil.rmtree(scratch, ignore_errors=True)
    result["ok"] = all(c["status"] == "PASS" for c in result["checks"])
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    result["meta"]["load_end"] = _load()
    return result


# ----------------------------------------------------------------------------- the report
def format_report(result: dict) -> str:
    m, c, t = result["meta"], result["counts"], result["timing"]
    p = m["plan"]
    lines = [f"Coopsched under load ({len(m['executors'])} executors of {CPUS_PER_JOB} CPU; {m['auth']}; "
             f"python {m['python']}, "
             f"ray {m['ray']}, {m['cpus']} cores, load average {m['load_start']} -> {m['load_end']})", ""]
    rows = [("members", c["members"]),
            ("jobs submitted", f"{c['submitted']} ({p['jobs']} per member, {m['submission']}, {p['threads']} threads)"),
            ("admitted", f"{c['admitted']} (quota {p['quota_cpu_hours']:g} CPU-h = {p['jobs'] // 2} jobs of "
                         f"{m['job_cpu_hours']:g} per member)"),
            ("refused", c["refused"]),
            ("submission errors", c["errors"]),
            ("jobs held during the burst", "yes" if p["hold"] else
             f"no ({c['settled_during_burst']} settled before their member's last admission)"),
            ("wall time", f"{t['wall_s']:.1f} s (submitting {t['submitting_s']:.1f} s, "
                          f"draining {t['draining_s']:.1f} s)"),
            ("jobs/s", f"{t['submissions_per_s']:.0f} submissions/s answered; {t['admitted_jobs_per_s']:.1f} admitted "
                       "jobs/s run to a settled result"),
            ("submit call ms", f"p50 {_ms(t['submit_ms']['p50'])}, p99 {_ms(t['submit_ms']['p99'])} "
                               "(seen by the submitting threads)")]
    lines.append(table(["figure", "value"], rows, max_width=110))
    lines += ["", f"Other calls to the head (a prober in its own process; ms; target p50 under load <= "
                  f"{LATENCY_TARGET_X:g}x idle p50)"]
    rows = []
    for r in result["latency"]:
        cells = [r["call"], f"{_ms(r['idle']['p50'])} / {_ms(r['idle']['p99'])} (n={r['idle']['n']})"]
        for phase in PHASES:
            ph = r[phase]
            x = f"{ph['x_idle']:.1f}x" if ph["x_idle"] is not None else "-"
            err = f", {ph['errors']} errors" if ph["errors"] else ""
            cells.append(f"{_ms(ph['p50'])} / {_ms(ph['p99'])} (n={ph['n']}{err}) {x} {ph['status']}")
        rows.append(cells)
    lines.append(table(["call", "idle p50 / p99", "submitting p50 / p99", "draining p50 / p99"], rows, max_width=110))
    lines += ["", "Checks"]
    for ch in result["checks"]:
        lines.append(f"  [{ch['status']}] {ch['name']}")
        lines += [f"         {d}" for d in ch["details"]]
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ----------------------------------------------------------------------------- main
def start_local_ray(num_cpus: int = 4) -> tuple[ExecutorPlace, ...]:
    return one_node(init_local_ray(num_cpus, NAMESPACE), count=4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=FULL.members)
    parser.add_argument("--jobs", type=int, default=FULL.jobs, help="jobs per member")
    parser.add_argument("--threads", type=int, default=None, help="submitting threads (default: one per member)")
    parser.add_argument("--no-hold", action="store_true", help="let jobs run and settle while submissions go on")
    parser.add_argument("--dev", action="store_true", help="development mode: no keys, nothing verified")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.members} members x {QUICK.jobs} jobs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    members, jobs = (QUICK.members, QUICK.jobs) if args.quick else (args.members, args.jobs)
    if members < 1 or jobs < 2:
        parser.error("--members must be >= 1 and --jobs >= 2")
    plan = Plan(members=members, jobs=jobs, threads=args.threads, hold=not args.no_hold, signed=not args.dev)
    say = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    say("starting a local Ray instance (one raylet, 4 CPUs) ...")
    try:
        executors = start_local_ray()
        say(f"Ray up after {time.perf_counter() - t0:.1f} s")
        result = run(plan, NAMESPACE, executors, log=say)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    result["meta"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    say("")
    say(format_report(result))
    if args.json is not None:
        write_results(args.json, result, say)
    say(f"({result['meta']['total_seconds']} s in all)")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
