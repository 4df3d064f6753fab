"""A job as the store keeps it, and taken back after a restart (a mixin of ``scheduler.core.SchedulerCore``).

``job_record`` writes down everything ``restore_job`` needs: the task, its decision and status,
its placement, its projected cost, what a queued task waits for, the placement constraints it was
admitted (or relaxed) under and the executors a retry should avoid. Restoring puts a queued job
back in the queue (its reservation is in the store) and a running one back on its executor
(the head then asks that executor's worker whether it still runs it); a placed job whose record
cannot be restored keeps what it may use held on its executor (``hold_unrestored``; see
``scheduler.held_capacity``) until that executor's worker says it no longer runs it, and one whose
record is damaged (its placement unreadable) on every executor until each one's worker says whether it
runs it (``hold_damaged``). Beside them, what the head asks about the jobs it keeps: which changed (to
persist), whether an attempt is still placed, the runtime a job runs under, and forgetting finished ones.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from policies.reasons import Decision, Reason
from scheduler.admission import requirements_for
from scheduler.held_capacity import HeldAttempt, held_anywhere, held_attempts
from scheduler.jobs import Job, JobStatus
from scheduler.ledger import Cost, period_of
from scheduler.placement import Placement, requirements_from_record, requirements_record
from scheduler.queue import QueuedTask
from scheduler.tasks import JobState, TaskSpec


class JobRecords:
    """``job_record`` and ``restore_job``; what the head asks about the jobs it keeps and persists."""

    def job_record(self, task_id: str) -> dict[str, Any] | None:
        """A job as JSON-ready data: everything ``restore_job`` needs, and its status for readers."""
        job = self._jobs.get(task_id)
        if job is None:
            return None
        entry = self.queue.get(task_id)
        return {"task_id": task_id, "coop_id": job.task.coop_id, "member": job.task.member,
                "state": job.state.value, "submitted_at": job.submitted_at,
                "task": job.task.model_dump(mode="json"), "decision": job.decision.model_dump(mode="json"),
                "status": job.status().model_dump(mode="json"),
                "placement": job.placement.model_dump(mode="json", exclude={"task"}) if job.placement else None,
                "cost": [job.cost.cpu, job.cost.gpu, job.cost.credits], "cancel_requested": job.cancel_requested,
                "not_before": entry.not_before if entry else None,
                "relaxed": list(entry.relaxed if entry else (job.placement.relaxed if job.placement else ())),
                "requirements": requirements_record(job.requirements) if job.requirements is not None else None,
                "avoid": sorted(job.avoid), "runtime_s": job.runtime_s, "preemptions": job.preemptions,
                "ending_on": job.ending_on, "ending_since": job.ending_since, "placed_seq": job.placed_seq}

    def restore_job(self, record: dict[str, Any], unregistered: Collection[str] = frozenset()) -> JobState:
        """Take back a job after a restart: queued ones wait again (their reservation is in the
        store), running ones are expected to report (the head checks with their worker).

        A running job whose executor is not registered is run again, unless that executor is one of
        ``unregistered``: stored, but its registration could not be restored (damaged, or refused by this
        release). Its worker may still run the attempt, so the job stays placed there (running a second
        attempt elsewhere would run it twice at once); nothing is reserved, as there is no row to place
        into, until the executor registers again (``register_executor`` reserves it then), and the head asks
        its worker whether it still runs it (``placed_off_table``)."""
        task = TaskSpec(**record["task"])
        decision = Decision(**record["decision"])
        status = JobStatus(**record["status"])
        job = Job(task=task, decision=decision, submitted_at=record["submitted_at"], state=status.state,
                  reason=status.reason, history=list(status.history), attempts=status.attempts,
                  started_at=status.started_at, cost=Cost(*record["cost"]),
                  cancel_requested=record.get("cancel_requested", False), runtime_s=record.get("runtime_s"))
        relaxed = tuple(record.get("relaxed") or ())
        job.avoid = frozenset(record.get("avoid") or ())
        job.preemptions = int(record.get("preemptions") or 0)
        job.ending_on, job.ending_since = record.get("ending_on"), float(record.get("ending_since") or 0.0)
        job.placed_seq = int(record.get("placed_seq") or 0)  # (the placements after a restart count on from it)
        self._placements = max(self._placements, job.placed_seq)
        if record.get("requirements") is not None:  # the constraints it was admitted (or relaxed) under
            job.requirements = requirements_from_record(task.coop_id, task.resources, record["requirements"])
        else:  # a record from before they were kept: rebuilt from the policy in force now
            job.requirements = requirements_for(task, self._policies.get(task.coop_id), self.table, self.clock(),
                                                relaxed=bool(relaxed))
        placement = Placement(task=task, **record["placement"]) \
            if job.state is JobState.RUNNING and record.get("placement") else None  # (may raise: before any change)
        self._jobs[task.task_id] = job
        if placement is not None:
            job.placement = placement
            if placement.executor_id in self.table or placement.executor_id in unregistered:
                if placement.executor_id in self.table:
                    self.table.reserve(self.table.rows[placement.executor_id], task.resources)
                self._on_executor.setdefault(placement.executor_id, set()).add(task.task_id)
                key = (task.coop_id, task.member)
                self._running[key] = self._running.get(key, 0) + 1
                return job.state
            job.state = JobState.QUEUED  # its executor is gone: run it again
        if job.state in (JobState.QUEUED, JobState.DEFERRED):
            self._seq += 1
            self.queue.add(QueuedTask(task, job.requirements, job.cost, decision.effective_priority,
                                      job.submitted_at, self._seq, record.get("not_before"),
                                      attempt=job.attempts + 1, relaxed=relaxed, avoid=job.avoid))
        return job.state

    def hold_unrestored(self, record: Any) -> list[HeldAttempt]:
        """A record ``restore_job`` refused: if it says the job was placed on a registered executor, hold
        there what its attempt may still use (what the task asked, else the executor's own resources), so
        nothing else is placed into it; if it may be placed but no longer says where, all of every executor,
        as for a damaged record (``held_attempts``). The holds taken; empty if it holds nothing. Never raises."""
        return [a for a in held_attempts(record, self.table) if self.held_capacity.hold(a)]

    def hold_damaged(self, task_id: str, stored_state: Any) -> list[HeldAttempt]:
        """A job whose record is damaged (where it was placed cannot be read): unless its stored state says
        it never started, hold all of every executor until each one's worker says it does not run it
        (``held_anywhere`` says why). The holds taken; empty if it holds nothing."""
        return [a for a in held_anywhere(task_id, stored_state, self.table) if self.held_capacity.hold(a)]

    def release_held(self, task_id: str, executor_id: str | None = None) -> bool:
        """The executor's worker says it does not run the unrestored job's attempt: its hold there ends
        (everywhere, if ``executor_id`` is None)."""
        return self.held_capacity.release(task_id, executor_id)

    def placed_off_table(self) -> list[str]:
        """Executors not registered that restored jobs still run on (``restore_job``'s ``unregistered``): the
        head asks their workers what they still run."""
        return sorted(e for e, running in self._on_executor.items() if running and e not in self.table)

    def held_where(self, task_id: str) -> list[str]:
        """Executors an unrestored job's attempt is held on: where it may still run (sorted)."""
        return self.held_capacity.executors(task_id)

    def held_on(self, executor_id: str) -> set[str]:
        """Unrestored jobs whose attempts are held on ``executor_id`` (the head asks its worker about them)."""
        return self.held_capacity.on(executor_id)

    # ------------------------------------------------------------------ persistence
    def drain_changed(self) -> list[str]:
        """Ids of jobs whose state moved since the last call (the head persists them)."""
        changed, self.changed_jobs = sorted(self.changed_jobs), set()
        return changed

    def cancel_requested(self, task_id: str) -> bool:
        job = self._jobs.get(task_id)
        return bool(job and job.cancel_requested)

    def running_on(self, executor_id: str) -> set[str]:
        return set(self._on_executor.get(executor_id, ()))

    def state_of(self, task_id: str) -> JobState | None:
        """The job's state (None for a job this core does not hold), without building its status."""
        job = self._jobs.get(task_id)
        return job.state if job is not None else None

    def is_placed(self, task_id: str, executor_id: str, attempt: int) -> bool:
        """Whether this attempt of the task is still the one placed on that executor (not lost,
        requeued or cancelled since): cheaper than building its status."""
        job = self._jobs.get(task_id)
        return job is not None and job.state is JobState.RUNNING and job.placement is not None \
            and job.placement.executor_id == executor_id and job.placement.attempt == attempt

    def runtime_limit(self, task_id: str) -> float:
        """The longest a job may run: its own ``max_runtime_s``, else the policy default in force when it was
        admitted (what its reservation was projected at, whatever the default has become since)."""
        job = self._jobs[task_id]
        if job.task.max_runtime_s:
            return job.task.max_runtime_s
        if job.runtime_s:
            return job.runtime_s
        policy = self.policy(job.task.coop_id)  # (a record from before the admitted runtime was kept)
        return policy.quota_for(job.task.member).default_max_runtime_s if policy else 3600.0

    def reasons_of(self, task_id: str) -> tuple[Reason, ...]:
        job = self._jobs.get(task_id)
        return job.decision.reasons if job else ()

    def held(self, coop_id: str, now: float, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Cost]:
        """Per member, what the coop's unfinished jobs (but those in ``exclude``) hold reserved in the month of
        ``now``: an admitted job holds its projected cost, in its admission month, until it settles or is
        released (unfinished jobs are always in memory)."""
        period, out = period_of(now), {}
        for task_id, job in self._jobs.items():
            task = job.task
            if task.coop_id != coop_id or job.state.finished or task_id in exclude \
                    or period_of(job.submitted_at) != period:
                continue
            out[task.member] = out.get(task.member, Cost()) + job.cost
        return out

    def forget(self, task_id: str) -> bool:
        """Drop a finished job from memory (its record lives on in the head's store), so a head that
        runs for months holds its recent jobs only. False, and nothing dropped, unless it finished."""
        job = self._jobs.get(task_id)
        if job is None or not job.state.finished or task_id in self.changed_jobs:
            return False
        del self._jobs[task_id]
        return True

    def jobs_in_memory(self) -> int:
        return len(self._jobs)

