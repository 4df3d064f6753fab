"""Forgetting a damaged job record through the head: ``forget_damaged_job`` (``DamagedJobRecords``, a mixin of
``scheduler.head.Head``).

A job record whose JSON cannot be read (``scheduler.damaged_records``) is restored by no head: its reservation
stays held in its month, and, by the state kept beside it, what its attempt may use on executors stays held
too (``scheduler.held_capacity``). This is the supported way to be rid of one, instead of editing SQLite or
Redis by hand: the store deletes the record only if it is damaged at that moment, with its payload, its index
entries and its open reservation (``StateStore.delete_damaged_job``), and the head lets go of what it held
for the job. The member submits the work again under a new task id.

Refused, with nothing changed (answered, not raised: ``forgotten`` False, ``outcome`` and what to do):

- ``in_memory``: a job this head holds. Its record is the head's own, written again at the job's next change
  (a record damaged under a running head is mended so); ``cancel`` stops the job.
- ``not_found``: no record of that id (a forget already done, whose answer was lost, answers so too).
- ``not_damaged``: a record that reads. ``cancel`` stops a job that has not finished; a finished one's record
  is its history.
- ``still_runs``: the worker of an executor held for the job says it runs or queues that task id. Deleting
  the record then would leave an attempt using what no record accounts for (a restarted head would place into
  it); ``cancel`` stops it, and once its worker no longer runs it (the watchdog ends that hold), forget it. A
  worker that cannot answer is taken not to run it, as the watchdog takes it (lost: its holds end).

Who may: the operator, or an admin of the coop the store keeps beside the record (``scheduler.authorization``:
SQLite keeps it in a column of its own; a damaged Redis record says nothing of whose it was, so there the
operator alone). Not a member, even for its own job: it releases a reservation, an admin's act like a quota
reset. Each forget is entered in the change log (``job.forget``).

What stays: the task's usage reports in the tracker's store (they charged nobody, as no head held the job),
and its charge, if it was settled before the record was damaged. Another head replica on the same store keeps
what it held for the job until its watchdog hears that the workers do not run it.
"""

from __future__ import annotations

import asyncio
import logging
import shlex

from ray.exceptions import RayError

from scheduler import admin
from scheduler.damaged_records import is_damaged
from scheduler.head_auth import guarded
from scheduler.ledger import from_units
from scheduler.state_store import DamagedJobDeletion
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

ASK_TIMEOUT_S = 5.0
"""How long the worker of an executor held for the job has to say whether it runs it (the watchdog's wait)."""


class DamagedJobRecords:
    """``forget_damaged_job``."""

    @guarded
    async def forget_damaged_job(self, task_id: str, actor: str = "admin") -> dict:
        """Delete ``task_id``'s record if it is damaged, releasing its reservation and what this head held on
        executors for its attempt. Answers ``forgotten`` (with ``released``: what its reservation held, and
        ``holds_released``: the executors freed), or why not (``outcome``, ``message``; nothing changed)."""
        admin.check_task_id(task_id, "forget")
        refused = self._not_forgettable(task_id)
        if refused is not None:
            return refused
        runs = await self._held_where_it_runs(task_id)
        if runs:
            return _answer(task_id, "still_runs", (
                f"job {task_id!r} still runs, or waits, on {', '.join(runs)} (its worker says so): deleting its "
                f"record now would leave that attempt using what no record accounts for; stop it with "
                f"`coopsched job cancel {shlex.quote(task_id)}`, then forget it once its worker no longer runs it "
                "(the head sees that within seconds); nothing was changed"))
        with self._writes():  # (the store checks again, atomically: other calls ran while the workers answered)
            deleted = self.store.delete_damaged_job(task_id)
            if deleted.outcome != "deleted":  # forgotten by another call, or written over by a head, meanwhile
                return _refusal(task_id, deleted.outcome, None)
            freed = self.core.held_where(task_id)
            self.core.release_held(task_id)
            answer = _forgotten(deleted, freed)
            self._log(deleted.coop_id or "*", "job.forget", actor, {
                "task_id": task_id, "member": deleted.member, "state": deleted.state, "released": answer["released"],
                "holds_released": freed, "payload_deleted": deleted.payload_deleted})
            self._schedule()  # what it held on executors is free for the tasks waiting now
            self._persist()
        self._results.pop(task_id, None)
        if task_id in self.recovered.get("damaged_jobs", ()):  # ``ping`` no longer names it as found at start
            self.recovered = {**self.recovered, "damaged": max(0, self.recovered["damaged"] - 1),
                              "damaged_jobs": [t for t in self.recovered["damaged_jobs"] if t != task_id]}
        self._notify(task_id)  # a waiter on it hears now that there is no such job
        log.warning("job %s forgotten by %s: %s", task_id, actor, answer["message"])
        return answer

    def _not_forgettable(self, task_id: str) -> dict | None:
        """Why ``task_id`` may not be forgotten now (``in_memory``, ``not_found``, ``not_damaged``); None if it may."""
        self._fresh()  # (checked against the memory _writes would rebuild)
        if self.core.task(task_id) is not None:
            return _refusal(task_id, "in_memory", self.core.state_of(task_id))
        record = self.store.get_job(task_id)
        if record is None or not is_damaged(record):
            return _refusal(task_id, "not_found" if record is None else "not_damaged",
                            record.get("state") if record is not None else None)
        return None

    async def _held_where_it_runs(self, task_id: str) -> list[str]:
        """The executors held for ``task_id`` whose worker runs or queues it, asked at once."""
        held = self.core.held_where(task_id)
        answers = await asyncio.gather(*(self._runs_there(task_id, e) for e in held))
        return [e for e, runs in zip(held, answers) if runs]

    async def _runs_there(self, task_id: str, executor_id: str) -> bool:
        worker = self._worker(executor_id)
        if worker is None:
            return False
        try:
            return task_id in await asyncio.wait_for(worker.running.remote(), ASK_TIMEOUT_S)
        except (RayError, asyncio.TimeoutError) as exc:  # as the watchdog: lost, its holds end with it
            log.info("the worker of %s did not say whether it runs %s (%s)", executor_id, task_id, type(exc).__name__)
            return False


