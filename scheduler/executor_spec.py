"""What an executor offers: ``ExecutorSpec`` at registration, ``ExecutorOffer`` on every heartbeat."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.validation import NOT_BOOL, check_texts, quoted
from policies.versions import is_version
from scheduler.tasks import ID_PATTERN, Resources


MAX_DISPATCH_AHEAD = 16
"""At most this many rounds of an executor's capacity wait in its worker's queue."""


class ExecutorStatus(str, Enum):
    ACTIVE = "active"        # takes new work
    DRAINING = "draining"    # finishes what it runs, takes nothing new
    OFFLINE = "offline"      # heartbeats stopped; takes nothing new until it returns


class ExecutorSpec(BaseModel):
    """A machine a cooperative lends to the pool."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"executor_id": "exec-berlin-1", "coop_id": "research:biolab", "region": "eu-central",
         "capabilities": {"hipaa-compliant": "1.2"}, "trust": 0.9,
         "resources": {"cpus": 16, "gpus": 1, "memory_mb": 65536, "gpu_memory_mb": 40960},
         "price_cpu_hour": 1.0, "price_gpu_hour": 10.0}]})

    executor_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN, examples=["exec-berlin-1"])
    coop_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN, examples=["research:biolab"])
    node_id: str | None = Field(default=None, max_length=200, description="the Ray node; defaults to executor_id",
                                examples=["a3f1c9..."])
    region: str = Field(min_length=1, max_length=100, pattern=ID_PATTERN, examples=["eu-central"])
    capabilities: dict[str, str] = Field(default_factory=dict, max_length=256, examples=[{"hipaa-compliant": "1.2"}])
    trust: Annotated[float, NOT_BOOL] = Field(default=0.5, ge=0, le=1, allow_inf_nan=False, examples=[0.9])
    resources: Resources = Field(examples=[{"cpus": 16, "gpus": 1, "memory_mb": 65536}])
    price_cpu_hour: Annotated[float, NOT_BOOL] = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False, examples=[1.0])
    price_gpu_hour: Annotated[float, NOT_BOOL] = Field(default=10.0, ge=0, le=1e6, allow_inf_nan=False, examples=[10.0])
    rtt_ms: Annotated[float, NOT_BOOL] = Field(default=10.0, ge=0, le=60_000, allow_inf_nan=False, examples=[12.5])
    labels: dict[str, str] = Field(default_factory=dict, max_length=64, examples=[{"rack": "b2"}])
    open_to: tuple[str, ...] = Field(default=(), max_length=1000, description=(
        "other coops whose members may use this executor ('*': every coop)"), examples=[["*"]])
    dispatch_ahead: Annotated[int, NOT_BOOL] = Field(default=0, ge=0, le=MAX_DISPATCH_AHEAD, description=(
        "rounds of this executor's resources the head may hand over beyond what is free now: the worker "
        "keeps them in its own queue and starts each the moment a running task ends (0: only what fits now)"),
        examples=[2])
    dispatch_ahead_auto: bool = Field(default=False, description=(
        "let the head set dispatch_ahead from what it measures: the rounds that cover the gap between a task "
        "ending and the next arriving, against the executor's run times (0 for long jobs; see "
        "scheduler.ahead_tuning)"), examples=[True])

    @field_validator("capabilities")
    @classmethod
    def _versions(cls, v: dict[str, str]) -> dict[str, str]:
        check_texts(v, 100, "capability names")
        for name, version in v.items():
            if len(version) > 50 or not is_version(version):
                raise ValueError(f"capability {quoted(name)}: a version such as '1.0' (got {quoted(version)})")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_texts(v, 100, "label names")
        check_texts(v.values(), 200, "label values")
        return v

    @field_validator("open_to")
    @classmethod
    def _coops(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_texts(v, 200, "coop ids")

    @model_validator(mode="after")
    def _default_node(self) -> ExecutorSpec:
        if self.node_id is None:
            object.__setattr__(self, "node_id", self.executor_id)
        return self


class ExecutorOffer(BaseModel):
    """A heartbeat: what the executor reports about itself right now. ``None`` fields are unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"executor_id": "exec-berlin-1", "queue_depth": 2, "rtt_ms": 14.0}]})

    executor_id: str = Field(min_length=1, max_length=200, examples=["exec-berlin-1"])
    queue_depth: Annotated[int | None, NOT_BOOL] = Field(default=None, ge=0, le=1_000_000, examples=[2])
    rtt_ms: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=60_000, allow_inf_nan=False, examples=[14.0])
    # (no trust here: trust is what the coop's admin grants, `set_trust`, never what an executor says)
    gpu_utilisation_pct: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=100, allow_inf_nan=False, examples=[35.0])
    gpu_memory_used_mb: Annotated[int | None, NOT_BOOL] = Field(default=None, ge=0, le=64 * 1024 * 1024, examples=[1024])
    sent_at: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, allow_inf_nan=False, examples=[1_795_000_000.0], description=(
        "when the executor made this offer (epoch seconds): one made before the head declared it offline "
        "or lost, and delivered late, does not bring it back"))
