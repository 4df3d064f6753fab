"""The report of ``benchmarks/placement_latency.py``: its targets, worked out from the figures it
measured (never hard-coded), and the table it prints."""

from __future__ import annotations


def targets(result: dict) -> list[dict]:
    fleets = {f["executors"]: f for f in result["fleets"]}
    evals = result["policy_eval"]
    out = []

    def add(name: str, value: float | None, limit: float, unit: str, higher_is_better: bool = False,
            note: str | None = None) -> None:
        if value is None:
            status = "n/a"
        else:
            status = "met" if (value >= limit if higher_is_better else value <= limit) else "missed"
        out.append({"target": name, "value": value, "limit": limit, "unit": unit, "status": status, "note": note})

    def cpu_note(n: int) -> str | None:  # the same decisions' thread CPU time: what the OS's other work hides;
        # and the spread of fixed work timed beside them: what the machine itself adds to any p99
        fleet = fleets.get(n, {})
        p99 = fleet.get("core_cpu_time", {}).get("p99_us")
        steady = fleet.get("steady_work", {})
        spread = (f"; fixed work's p99/p50 beside it {steady['p99_us'] / steady['p50_us']:.2f}"
                  if steady.get("p50_us") else "")
        return None if p99 is None else f"CPU-time p99 {p99:,.1f} us{spread}"

    add("decision p99 <= 100 us at 1,000 executors", fleets.get(1_000, {}).get("core", {}).get("p99_us"), 100, "us",
        note=cpu_note(1_000))
    add("decision p99 <= 1 ms at 100,000 executors", fleets.get(100_000, {}).get("core", {}).get("p99_us"),
        1000, "us", note=cpu_note(100_000))
    add(">= 30x the reference at 10,000 executors (p50 ratio)", fleets.get(10_000, {}).get("ratio_p50"), 30, "x",
        higher_is_better=True)
    worst = max((e["core"]["p50_us"] for e in evals), default=None)
    add("policy evaluation <= 20 us per submission (p50, worst fleet)", worst, 20, "us")
    return out


