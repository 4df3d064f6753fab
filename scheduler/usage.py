"""Measured usage: ``UsageReport`` from a worker, ``UsageRecord`` per member and month."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.model import CoopQuota, MemberQuota
from policies.validation import NOT_BOOL


MAX_EPOCH_S = 32_503_680_000.0
"""3000-01-01 UTC: no measurement is later (and the ledger's calendar months end at 9999)."""


class Outcome(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class UsageReport(BaseModel):
    """What a worker measured for one finished attempt of a task.

    ``cpu_seconds`` is allocated cores x wall seconds (what the member is charged for:
    the cores were theirs for that long); ``cpu_time_s`` is the CPU time the process
    really used, kept for information. ``credits`` may be left out: the scheduler then
    prices the usage at the executor's rates.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"task_id": "job-7f3a", "executor_id": "exec-berlin-1", "coop_id": "research:biolab",
         "member": "did:icn:alice", "started_at": 1795000000.0, "ended_at": 1795000060.0,
         "cpu_seconds": 120.0, "gpu_seconds": 0.0, "outcome": "succeeded"}]})

    task_id: str = Field(min_length=1, max_length=200, examples=["job-7f3a"])
    executor_id: str = Field(min_length=1, max_length=200, examples=["exec-berlin-1"])
    coop_id: str = Field(min_length=1, max_length=200, examples=["research:biolab"])
    member: str = Field(min_length=1, max_length=200, examples=["did:icn:alice"])
    started_at: Annotated[float, NOT_BOOL] = Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False, examples=[1795000000.0])
    ended_at: Annotated[float, NOT_BOOL] = Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False, examples=[1795000060.0])
    cpu_seconds: Annotated[float, NOT_BOOL] = Field(ge=0, le=1e12, allow_inf_nan=False, examples=[120.0])
    gpu_seconds: Annotated[float, NOT_BOOL] = Field(default=0.0, ge=0, le=1e12, allow_inf_nan=False, examples=[0.0])
    cpu_time_s: Annotated[float, NOT_BOOL] = Field(default=0.0, ge=0, le=1e12, allow_inf_nan=False, examples=[57.3])
    peak_memory_mb: Annotated[float, NOT_BOOL] = Field(default=0.0, ge=0, le=1e9, allow_inf_nan=False, examples=[512.0])
    credits: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=1e12, allow_inf_nan=False, examples=[2.0])
    outcome: Outcome = Field(default=Outcome.SUCCEEDED, examples=["succeeded"])
    attempt: Annotated[int, NOT_BOOL] = Field(default=1, ge=1, le=100, description="which attempt of the task this measured",
                         examples=[1])
    error: str | None = Field(default=None, max_length=20_000)

    @model_validator(mode="after")
    def _ordered(self) -> UsageReport:
        if self.ended_at < self.started_at:
            raise ValueError(f"ended_at ({self.ended_at}) must not be before started_at ({self.started_at})")
        return self

    @property
    def wall_seconds(self) -> float:
        return self.ended_at - self.started_at


class MonthUsage(BaseModel):
    """Settled usage and open reservations in one calendar month (UTC): a member's (``UsageRecord``) or a whole
    coop's (``CoopUsageRecord``)."""

    model_config = ConfigDict(frozen=True)

    coop_id: str
    period: str = Field(description="calendar month, UTC, e.g. '2026-11'")
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    credits: float = 0.0
    tasks_completed: int = 0
    reserved_cpu_hours: float = 0.0
    reserved_gpu_hours: float = 0.0
    reserved_credits: float = 0.0


class UsageRecord(MonthUsage):
    """A member's standing in one coop for one calendar month (UTC)."""

    member: str
    running: int = Field(default=0, description="tasks running now (on a shared store: through every head replica)")
    quota: MemberQuota | None = None


class CoopUsageRecord(MonthUsage):
    """All of a coop's members together in one calendar month (UTC), against its ``coop_quota`` (None: it has
    none): what ``Client.coop_usage`` and ``coopsched quota coop`` show."""

    quota: CoopQuota | None = None
