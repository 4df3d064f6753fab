"""What the worker needs to run one attempt of a task: ``LaunchSpec``, validated at ``start``."""

from __future__ import annotations

from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["LaunchSpec"]


class LaunchSpec(BaseModel):
    """What ``ExecutorWorker.start`` needs to run one attempt of a task.

    ``payload`` is a one-element list holding ``(fn, args, kwargs)``, its cloudpickled bytes, or the
    ObjectRef of either
    (a list, so Ray passes the reference through the actor call instead of resolving it).
    ``max_runtime_s=None`` means no limit. Keys the worker does not use are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True,
                              json_schema_extra={"examples": [
                                  {"task_id": "job-7f3a", "coop_id": "research:biolab", "member": "did:icn:alice",
                                   "attempt": 1, "cpus": 1.0, "gpus": 0.0, "memory_mb": 512,
                                   "max_runtime_s": 600.0, "payload": ["<ObjectRef of (fn, args, kwargs)>"]}]})

    task_id: str = Field(min_length=1, max_length=200, examples=["job-7f3a"])
    coop_id: str = Field(min_length=1, max_length=200, examples=["research:biolab"])
    member: str = Field(min_length=1, max_length=200, examples=["did:icn:alice"])
    attempt: int = Field(default=1, ge=0, examples=[1])
    cpus: float = Field(default=1.0, ge=0, le=4096, allow_inf_nan=False, examples=[1.0])
    gpus: float = Field(default=0.0, ge=0, le=512, allow_inf_nan=False, examples=[0.0])
    memory_mb: int = Field(default=0, ge=0, examples=[512])
    max_runtime_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, examples=[600.0])
    payload: list[Any]
    stop_grace_s: float = Field(default=0.0, ge=0, le=3600, allow_inf_nan=False, examples=[30.0], description=(
        "stopped to make room (cancel with a grace_s), the task is asked to end and killed after this at most"))
    checkpoint_token: str | None = Field(default=None, max_length=200, description=(
        "the attempt's capability to save and load its task's checkpoint (scheduler.head_checkpoints); "
        "None: the task runs without one (checkpoint calls in it do nothing)"))

    @field_validator("payload")
    @classmethod
    def _one_object_ref(cls, value: list[Any]) -> list[Any]:
        if len(value) != 1 or not (isinstance(value[0], ray.ObjectRef) or _is_payload(value[0])):
            raise ValueError(
                f"payload must be a one-element list holding (fn, args, kwargs), its cloudpickled bytes, "
                f"or the ObjectRef of either; "
                f"received {_describe(value)}; e.g. payload=[ray.put((fn, (1, 2), {{}}))]"
            )
        return value


def _is_payload(value: Any) -> bool:
    """``(fn, args, kwargs)``, or its cloudpickled bytes (as the member signed them; the task unpickles)."""
    return isinstance(value, (bytes, bytearray)) or (isinstance(value, tuple) and len(value) == 3
                                                      and callable(value[0]))


def _describe(value: list[Any]) -> str:
    return f"a list of {len(value)}: " + ", ".join(type(v).__name__ for v in value[:3])
