"""How the head keeps its memory true to its store (a mixin of ``scheduler.head.Head``).

``_recover`` takes back what the store knows when the head starts; every call's writes go through
``_writes`` (one group commit); if the store refuses them, ``_resync`` rebuilds the core from the
store as a restarted head would; ``_persist`` writes the jobs a call changed, and ``_store_status``
an executor's status when it changes. ``_release_orphaned_reservations`` releases what a call cut off
between a reservation and its job record left held in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from policies.validation import InvalidRequest
from scheduler.core import SchedulerCore
from scheduler.damaged_records import DAMAGED, forget_command, is_damaged
from scheduler.executor_spec import ExecutorStatus
from scheduler.replicas import JobOfAnotherHead, recorded_head
from scheduler.store_ledger import StoreLedger
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

BORROWING_STATE = "borrowing_history"  # the name the head's BorrowingHistory.snapshot() is stored under
INLINE_PAYLOAD_BYTES = 64 * 1024  # payloads up to this size ride along with the dispatch call
DAMAGED_LISTED = 20  # damaged job records named in the recovery summary (``ping``); all are counted and logged

ORPHAN_GRACE_S = 600.0
"""How long a reservation may be held with no unfinished job record before it is released as an orphan
(``StateStore.release_orphaned_reservations``; on Redis a head killed between an admission's reservation and
its job record leaves one). Far longer than any call takes: a reservation released under a call still
running would leave its job unheld (charged when it ends, but its projection no longer counted against the
quota), and a ``Client.map`` is one call however many items it has (at the 650-710 admissions a second
noted at ``head.SUBMISSION_SLOTS``, 100,000 take over two minutes). Waiting longer costs little: an orphan
is rare (a head, or its store, lost mid-call) and holds one job's projection."""
ORPHAN_SWEEP_INTERVAL_S = 60.0  # how often the watchdog looks for orphaned reservations (and once at start)


# Head replicas on one shared store each own what they record. A job is its admitting head's (the record's
# "head": the actor's namespace and name, the same across its restarts): only that head takes it back at a
# restart, as only it hears the job's report (a worker reports to one tracker, which forwards to one head).
# Before, a replica starting while another ran jobs took those back too, and when one ended it found the worker
# no longer held it and ran it again, writing its record back over the settled one. Likewise an executor works
# for the head its worker heartbeats to: on a shared store a restored executor is offline until it heartbeats to
# this head (before, a replica placed on another's executors for the heartbeat timeout, and their reports went
# to the other head, which refused them). One head on its own store (SQLite) takes back every job, and its
# executors active, as they were.


