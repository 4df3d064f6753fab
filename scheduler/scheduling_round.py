"""A scheduling round: the queue, in order, placed on the executors (a mixin of ``scheduler.core.SchedulerCore``).

``schedule()`` walks the queue in scheduling order (effective priority, fair share, submission
time) and, for each task that may start now (its time window open, its member under
``max_concurrent_tasks``, its coop with a policy), masks the executor table and picks the best
offer. Where executors are open to other coops, owners come first: a task is placed on its own
coop's executors in queue order, and one none of those fits waits for the end of the round to take
what is left of every executor it may use, coops taking turns there (``scheduler.fair_borrowing``).
Tasks of coops whose policies allow it stop running tasks to make room (``scheduler.making_room``).
A task that fits nowhere gets its reason: waiting (the
same shape then waits without a second look this round), placed without its policy's constraints
(a non-strict policy whose constraints now exclude every executor) or refused (no registered
executor could ever run it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from policies.model import DEFAULT_WEIGHTS, EnforcementMode, Reclaim
from policies.reasons import unavailable
from policies.validation import trusted_maker
from scheduler.admission import CompiledPolicy
from scheduler.executor_spec import ExecutorSpec
from scheduler.jobs import Job
from scheduler.ledger import from_units
from scheduler.fair_borrowing import dominant_share, holdings, turns
from scheduler.making_room import MakingRoom
from scheduler.placement import Placement, choose, explain_no_fit, fit_mask, offers, static_fit
from scheduler.queue import QueuedTask
from scheduler.sharing_limits import SharingLimits, limit_json
from scheduler.start_gates import closed_until
from scheduler.tasks import JobState

_DEFAULT_WEIGHTS = DEFAULT_WEIGHTS.as_tuple()
_DEFERRED, _RUNNING, _STRICT = JobState.DEFERRED, JobState.RUNNING, EnforcementMode.STRICT
_UNASKED = object()
_NEVER_RECLAIM = Reclaim.NEVER
ENDING_GRACE_S = 60.0
"""How long a preempted job keeps off the executor it was stopped on while that attempt's report has not come
(a kill takes well under a second; a report lost with its worker must not keep it off for ever)."""
_placement = trusted_maker(Placement, "task", "executor_id", "node_id", "score", "breakdown", "runners_up", "placed_at",
                           "attempt", "relaxed")


def _coop_of_item(item: list) -> str:
    return item[0].coop_id


def _placed_since(placements: list[Placement]):
    """What was placed since the last call (coop, (cpus, gpus)): ``fair_borrowing.turns``'s ``placed_since``."""
    seen = len(placements)

    def placed_since() -> list[tuple[str, tuple[float, float]]]:
        nonlocal seen
        new, seen = placements[seen:], len(placements)
        return [(p.task.coop_id, (p.task.resources.cpus, p.task.resources.gpus)) for p in new]
    return placed_since


