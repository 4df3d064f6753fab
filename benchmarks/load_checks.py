"""The checks of ``benchmarks/load.py``, once every admitted job has finished and settled.

1. quota: no overshoot, projected or settled (at the end, in every ``usage`` answer seen under
   load, and in a replay of each member's job records in time order);
2. exactly once: every admitted job ran once (the runs log), its result came back, no refused
   job ran;
3. refusals: each carries the quota reason, charged nothing, and was needed at its moment.

Kept apart from the benchmark's driving code so each reads on its own; ``load.py`` documents
the set-up these checks assume (0.1 CPU-h reserved per job, quotas for half the jobs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scheduler.ledger import to_units

if TYPE_CHECKING:
    from benchmarks.load import Plan, Submission

CPUS_PER_JOB = 1
MAX_RUNTIME_S = 360.0
JOB_CPU_HOURS = CPUS_PER_JOB * MAX_RUNTIME_S / 3600.0  # what admission reserves per job: 0.1


def replay_quota(jobs: Sequence[Any], cost: int, quota: int) -> dict[str, Any]:
    """One member's job records in the head's order: admission reserves ``cost`` (units), settlement
    replaces it with the charge. Overshoots: admissions after which used + reserved > quota.
    Needless refusals: refusals when used + reserved + cost still fitted."""
    events = []
    for j in jobs:
        admitted = j.state.value != "rejected"
        events.append((j.submitted_at, 1, "admit" if admitted else "refuse", j))
        if admitted and j.finished_at is not None:
            events.append((j.finished_at, 0, "settle", j))
    used = held = peak = 0
    overshoots, needless, settled_during = [], [], 0
    last_admission = max((e[0] for e in events if e[2] == "admit"), default=0.0)
    for at, _, kind, j in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == "admit":
            held += cost
            peak = max(peak, used + held)
            if used + held > quota:
                overshoots.append({"task_id": j.task_id, "at": at, "projected": used + held, "quota": quota})
        elif kind == "refuse":
            if used + held + cost <= quota:
                needless.append({"task_id": j.task_id, "at": at, "projected": used + held + cost, "quota": quota})
        else:
            held -= cost
            used += to_units(j.charged_cpu_hours)
            settled_during += at < last_admission
    return {"peak_units": peak, "overshoots": overshoots, "needless_refusals": needless, "used_units": used,
            "held_units": held, "settled_before_last_admission": settled_during}


@dataclass
class Check:
    name: str
    ok: bool
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "status": "PASS" if self.ok else "FAIL", "details": self.details}


def check_quota(plan: Plan, admitted: Counter, usage: dict, replays: dict, probe_usage: list[dict]) -> Check:
    quota = to_units(plan.quota_cpu_hours)
    cost = to_units(JOB_CPU_HOURS)
    problems = []
    for m, u in usage.items():
        if to_units(u.cpu_hours) + to_units(u.reserved_cpu_hours) > quota:
            problems.append(f"{m}: settled {u.cpu_hours:.6g} + reserved {u.reserved_cpu_hours:.6g} > quota "
                            f"{plan.quota_cpu_hours:g} CPU-h at the end")
        if plan.hold and admitted[m] * cost > quota:
            problems.append(f"{m}: {admitted[m]} admitted x {JOB_CPU_HOURS:g} = {admitted[m] * JOB_CPU_HOURS:g} "
                            f"> quota {plan.quota_cpu_hours:g} CPU-h")
        for o in replays[m]["overshoots"]:
            problems.append(f"{m}: replay: admission of {o['task_id']} took used + reserved to "
                            f"{o['projected'] / 1e6:.6g} > {quota / 1e6:g} CPU-h")
    over = [s for s in probe_usage if s["quota"] is not None
            and to_units(s["used"]) + to_units(s["reserved"]) > to_units(s["quota"])]
    for s in over[:10]:
        problems.append(f"{s['member']}: a usage answer under load showed settled {s['used']:.6g} + reserved "
                        f"{s['reserved']:.6g} > quota {s['quota']:g}")
    peak = max((r["peak_units"] for r in replays.values()), default=0) / 1e6
    details = [f"quota {plan.quota_cpu_hours:g} CPU-h per member, {JOB_CPU_HOURS:g} CPU-h reserved per job; "
               f"admitted per member {min(admitted.values(), default=0)}..{max(admitted.values(), default=0)}"
               + (f" (the quota fits {plan.fitting})" if plan.hold else ""),
               f"highest used + reserved after an admission (replay): {peak:g} CPU-h; "
               f"{len(probe_usage)} usage answers under load, {len(over)} over the quota"]
    return Check("1 quota: no overshoot, projected or settled", not problems, details + problems[:20])


def check_exactly_once(submissions: list[Submission], runs: list[tuple[str, int, str]], usage: dict,
                       admitted: Counter, statuses: dict[str, Any]) -> Check:
    problems = []
    ran = defaultdict(list)
    for member, index, run_id in runs:
        ran[(member, index)].append(run_id)
    keys = {s.key: s for s in submissions}
    admitted_subs = [s for s in submissions if s.handle is not None]
    errors = [s for s in submissions if s.error is not None]
    for s in errors[:5]:
        problems.append(f"{s.member} #{s.index}: submission failed: {s.error}")
    if len(errors) > 5:
        problems.append(f"... {len(errors)} failed submissions in all")
    for s in admitted_subs:
        lines = ran.get(s.key, [])
        if s.result_error is not None:
            problems.append(f"{s.member} #{s.index} ({s.handle.id}): no result: {s.result_error}")
        if len(lines) != 1:
            problems.append(f"{s.member} #{s.index} ({s.handle.id}): ran {len(lines)} times")
        elif s.result is not None and s.result != (s.member, s.index, lines[0]):
            problems.append(f"{s.member} #{s.index} ({s.handle.id}): result {s.result!r} is not its run "
                            f"({lines[0]})")
    for s in submissions:
        if s.handle is None and s.key in ran:
            problems.append(f"{s.member} #{s.index}: not admitted, yet ran {len(ran[s.key])} time(s)")
    stray = [k for k in ran if k not in keys]
    if stray:
        problems.append(f"{len(stray)} run(s) of jobs never submitted, e.g. {stray[:3]}")
    all_ids = [r for member, _, r in runs]
    if len(set(all_ids)) != len(all_ids):
        problems.append(f"{len(all_ids) - len(set(all_ids))} duplicate run uuid(s)")
    for m, u in usage.items():
        if u.tasks_completed != admitted[m]:
            problems.append(f"{m}: tasks_completed {u.tasks_completed} != {admitted[m]} admitted")
    retried = [t for t, st in statuses.items() if st.attempts > 1]
    not_ok = Counter(st.state.value for st in statuses.values() if st.state.value != "succeeded")
    if not_ok:
        problems.append(f"admitted jobs not succeeded: {dict(not_ok)}")
    details = [f"{len(admitted_subs)} admitted, {sum(1 for s in admitted_subs if s.result is not None)} results, "
               f"{len(runs)} runs logged, {len(set(all_ids))} unique uuids; {len(retried)} job(s) with more than "
               "one attempt"]
    return Check("2 every admitted job ran exactly once", not problems, details + problems[:20])


def check_refusals(submissions: list[Submission], statuses: dict[str, Any], usage: dict, charged: dict[str, int],
                   replays: dict) -> Check:
    problems = []
    refused = [s for s in submissions if s.refusal is not None]
    sources = Counter()
    for s in refused:
        reasons = s.refusal.get("reasons") or []
        sources.update(r["source"] for r in reasons)
        if not any(r["source"].split(":")[0] == "quota" for r in reasons):
            problems.append(f"{s.member} #{s.index} ({s.refusal['task_id']}): refused without a quota reason: "
                            f"{[r['source'] + ': ' + r['message'] for r in reasons]}")
            continue
        st = statuses.get(s.refusal["task_id"])
        if st is None:
            problems.append(f"{s.member} #{s.index} ({s.refusal['task_id']}): no job record")
        elif st.state.value != "rejected" or st.charged_cpu_hours or st.charged_credits or st.attempts:
            problems.append(f"{s.member} #{s.index} ({st.task_id}): record {st.state.value}, attempts {st.attempts}, "
                            f"charged {st.charged_cpu_hours} CPU-h / {st.charged_credits} credits")
    for m, u in usage.items():
        if to_units(u.cpu_hours) != charged[m]:
            problems.append(f"{m}: settled {u.cpu_hours:.6g} CPU-h != {charged[m] / 1e6:.6g} charged to its admitted "
                            "jobs")
        for n in replays[m]["needless_refusals"]:
            problems.append(f"{m}: {n['task_id']} refused although used + reserved + cost = "
                            f"{n['projected'] / 1e6:.6g} <= {n['quota'] / 1e6:g} CPU-h")
    example = next((r["message"] for s in refused for r in s.refusal.get("reasons") or []), None)
    details = [f"{len(refused)} refused; reasons by source: {dict(sources)}"]
    if example:
        details.append(f"e.g. \"{example}\"")
    return Check("3 refusals carry the quota reason and charged nothing", not problems, details + problems[:20])