class StateKeeping:
    """``_recover``, ``_writes``, ``_resync``, ``_persist``, ``_store_status`` and
    ``_release_orphaned_reservations``."""

    _stale = False  # the last _resync could not read the store back: the next call's _writes tries again
    _next_orphan_sweep = 0.0  # time.monotonic() of the next _release_orphaned_reservations

    def _recover(self, heard: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Take back what the store knows: policies, executors, unfinished jobs and their payloads, and the
        resources placed jobs it cannot take back may still use (``held``: how many jobs). ``heard``: the
        executors active on this head before (a rebuild, ``_resync``), which stay active where the store has
        them active (on a shared store the others are offline until their worker heartbeats here). Unfinished jobs
        whose records are damaged are counted (``damaged``) and named (``damaged_jobs``, the first
        ``DAMAGED_LISTED``); so are the coops whose active policy is damaged (``damaged_policies``) and the
        executors whose registration is (``damaged_executors``)."""
        damaged_policies = self._restore_policies()  # (scheduler.policy_sync: fails closed)
        borrowing = self._restore_borrowing()
        damaged_executors = []
        unregistered: set[str] = set()  # stored, but their registration not restored (see restore_job)
        for spec, status in self.store.executors():
            if is_damaged(spec):  # not registered, so it takes no work and its heartbeats are refused (it is
                # unknown) until it registers again; the jobs restored as running on it stay placed there
                damaged_executors.append(spec["executor_id"])
                unregistered.add(spec["executor_id"])
                log.error("executor %s not restored: its stored registration is damaged (%s); it takes no work "
                          "until it is registered again, and jobs running on it stay placed there until its worker "
                          "says it no longer runs them", spec["executor_id"], spec[DAMAGED])
                continue
            try:
                self.core.register_executor(spec)
            except InvalidRequest as exc:  # a registration this release no longer accepts: the head still starts
                log.error("executor %s not restored (register it again): %s", spec.get("executor_id"), exc)
                if isinstance(spec.get("executor_id"), str):  # its worker may still run jobs, as for a damaged one
                    unregistered.add(spec["executor_id"])
                continue
            if status == ExecutorStatus.ACTIVE.value and self.store.shared and spec["executor_id"] not in heard:
                # (replicas: see above StateKeeping; one that worked for this head before a rebuild still does)
                self.core.table.set_status(spec["executor_id"], ExecutorStatus.OFFLINE)
            elif status != ExecutorStatus.ACTIVE.value:
                try:
                    self.core.table.set_status(spec["executor_id"], ExecutorStatus(status))
                except ValueError:  # a status this release does not know: restored offline, a heartbeat revives it
                    log.error("executor %s: stored status %r unknown; restored offline", spec["executor_id"], status)
                    self.core.table.set_status(spec["executor_id"], ExecutorStatus.OFFLINE)
        jobs, damaged, elsewhere = 0, [], 0
        now = time.time()
        self._stored_running: dict[tuple[str, str], set[str]] = {}
        for record in self.store.unfinished_jobs():
            if is_damaged(record):  # its JSON cannot be read: nothing is restored, and where its attempt was
                # placed is unknown (scheduler.held_capacity.held_anywhere says what is held, and why)
                damaged.append(record["task_id"])
                self._hold_damaged(record)
                continue
            if self._elsewhere_recorded(record):
                elsewhere += 1  # another replica's: it takes it back at its own restart (a record of an earlier
                continue  # release, with no "head", is the default head's); its running ones: _running_elsewhere
            try:  # (restore_job reads no store: a store failure still fails the recovery, as _resync needs)
                task_id = record["task_id"]
                state = self.core.restore_job(record, unregistered=unregistered)
            except Exception as exc:  # a record this release cannot take back (a task it now refuses, a
                # field it lacks): the head still starts; the job stays in the store as it was. If it was
                # placed, its attempt may still run there: what it may use stays held on that executor
                # until its worker says it no longer runs it (scheduler.held_capacity says why)
                held = self.core.hold_unrestored(record)
                log.error("job %s not restored (%s: %s); its reservation stays held in its month%s",
                          record.get("task_id"), type(exc).__name__, exc,
                          f"; what its attempt may use ({held[0].describe()}) stays held on {held[0].executor_id} "
                          "until its worker there says it no longer runs it" if len(held) == 1 else
                          f"; where its attempt runs cannot be read: all of {', '.join(h.executor_id for h in held)} "
                          "stays held until each one's worker says whether it runs it" if held else "")
                continue
            data = self.store.get_payload(task_id)
            payload = data if data else (_noop, (), {})  # the pickled bytes: the worker's task unpickles them
            self._payloads[task_id] = ray.put(payload) if data and len(data) > INLINE_PAYLOAD_BYTES \
                else payload
            if state is JobState.RUNNING:
                self._dispatched[task_id] = now  # the watchdog asks its worker about it
            self._stored_state(task_id, record)
            jobs += 1
        self.core.drain_changed()
        for task_id, executor_id in self.core.ending_attempts():  # preempted, and perhaps never stopped (this
            self._loop.create_task(self._stop_preempted(task_id, executor_id))  # head stopped before it asked)
        if jobs:
            log.warning("recovered %d unfinished job(s) from %s", jobs, self.store_url)
        if elsewhere:
            log.info("left %d unfinished job(s) to the other head replicas that recorded them", elsewhere)
        return {"policies": len(self.core.policies()), "executors": len(self.core.table), "jobs": jobs,
                "elsewhere": elsewhere,
                "held": len(self.core.held_capacity), "damaged": len(damaged),
                "damaged_jobs": damaged[:DAMAGED_LISTED], "damaged_policies": damaged_policies[:DAMAGED_LISTED],
                "damaged_executors": damaged_executors[:DAMAGED_LISTED], **borrowing}

    def _restore_borrowing(self) -> dict[str, Any]:
        """Take back the borrowing history this head stored (``scheduler.fair_borrowing``), if the core's is fresh
        (a rebuild's core carries the old one over): ``{"borrowing": coops}``. One that cannot be read is
        logged and started afresh (``{"damaged_borrowing": why}``); the next sample writes it over."""
        history = self.core.borrowing_history
        self._history_written: float | None = None  # sampled_at of the history last written (_persist_borrowing)
        if history is None or history.sampled_at is not None:
            return {}
        stored = self.store.head_state(self.owner, BORROWING_STATE)
        if stored is None:
            return {}
        try:
            if is_damaged(stored):
                raise ValueError(stored[DAMAGED])
            history.restore(stored)
        except ValueError as exc:  # (pydantic's ValidationError is one): nothing was taken back
            why = " ".join(str(exc).split())[:300]
            log.error("the stored borrowing history of %s cannot be read (%s): it starts afresh, so coops' past "
                      "borrowing is forgotten and their turns at borrowable room go by what they hold now; it is "
                      "written over at the next sample", self.owner, why)
            return {"damaged_borrowing": why}
        self._history_written = history.sampled_at
        return {"borrowing": len(history.used)}

    def _persist_borrowing(self) -> None:
        """Write the borrowing history when it was sampled since it was last written (at most once a
        ``BorrowingHistory.sample_s``, a minute with the default half-life), so a restarted head keeps it."""
        history = self.core.borrowing_history
        if history is not None and history.sampled_at is not None and history.sampled_at != self._history_written:
            self.store.put_head_state(self.owner, BORROWING_STATE, history.snapshot())
            self._history_written = history.sampled_at

    def _hold_damaged(self, record: dict) -> None:
        """Hold what a damaged record's job may use (``SchedulerCore.hold_damaged``), and say so."""
        held = self.core.hold_damaged(record["task_id"], record.get("state"))
        if held:
            what = (f"where its attempt runs cannot be read: all of {', '.join(h.executor_id for h in held)} "
                    "stays held until each one's worker says whether it runs it")
        else:
            what = "it never started, or there is no executor it could run on: nothing is held"
        log.error("job %s not restored: its stored record is damaged (%s); stored state %r; its reservation "
                  "stays held in its month; %s. Delete its record with `%s` (or repair it in %s)", record["task_id"],
                  record[DAMAGED], record.get("state"), what, forget_command(record["task_id"]),
                  self.store_url.split("@")[-1])

    @contextmanager
    def _writes(self) -> Iterator[None]:
        """One call's writes as one group commit (``store.batch``). If the store refuses them (a full
        disk, an I/O error, Redis gone), memory is rebuilt from what the store holds (``_resync``)
        before the error goes on to the caller: the head never acts on a decision the store did not
        take (a job admitted in memory only would run with no reservation, and its missing payload
        would fail every dispatch to its executor)."""
        self._fresh()
        self._writing += 1
        try:
            with self.store.batch(rollback_if=_store_failed):
                yield
        except InvalidRequest:  # refused before anything changed
            raise
        except Exception as exc:
            if self._writing == 1:  # (the outermost block rebuilds, once)
                self._resync(exc)
            raise
        finally:
            self._writing -= 1

    def _fresh(self) -> None:
        """If the last rebuild could not read the store, memory holds changes the store never took (and no
        longer marked changed): rebuild it first. Before a call's writes, its checks, and any dispatch."""
        if self._stale and self._writing == 0:
            self._resync(None)

    def _resync(self, exc: BaseException | None) -> None:
        """Replace the core with one recovered from the store, as a restarted head would, keeping the
        counters, rate buckets, worker handles and result references. If the store cannot be read
        either, memory stays as it was (and says so in the log) until a later failure or a restart."""
        if exc is not None:
            log.error("the state store refused a call's writes (%s: %s); rebuilding the head's memory from it",
                      type(exc).__name__, exc)
        old, dispatched, finished = self.core, self._dispatched, self._finished
        heard = frozenset(e for e in old.table.ids() if old.table.status_of(e) is ExecutorStatus.ACTIVE)
        self.core = SchedulerCore(clock=time.time, data_locator=self.locator, ledger=StoreLedger(self.store))
        self.core.carry_over(old)
        self._dispatched, self._finished = {}, OrderedDict()
        try:
            self.recovered = self._recover(heard)
        except Exception:
            log.exception("the store could not be read back either: the head's memory is kept as it was")
            self.core, self._dispatched, self._finished = old, dispatched, finished
            self._stale = True
            return
        self._stale = False
        self._unrecorded.clear()  # every job the new core holds was read from its record
        self._payloads = {t: p for t, p in self._payloads.items() if self.core.task(t) is not None}
        for task_id in self.locator.holders():
            if self.core.task(task_id) is None:
                self.locator.release(task_id)
        self.metrics.collector.core = self.core
        self.metrics.store_resyncs.inc()
        self.resyncs += 1

    def _persist(self) -> None:
        """Write the jobs whose state moved. A job's first record (decided in this call) is written only where
        the store holds none of its task id: another head replica may have decided that id at the same time,
        and the first record is the id's decision (``scheduler.head_task_ids``); if another is there, this
        head's decision is withdrawn and the call answers with that one. Later records are this head's alone."""
        withdrawn = False
        for task_id in self.core.drain_changed():
            first = task_id in self._unrecorded
            self._unrecorded.discard(task_id)
            record = self.core.job_record(task_id)
            if record is None:
                continue
            record["head"] = self.owner  # whose job it is: only this head takes it back at a restart (_recover)
            if not first:
                self.store.put_job(task_id, record)
            elif not self.store.create_job(task_id, record):
                stored = self.store.get_job(task_id)  # (job records are never deleted: the one create_job found)
                if not _same_decision(stored, record):
                    self._withdraw_beaten(task_id, stored)
                    withdrawn = True
                    continue
                self.store.put_job(task_id, record)  # this head's own, from an earlier write whose answer was lost
            self._stored_state(task_id, record)
            if JobState(record["state"]).finished:  # settled, cancelled, refused from the queue, failed
                self.store.delete_payload(task_id)
                self._payloads.pop(task_id, None)
                self.locator.release(task_id)
                self._finished[task_id] = None
        while len(self._finished) > self.keep_finished_jobs:  # stored above: the store answers for them now
            self.core.forget(self._finished.popitem(last=False)[0])
        self._persist_borrowing()
        if withdrawn:  # what the withdrawn jobs held on executors is free for others
            self._schedule()
            self._persist()

    # What this head's jobs are in the store as: the running ones per member, so that of the store's count of a
    # member's running jobs (every replica's) it can tell how many are the other replicas' (``_running_elsewhere``,
    # on a shared store: max_concurrent_tasks counts them). Kept from what _persist wrote and _recover read.
    def _stored_state(self, task_id: str, record: dict) -> None:
        if not self.store.shared:  # (one head: nothing to tell apart)
            return
        key = (record.get("coop_id"), record.get("member"))
        if record.get("state") == JobState.RUNNING.value:
            self._stored_running.setdefault(key, set()).add(task_id)
        else:
            held = self._stored_running.get(key)
            if held is not None:
                held.discard(task_id)

    def _elsewhere_recorded(self, record: dict) -> bool:
        """Whether a readable job record is another head replica's (on a shared store; one head on its own store
        owns every record there, whatever head an earlier release or namespace wrote in it)."""
        return self.store.shared and recorded_head(record) != self.owner

    def _redirect_if_elsewhere(self, task_id: str) -> None:
        """Raise ``JobOfAnotherHead`` if the store records ``task_id`` as another replica's job (the core holds
        no job of that id): only that head can cancel it or hand over its value (``scheduler.replicas``)."""
        if not self.store.shared:
            return
        record = self.store.get_job(task_id)
        if record is not None and not is_damaged(record) and self._elsewhere_recorded(record):
            raise JobOfAnotherHead(task_id, recorded_head(record))

    def _running_elsewhere(self, coop_id: str, member: str) -> int:
        """How many of the member's tasks other head replicas run now: the store's count of its running jobs,
        less this head's among them (its placements not stored yet are the core's own count)."""
        mine = len(self._stored_running.get((coop_id, member), ()))
        return max(0, self.store.running_count(coop_id, member) - mine)

    def _release_orphaned_reservations(self) -> list[str]:
        """Release the store's orphaned reservations (at start; then every ``ORPHAN_SWEEP_INTERVAL_S`` from
        the watchdog, off the event loop: ``_sweep_orphaned_reservations``). Any replica may do it: the store
        releases each one atomically against a head recording its job at that moment, and only after
        ``ORPHAN_GRACE_S``, so never one another head is about to record. Nothing in memory changes: a job
        this head holds unfinished has its record in the store (or, after a rebuild that could not read the
        store, none, and the next call's rebuild drops it)."""
        self._next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_INTERVAL_S
        try:
            released = self.store.release_orphaned_reservations(ORPHAN_GRACE_S)
        except Exception as exc:  # the store unreachable for a moment: the next sweep tries again
            log.warning("could not look for orphaned reservations (%s: %s)", type(exc).__name__, exc)
            return []
        return self._orphans_released(released)

    async def _sweep_orphaned_reservations(self) -> list[str]:
        """``_release_orphaned_reservations`` from the watchdog, with the store's call in a thread: on Redis it
        asks, of every open reservation, whether its job is recorded (~0.2 s for 20,000 held ones, measured),
        and on the event loop that would hold up every other call of the head as long. The store is used from
        other threads already (the ``reads`` group; SQLite's lock, Redis's connection pool) and the sweep
        changes nothing in memory: only the counting and logging of what it released are done on the loop."""
        self._next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_INTERVAL_S
        try:
            released = await asyncio.to_thread(self.store.release_orphaned_reservations, ORPHAN_GRACE_S)
        except Exception as exc:  # the store unreachable for a moment: the next sweep tries again
            log.warning("could not look for orphaned reservations (%s: %s)", type(exc).__name__, exc)
            return []
        return self._orphans_released(released)

    def _orphans_released(self, released: list[str]) -> list[str]:
        if released:
            self.metrics.orphaned_reservations_released.inc(len(released))
            log.warning("released %d reservation(s) held over %.0f s with no unfinished job recorded (a head "
                        "stopped, or lost its store, between admitting and recording them): %s", len(released),
                        ORPHAN_GRACE_S, ", ".join(released[:20]) + (" ..." if len(released) > 20 else ""))
        return released

    def _store_status(self, executor_id: str) -> None:
        """Write an executor's status as the core holds it now (offline, active again), so a restarted
        head does not send work to one this head found dead."""
        if executor_id in self.core.table:
            self.store.put_executor(self.core.table.spec(executor_id).model_dump(mode="json"),
                                    self.core.table.status_of(executor_id).value)


def _same_decision(stored: dict, record: dict) -> bool:
    """Whether a stored record is this head's own first record of the job (same decision, made at the same
    moment): its write went through, and only its answer was lost (a Redis reply cut off, then a rebuild that
    could not read the store back). Another head's decision on the id is never made at the same instant."""
    return stored.get("submitted_at") == record.get("submitted_at") and stored.get("decision") == record["decision"]


def _store_failed(exc: BaseException) -> bool:
    """Whether a call's writes go back: anything but a bad request (refused before it changed anything)."""
    return isinstance(exc, Exception) and not isinstance(exc, InvalidRequest)


def _noop():
    return None
