"""The end-to-end benchmark's targets and its printed report (``benchmarks/end_to_end.py`` measures)."""

from __future__ import annotations

from scheduler.tables import table

LOST_AFTER_S = 1.0  # a succeeded job still without a value after two such waits counts as a lost result
LATENCY_TARGET_X = 3.0  # Coopsched p50 submit->result <= 3x bare Ray
THROUGHPUT_TARGET = 0.5  # Coopsched jobs/s >= 50% of bare Ray


def targets(result: dict) -> list[dict]:
    """Each target against bare Ray, for Coopsched and for the floor (``benchmarks/e2e_floor.py``: the same
    path with none of Coopsched's work) in the same run: ``floor_status`` MISS means the path itself
    misses it on this machine."""
    out = []
    for variant, modes in result["variants"].items():
        def latency(mode: str) -> float:
            return modes[mode]["latency"]["submit_to_result_ms"]["p50"] / modes["ray"]["latency"]["submit_to_result_ms"]["p50"]

        def share(mode: str) -> float:
            return modes[mode]["throughput"]["jobs_per_s"] / modes["ray"]["throughput"]["jobs_per_s"]

        ratio, floor = latency("coopsched"), latency("floor") if "floor" in modes else None
        out.append({"variant": variant, "target": "p50 submit->result coopsched / ray <= 3x",
                    "value": round(ratio, 2), "limit": LATENCY_TARGET_X, "status": _status(ratio <= LATENCY_TARGET_X),
                    **_floor(floor, floor is not None and floor <= LATENCY_TARGET_X, 2)})
        for mode, floor_mode in (("coopsched", "floor"), ("coopsched-map", "floor-map")):
            value, floor = share(mode), share(floor_mode) if floor_mode in modes else None
            out.append({"variant": variant, "target": f"jobs/s {mode} / ray >= 50%", "value": round(value, 3),
                        "limit": THROUGHPUT_TARGET, "status": _status(value >= THROUGHPUT_TARGET),
                        **_floor(floor, floor is not None and floor >= THROUGHPUT_TARGET, 3)})
    return out


def _floor(value: float | None, ok: bool, digits: int) -> dict:
    return {} if value is None else {"floor_value": round(value, digits), "floor_status": _status(ok)}


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


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
    lines += ["", "Targets (Coopsched against bare Ray tasks; the floor: the same path with none of Coopsched's work:"
              " a target it misses is out of Coopsched's reach on this machine)"]
    for t in result["targets"]:
        def show(v: float) -> str:
            return f"{v:.2f}x" if "submit->result" in t["target"] else f"{v:.0%}"
        floor = f"   floor {show(t['floor_value'])} [{t['floor_status']}]" if "floor_value" in t else ""
        reach = "" if t.get("floor_status") != "MISS" else " (the floor misses it too)" if t["status"] == "MISS" \
            else " (the floor misses it: a noisy run)"
        lines.append(f"  [{t['status']}] {t['variant']:<10} {t['target']:<45} {show(t['value']):>6}{floor}{reach}")
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
