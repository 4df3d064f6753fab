"""Coopsched's scheduler: the pure decision core and (with Ray) the head, client and CLI."""

from policies.priority import Priority
from policies.reasons import Decision, Reason, ReasonCode
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec, ExecutorStatus
from scheduler.jobs import JobStatus, QueuePosition
from scheduler.placement import Placement
from scheduler.tasks import Hints, JobState, Resources, TaskSpec
from scheduler.usage import Outcome, UsageRecord, UsageReport

__all__ = [
    "Decision",
    "ExecutorOffer",
    "ExecutorSpec",
    "ExecutorStatus",
    "Hints",
    "JobState",
    "JobStatus",
    "Outcome",
    "Placement",
    "Priority",
    "QueuePosition",
    "Reason",
    "ReasonCode",
    "Resources",
    "SchedulerCore",
    "TaskSpec",
    "UsageRecord",
    "UsageReport",
]
