"""``SchedulerCore``: the pure decision core (no Ray, no store client).

It holds the policies, the executor table, the ledger, the queue and the jobs; it
takes an injected clock; it returns values (``Decision``, ``Placement``,
``UsageRecord``) and never raises for a member's mistake. The Ray head, the simulator
and the benchmarks all drive this same object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from policies.model import CoopPolicy, EnforcementMode, Reclaim
from policies.reasons import Decision, unavailable
from policies.rules import RateBuckets, RuleContext
from policies.validation import FieldError, InvalidRequest, parse, quoted, trusted, trusted_maker
from scheduler.admission import CompiledPolicy, Verdict, evaluate
from scheduler.counters import CoreCounters
from scheduler.data_locality import DataCatalog, DataLocator
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec, ExecutorStatus
from scheduler.executor_table import ExecutorTable
from scheduler.fair_borrowing import HALF_LIFE_S, BorrowingHistory
from scheduler.core_records import JobRecords
from scheduler.held_capacity import HeldCapacity
from scheduler.jobs import Job, JobStatus, QueuePosition
from scheduler.liveness import Liveness
from scheduler.ledger import Cost, Ledger, ReserveResult, Standing, UsageLedger
from scheduler.placement import explain_no_fit
from scheduler.queue import QueuedTask, TaskQueue
from scheduler.scheduling_round import SchedulingRound, utc_minute
from scheduler.sharing_limits import SharingLimits
from scheduler.tasks import JobState, TaskSpec
from scheduler.usage import CoopUsageRecord, Outcome, UsageRecord, UsageReport

Clock = Callable[[], float]

# Enum members the decision path reads on every task, bound once: reading one off its class goes
# through EnumType.__getattr__, several times slower than a module global.
_QUEUED, _REJECTED = JobState.QUEUED, JobState.REJECTED
_STRICT, _PERMISSIVE, _RESERVED = EnforcementMode.STRICT, EnforcementMode.PERMISSIVE, ReserveResult.RESERVED
_DUPLICATE = ReserveResult.DUPLICATE
# the results every decision builds, from values the core made (see policies.validation.trusted)
_decision = trusted_maker(Decision, "task_id", "coop_id", "admitted", "reasons", "warnings", "effective_priority",
                          "not_before", "enforcement_mode")
_OUTCOME_STATE = {Outcome.SUCCEEDED: JobState.SUCCEEDED, Outcome.FAILED: JobState.FAILED,
                  Outcome.TIMEOUT: JobState.TIMEOUT, Outcome.CANCELLED: JobState.CANCELLED}


class SchedulerCore(JobRecords, SchedulingRound):
    def __init__(self, clock: Clock = time.time, data_locator: DataLocator | None = None,
                 executor_capacity: int = 1024, ledger: UsageLedger | None = None,
                 buckets: RateBuckets | None = None,
                 running_elsewhere: Callable[[str, str], int] | None = None,
                 borrowing_half_life_s: float | None = HALF_LIFE_S) -> None:
        """``borrowing_half_life_s``: how fast fair borrowing forgets what coops held of other coops' executors
        (``scheduler.fair_borrowing.BorrowingHistory``); 0 or None: it goes by what they hold now only."""
        self.clock = clock
        self.data_locator: DataLocator = data_locator or DataCatalog()
        self.table = ExecutorTable(executor_capacity)
        self.ledger: UsageLedger = ledger or Ledger()
        self.queue = TaskQueue()
        self.counters = CoreCounters()
        self._policies: dict[str, CompiledPolicy] = {}
        self._buckets = RateBuckets() if buckets is None else buckets  # (a head on a shared store: its buckets)
        self._jobs: dict[str, Job] = {}
        self._running: dict[tuple[str, str], int] = {}
        # (coop, member) -> how many of its tasks other head replicas run now (a head on a shared store gives one:
        # max_concurrent_tasks counts them too; asked once per member and scheduling round)
        self.running_elsewhere = running_elsewhere
        self._elsewhere_now: dict[tuple[str, str], int] = {}  # its answers in the current round (schedule() resets)
        self._on_executor: dict[str, set[str]] = {}
        self.held_capacity = HeldCapacity(self.table)  # what placed jobs it could not restore may still use
        self.liveness = Liveness()
        if borrowing_half_life_s is not None and (isinstance(borrowing_half_life_s, bool) or not isinstance(
                borrowing_half_life_s, (int, float)) or not 0 <= borrowing_half_life_s < float("inf")):
            raise InvalidRequest("scheduler settings", [FieldError(
                "borrowing_half_life_s", quoted(borrowing_half_life_s, 40),
                "seconds, 0 or more (0 or null: fair borrowing goes by what coops hold now only)", "3600")])
        self.borrowing_history = BorrowingHistory(borrowing_half_life_s) if borrowing_half_life_s else None
        self._limits_now: SharingLimits | None = None  # (a round's account of the sharing limits, scheduling_round)
        self._seq = 0
        self._placements = 0  # placements made: Job.placed_seq orders those of one instant (reclaim's newest)
        self.changed_jobs: set[str] = set()  # jobs whose state moved since the last drain_changed()
        self.preempted: list[tuple[str, str]] = []  # (task id, executor id) stopped to make room (the head stops them)
        self._reclaims = False  # some coop's policy reclaims its executors
        self._lending: dict[str, float] = {}  # the coops whose policies limit lending / borrowing, and the limits
        self._borrowing: dict[str, float] = {}
        self._stops_running = False  # some coop's policy reclaims or preempts within the coop: a full fleet still
        # has a round

    def carry_over(self, previous: SchedulerCore) -> None:
        """Keep what a core rebuilt from the store (``Head._resync``) cannot read back from it: the
        counters (Prometheus counters never go down), the rate-limit buckets (what members spent) and
        when executors were declared offline or lost, and what coops borrowed over time."""
        self.counters, self._buckets = previous.counters, previous._buckets
        self.running_elsewhere = previous.running_elsewhere
        self.liveness.carry_over(previous.liveness)
        self.borrowing_history = previous.borrowing_history

    # ------------------------------------------------------------------ policies
    def set_policy(self, policy: CoopPolicy | dict | str) -> CoopPolicy:
        """Install (or replace) a coop's policy; it applies to tasks submitted from now on."""
        policy = parse(CoopPolicy, policy, what="policy")
        self._policies[policy.coop_id] = CompiledPolicy.of(policy)
        self._note_policy_terms()
        return policy

    def policy(self, coop_id: str) -> CoopPolicy | None:
        compiled = self._policies.get(coop_id)
        return compiled.policy if compiled else None

    def policies(self) -> list[CoopPolicy]:
        return [c.policy for _, c in sorted(self._policies.items())]

    def remove_policy(self, coop_id: str) -> CoopPolicy | None:
        compiled = self._policies.pop(coop_id, None)
        self._note_policy_terms()
        return compiled.policy if compiled else None

    def _note_policy_terms(self) -> None:
        self._reclaims = any(c.reclaim is not Reclaim.NEVER for c in self._policies.values())
        self._stops_running = self._reclaims or any(c.preempts for c in self._policies.values())
        self._lending = {coop: c.lending_limit for coop, c in self._policies.items() if c.lending_limit is not None}
        self._borrowing = {coop: c.borrowing_limit for coop, c in self._policies.items()
                           if c.borrowing_limit is not None}

    # ------------------------------------------------------------------ executors
    def register_executor(self, spec: ExecutorSpec | dict) -> ExecutorSpec:
        spec = parse(ExecutorSpec, spec, what="executor")
        if spec.executor_id in self.table:  # registered again: active again, unless an admin drained it
            self.table.update_spec(spec)
            if self.table.status_of(spec.executor_id) is not ExecutorStatus.DRAINING:
                self.table.set_status(spec.executor_id, ExecutorStatus.ACTIVE)
        else:
            row = self.table.add(spec)
            # jobs restored as running on it while its stored registration could not be read (restore_job's
            # ``unregistered``) still use what they asked for there: nothing else is placed into it
            for task_id in sorted(self._on_executor.setdefault(spec.executor_id, set())):
                self.table.reserve(row, self._jobs[task_id].task.resources)
        self.liveness.last_seen[spec.executor_id] = self.clock()
        return spec

    def set_trust(self, executor_id: str, trust: float) -> ExecutorSpec:
        """A new trust score for a registered executor; its status and load stay as they are."""
        spec = parse(ExecutorSpec, {**self.table.spec(executor_id).model_dump(mode="python"), "trust": trust},
                     what="executor")
        self.table.update_spec(spec)
        return spec

    def update_executor(self, offer: ExecutorOffer | dict) -> None:
        """A heartbeat offer; an offline executor that reports again is active again."""
        offer = parse(ExecutorOffer, offer, what="executor offer")
        if offer.executor_id not in self.table:
            raise KeyError(f"executor {offer.executor_id!r} is not registered")
        executor_id = offer.executor_id
        offline = self.table.status_of(executor_id) is ExecutorStatus.OFFLINE
        if offline and self.liveness.is_late(executor_id, offer.sent_at):
            return  # made before it was declared offline (or lost), delivered late: no sign of life since
        self.table.heartbeat(offer)
        self.liveness.heard(executor_id, self.clock(), offer.sent_at, was_offline=offline)
        if offline:
            self.table.set_status(executor_id, ExecutorStatus.ACTIVE)

    def drain(self, executor_id: str) -> None:
        """No new tasks; running ones finish."""
        self.table.set_status(executor_id, ExecutorStatus.DRAINING)

    def mark_offline(self, stale_after_s: float) -> list[str]:
        """Executors silent for longer than ``stale_after_s`` take no new work until they report again."""
        now = self.clock()
        gone = [e for e in self.table.ids() if self.liveness.silent_for(e, now) > stale_after_s
                and self.table.status_of(e) is ExecutorStatus.ACTIVE]
        for e in gone:
            self.table.set_status(e, ExecutorStatus.OFFLINE)
            self.liveness.give_up(e, now)
        return gone

    def executor_lost(self, executor_id: str, why: str) -> list[str]:
        """The executor stopped running its tasks (worker or node died): they are retried
        elsewhere, and what unrestored jobs held there is free; it takes no new work until it reports
        again. Returns the tasks' ids."""
        lost = sorted(self._on_executor.get(executor_id, ()))
        for task_id in lost:
            self.requeue(task_id, executor_id, why)
        self.held_capacity.release_executor(executor_id)
        if executor_id in self.table:
            status = self.table.status_of(executor_id)
            if status is ExecutorStatus.ACTIVE:
                self.table.set_status(executor_id, ExecutorStatus.OFFLINE)  # (a drained one stays drained)
            if status is not ExecutorStatus.DRAINING:  # (offline already: given up on again, from now)
                self.liveness.give_up(executor_id, self.clock())
        return lost

    def remove_executor(self, executor_id: str) -> list[str]:
        """Forget an executor; its running tasks go back to the queue (retry). Returns their ids."""
        lost = self.executor_lost(executor_id, f"executor {executor_id} was removed")
        self.table.remove(executor_id)
        self._on_executor.pop(executor_id, None)
        self.liveness.forget(executor_id)
        return lost

    def executors(self) -> list[tuple[ExecutorSpec, ExecutorStatus, int]]:
        return [(self.table.spec(e), self.table.status_of(e), len(self._on_executor.get(e, ())))
                for e in sorted(self.table.ids())]

    # ------------------------------------------------------------------ admission
    def submit(self, task: TaskSpec | dict) -> Decision:
        """Admit or refuse one task. Idempotent by task id: a resubmission returns the first decision.

        One decision is not kept: a task id the ledger already holds (its reservation or its charge) that
        this core has no job for is another admission's (another head replica's, still at it or stopped
        mid-call). That admission decides it, so no job is made of this submission here (``self.task(task_id)``
        stays None): nothing of it can be recorded over that admission's record. Its refusal is only this call's
        answer (the head answers with what the store says of that admission instead)."""
        if type(task) is not TaskSpec:  # (callers on the hot path hand a TaskSpec: no call to parse)
            task = parse(TaskSpec, task, what="task")
        task_id = task.task_id  # (pydantic attribute reads are slow: each field is read once here)
        known = self._jobs.get(task_id)
        if known is not None:
            return known.decision
        now = self.clock()
        coop = task.coop_id
        self.counters.submitted[coop] += 1
        verdict = evaluate(task, self._policies.get(coop), self.ledger, self.table, self._buckets, now)
        decision = self._decide(verdict, task_id, coop)
        admitted = decision.admitted
        member = task.member
        if admitted:  # assume, then confirm: the ledger checks the limits again as it reserves
            held = self.ledger.reserve(task_id, coop, member, verdict.cost, now, verdict.limits)
            if held is _DUPLICATE:  # the id is another admission's (see above): no job is made of it
                self.counters.rejected[coop] += 1
                return self._lost_race(verdict, held, now)
            if held is not _RESERVED:
                decision = self._lost_race(verdict, held, now)
                admitted = False
        job = Job(task=task, decision=decision, submitted_at=now,
                  state=_QUEUED if admitted else _REJECTED,
                  requirements=verdict.requirements, cost=verdict.cost,
                  runtime_s=verdict.runtime_s if task.max_runtime_s is None else None)
        self._jobs[task_id] = job
        self.changed_jobs.add(task_id)
        if not admitted:
            self.counters.rejected[coop] += 1
            job.move(now, JobState.REJECTED, "; ".join(r.message for r in decision.reasons))
            return decision
        self.counters.admitted[coop] += 1
        self._commit_rules(verdict, now, task, coop)
        self._seq += 1
        assert verdict.requirements is not None
        self.queue.add(QueuedTask(task, verdict.requirements, verdict.cost, verdict.effective_priority, now,
                                  self._seq, verdict.not_before, relaxed=verdict.relaxed, task_id=task_id,
                                  coop_id=coop, member=member))
        if verdict.not_before is not None:
            held = f"held by a time window until {utc_minute(verdict.not_before)}"
            job.move(now, JobState.DEFERRED, held + ("; admitted with warnings: " + "; ".join(
                w.message for w in decision.warnings) if decision.warnings else ""))
        else:
            reason = "admitted with warnings: " + "; ".join(w.message for w in decision.warnings) \
                if decision.warnings else "admitted"
            if self.table.free_count <= 0:  # (no round looks at the queue while every executor is full: say it now)
                reason += "; waiting for a free executor: every active one is full"
            job.move(now, _QUEUED, reason)
        return decision

    def set_dispatch_ahead(self, executor_id: str, rounds: int) -> ExecutorSpec:
        """An executor's rounds ahead changed (``ExecutorSpec.dispatch_ahead_auto``: the head's tuning); what runs
        or waits there stays. Returns its registration with the new value."""
        spec = parse(ExecutorSpec, {**self.table.spec(executor_id).model_dump(mode="python"),
                                    "dispatch_ahead": rounds}, what="executor")
        self.table.update_spec(spec)
        return spec

    def submit_many(self, tasks: Iterable[TaskSpec | dict]) -> list[Decision]:
        return [self.submit(t) for t in tasks]

    def _decide(self, v: Verdict, task_id: str, coop: str) -> Decision:
        mode = v.mode._value_  # (the plain attribute: Enum.value is a slower descriptor)
        for reason in v.violations:
            self.counters.violations[(coop, reason.source, mode)] += 1
            if reason.source.startswith("quota:"):
                self.counters.quota_exceeded[(coop, reason.source.split(":", 1)[1])] += 1
            elif reason.source.startswith("coop_quota:"):  # (the coop's budget: coop_cpu, coop_gpu, coop_credits)
                self.counters.quota_exceeded[(coop, "coop_" + reason.source.split(":", 1)[1])] += 1
        if v.hard or (v.violations and v.mode is _STRICT):
            return _decision(task_id, coop, False, tuple(v.violations + v.hard), (), v.effective_priority, None, mode)
        warnings = tuple(v.violations) if v.mode is _PERMISSIVE else ()
        return _decision(task_id, coop, True, (), warnings, v.effective_priority, v.not_before, mode)

    def _lost_race(self, v: Verdict, held: ReserveResult, now: float) -> Decision:
        """The ledger refused the reservation: another admission (another head replica) took the quota."""
        coop = v.task.coop_id
        if held is ReserveResult.OVER_LIMIT:
            self.counters.quota_exceeded[(coop, "confirm")] += 1
            reason = unavailable("quota", "monthly quota exceeded at reservation: another admission took what was "
                                 f"left (coop {coop}, member {v.task.member}); ask a coop admin to raise it or "
                                 "wait for next month")
        else:  # (a head answers with what its store says of the admission that holds the id)
            reason = unavailable("ledger", f"task_id {v.task.task_id!r} is held by another admission (its "
                                 "reservation, or its charge if it ran) that this scheduler keeps no job for; this "
                                 "submission admitted and charged nothing; ask the job's status rather than "
                                 f"submitting it again (e.g. `coopsched job status {v.task.task_id}`)")
        return Decision(task_id=v.task.task_id, coop_id=coop, admitted=False, reasons=(reason,),
                        effective_priority=v.effective_priority, enforcement_mode=v.mode.value)

    def _commit_rules(self, v: Verdict, now: float, task: TaskSpec, coop: str) -> None:
        calls = self._policies[coop].reserve_calls
        if not calls:
            return
        ctx = v.context or RuleContext(now=now, runtime_s=v.runtime_s, buckets=self._buckets)
        for rule, reserve in calls:
            try:
                reserve(task, ctx)
            except Exception:  # a failing reserve must not undo an admission already reserved
                self.counters.violations[(coop, getattr(rule, "label", "rule"), "error")] += 1

    # ------------------------------------------------------------------ completion
    def complete(self, report: UsageReport | dict) -> UsageRecord | None:
        """Settle a finished attempt with its measured usage. Idempotent by task id.

        A report for an unknown task, from an executor the task was not placed on, or
        for an attempt other than the one running now, is refused (``None``) and counted;
        nothing is charged.
        """
        report = parse(UsageReport, report, what="usage report")
        if self.borrowing_history is not None and self.borrowing_history.due(now := self.clock()):
            self._sample_borrowing(now)  # (before what this report ends stops counting)
        job = self._jobs.get(report.task_id)
        if job is None or job.placement is None:
            self.counters.refused_reports["unknown task"] += 1
            return None
        if job.placement.executor_id != report.executor_id:
            self.counters.refused_reports["not placed on this executor"] += 1
            return None
        if job.state is JobState.RUNNING and report.attempt != job.placement.attempt:
            # an older attempt's report (e.g. replayed) must not settle the attempt running now
            self.counters.refused_reports["not the current attempt"] += 1
            return None
        if job.state is not JobState.RUNNING:  # a resent report: it was settled once already
            if job.ending_on == report.executor_id and report.attempt == job.placement.attempt:
                job.ending_on = None  # its stopped attempt has ended there (uncharged): that executor may take it
                self.changed_jobs.add(report.task_id)
            return self.usage(job.task.coop_id, job.task.member) if job.state.finished else None
        task = job.task
        spec = self.table.spec(report.executor_id) if report.executor_id in self.table else None
        cpu_h, gpu_h = report.cpu_seconds / 3600.0, report.gpu_seconds / 3600.0
        credits = report.credits if report.credits is not None else (
            cpu_h * spec.price_cpu_hour + gpu_h * spec.price_gpu_hour if spec else 0.0)
        measured = Cost.of(cpu_h, gpu_h, credits)
        reserved = job.cost
        charged = Cost(min(measured.cpu, reserved.cpu), min(measured.gpu, reserved.gpu),
                       min(measured.credits, reserved.credits))
        capped = charged != measured  # more than admission reserved: a timeout's kill landing after the limit,
        # an executor dearer than the dearest at admission (or one that raised its price): never charged
        measured = charged
        self.ledger.settle(task.task_id, task.coop_id, task.member, measured, report.ended_at)
        self._free(job, report.executor_id)
        self.changed_jobs.add(task.task_id)
        state = _OUTCOME_STATE[report.outcome]
        job.finished_at = self.clock()
        job.started_at = report.started_at  # when it really started (it may have waited at the executor)
        job.charged = (measured.cpu_hours, measured.gpu_hours, measured.credit_amount)
        job.error = report.error
        job.wall_seconds = report.wall_seconds
        job.move(job.finished_at, state, f"{report.outcome.value} on {report.executor_id} after "
                 f"{report.wall_seconds:.3f} s; charged {measured.cpu_hours:.4g} CPU-h, "
                 f"{measured.gpu_hours:.4g} GPU-h, {measured.credit_amount:.4g} credits"
                 + (" (capped at what admission reserved)" if capped else ""))
        self.counters.completed[(task.coop_id, report.outcome.value)] += 1
        self.counters.member_completed[(task.coop_id, task.member)] += 1
        self.counters.member_credits[(task.coop_id, task.member)] += measured.credit_amount
        return self.usage(task.coop_id, task.member)

    def requeue(self, task_id: str, executor_id: str, why: str) -> JobState | None:
        """The attempt on ``executor_id`` was lost (worker or node died): retry elsewhere, or fail.

        Lost attempts are not charged; the reservation stays until the retry settles.
        """
        job = self._jobs.get(task_id)
        if job is None or job.placement is None or job.placement.executor_id != executor_id \
                or job.state is not JobState.RUNNING:
            return None
        now = self.clock()
        self._free(job, executor_id)
        task = job.task
        self.changed_jobs.add(task_id)
        if job.attempts - job.preemptions > task.max_retries or job.cancel_requested:
            self.ledger.release(task_id)
            job.finished_at = now
            final = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
            if final is JobState.FAILED:
                self.counters.gave_up[task.coop_id] += 1
            job.move(now, final, f"{why}; {'cancelled' if job.cancel_requested else f'gave up after {job.attempts} attempts'}")
            return final
        job.avoid = job.avoid | {executor_id}
        self._queue_again(job)
        self.counters.retried[task.coop_id] += 1
        job.move(now, JobState.QUEUED, f"{why}; retrying (attempt {job.attempts + 1} of {task.max_retries + 1})")
        return JobState.QUEUED

    def preempt(self, task_id: str, executor_id: str, why: str, cause: str = "reclaim") -> bool:
        """Stop a running attempt to make room (its executor's owner reclaims it, or a task of higher priority of
        its coop needs the room): the job waits again, its attempt
        uncharged and not counted against ``max_retries``, and is not placed back on ``executor_id`` until that
        attempt's report comes (``ending_on``). ``preempted`` lists it for the head to stop at its worker."""
        job = self._jobs.get(task_id)
        if job is None or job.placement is None or job.placement.executor_id != executor_id \
                or job.state is not JobState.RUNNING or job.cancel_requested:
            return False
        now = self.clock()
        self._free(job, executor_id)
        if self._limits_now is not None and executor_id in self.table:  # (what it held stops counting this round)
            r = job.task.resources
            self._limits_now.released(job.task.coop_id, self.table.spec(executor_id).coop_id, (r.cpus, r.gpus))
        job.preemptions += 1
        job.ending_on, job.ending_since = executor_id, now
        self._queue_again(job)
        self.preempted.append((task_id, executor_id))
        self.counters.preempted[(job.task.coop_id, cause)] += 1  # (cause: metrics.PREEMPTION_CAUSES)
        job.move(now, JobState.QUEUED, f"{why}; waiting to run again (attempt {job.attempts + 1}; the stopped "
                 "attempt is not charged and not counted against max_retries)")
        return True

    def _queue_again(self, job: Job) -> None:
        """Queue a placed job's next attempt (lost, or preempted), under the requirements it was placed with."""
        assert job.requirements is not None and job.placement is not None
        self._seq += 1
        self.changed_jobs.add(job.task.task_id)
        self.queue.add(QueuedTask(job.task, job.requirements, job.cost, job.decision.effective_priority,
                                  job.submitted_at, self._seq, attempt=job.attempts + 1,
                                  relaxed=job.placement.relaxed, avoid=job.avoid))

    def ending_attempts(self) -> list[tuple[str, str]]:
        """(task id, executor id) of the waiting jobs whose preempted attempt may still be ending there."""
        return [(t, j.ending_on) for t, j in self._jobs.items() if j.ending_on is not None and not j.state.finished]

    def drain_preempted(self) -> list[tuple[str, str]]:
        out, self.preempted = self.preempted, []
        return out

    def _free(self, job: Job, executor_id: str) -> None:
        task = job.task
        if executor_id in self.table and task.task_id in self._on_executor.get(executor_id, set()):
            self.table.release(self.table.rows[executor_id], task.resources)
        self._on_executor.get(executor_id, set()).discard(task.task_id)
        key = (task.coop_id, task.member)
        self._running[key] = max(0, self._running.get(key, 0) - 1)

    def withdraw(self, task_id: str, release: bool) -> Job | None:
        """Take back this core's decision on a task whose id another decision holds (another head replica
        recorded one first): the job leaves the queue, or the executor it was just placed on (a dispatch
        still to go finds it no longer placed, and drops it), ``release`` gives back the reservation its
        admission made, and nothing of it stays to be recorded. What was counted stays counted (a decision
        was made here; counters never go down), as does what rate limits spent; ``withdrawn`` counts it, so
        the submitted, admitted and rejected counts can be read net of it. The job, or None."""
        job = self._jobs.pop(task_id, None)
        if job is None:
            return None
        self.counters.withdrawn[job.task.coop_id] += 1
        self.changed_jobs.discard(task_id)
        self.queue.remove(task_id)
        if job.state is JobState.RUNNING and job.placement is not None:
            self._free(job, job.placement.executor_id)
        if release and job.decision.admitted:
            self.ledger.release(task_id)
        return job

    def cancel(self, task_id: str) -> JobState | None:
        """Cancel a task. Queued: released now, nothing charged. Running: marked; the
        worker stops it and its report charges the time used. Finished: unchanged."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        now = self.clock()
        self.changed_jobs.add(task_id)
        if job.state in (JobState.QUEUED, JobState.DEFERRED):
            self.queue.remove(task_id)
            self.ledger.release(task_id)
            job.finished_at = now
            job.move(now, JobState.CANCELLED, "cancelled before it started; nothing charged")
        elif job.state is JobState.RUNNING:
            job.cancel_requested = True
            job.note("cancel requested; stopping on the executor")
        return job.state

    # ------------------------------------------------------------------ reads
    def coop_usage(self, coop_id: str) -> CoopUsageRecord:
        """Every member of ``coop_id`` together this month, against its policy's ``coop_quota``."""
        compiled = self._policies.get(coop_id)
        return trusted(CoopUsageRecord, coop_id=coop_id, **_month(self.ledger.coop_standing(coop_id, self.clock())),
                       quota=compiled.policy.coop_quota if compiled else None)

    def usage(self, coop_id: str, member: str) -> UsageRecord:
        compiled = self._policies.get(coop_id)
        return trusted(UsageRecord, coop_id=coop_id, member=member,
                           **_month(self.ledger.standing(coop_id, member, self.clock())),
                           running=self._running.get((coop_id, member), 0) + (  # (through every head replica)
                               self.running_elsewhere(coop_id, member) if self.running_elsewhere else 0),
                           quota=compiled.policy.quota_for(member) if compiled else None)

    def task(self, task_id: str) -> TaskSpec | None:
        job = self._jobs.get(task_id)
        return job.task if job else None

    def job(self, task_id: str, explain: bool = True) -> JobStatus | None:
        """A job's status. ``explain=False`` changes nothing (safe from another thread): a waiting
        task the scheduler has not looked at yet then gets its reason in the answer only."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        reason = self._unexplained_wait(job)
        if reason is None:
            return job.status()
        if explain:
            job.note(reason, self.clock())
            return job.status()
        return job.status().model_copy(update={"reason": reason})

    def _unexplained_wait(self, job: Job) -> str | None:
        """Why a queued task the scheduler has not looked at since its admission (the fleet was
        full) is waiting; None for any other job."""
        entry = self.queue.get(job.task.task_id)
        if job.state is not JobState.QUEUED or entry is None or not job.reason.startswith("admitted"):
            return None
        message, _ = explain_no_fit(self.table, entry.requirements)
        return f"waiting for a free executor: {message}"

    def jobs(self, coop_id: str | None = None, member: str | None = None,
             state: JobState | str | None = None) -> list[JobStatus]:
        state = JobState(state) if state is not None else None
        return [j.status() for j in self._jobs.values()
                if (coop_id is None or j.task.coop_id == coop_id) and (member is None or j.task.member == member)
                and (state is None or j.state is state)]

    def queue_positions(self, coop_id: str | None = None, member: str | None = None,
                        limit: int | None = None) -> list[QueuePosition]:
        """The waiting jobs in the order the next round tries them: effective priority, then the member's fair
        share, then submission time, numbered over every coop's queue; those of ``coop_id`` / ``member`` are
        shown, at most ``limit``. (In a round a task that fits none of its own coop's executors tries the others
        after every coop's tasks have had their own, coops taking turns there: ``scheduler.fair_borrowing``.)"""
        out: list[QueuePosition] = []
        standing: dict[tuple[str, str], float] = {}
        position = 0
        for entry in self.queue.ordered(self._fair_share, self.clock()):  # (the round's order, if still fresh)
            if entry.task_id not in self.queue:
                continue
            position += 1
            if (coop_id is not None and entry.coop_id != coop_id) or (member is not None and entry.member != member):
                continue
            if limit is not None and len(out) >= limit:
                break
            job = self._jobs[entry.task_id]
            key = entry.member_key
            if key not in standing:
                standing[key] = self._fair_share(*key)
            out.append(QueuePosition(
                position=position, task_id=entry.task_id, coop_id=entry.coop_id, member=entry.member,
                name=entry.task.name, state=job.state, priority=entry.task.priority.value,
                effective_priority=entry.effective_priority, fair_share=round(standing[key], 6),
                submitted_at=entry.submitted_at, attempt=entry.attempt, reason=job.reason))
        return out

    def explain(self, task_id: str) -> dict[str, Any] | None:
        """Why a job is where it is: decision, placement breakdown and runners-up, current reason."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        return {"task_id": task_id, "state": job.state.value, "reason": job.reason,
                "decision": job.decision.model_dump(mode="json"),
                "placement": job.placement.model_dump(mode="json", exclude={"task"}) if job.placement else None,
                "summary": job.placement.explain() if job.placement else job.reason}



def _month(s: Standing) -> dict[str, Any]:
    """The fields a month's ``Standing`` gives a ``UsageRecord`` or ``CoopUsageRecord`` (``MonthUsage``)."""
    return {"period": s.period, "cpu_hours": s.used.cpu_hours, "gpu_hours": s.used.gpu_hours,
            "credits": s.used.credit_amount, "tasks_completed": s.tasks_completed,
            "reserved_cpu_hours": s.reserved.cpu_hours, "reserved_gpu_hours": s.reserved.gpu_hours,
            "reserved_credits": s.reserved.credit_amount}
