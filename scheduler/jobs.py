"""A job's life as the core records it: state, reason history, placement, charge."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from policies.reasons import Decision, Reason
from policies.validation import trusted_maker
from scheduler.damaged_records import damaged_explain, is_damaged
from scheduler.ledger import Cost
from scheduler.placement import Placement, Requirements
from scheduler.tasks import JobState, TaskSpec


class StatusEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float
    state: JobState
    message: str = ""


_event = trusted_maker(StatusEvent, "at", "state", "message")  # two per decision


class CheckpointInfo(BaseModel):
    """The last checkpoint a job's attempts saved (``scheduler.checkpoint``): by which attempt, when, its size."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    saved_at: float
    bytes: int


class JobStatus(BaseModel):
    """What a member sees about one of their jobs."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    coop_id: str
    member: str
    name: str | None
    state: JobState
    reason: str
    effective_priority: float
    attempts: int
    executor_id: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    warnings: tuple[Reason, ...]
    charged_cpu_hours: float
    charged_gpu_hours: float
    charged_credits: float
    wall_seconds: float | None
    error: str | None
    history: tuple[StatusEvent, ...]
    preemptions: int = 0  # of its attempts, those stopped to make room: a reclaim, or its coop's higher priority
    checkpoint: CheckpointInfo | None = None  # what its attempts saved of their progress, while it is unfinished
    # (the head fills it in from its store: the core knows nothing of checkpoints)


class QueuePosition(BaseModel):
    """A waiting job's place in the order a scheduling round tries the queue (``coopsched job queue``)."""

    model_config = ConfigDict(frozen=True)

    position: int  # 1 is tried first; counted over every coop's waiting jobs, whichever are shown
    task_id: str
    coop_id: str
    member: str
    name: str | None
    state: JobState  # queued, or deferred (held by a time window)
    priority: str
    effective_priority: float  # priority x the member's multiplier: the queue's first key
    fair_share: float  # the member's use of its monthly quota (the larger of CPU, GPU, credits): the second key
    submitted_at: float  # the third
    attempt: int
    reason: str


@dataclass(slots=True)  # one per task, kept for the task's life: no per-instance __dict__
class Job:
    task: TaskSpec
    decision: Decision
    submitted_at: float
    state: JobState
    reason: str = ""
    history: list[StatusEvent] = field(default_factory=list)
    placement: Placement | None = None
    requirements: Requirements | None = None
    cost: Cost = field(default_factory=Cost)
    runtime_s: float | None = None  # the policy default it was admitted with, when the task gave no max_runtime_s
    avoid: frozenset[str] = frozenset()
    attempts: int = 0
    started_at: float | None = None
    placed_seq: int = 0  # the core's count of placements when this attempt was placed (kept in its record)
    finished_at: float | None = None
    cancel_requested: bool = False
    charged: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str | None = None
    wall_seconds: float | None = None
    preemptions: int = 0  # attempts stopped to make room (reclaim, preempt_within_coop); not against max_retries
    # a stopped attempt that may still be ending on this executor: the job is not placed back there until its
    # report comes (or ENDING_GRACE_S passes), as a worker runs one attempt of a task id at a time
    ending_on: str | None = None
    ending_since: float = 0.0

    def move(self, at: float, state: JobState, message: str = "") -> None:
        self.state = state
        self.reason = message
        self.history.append(_event(at, state, message))

    def note(self, message: str, at: float | None = None) -> None:
        """Change the visible reason without a state change; a new reason enters the history once."""
        if message != self.reason and at is not None:
            self.history.append(_event(at, self.state, message))
        self.reason = message

    def status(self) -> JobStatus:
        return JobStatus(
            task_id=self.task.task_id, coop_id=self.task.coop_id, member=self.task.member, name=self.task.name,
            state=self.state, reason=self.reason, effective_priority=self.decision.effective_priority,
            attempts=self.attempts, executor_id=self.placement.executor_id if self.placement else None,
            submitted_at=self.submitted_at, started_at=self.started_at, finished_at=self.finished_at,
            warnings=self.decision.warnings, charged_cpu_hours=self.charged[0], charged_gpu_hours=self.charged[1],
            charged_credits=self.charged[2], wall_seconds=self.wall_seconds, error=self.error, history=tuple(self.history),
            preemptions=self.preemptions)


def explain_record(record: dict) -> dict:
    """``SchedulerCore.explain``'s answer rebuilt from a stored job record (``job_record``): for a job
    the core no longer holds (finished long ago, or before the head restarted); for a damaged record, what
    can be said of it."""
    if is_damaged(record):
        return damaged_explain(record)
    status = record["status"]
    placement = record.get("placement")
    summary = Placement(task=TaskSpec(**record["task"]), **placement).explain() if placement else status["reason"]
    return {"task_id": record["task_id"], "state": status["state"], "reason": status["reason"],
            "decision": record["decision"], "placement": placement, "summary": summary}
