"""Store throughput: settled usage reports per second on each ledger backend, beside the in-memory ``Ledger``.

Run ``python benchmarks/store_throughput.py [--quick] [--json PATH] [--reports N]``.

One process, one run. ``main()`` starts its own ``redis-server`` (``tests.redis_server.RedisServer``:
AOF on, ``appendfsync always``) and stops it at the end, even on error. The measuring
function (:func:`run`) takes the URL of a running Redis server, so the integration smoke
test runs it on the session's server.

A usage report is settled as in the real flow: its task was *reserved* at admission
(done beforehand, untimed), then the report *settles* it with the measured cost. Only the
settles are timed (``time.perf_counter_ns``, garbage collector off), after an untimed
warm-up of a few reports (script loading, statement cache). The reports are spread over 4
coops x 8 members in one month, with a fixed seed; every case starts from an empty store:

* ``ledger``: ``scheduler.ledger.Ledger`` (in memory, no durability) — the baseline;
* ``sqlite``: a file store in a temp dir (WAL, ``synchronous=NORMAL``), one ``settle()`` per
  report, then ``settle_many`` in batches of 100 and 1,000 (one transaction per batch);
* ``memory``: ``memory://``, the same SQLite code in memory, ``settle`` and ``settle_many``;
* ``redis``: one ``settle()`` (one script call, one round trip) per report, then
  ``settle_many`` in batches of 200 and 1,000 (scripts of 200 settlements, pipelined), with
  ``appendfsync always`` and again with ``everysec``. ``RedisServer`` takes no appendfsync
  argument, so ``everysec`` is set on the running server with ``CONFIG SET`` and the
  previous value is put back afterwards.

After each case the store's standing of every (coop, member, month) must equal the
expected totals — settled usage summed from the reports, no open reservation, one
completed task per report — and every settle must have answered True; then a sample of
reports is delivered again and must answer False without changing any total. That is
the PASS/FAIL "totals" column: nothing lost, nothing counted twice.

Targets: >= 5,000 reports/s for the SQLite file store batched (every batch size) and
>= 10,000 reports/s for Redis pipelined with ``appendfsync always`` (every batch size;
``everysec`` rows are shown for comparison only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import random
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from scheduler.ledger import ZERO, Cost, Ledger, ReserveResult, Standing, period_of  # noqa: E402
from scheduler.state_store import StateStore, open_store  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

SEED = 20261118
FULL_REPORTS = 20_000
QUICK_REPORTS = 2_000
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "store_throughput.json"
COOPS = ("research:biolab", "timebank:seattle", "housing:greenfield", "mutual-aid:oakland")
MEMBERS = tuple(f"did:icn:member-{i:02d}" for i in range(8))
NOW = dt.datetime(2026, 11, 18, 12, tzinfo=dt.timezone.utc).timestamp()
REDELIVERED = 50  # reports delivered a second time after each case; each must be refused
FSYNC_MODES = ("always", "everysec")
TARGETS = (  # (backend, mode, reports/s, appendfsync the rows must have, or None)
    ("sqlite", "settle_many", 5_000, None),
    ("redis", "settle_many", 10_000, "always"),
)


@dataclass(frozen=True)
class Report:
    task_id: str
    coop_id: str
    member: str
    projected: Cost  # reserved at admission
    measured: Cost   # settled at completion


@dataclass(frozen=True)
class Case:
    backend: str              # ledger | sqlite | memory | redis
    mode: str                 # settle (one call per report) | settle_many
    batch: int = 1
    appendfsync: str | None = None

    @property
    def label(self) -> str:
        fsync = f", appendfsync {self.appendfsync}" if self.appendfsync else ""
        return f"{self.backend} {self.mode}" + (f" x{self.batch}" if self.mode == "settle_many" else "") + fsync


def cases(fsync_modes: Sequence[str] = FSYNC_MODES) -> list[Case]:
    """Every case, the in-memory ``Ledger`` first (the ratios are against it)."""
    rows = [Case("ledger", "settle"),
            Case("sqlite", "settle"), Case("sqlite", "settle_many", 100), Case("sqlite", "settle_many", 1000),
            Case("memory", "settle"), Case("memory", "settle_many", 1000)]
    for fsync in fsync_modes:
        rows += [Case("redis", "settle", 1, fsync), Case("redis", "settle_many", 200, fsync),
                 Case("redis", "settle_many", 1000, fsync)]
    return rows


def make_reports(n: int, seed: int = SEED) -> list[Report]:
    """``n`` reports over 4 coops x 8 members; measured usage is 30-120% of the projection."""
    rng = random.Random(seed)
    reports = []
    for i in range(n):
        projected = Cost(rng.randrange(100_000, 4_000_000), rng.choice((0, 0, 0, 500_000, 1_000_000, 2_000_000)),
                         rng.randrange(1_000_000, 50_000_000))
        share = rng.uniform(0.3, 1.2)
        measured = Cost(int(projected.cpu * share), int(projected.gpu * share), int(projected.credits * share))
        reports.append(Report(f"task-{i:07d}", rng.choice(COOPS), rng.choice(MEMBERS), projected, measured))
    return reports


def expected_standing(reports: Sequence[Report]) -> dict[tuple[str, str], tuple[Cost, Cost, int]]:
    """(used, reserved, completed) per (coop, member) once every report is settled exactly once."""
    totals: dict[tuple[str, str], tuple[Cost, Cost, int]] = {}
    for r in reports:
        used, _, count = totals.get((r.coop_id, r.member), (ZERO, ZERO, 0))
        totals[(r.coop_id, r.member)] = (used + r.measured, ZERO, count + 1)
    return totals


# ----------------------------------------------------------------------------- one case
def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _settle_all(case: Case, target: Ledger | StateStore, reports: Sequence[Report], period: str) -> list[bool]:
    """Settle ``reports`` the way ``case`` says; one answer per report."""
    if isinstance(target, Ledger):
        return [target.settle(r.task_id, r.coop_id, r.member, r.measured, NOW) for r in reports]
    if case.mode == "settle":
        return [target.settle(r.task_id, r.coop_id, r.member, period, r.measured) for r in reports]
    items = [(r.task_id, r.coop_id, r.member, period, r.measured) for r in reports]
    answers: list[bool] = []
    for batch in _batches(items, case.batch):
        answers += target.settle_many(batch)
    return answers


def _standing(target: Ledger | StateStore, coop_id: str, member: str, period: str) -> tuple[Cost, Cost, int]:
    if isinstance(target, Ledger):
        s: Standing = target.standing(coop_id, member, NOW)
        return s.used, s.reserved, s.tasks_completed
    return target.standing(coop_id, member, period)


def check_totals(target: Ledger | StateStore, reports: Sequence[Report], answers: list[bool],
                 redelivered: list[bool], period: str) -> dict:
    """Whether the standing equals the expected totals, every settle was accepted and every redelivery refused."""
    mismatches = []
    for (coop_id, member), want in sorted(expected_standing(reports).items()):
        got = _standing(target, coop_id, member, period)
        if got != want:
            mismatches.append({"coop": coop_id, "member": member, "want": [asdict(want[0]), asdict(want[1]), want[2]],
                               "got": [asdict(got[0]), asdict(got[1]), got[2]]})
    accepted, refused_again = sum(answers), len(redelivered) - sum(redelivered)
    ok = not mismatches and accepted == len(reports) and refused_again == len(redelivered)
    return {"ok": ok, "keys_checked": len(expected_standing(reports)), "settles_accepted": accepted,
            "reports": len(reports), "redelivered": len(redelivered), "redelivered_refused": refused_again,
            "mismatches": mismatches[:5]}


def measure_case(case: Case, target: Ledger | StateStore, reports: Sequence[Report], warmup: int) -> dict:
    """Reserve every report (untimed), settle ``warmup`` of them (untimed), time the rest, check the totals."""
    period = period_of(NOW)
    for r in reports:
        if isinstance(target, Ledger):
            answer = target.reserve(r.task_id, r.coop_id, r.member, r.projected, NOW)
        else:
            answer = target.reserve(r.task_id, r.coop_id, r.member, period, r.projected)
        if answer is not ReserveResult.RESERVED:
            raise RuntimeError(f"{case.label}: reserving {r.task_id} answered {answer.value}, expected reserved "
                               "(every case must start from an empty store)")
    answers = _settle_all(case, target, reports[:warmup], period)
    timed = reports[warmup:]
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        answers += _settle_all(case, target, timed, period)
        elapsed_ns = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    redelivered = _settle_all(case, target, reports[:min(REDELIVERED, len(reports))], period)
    seconds = elapsed_ns / 1e9
    return {**asdict(case), "label": case.label, "reports_timed": len(timed), "warmup_reports": warmup,
            "seconds": round(seconds, 4), "reports_per_s": round(len(timed) / seconds, 1),
            "totals": check_totals(target, reports, answers, redelivered, period)}


# ----------------------------------------------------------------------------- backends
def _redis_prefix(run_id: str, case: Case) -> str:
    return f"coopsched-bench:{run_id}:{case.backend}-{case.mode}-{case.batch}-{case.appendfsync}:"


@contextmanager
def _target(case: Case, run_id: str, redis_url: str, sqlite_dir: Path) -> Iterator[Ledger | StateStore]:
    """An empty ledger or store for ``case``; closed, and its data removed, afterwards."""
    if case.backend == "ledger":
        yield Ledger()
        return
    if case.backend == "sqlite":
        path = sqlite_dir / f"{run_id}-{case.mode}-{case.batch}.db"
        url = f"sqlite:///{path}"
    elif case.backend == "memory":
        url = f"memory://store-throughput-{run_id}-{case.mode}-{case.batch}"
    else:
        prefix = _redis_prefix(run_id, case)
        url = f"{redis_url}{'&' if '?' in redis_url else '?'}{urlencode({'prefix': prefix})}"
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()
        if case.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif case.backend == "redis":
            client = redis.Redis.from_url(redis_url)
            try:
                for keys in _batches(list(client.scan_iter(match=prefix + "*", count=1000)), 1000):
                    client.unlink(*keys)
            finally:
                client.close()


@contextmanager
def _appendfsync(redis_url: str, mode: str | None) -> Iterator[dict]:
    """The server's AOF settings, with ``appendfsync`` set to ``mode`` (and put back) when given."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        before = client.config_get("appendfsync")["appendfsync"]
        if mode is not None and mode != before:
            client.config_set("appendfsync", mode)
        try:
            config = client.config_get("append*")
            yield {"appendonly": config["appendonly"], "appendfsync": config["appendfsync"]}
        finally:
            if mode is not None and mode != before:
                client.config_set("appendfsync", before)
    finally:
        client.close()