class SchedulingRound(MakingRoom):
    """``schedule`` and what one placement takes."""

    def schedule(self, limit: int | None = None) -> list[Placement]:
        """Place as many queued tasks as fit now, in queue order. Returns the new placements."""
        now = self.clock()
        if self.borrowing_history is not None and self.borrowing_history.due(now):
            self._sample_borrowing(now)
        if not self.queue or (self.table.free_count <= 0 and not self._stops_running):  # nothing waiting, or a
            # full fleet where no coop stops running tasks (waiting tasks keep the reasons they were given when last
            # looked at)
            return []
        self._elsewhere_now: dict[tuple[str, str], int] = {}  # running_elsewhere's answers, for this round
        self._borrowed_now: dict[str, list[Job]] | None = None  # (_reclaim's, built when first asked this round)
        self._reclaim_missed: set[tuple] = set()  # (shape, priority rank) no reclaim made room for this round
        self._reclaimed_ahead: np.ndarray | None = None  # (_reclaimers_ahead's, built when first asked this round)
        self._coops_running: dict[str, dict[str, list[Job]]] | None = None  # (_preempt_within's, likewise)
        self._preempt_missed: set[tuple] = set()  # (shape, effective priority) no preemption made room for
        self._limits_now: SharingLimits | None = None  # (_sharing_limits', built when first asked this round)
        placements: list[Placement] = []
        no_fit: dict[tuple, str] = {}
        holds: dict[tuple, float | None] = {}
        queue = self.queue
        # owners first: where executors serve other coops too, a task is placed on its own coop's executors
        # in queue order, and one none of those fits waits for the end of the round, to take what is left
        # of every executor it may use; so a borrower's task, however its coop's multipliers boost it, never
        # takes an executor that its owner's task, later in the queue, could have had this round
        shared = self.table.shared
        borrowing: list[list] = []  # [entry, job, compiled, held], in queue order; held: held back by its
        # member's claims (not yet tried on its own coop's executors)
        held: dict[tuple[str, str], list[list]] = {}  # per member, its held-back items of ``borrowing``
        own_missed: set[tuple] = set()  # shapes none of their coop's executors fit (the shape names the coop)
        claims: dict[tuple[str, str], int] = {}  # per member, its tasks postponed to the borrowing pass
        for entry in queue.ordered(self._fair_share, now):
            if limit is not None and len(placements) >= limit:
                break
            task_id = entry.task_id
            if task_id not in queue:  # placed or cancelled since the order was computed
                continue
            job = self._jobs[task_id]
            if entry.not_before is not None and now < entry.not_before:
                continue
            compiled = self._policies.get(entry.coop_id)
            if compiled is None:  # its policy was removed after admission: nothing says what it may use
                job.note(f"waiting: coop {entry.coop_id} has no scheduling policy (it was removed); its queued "
                         "tasks start once a coop admin sets one (`coopsched policy set FILE`) or are cancelled",
                         now)
                continue
            if self.table.free_count <= 0 and compiled.reclaim is _NEVER_RECLAIM and not compiled.preempts:
                continue  # (a full fleet, in a round run for the coops that stop running tasks: this one can't)
            if compiled.gates:  # asked once a round: built-in windows depend on the coop, priority and tags
                # (one answer per gate key), a plug-in gate may decide by member (one answer per task)
                gate_key = entry.gate_key if compiled.gates_by_minute else ("task", task_id)
                hold = holds.get(gate_key, _UNASKED)
                if hold is _UNASKED:
                    hold = holds[gate_key] = closed_until(compiled, entry, now, self._buckets)
            else:
                hold = None
            if hold is not None:  # windows govern starts: a task that waited past the close waits again
                entry.not_before = hold
                self.changed_jobs.add(task_id)
                job.move(now, JobState.DEFERRED, f"held by a time window until {utc_minute(hold)}")
                continue
            if job.state is _DEFERRED:
                self.changed_jobs.add(task_id)
                job.move(now, JobState.QUEUED, "time window open")
            key = entry.member_key
            running, limit_tasks = self._running.get(key, 0), compiled.member_terms(entry.member)[3]
            if self.running_elsewhere is not None:
                running += self._elsewhere(key)
            if running >= limit_tasks:  # (_at_limit, inline: the hot path asks every task; this says why it waits)
                self._at_limit(entry, job, compiled, now)
                continue
            if job.ending_on is not None and self._saving(job, now):
                continue
            if no_fit and self._no_fit(entry, job, no_fit, now):
                continue
            if not shared:
                if self._place_or_explain(entry, now, job, compiled, no_fit, placements) and not self._stops_running:
                    return placements
                continue
            claimed = claims.get(key, 0)
            if claimed and running + claimed >= limit_tasks:
                item = [entry, job, compiled, True]  # its member's slots left go to its earlier tasks
                borrowing.append(item)  # (postponed), in queue order; a slot one of them does not take
                held.setdefault(key, []).append(item)  # comes back to it (own executors first)
                continue
            later = self._own_first(entry, now, job, compiled, own_missed, placements)
            if later is not None:
                claims[key] = claimed + 1
                borrowing.append([later, job, compiled, False])
            elif self.table.free_count <= 0 and not self._stops_running:
                return placements
        # coops take turns at what is left, the one borrowing least first (each in its own queue order)
        order = turns(borrowing, _coop_of_item, self._borrowed_shares, _placed_since(placements),
                      self._borrowed_before) \
            if len(borrowing) > 1 and len({item[0].coop_id for item in borrowing}) > 1 else borrowing
        for item in order:
            entry, job, compiled, is_held = item
            if limit is not None and len(placements) >= limit:
                break
            if entry.task_id not in queue:  # placed or refused when its member's claim was released
                continue
            key = entry.member_key
            if not is_held:
                claims[key] -= 1
            if self._borrow(entry, now, job, compiled, is_held, no_fit, own_missed, placements) \
                    and not self._stops_running:
                break
            if not is_held and job.state is not _RUNNING and key in held:  # its slot goes to its member's
                # held-back tasks now, on their own coop's executors, before a later borrower takes them
                if self._release_claim(key, held[key], claims, now, own_missed, placements, limit) \
                        and not self._stops_running:
                    break
        return placements

    def _borrowed_shares(self) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
        """Per coop, the CPUs and GPUs its running tasks hold on other coops' executors; and the fleet's, of its
        active executors (``fair_borrowing.turns``)."""
        return holdings(self._borrowed()), self.table.active_totals()

    def _borrowed_before(self, total: tuple[float, float]) -> dict[str, float]:
        history = self.borrowing_history
        return history.shares(total) if history is not None else {}

    def _sample_borrowing(self, now: float) -> None:
        """Note what coops hold of other coops' executors now in the borrowing history (a sample is due)."""
        assert self.borrowing_history is not None
        self.borrowing_history.sample(holdings(self._borrowed_executors()) if self.table.shared else {}, now)

    def borrowed_history_shares(self) -> dict[str, float]:
        """Per coop, its decayed average dominant share of the fleet held on other coops' executors (what fair
        borrowing adds to its share now; ``coopsched_borrowed_share_decayed``). Coops that never borrowed, or
        whose borrowing has faded out: absent; no history kept: empty."""
        return self._borrowed_before(self.table.active_totals())

    def sharing(self) -> dict[str, dict[str, Any]]:
        """Per coop that lends, borrows or limits either: the dominant shares it lends of its executors and borrows
        of the fleet now, its decayed past borrowing, its policy's limits (a fraction, or ``{"cpus": .., "gpus":
        ..}``: the amounts it names), and the CPUs and GPUs it lends and borrows now (``coopsched status``)."""
        limits = self._sharing_now()  # (one pass over what runs on borrowed executors, for both shares)
        lent = self._lent_by_owner(limits)
        borrowed = {coop: dominant_share(held, limits.fleet) for coop, held in limits.held.items()}
        before = self.borrowed_history_shares()
        out: dict[str, dict[str, Any]] = {}
        for coop in sorted(set(lent) | set(borrowed) | set(before) | set(self._lending) | set(self._borrowing)):
            row = {"lent": lent.get(coop, 0.0), "lending_limit": limit_json(self._lending.get(coop)),
                   "borrowed": borrowed.get(coop, 0.0), "borrowing_limit": limit_json(self._borrowing.get(coop)),
                   "borrowed_before": before.get(coop, 0.0)}
            if any(v for v in row.values()) or row["lending_limit"] == 0 or row["borrowing_limit"] == 0:
                out[coop] = {**row, "lent_amounts": list(limits.lent.get(coop, (0.0, 0.0))),
                             "borrowed_amounts": list(limits.held.get(coop, (0.0, 0.0)))}
        return out

    def borrowed_shares(self) -> dict[str, float]:
        """Per coop, the dominant share of the fleet its running tasks hold on other coops' executors now:
        what fair borrowing takes turns by (``coopsched_borrowed_share``). Coops that borrow nothing: absent."""
        total = self.table.active_totals()
        return {coop: dominant_share(held, total)
                for coop, held in holdings(self._borrowed_executors()).items()}

    def lent_shares(self) -> dict[str, float]:
        """Per coop that owns executors, the dominant share of its active executors that other coops' running
        tasks hold now: what its ``lending_limit`` bounds (``coopsched_lent_share``)."""
        return self._lent_by_owner(self._sharing_now())

    def _sharing_now(self) -> SharingLimits:
        """What coops hold of each other's executors now, against their limits (outside a round)."""
        return SharingLimits(self.table, self._lending, self._borrowing, self._borrowed_executors())

    def _lent_by_owner(self, limits: SharingLimits) -> dict[str, float]:
        owners = {spec.coop_id for spec in self.table.specs if spec is not None}
        return {owner: limits.lent_share(owner) for owner in sorted(owners)}

    def _borrow(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy, is_held: bool,
                no_fit: dict[tuple, str], own_missed: set[tuple], placements: list[Placement]) -> bool:
        """The borrowing pass's go at ``entry``: on every executor it may use (a held-back task on its own
        coop's first, relaxed or refused as in the first pass). True when the fleet is full."""
        if self._at_limit(entry, job, compiled, now) or (no_fit and self._no_fit(entry, job, no_fit, now)):
            return False  # (its member's own tasks placed meanwhile may have reached the limit)
        if is_held:
            later = self._own_first(entry, now, job, compiled, own_missed, placements)
            if later is None:
                return self.table.free_count <= 0
            entry = later
        return self._place_or_explain(entry, now, job, compiled, no_fit, placements)

    def _release_claim(self, key: tuple[str, str], held: list[list], claims: dict[tuple[str, str], int],
                       now: float, own_missed: set[tuple], placements: list[Placement], limit: int | None) -> bool:
        """A member's claim holder took nothing in the borrowing pass: its held-back tasks, in queue order, get
        the slot on their own coop's executors (as in the first pass: one none of those fits claims it and
        borrows at its place). True when the fleet is full."""
        for item in held:
            entry, job, compiled, is_held = item
            if not is_held or entry.task_id not in self.queue:
                continue
            if limit is not None and len(placements) >= limit:
                return False
            terms = compiled.member_terms(entry.member)[3]
            if self._running_of(key) + claims.get(key, 0) >= terms:
                return False
            later = self._own_first(entry, now, job, compiled, own_missed, placements)
            if later is None:
                if self.table.free_count <= 0:
                    return True
                continue
            item[0], item[3] = later, False  # it claims the slot, and borrows at its place
            claims[key] = claims.get(key, 0) + 1
        return False

    def _own_first(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy,
                   own_missed: set[tuple], placements: list[Placement]) -> QueuedTask | None:
        """The first pass of a fleet that shares executors: place ``entry`` on its own coop's executors
        (appended to ``placements``). A task that could never run as constrained is relaxed or refused here,
        at its place in the queue, as a fleet that shares nothing does. Returns the entry (relaxed, maybe)
        the borrowing pass tries on every executor it may use; None when placed or refused."""
        reclaims = compiled.reclaim is not _NEVER_RECLAIM
        # a coop that reclaims takes its executors back rather than wait in their queues behind borrowers: on a
        # fleet taking work ahead, its task goes first where it starts at once, then where a reclaim makes room
        # now, and only then where it would wait in an executor's queue
        at_once = reclaims and self.table.ahead > 0 and bool(self._borrowed())
        if entry.avoid or entry.shape not in own_missed:  # (own capacity only shrinks during the round)
            placement = self._place(entry, now, job, compiled, own=True, at_once=at_once)
            if placement is not None:
                placements.append(placement)
                return None
            if not entry.avoid and not at_once:
                own_missed.add(entry.shape)
        if reclaims:  # its coop takes back one of its executors from borrowers
            placement = self._reclaim(entry, now, job, compiled)
            if placement is None and at_once and (entry.avoid or entry.shape not in own_missed):
                placement = self._place(entry, now, job, compiled, own=True)  # handed ahead on its own
                if placement is None and not entry.avoid:
                    own_missed.add(entry.shape)
            if placement is not None:
                placements.append(placement)
                return None
        if static_fit(self.table, entry.requirements).possible:
            return entry
        message, could_ever = explain_no_fit(self.table, entry.requirements)
        if could_ever:
            return entry
        if compiled.mode is not _STRICT and not entry.relaxed:
            relaxed = self._relax(entry, now, job, message, compiled.mode.value)  # as admission would
            if relaxed is not None:
                return self._own_first(relaxed, now, job, compiled, own_missed, placements)
        self._refuse_queued(entry, now, message)  # no single registered executor can hold it
        return None

    def _at_limit(self, entry: QueuedTask, job: Job, compiled: CompiledPolicy, now: float) -> bool:
        limit_tasks = compiled.member_terms(entry.member)[3]
        if self._running_of(entry.member_key) < limit_tasks:
            return False
        elsewhere = self._elsewhere_now.get(entry.member_key) if self.running_elsewhere is not None else None
        job.note(f"waiting: member {entry.member} is at max_concurrent_tasks ({limit_tasks})" + (
            f"; {elsewhere} of them placed by other head replicas" if elsewhere else ""), now)
        return True

    def _running_of(self, key: tuple[str, str]) -> int:
        """The member's tasks running now: placed by this core, and by other head replicas on a shared store."""
        running = self._running.get(key, 0)
        return running if self.running_elsewhere is None else running + self._elsewhere(key)

    def _elsewhere(self, key: tuple[str, str]) -> int:
        known = self._elsewhere_now.get(key)
        if known is None:
            known = self._elsewhere_now[key] = self.running_elsewhere(*key)  # type: ignore[misc]
        return known

    @staticmethod
    def _saving(job: Job, now: float) -> bool:
        """Whether a stopped task with a ``stop_grace_s`` waits, anywhere, for its stopped attempt to end: that
        attempt may be saving a checkpoint its next one should start from (a retry started meanwhile would start
        from an older one). Until its report comes, or ``ENDING_GRACE_S`` and its grace have passed."""
        grace = job.task.stop_grace_s
        if grace <= 0 or now - job.ending_since > ENDING_GRACE_S + grace:
            return False
        job.note(f"waiting for its stopped attempt on {job.ending_on} to end (it has stop_grace_s={grace:g} s to "
                 "save a checkpoint), to run again from what it saved", now)
        return True

    @staticmethod
    def _no_fit(entry: QueuedTask, job: Job, no_fit: dict[tuple, str], now: float) -> bool:
        """Whether a task of the same shape found nothing free earlier this round (so this one waits too)."""
        message = no_fit.get(entry.shape)
        if message is None:
            return False
        job.note(message, now)
        return True

    def _place_or_explain(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy,
                          no_fit: dict[tuple, str], placements: list[Placement]) -> bool:
        """Place ``entry`` on any executor it may use (appended to ``placements``), or give it its reason:
        relaxed (a non-strict policy's constraints now exclude every executor), refused (no registered
        executor can ever run it) or waiting. True when the fleet is full (the round ends)."""
        placement = self._place(entry, now, job, compiled)
        if placement is None:
            message, could_ever = explain_no_fit(self.table, entry.requirements)
            if not could_ever and compiled.mode is not _STRICT and not entry.relaxed:
                relaxed = self._relax(entry, now, job, message, compiled.mode.value)  # as admission would
                if relaxed is not None:
                    entry = relaxed
                    placement = self._place(entry, now, job, compiled)
                    if placement is not None:
                        placements.append(placement)
                        return self.table.free_count <= 0
                    message, could_ever = explain_no_fit(self.table, entry.requirements)
            if not could_ever:  # no single registered executor can hold it: refuse, release its quota
                self._refuse_queued(entry, now, message)
                return False
            if compiled.preempts:  # its coop's running tasks of lower priority make room
                placement = self._preempt_within(entry, now, job, compiled)
                if placement is not None:
                    placements.append(placement)
                    return self.table.free_count <= 0
            no_fit[entry.shape] = (f"waiting for a free executor: {message}" + self._kept_for_owners(entry)
                                   + self._held_back_by_limits(entry))
            job.note(no_fit[entry.shape], now)
            return False
        placements.append(placement)
        return self.table.free_count <= 0  # the fleet is full: the rest keep their place and reason

    def _place(self, entry: QueuedTask, now: float, job: Job, compiled: CompiledPolicy | None,
               own: bool = False, at_once: bool = False) -> Placement | None:
        """Place ``entry`` on the best executor it fits (``own``: of its coop only; ``at_once``: only where it
        starts at once, not handed ahead), or None."""
        task, task_id, table = entry.task, entry.task_id, self.table
        weights = compiled.weights if compiled else _DEFAULT_WEIGHTS
        hints = task.hints
        data_keys = hints.data
        data = self.data_locator.fractions(data_keys) if data_keys else None
        mask = fit_mask(table, entry.requirements, own=own)  # (nothing of its own fits: none picked below)
        if job.ending_on is not None:  # a stopped attempt of it may still be ending there: not back there yet
            self._keep_off(job, mask, now)
        limits = self._sharing_limits() if not own and (self._lending or self._borrowing) and table.shared else None
        if limits is not None:  # other coops' executors past a lending or borrowing limit for this task
            closed = limits.closed(entry.coop_id, entry.requirements.amounts[:2])[0]
            if closed is not None:
                mask &= ~closed
        if table.ahead and (at_once or self._reclaims):  # (a fleet taking work ahead, where a coop stops tasks)
            now_ok = table.at_once(entry.requirements.amounts)
            if at_once:
                mask &= now_ok
            else:  # another coop's executors that take work ahead and reclaim: only to start at once
                mask &= ~self._reclaimers_ahead(entry.coop_id) | now_ok
        picked = choose(table, mask, weights, hints, data, top=4 + len(entry.avoid))
        if entry.avoid:  # a retry prefers executors it has not been lost on, but may go back if none other fits
            others = [p for p in picked if table.specs[p[0]].executor_id not in entry.avoid]  # type: ignore
            if own and not others:  # only its coop's executors it was lost on: another coop's may fit
                return None
            picked = (others or picked)[:4]
        if not picked:
            return None
        row, score = picked[0]
        spec = table.specs[row]
        assert spec is not None
        executor_id = spec.executor_id
        scored = offers(table, picked, weights, hints, data)
        placement = _placement(task, executor_id, spec.node_id or executor_id, score, scored[0].breakdown,
                               tuple(scored[1:]), now, entry.attempt, entry.relaxed)
        table.reserve_amounts(row, entry.requirements.amounts)
        if limits is not None:
            limits.placed(entry.coop_id, spec.coop_id, entry.requirements.amounts[:2])
        self.queue.remove(task_id)
        key = entry.member_key
        self._running[key] = self._running.get(key, 0) + 1
        self._on_executor[executor_id].add(task_id)
        self.changed_jobs.add(task_id)
        job.placement = placement
        job.attempts = entry.attempt
        job.started_at = now
        self._placements += 1
        job.placed_seq = self._placements
        reason = f"placed on {executor_id} (attempt {entry.attempt})"
        if spec.dispatch_ahead and self._handed_ahead(row, spec):
            reason += ("; handed over ahead: it waits in that executor's own queue until resources there free up "
                       "(or starts at once, if it can backfill beside a task waiting there)")
        job.move(now, _RUNNING, reason)
        return placement

    def _sharing_limits(self) -> SharingLimits:
        """What coops hold of each other's executors against their lending and borrowing limits (once a
        round, when first asked; kept current by ``_place``)."""
        if self._limits_now is None:  # (the round's cached borrowed executors, as _reclaim's)
            self._limits_now = SharingLimits(self.table, self._lending, self._borrowing, self._borrowed())
        return self._limits_now

    def _held_back_by_limits(self, entry: QueuedTask) -> str:
        """Why executors that fit ``entry`` did not take it: a lending or borrowing limit (``sharing_limits``)."""
        if not (self._lending or self._borrowing) or not self.table.shared:
            return ""
        closed, why = self._sharing_limits().closed(entry.coop_id, entry.requirements.amounts[:2])
        if closed is None:
            return ""
        kept = int(np.count_nonzero(fit_mask(self.table, entry.requirements) & closed))
        return f"; of those, {kept} held back by a sharing limit: {'; '.join(why)}" if kept else ""

    def _keep_off(self, job: Job, mask: np.ndarray, now: float) -> None:
        """Leave out of ``mask`` the executor where the job's stopped attempt may still be ending (a worker runs
        one attempt of a task id at a time), until its report comes or ``ENDING_GRACE_S`` (and its
        ``stop_grace_s``) has passed."""
        if now - job.ending_since > ENDING_GRACE_S + job.task.stop_grace_s:
            job.ending_on = None  # (its report lost: the worker's watchdog finds an attempt still there)
            return
        row = self.table.rows.get(job.ending_on)  # type: ignore[arg-type]
        if row is not None:
            mask[row] = False

    def _relax(self, entry: QueuedTask, now: float, job: Job, message: str, mode: str) -> QueuedTask | None:
        """A non-strict policy's task whose constraints now exclude every executor (the ones that satisfied
        them at admission are gone): queued again without them, as admission does when none fits; None if
        it has no policy constraints to drop or no executor could run it even without them."""
        sources = entry.requirements.policy_sources
        loose = entry.requirements.unconstrained()
        if not sources or not explain_no_fit(self.table, loose)[1]:
            return None
        relaxed = dataclasses.replace(entry, requirements=loose, relaxed=sources)
        self.queue.add(relaxed)
        job.requirements = loose  # a retry (requeue) starts from these, as one relaxed at admission does
        self.counters.violations[(entry.coop_id, "placement", mode)] += 1  # as admission counts a relaxation
        self.changed_jobs.add(entry.task_id)
        job.note(f"policy constraints now exclude every executor ({message}); placed without them because the "
                 "policy is not strict", now)
        return relaxed

    def _handed_ahead(self, row: int, spec: ExecutorSpec) -> bool:
        """Whether the executor's tasks, this one included, ask for more than its resources (so this
        one waits in the worker's queue): what is free counts down from ``1 + dispatch_ahead`` rounds."""
        load, r, extra = self.table.row_load[row], spec.resources, spec.dispatch_ahead
        return (load[0] < extra * r.cpus - 1e-9 or load[1] < extra * r.gpus - 1e-9
                or load[2] < extra * r.memory_mb - 1e-9 or load[3] < extra * r.gpu_memory_mb - 1e-9)

    def _refuse_queued(self, entry: QueuedTask, now: float, message: str) -> None:
        task = entry.task
        self.queue.remove(task.task_id)
        self.ledger.release(task.task_id)
        job = self._jobs[task.task_id]
        reason = unavailable("placement", f"no registered executor can ever run this task: {message}; "
                             "ask for less, or wait for a suitable executor to join")
        job.decision = job.decision.model_copy(update={"admitted": False, "reasons": (reason,)})
        job.finished_at = now
        self.changed_jobs.add(task.task_id)
        self.counters.rejected[task.coop_id] += 1
        job.move(now, JobState.REJECTED, reason.message)

    def _fair_share(self, coop_id: str, member: str) -> float:
        compiled = self._policies.get(coop_id)
        if compiled is None:
            return 0.0
        quota = compiled.quota_for(member)
        used = self.ledger.standing(coop_id, member, self.clock()).used
        shares = [from_units(u) / lim for u, lim in ((used.cpu, quota.cpu_hours_per_month),
                  (used.gpu, quota.gpu_hours_per_month), (used.credits, quota.credits_per_month)) if lim]
        return max(shares, default=0.0)


def utc_minute(t: float) -> str:
    """An epoch second as members read it in a reason: "2026-12-01 18:00 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
