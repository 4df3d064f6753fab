"""Whose a task id is when head replicas decide it at once, and what the others answer (a mixin of
``scheduler.head.Head``: ``TaskIdClaims``).

A client that does not hear back from one replica retries the same task id on another, perhaps while the
first is still admitting it (or after the first stopped mid-call): two heads decide one task id at once.
On Redis a call's writes are separate commands (on SQLite, one by one when a batch cannot begin), so
between an admission's ``reserve`` and its job record another head can read no record, evaluate, and write
its own decision: job records were last-writer-wins, so a refusal could be written over the job another
head runs (and the orphan sweep, seeing a finished record, released that job's reservation while it ran:
quota overshoot), or the other way round. Two rules close it:

- the ledger arbitrates admissions: a reservation that finds the id held (``ReserveResult.DUPLICATE``) makes
  no job (``SchedulerCore.submit``), and a refusal of an id the ledger holds is taken back
  (``_taken``): the head answers with the holder's record if it has one by now, else with what the
  ledger holds (``taken_decision``), and records nothing;
- the first record decides the id: a head writes a job's first record only where the store holds none
  (``StateStore.create_job``: one SQLite statement, one Redis script), and a head that finds another's
  takes its own decision back before anything acts on it and answers with the recorded one
  (``_withdraw_beaten``). Later records are the owning head's alone, written as before.

Like Kubernetes' optimistic concurrency (a create that finds the object exists fails, and the client reads
what is there), nobody waits on a lock across calls: the loser learns it lost and says what is true.

A task id known to the store answers its owner only, with its first decision (``_recorded_decision``): another
member (or coop) reusing it learns nothing of that job (``_same_owner``), whether it is recorded or only held.
"""

from __future__ import annotations

import logging
import time

from policies.reasons import Decision, error, rejected, unavailable
from policies.validation import FieldError, InvalidRequest, quoted
from scheduler import head_state
from scheduler.damaged_records import DAMAGED, is_damaged
from scheduler.state_store import TaskHold
from scheduler.tasks import JobState, TaskSpec

log = logging.getLogger("coopsched.head")


class TaskIdClaims:
    """``_taken``, ``_withdraw_beaten`` and the answers they give (``_recorded``)."""

    def _taken(self, task: TaskSpec) -> dict | None:
        """A refusal here of a task id the ledger holds is not that id's decision: the admission holding it
        decides (see the module notes). The refusal is taken back from the core (a duplicate's it never
        kept), so this head records nothing over that admission's record, and the answer is that admission's
        record if it has one by now (written between this head's read and its reservation), else what the
        ledger holds. None: the ledger holds nothing of the id and the core's refusal is its decision."""
        task_id = task.task_id
        duplicate = self.core.task(task_id) is None  # the reservation found the id held
        hold = self.store.task_hold(task_id)
        if hold is None and not duplicate:  # (one read for most refusals; a refusal another head recorded
            return None  # meanwhile, holding nothing, is found by _persist: its create_job finds that record)
        record = self.store.get_job(task_id)
        self.core.withdraw(task_id, release=False)  # (a refusal reserved nothing)
        if record is not None:
            return _recorded_decision(task, record)
        if hold is not None:  # another member learns nothing of it, as of a recorded job
            _same_owner(task, hold.coop_id, hold.member)
        return taken_decision(task, hold, head_state.ORPHAN_GRACE_S)

    def _recorded(self, answer: dict) -> dict:
        """A submission's answer: this head's decision, or, if ``_persist`` took it back because another head
        recorded one for that task id first, the recorded one (``InvalidRequest`` if that job is another
        member's)."""
        beaten = self._beaten.get(answer.get("task_id"))
        return answer if beaten is None else _recorded_decision(*beaten)

    def _recorded_or_error(self, answer: dict) -> dict:
        try:
            return self._recorded(answer)
        except ValueError as exc:
            return {"error": str(exc)}

    def _withdraw_beaten(self, task_id: str, record: dict) -> None:
        """``create_job`` found ``record``, another head's, where this head's first record of the job would go:
        that is the id's decision. This head's is taken back before anything acts on it (out of the queue, or
        off the executor it was just placed on: its dispatch has not gone yet, this call has not returned) and
        the call answers with the recorded one (``_recorded``). Its reservation and payload are given back,
        unless the recorded job is unfinished: then they may be that job's (a reservation the orphan sweep
        released under a call slower than its grace, taken again by the other head)."""
        theirs = _unfinished(record)
        job = self.core.withdraw(task_id, release=not theirs)
        if job is None:
            return
        if job.decision.admitted and not theirs:
            self.store.delete_payload(task_id)
        self._payloads.pop(task_id, None)
        self.locator.release(task_id)
        self._beaten[task_id] = (job.task, record)
        log.warning("task %s: another head recorded its decision first (%s); this head's (%s) is withdrawn",
                    task_id, record.get("state"), "admitted" if job.decision.admitted else "refused")