# ----------------------------------------------------------------------------- the run
def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def targets(rows: list[dict]) -> list[dict]:
    """One entry per target: every qualifying row must reach it."""
    out = []
    for backend, mode, threshold, fsync in TARGETS:
        qualifying = [r for r in rows if r["backend"] == backend and r["mode"] == mode
                      and (fsync is None or r["appendfsync"] == fsync)]
        worst = min((r["reports_per_s"] for r in qualifying), default=None)
        out.append({"backend": backend, "mode": mode, "appendfsync": fsync, "min_reports_per_s": threshold,
                    "rows": {r["label"]: r["reports_per_s"] for r in qualifying}, "worst": worst,
                    "status": "PASS" if worst is not None and worst >= threshold else "MISS"})
    return out


def run(n_reports: int, redis_url: str, *, fsync_modes: Sequence[str] = FSYNC_MODES, seed: int = SEED,
        sqlite_dir: Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Measure every case on ``n_reports`` timed reports (plus a warm-up) against the Redis at ``redis_url``."""
    started = time.perf_counter()
    warmup = min(200, max(10, n_reports // 10))
    reports = make_reports(n_reports + warmup, seed)
    run_id = uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        server_version = client.info("server").get("redis_version")
    finally:
        client.close()
    result: dict = {"meta": {"reports": n_reports, "warmup_reports": warmup, "seed": seed, "coops": len(COOPS),
                             "members_per_coop": len(MEMBERS), "period": period_of(NOW),
                             "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                             "redis_server": server_version, "redis_py": redis.__version__,
                             "cpus": os.cpu_count(), "platform": platform.platform(), "load_start": _load()},
                    "rows": []}
    with tempfile.TemporaryDirectory(prefix="coopsched-store-bench-", dir=sqlite_dir) as tmp:
        for case in cases(fsync_modes):
            aof_settings = _appendfsync(redis_url, case.appendfsync) if case.backend == "redis" else nullcontext()
            with aof_settings as aof, _target(case, run_id, redis_url, Path(tmp)) as target:
                row = measure_case(case, target, reports, warmup)
            if aof is not None:
                row["redis_aof"] = aof
            result["rows"].append(row)
            if log:
                log(f"  {case.label:<42} {row['reports_per_s']:>12,.0f} reports/s  "
                    f"totals {'PASS' if row['totals']['ok'] else 'FAIL'}")
    baseline = result["rows"][0]["reports_per_s"]
    for row in result["rows"]:
        row["ratio_vs_ledger"] = round(row["reports_per_s"] / baseline, 5)
    result["targets"] = targets(result["rows"])
    result["totals_ok"] = all(r["totals"]["ok"] for r in result["rows"])
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    result["meta"]["load_end"] = _load()
    return result


def format_table(result: dict) -> str:
    meta = result["meta"]
    lines = [f"Settled usage reports per second ({meta['reports']:,} timed reports per case after "
             f"{meta['warmup_reports']} warm-up; {meta['cpus']} CPUs, load {meta['load_start']} -> {meta['load_end']}, "
             f"sqlite {meta['sqlite']}, redis-server {meta['redis_server']})",
             "",
             f"{'backend':<8} {'mode':<17} {'appendfsync':<12} {'reports/s':>12} {'vs Ledger':>10} {'totals':>7}",
             "-" * 71]
    for r in result["rows"]:
        mode = r["mode"] + (f" x{r['batch']}" if r["mode"] == "settle_many" else "")
        ratio = "1 (base)" if r["backend"] == "ledger" else f"{r['ratio_vs_ledger']:.4f}"
        lines.append(f"{r['backend']:<8} {mode:<17} {r['appendfsync'] or '-':<12} {r['reports_per_s']:>12,.0f} "
                     f"{ratio:>10} {'PASS' if r['totals']['ok'] else 'FAIL':>7}")
    lines += ["", "Targets (every qualifying row):"]
    for t in result["targets"]:
        where = f"{t['backend']} {t['mode']}" + (f", appendfsync {t['appendfsync']}" if t["appendfsync"] else "")
        worst = "-" if t["worst"] is None else f"{t['worst']:,.0f}"
        lines.append(f"  {where:<40} >= {t['min_reports_per_s']:>6,}/s   worst {worst:>8}/s   {t['status']}")
    lines.append(f"\nTotals check (standing = expected, redeliveries refused): "
                 f"{'PASS' if result['totals_ok'] else 'FAIL'} on {len(result['rows'])} cases")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPORTS:,} reports per case instead of "
                                                             f"{FULL_REPORTS:,}")
    parser.add_argument("--reports", type=int, default=None, metavar="N",
                        help="timed reports per case (overrides --quick), e.g. --reports 5000")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write results (default {DEFAULT_JSON})")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    n = args.reports if args.reports is not None else QUICK_REPORTS if args.quick else FULL_REPORTS
    if n < 1:
        parser.error(f"--reports must be a positive number of reports, got {n}; e.g. --reports 5000")

    from tests.redis_server import RedisServer
    server = RedisServer(appendonly=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server
    try:
        server.start()
        print(f"redis-server on {server.url} (AOF in {server.dir}); {n:,} reports per case", file=sys.stderr)
        result = run(n, server.url, seed=args.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        server.cleanup()
        signal.signal(signal.SIGTERM, previous)
    result["meta"]["quick"] = args.quick
    table = format_table(result)
    result["table"] = table
    print(table)
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["totals_ok"] else 1)
