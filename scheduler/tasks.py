"""What a member asks to run: ``TaskSpec`` with its ``Resources`` and placement ``Hints``."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.priority import Priority
from policies.validation import NOT_BOOL, check_texts, quoted
from policies.versions import is_min_version

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]*$"
_NAME_RULES = "1-200 characters: letters, digits and _.:@/+- (not starting with a symbol)"


RESOURCE_UNIT = 0.0001
"""The smallest fraction of a CPU or GPU a task may ask for: Ray's resource unit."""


class Resources(BaseModel):
    """Resources one task asks for (or one executor has)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"cpus": 2, "gpus": 0, "memory_mb": 4096, "gpu_memory_mb": 0}]})

    cpus: Annotated[float, NOT_BOOL] = Field(default=1.0, gt=0, le=4096, allow_inf_nan=False, examples=[2])
    gpus: Annotated[float, NOT_BOOL] = Field(default=0.0, ge=0, le=512, allow_inf_nan=False, examples=[1])
    memory_mb: Annotated[int, NOT_BOOL] = Field(default=0, ge=0, le=64 * 1024 * 1024, examples=[4096])
    gpu_memory_mb: Annotated[int, NOT_BOOL] = Field(default=0, ge=0, le=64 * 1024 * 1024, examples=[16384])

    @field_validator("cpus", "gpus")
    @classmethod
    def _ray_precision(cls, v: float, info) -> float:
        if 0 < v < RESOURCE_UNIT:  # Ray refuses what rounds to nothing in its units
            raise ValueError(f"at least {RESOURCE_UNIT} (Ray counts CPUs and GPUs in units of {RESOURCE_UNIT})"
                             + (", or 0" if info.field_name == "gpus" else ""))
        return v


class Hints(BaseModel):
    """Soft preferences for placement (they add to the score, they never exclude)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"regions": ["eu-central"], "executors": ["exec-berlin-1"], "data": ["dataset:genomes-2026"]}]})

    regions: tuple[str, ...] = Field(default=(), max_length=64, examples=[["eu-central"]])
    executors: tuple[str, ...] = Field(default=(), max_length=1024, examples=[["exec-berlin-1"]])
    data: tuple[str, ...] = Field(default=(), max_length=1024, description=(
        "keys of data the task reads; executors whose node already holds their bytes score higher"),
        examples=[["dataset:genomes-2026"]])

    @field_validator("regions", "executors")
    @classmethod
    def _names(cls, v: tuple[str, ...], info) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_texts(v, 200, f"{info.field_name[:-1]} names")))  # named twice: once
        # (a hint is worth its weight once, however often it is repeated)

    @field_validator("data")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_texts(v, 1000, "data keys")))


MAX_STOP_GRACE_S = 300.0
"""The longest ``stop_grace_s`` a task may ask for (an owner taking its machine back waits that long at most)."""


class TaskSpec(BaseModel):
    """One unit of work, as submitted. Validated at the edge; immutable afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"coop_id": "timebank:seattle", "member": "did:icn:alice", "resources": {"cpus": 1},
         "priority": "normal", "tags": ["batch"], "max_runtime_s": 600}]})

    task_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=200,
                         pattern=ID_PATTERN, examples=["job-7f3a"])
    coop_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN, examples=["timebank:seattle"])
    member: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN, examples=["did:icn:alice"])
    resources: Resources = Field(default_factory=Resources)
    priority: Priority = Field(default=Priority.NORMAL, examples=["normal"])
    tags: tuple[str, ...] = Field(default=(), max_length=64, examples=[["patient-data"]])
    max_runtime_s: Annotated[float | None, NOT_BOOL] = Field(default=None, gt=0, le=30 * 86400, allow_inf_nan=False,
                                        examples=[600])
    hints: Hints = Field(default_factory=Hints)
    capabilities: dict[str, str | None] = Field(default_factory=dict, max_length=64, description=(
        "capabilities the task itself needs, name -> minimum version (null: any)"),
        examples=[{"cuda": "12.0"}])
    max_retries: Annotated[int, NOT_BOOL] = Field(default=2, ge=0, le=20, examples=[2])
    stop_grace_s: Annotated[float, NOT_BOOL] = Field(default=0.0, ge=0, le=MAX_STOP_GRACE_S, allow_inf_nan=False,
                                                     examples=[30], description=(
        "when it is stopped to make room (a reclaim, a preemption), how long it has to save a checkpoint and end "
        "before it is killed (scheduler.checkpoint.stop_requested); the task it makes room for waits that long "
        "at most. 0: killed at once"))
    name: str | None = Field(default=None, max_length=200, examples=["train_model"])

    @field_validator("tags", "hints", mode="before")
    @classmethod
    def _no_bare_string(cls, v, info):
        if isinstance(v, str):
            raise ValueError(f"a list of strings, e.g. [{quoted(v)}], not a single string")
        return v

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        check_texts(v, 100, "capability names")
        check_texts([version for version in v.values() if version is not None], 50, "minimum versions")
        for name, version in v.items():
            if version is not None and not is_min_version(version):
                raise ValueError(f"a minimum version such as '1.0' or '2.1.3' (up to three numeric parts of at "
                                 f"most 99999) for capability {quoted(name)} (got {quoted(version)})")
        return v

    @field_validator("tags")
    @classmethod
    def _tag_length(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tag in v:
            if not tag or len(tag) > 100:
                raise ValueError(f"tags of 1-100 characters (got {quoted(tag)})")
        return v


class JobState(str, Enum):
    """Where a task is in its life."""

    QUEUED = "queued"          # admitted, waiting for a slot (the status says why)
    DEFERRED = "deferred"      # admitted, held until a time window opens
    RUNNING = "running"        # placed on an executor
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REJECTED = "rejected"      # not admitted

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.REJECTED}
