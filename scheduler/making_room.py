"""Making room for a task by stopping running ones (a mixin of ``scheduler.scheduling_round.SchedulingRound``).

Two policy fields stop running tasks. ``reclaim``: an owner's task that none of its coop's executors has room
for stops other coops' tasks running on one of them (``_reclaim``, in the first pass of a round, owners
first). ``preempt_within_coop``: a task that no executor has room for stops its own coop's running tasks of
lower effective priority on one executor it may use (``_preempt_within``, in the last pass). Both stop, on the
one executor where that makes room, the fewest tasks, newest first (``_fewest_to_stop``); room is counted
without the rounds a ``dispatch_ahead`` executor takes ahead, so the task starts at once. The core's
``preempt`` queues each stopped task again; the head stops it at its worker.

On executors taking work ahead, a borrower's task goes to one whose owner reclaims only to start at once
(``_reclaimers_ahead``): stopping a task that waits in such an executor's queue would give its owner no room.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from policies.model import Reclaim
from scheduler.admission import CompiledPolicy
from scheduler.free_masks import EPS
from scheduler.jobs import Job
from scheduler.placement import Placement, allowed_candidates, fit_mask, own_candidates
from scheduler.queue import QueuedTask
from scheduler.tasks import JobState

_RUNNING = JobState.RUNNING
_NEVER_RECLAIM = Reclaim.NEVER


class MakingRoom:
    """Stopping running tasks for one that has no room (reclaim, preemption within a coop)."""

    def _reclaim(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy) -> Placement | None:
        """Place ``entry`` on one of its coop's executors by stopping other coops' tasks running there (the
        policy's ``reclaim``: any of them, or those of lower priority only). Of the executors where that makes
        room, the one that needs the fewest stopped, the newest first (the least work lost); None when none
        does (nothing is stopped then)."""
        borrowed = self._borrowed()
        rank = entry.task.priority.rank
        if not borrowed or (entry.shape, rank) in self._reclaim_missed:
            return None
        candidates = own_candidates(self.table, entry.requirements)
        lower_only = compiled.reclaim is Reclaim.LOWER_PRIORITY
        best = self._fewest_to_stop(entry, job, borrowed, candidates,
                                    lambda j: not lower_only or j.task.priority.rank < rank)
        if best is None:
            self._reclaim_missed.add((entry.shape, rank))  # (this round: what was running is only stopped or ends)
            return None
        executor_id, victims = best
        for task_id in victims:
            self.preempt(task_id, executor_id, f"preempted on {executor_id}: its owner, coop {entry.coop_id}, "
                                               f"reclaims it for task {entry.task_id}")
        return self._place(entry, now, job, compiled, own=True, at_once=self.table.ahead > 0)  # (there, now)

    def _preempt_within(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy) -> Placement | None:
        """Place ``entry``, which fits no executor now, by stopping its coop's running tasks of lower effective
        priority on one executor it may use (the policy's ``preempt_within_coop``): the fewest that make room,
        newest first. None when no such stop makes room (nothing is stopped then)."""
        priority = entry.effective_priority
        if (entry.shape, priority) in self._preempt_missed:
            return None
        if self._coops_running is None:  # (once a round: per coop, per executor, its running jobs)
            self._coops_running = {}
            for executor_id, task_ids in self._on_executor.items():
                for t in task_ids:
                    if (other := self._jobs.get(t)) is not None:
                        self._coops_running.setdefault(other.task.coop_id, {}).setdefault(executor_id, []).append(other)
        running = self._coops_running.get(entry.coop_id)
        best = self._fewest_to_stop(entry, job, running, allowed_candidates(self.table, entry.requirements),
                                    lambda j: j.decision.effective_priority < priority) if running else None
        if best is not None and (self._lending or self._borrowing) and self.table.shared \
                and self._kept_off_after(entry, *best):
            best = None  # (a sharing limit would keep it off there even with those stopped)
        if best is None:
            self._preempt_missed.add((entry.shape, priority))
            return None
        executor_id, victims = best
        for task_id in victims:
            self.preempt(task_id, executor_id, f"preempted on {executor_id} for task {entry.task_id} of its coop, "
                                               f"of higher priority ({priority:g})", cause="priority")
        return self._place(entry, now, job, compiled, at_once=self.table.ahead > 0)  # (there, now)

    def _kept_off_after(self, entry: QueuedTask, executor_id: str, victims: list[str]) -> bool:
        """Whether a lending or borrowing limit keeps ``entry`` off ``executor_id`` even once ``victims`` (its
        coop's tasks there) have stopped."""
        freed = (sum(self._jobs[t].task.resources.cpus for t in victims),
                 sum(self._jobs[t].task.resources.gpus for t in victims))
        return self._sharing_limits().closed_to(entry.coop_id, self.table.spec(executor_id).coop_id,
                                                entry.requirements.amounts[:2], freed)

    def _fewest_to_stop(self, entry: QueuedTask, job: Job, running: dict[str, list[Job]], candidates: np.ndarray,
                        eligible: Callable[[Job], bool]) -> tuple[str, list[str]] | None:
        """Of the executors ``candidates`` allows, where stopping ``running`` jobs that are ``eligible`` makes
        room for ``entry`` to start at once: the one that needs the fewest stopped (ties: the lower row), and
        those jobs, newest first; and of those placed at one instant, the last placed (on an executor taking
        work ahead, the one waiting in its queue, that has used nothing). None: no executor."""
        table, amounts = self.table, entry.requirements.amounts
        best: tuple[str, list[str]] | None = None
        for executor_id, jobs in running.items():
            row = table.rows.get(executor_id)
            if row is None or not candidates[row] or executor_id in entry.avoid or executor_id == job.ending_on:
                continue  # (not one it may use, not active, or it keeps off it)
            short = [a - f for a, f in zip(amounts, table.free_now(row))]
            if all(s <= EPS for s in short) or not table.holds(row, amounts):
                continue  # (free already: not for want of room; or too small for it whatever stops)
            victims: list[str] = []
            for victim in sorted((j for j in jobs if j.state is _RUNNING and not j.cancel_requested and eligible(j)),
                                 key=lambda j: (-(j.started_at or 0.0), -j.placed_seq, j.task.task_id)):
                r = victim.task.resources
                short = [s - u for s, u in zip(short, (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb))]
                victims.append(victim.task.task_id)
                if all(s <= EPS for s in short):
                    if best is None or len(victims) < len(best[1]) or (
                            len(victims) == len(best[1]) and row < table.rows[best[0]]):
                        best = (executor_id, victims)
                    break
        return best

    def _borrowed(self) -> dict[str, list[Job]]:
        """Per executor, the running jobs of coops other than its own (once a round, when first asked)."""
        if self._borrowed_now is None:
            self._borrowed_now = self._borrowed_executors()
        return self._borrowed_now

    def _kept_for_owners(self, entry: QueuedTask) -> str:
        """Why an executor that fits ``entry`` did not take it: its owner reclaims, and it would wait there."""
        if not (self.table.ahead and self._reclaims):
            return ""
        kept = int(np.count_nonzero(fit_mask(self.table, entry.requirements) & self._reclaimers_ahead(entry.coop_id)
                                    & ~self.table.at_once(entry.requirements.amounts)))
        return (f"; of those, {kept} owned by a coop that reclaims its executors take another coop's task only "
                "to start at once, and have no room for it now (one waiting in their queue would hold up "
                "their owner's)") if kept else ""

    def _reclaimers_ahead(self, coop_id: str) -> np.ndarray:
        """The rows taking work ahead whose owners reclaim, other than ``coop_id``'s (the owners' rows: once a
        round, when first asked): a borrower's task goes there only to start at once, so none waits in such an
        executor's queue, where stopping it would give its owner no room to start in."""
        table = self.table
        if self._reclaimed_ahead is None:
            codes = [table.coop_codes[coop] for coop, c in self._policies.items()
                     if c.reclaim is not _NEVER_RECLAIM and coop in table.coop_codes]
            self._reclaimed_ahead = np.isin(table.coop[: table.n], codes) & (table.extra_rounds[: table.n] > 0)
        own = table.coop_codes.get(coop_id)
        return self._reclaimed_ahead if own is None else self._reclaimed_ahead & (table.coop[: table.n] != own)

    def _borrowed_executors(self) -> dict[str, list[Job]]:
        """Per executor, the running jobs of coops other than its own (what its owner may reclaim)."""
        out: dict[str, list[Job]] = {}
        for executor_id, task_ids in self._on_executor.items():
            spec = self.table.spec(executor_id) if executor_id in self.table else None
            if spec is None or not task_ids:
                continue
            borrowed = [job for t in task_ids if (job := self._jobs.get(t)) is not None
                        and job.task.coop_id != spec.coop_id]
            if borrowed:
                out[executor_id] = borrowed
        return out
