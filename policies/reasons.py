"""Outcomes of admission and placement as values: ``Reason`` and ``Decision``.

A ``Reason`` says whether retrying can help (its code), which rule produced it (its
source) and what a member can do about it (its message). Rejections are values inside
the core; only the client turns a strict rejection into an exception.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class ReasonCode(str, Enum):
    """Whether retrying can help."""

    REJECTED = "rejected"
    """Will never fit as submitted: change the task or the policy."""
    UNAVAILABLE = "unavailable"
    """May fit later: quota resets, capacity frees up, a window opens, an executor joins."""
    ERROR = "error"
    """A bug or an infrastructure fault, not the member's doing."""


class Reason(BaseModel):
    """One finding about a task, from one rule (or the scheduler itself)."""

    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    source: str = Field(description="the rule or component that produced it, e.g. 'quota:cpu' or 'gdpr'")
    message: str = Field(description="a sentence a member can act on")

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.source}: {self.message}"


def rejected(source: str, message: str) -> Reason:
    return Reason(code=ReasonCode.REJECTED, source=source, message=message)


def unavailable(source: str, message: str) -> Reason:
    return Reason(code=ReasonCode.UNAVAILABLE, source=source, message=message)


def error(source: str, message: str) -> Reason:
    return Reason(code=ReasonCode.ERROR, source=source, message=message)


class Decision(BaseModel):
    """The answer to one submission.

    ``admitted`` tasks are queued (possibly deferred until ``not_before``); ``reasons``
    explain a refusal; ``warnings`` carry violations that a permissive policy let through.
    """

    model_config = ConfigDict(frozen=True)

    task_id: str
    coop_id: str
    admitted: bool
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[Reason, ...] = ()
    effective_priority: float = 0.0
    not_before: float | None = Field(default=None, description="epoch seconds: deferred until then")
    enforcement_mode: str = "strict"

    @property
    def code(self) -> ReasonCode | None:
        """The gravest code among the reasons: ``error``, then ``rejected`` (will never run as asked), then
        ``unavailable`` (may run later); ``None`` when admitted."""
        if self.admitted or not self.reasons:
            return None
        codes = {r.code for r in self.reasons}
        for code in (ReasonCode.ERROR, ReasonCode.REJECTED, ReasonCode.UNAVAILABLE):
            if code in codes:
                return code
        return None  # pragma: no cover - every code is listed above

    def summary(self) -> str:
        if self.admitted:
            tail = f" (warnings: {'; '.join(w.message for w in self.warnings)})" if self.warnings else ""
            return f"task {self.task_id} admitted{tail}"
        return f"task {self.task_id} not admitted: " + "; ".join(str(r) for r in self.reasons)