def _refusal(task_id: str, outcome: str, state: str | JobState | None) -> dict:
    """Why not, and what to do instead (``state``: the job's, a ``JobState`` when this head holds it)."""
    cancel = f"`coopsched job cancel {shlex.quote(task_id)}`"
    finished = isinstance(state, JobState) and state.finished
    state = getattr(state, "value", state)
    if outcome == "in_memory":
        fix = ("it leaves the head's memory at a restart, or once enough later jobs have finished" if finished
               else f"stop the job with {cancel}")
        message = (f"job {task_id!r} is held by this head ({state}): its record is the head's own, written from "
                   f"memory at each change of the job, and forget deletes only a damaged record no head holds; {fix}")
    elif outcome == "not_found":
        message = (f"no job {task_id!r} is recorded in the store (one forgotten already is not: `coopsched changes` "
                   "shows who forgot it when)")
    else:
        message = (f"the stored record of job {task_id!r} reads ({state}), and forget deletes only a damaged record: "
                   f"a job that has not finished is stopped with {cancel}; a finished one's record is its history, "
                   "and stays")
    return _answer(task_id, outcome, f"{message}; nothing was changed", state=state)


def _forgotten(deleted: DamagedJobDeletion, freed: list[str]) -> dict:
    cost = deleted.released
    released = None if cost is None else {"period": deleted.period, "cpu_hours": from_units(cost.cpu),
                                          "gpu_hours": from_units(cost.gpu), "credits": from_units(cost.credits)}
    whose = ", ".join(f"{what} {name}" for what, name in (("coop", deleted.coop_id), ("member", deleted.member))
                      if name is not None) or "its owner not kept in the store"
    held = (f"its reservation in {deleted.period} ({released['cpu_hours']:g} CPU-hours, {released['gpu_hours']:g} "
            f"GPU-hours, {released['credits']:g} credits) is released" if released else "it held no reservation")
    on = f"what its attempt was held on is free on {', '.join(freed)}" if freed else "it held nothing on executors"
    return _answer(deleted.task_id, "forgotten", (
        f"job {deleted.task_id!r} ({whose}; stored state {deleted.state or 'not kept'}) forgotten: its damaged "
        f"record is deleted with its payload and index entries; {held}; {on}; submit the work again under a new "
        "task id"),
        coop_id=deleted.coop_id, member=deleted.member, state=deleted.state, released=released, freed=freed,
        payload_deleted=deleted.payload_deleted)


def _answer(task_id: str, outcome: str, message: str, coop_id: str | None = None, member: str | None = None,
            state: str | None = None, released: dict | None = None, freed: list[str] | tuple[()] = (),
            payload_deleted: bool = False) -> dict:
    """Every answer of ``forget_damaged_job`` has the same fields (a refusal's are empty)."""
    return {"task_id": task_id, "forgotten": outcome == "forgotten", "outcome": outcome, "message": message,
            "coop_id": coop_id, "member": member, "state": state, "released": released,
            "holds_released": list(freed), "payload_deleted": payload_deleted}