def format_table(result: dict) -> str:
    m = result["meta"]
    lines = [f"Coopsched placement latency  ({'quick' if m['quick'] else 'full'} run, seed {m['seed']}, "
             f"python {m['python']}, numpy {m['numpy']}, {m['cpus']} cores, {m['seconds']:.0f} s, "
             f"load average {m['load_start']} -> {m['load_end']})", ""]
    lines.append("Admission + placement, one task (core.submit + core.schedule); fleet loaded with running tasks")
    head = (f"{'executors':>10} | {'core p50':>9} {'core p99':>9} {'cpu p99':>9} {'n':>5} | {'ref p50':>10} "
            f"{'ref p99':>10} {'n':>4} | {'ref/core':>8} | {'agree':>9}")
    lines += [head, "-" * len(head)]
    for f in result["fleets"]:
        c, u, r, a = f["core"], f["core_cpu_time"], f["reference"], f["agreement"]
        lines.append(f"{f['executors']:>10,} | {_us(c['p50_us']):>9} {_us(c['p99_us']):>9} {_us(u['p99_us']):>9} "
                     f"{c['samples']:>5} | {_us(r['p50_us']):>10} {_us(r['p99_us']):>10} {r['samples']:>4} | "
                     f"{_x(f['ratio_p50']):>8} | {a['agreed']:>4}/{a['compared']:<4}")
    lines.append("  core: wall time (perf_counter_ns) of every timed decision; cpu p99: the same decisions' thread CPU")
    lines.append("  time (excludes time the OS ran other work); ref/core: reference p50 / core p50 on the same (paired)")
    lines.append("  decisions, the core timed first, then the reference on its mirrored state; agree: same executor,")
    lines.append("  both unplaced or refused, or a tie within 1e-9")
    lines.append("  " + "; ".join(
        f"{f['executors']:,}: core there {_us(f['core_paired']['p50_us'])}, submit {_us(f['core_submit']['p50_us'])}"
        f" + schedule {_us(f['core_schedule']['p50_us'])}; ref admission {_us(f['reference_admission']['p50_us'])}"
        f" + placement {_us(f['reference_placement']['p50_us'])}" for f in result["fleets"][-2:]))
    lines.append("  placement alone (ref filter+score+pick / core.schedule), p50: " + ", ".join(
        f"{f['executors']:,}: {_x(f['ratio_placement_p50'])}" for f in result["fleets"]))
    lines.append("  the machine's own spread: the same fixed work (interpreted Python and numpy) timed after each core "
                 "decision, p50 / p99 (p99/p50): " + ", ".join(
                     f"{f['executors']:,}: {_us(w['p50_us'])} / {_us(w['p99_us'])} ({w['p99_us'] / w['p50_us']:.2f})"
                     for f in result["fleets"] if (w := f.get("steady_work", {})).get("p50_us")))
    lines.append("")
    lines.append("Policy evaluation per submission (scheduler.admission.evaluate vs the reference's admission checks)")
    head = (f"{'executors':>10} | {'core p50':>9} {'core p99':>9} {'cpu p99':>9} {'cached p50':>10} | {'ref p50':>9} "
            f"{'ref p99':>9} {'n':>5} | {'ref+scan p50':>12} | {'agree':>9}")
    lines += [head, "-" * len(head)]
    for e in result["policy_eval"]:
        c, h, r, sc, a = (e["core"], e["core_static_fit_cached"], e["reference_rules_quota"],
                          e["reference_with_fleet_scan"], e["agreement"])
        lines.append(f"{e['executors']:>10,} | {_us(c['p50_us']):>9} {_us(c['p99_us']):>9} "
                     f"{_us(e['core_cpu_time']['p99_us']):>9} {_us(h['p50_us']):>10} | "
                     f"{_us(r['p50_us']):>9} {_us(r['p99_us']):>9} {r['samples']:>5} | {_us(sc['p50_us']):>12} | "
                     f"{a['agreed']:>4}/{a['compared']:<4}")
    lines += ["  core: as submitted (its caches as they stand); cached: the same task again (static fit cached)",
              "  ref: rules + quota, static fit cached; ref+scan: the dearest feasible executor (projected",
              "  credits, and whether any executor can ever run the task) found by scanning the fleet per call", ""]
    b = result["backlog"]
    lines.append(f"Backlog: {b['tasks']:,} queued tasks on {b['executors']:,} executors")
    lines.append(f"  core.schedule(): {b['placed']:,} placed in {b['rounds']} rounds, {b['core_schedule_s']} s "
                 f"-> {b['core_decisions_per_s']:,} decisions/s")
    lines.append(f"  reference ({b['reference']['samples']} sampled placements): p50 {_us(b['reference']['p50_us'])}"
                 f" -> {b['reference_decisions_per_s']:,} decisions/s; core/reference {_x(b['ratio'])}; "
                 f"agree {b['agreement']['agreed']}/{b['agreement']['compared']}")
    lines += ["", "Targets"]
    for t in result["targets"]:
        v = "-" if t["value"] is None else (f"{t['value']:,.1f} {t['unit']}" if t["unit"] != "x" else _x(t["value"]))
        note = f"  ({t['note']})" if t.get("note") else ""
        lines.append(f"  [{t['status']:>6}] {t['target']:<62} {v}{note}")
    for f in result["fleets"]:
        prof = f.get("profile")
        if prof:
            lines += ["", f"cProfile of core.submit + core.schedule at {f['executors']:,} executors: "
                      f"{prof['decisions']} decisions, {_us(prof['total_us'])} per decision under the profiler"]
            for title, key in (("by own time", "by_own_time"), ("by cumulative time", "by_cumulative_time")):
                lines.append(f"  {title}:   own/decision  cum/decision  calls/decision")
                for row in prof[key]:
                    lines.append(f"  {row['own_us']:>20.1f} us {row['cum_us']:>10.1f} us {row['calls_per_decision']:>9.2f}"
                                 f"   {row['function']}")
    return "\n".join(lines)


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} us"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}x"