def taken_decision(task: TaskSpec, hold: TaskHold | None, grace_s: float) -> dict:
    """The answer to a submission of a task id the ledger holds for an admission with no record yet (or
    held a moment ago): nothing was admitted, reserved or charged by it. ``hold``: what the ledger holds now
    (its owner is the submitter's: ``TaskIdClaims._taken`` checked); ``grace_s``: how long a reservation no job
    records is kept (``head_state.ORPHAN_GRACE_S``)."""
    task_id = task.task_id
    status = f"`coopsched job status {task_id}`"
    if hold is None:  # released between this head's reservation and its look (cancelled, or swept as an orphan)
        reason = unavailable("ledger", f"task_id {task_id!r} was held by another admission a moment ago and is "
                             "free now; this submission admitted and charged nothing; submit it again with the "
                             f"same task_id (or first ask its status: {status})")
    elif hold.settled:
        reason = rejected("ledger", f"task_id {task_id!r} already ran and was charged, but the store keeps no "
                          "record of its job; it is not run again; to run it again, submit under a new task id "
                          "(leave task_id out: the client makes a fresh one, e.g. job-7f3a)")
    else:
        when = f" at {_utc(hold.reserved_at)}" if hold.reserved_at is not None else ""
        until = f" (soon after {_utc(hold.reserved_at + grace_s)})" if hold.reserved_at is not None else ""
        reason = unavailable("ledger", f"task_id {task_id!r} is already being admitted: its quota was reserved"
                             f"{when} by an admission that has not recorded its decision yet (another head replica "
                             "still at it, or a head that stopped mid-call); this submission admitted and charged "
                             f"nothing. Ask its status shortly ({status}); if it is still unknown, submit it "
                             f"again with the same task_id: a reservation no head records is released once it is "
                             f"{_span(grace_s)} old{until}, and the id is admitted afresh then")
    return Decision(task_id=task_id, coop_id=task.coop_id, admitted=False, reasons=(reason,)).model_dump(mode="json")


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _span(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"


def _same_owner(task: TaskSpec, coop_id: str, member: str) -> None:
    """A task id already known answers with its first decision only to the job's own member: another
    member (or coop) reusing it learns nothing of that job, and cannot squat an id its owner will use."""
    if (task.coop_id, task.member) != (coop_id, member):
        raise InvalidRequest("task", [FieldError("task_id", quoted(task.task_id, 40),
                                                 "a task id no other member's job uses (leave it out: the client "
                                                 "makes a fresh one)", "job-7f3a")])


def _recorded_decision(task: TaskSpec, record: dict) -> dict:
    """The answer to a submission of a task id the store has a job record of: its first decision."""
    if is_damaged(record):  # its first decision cannot be read; admitting it again would run it twice
        return _damaged_decision(task, record)
    _same_owner(task, record["coop_id"], record["member"])
    return record["decision"]


def _damaged_decision(task: TaskSpec, record: dict) -> dict:
    """A resubmission of a job whose stored record is damaged: refused (its owner, where the store kept it,
    must be the same, as for any known id), with what to do."""
    if record.get("coop_id") is not None and record.get("member") is not None:
        _same_owner(task, record["coop_id"], record["member"])
    return Decision(task_id=task.task_id, coop_id=task.coop_id, admitted=False, reasons=(error(
        "store", f"the stored record of job {task.task_id!r} is damaged ({record[DAMAGED][:120]}): its first "
        "decision cannot be read, so it is not admitted again (that could run and charge it twice); submit it "
        "under a new task id (leave task_id out: the client makes a fresh one)"),)).model_dump(mode="json")


def _unfinished(record: dict) -> bool:
    """Whether a stored record may be a job still to run (a state unknown, or unreadable, counts as one)."""
    try:
        return not JobState(record.get("state")).finished
    except ValueError:
        return True
