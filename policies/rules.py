"""The built-in rule types and the protocol every rule (built-in or plug-in) follows.

A rule implements only the phases it takes part in (one small protocol per phase, as in
the Kubernetes scheduler framework):

- ``check(task, ctx) -> Reason | None``          admission: may refuse the task
- ``constrain(task, ctx) -> Constraint | None``  filtering: narrows the executors
- ``adjust(task, ctx) -> float``                 priority: a multiplier on the effective priority
- ``hold_until(task, ctx) -> float | None``      deferral: hold a task until a time (epoch s)
- ``closed_until(task, ctx) -> float | None``    start gate: asked before each start, hold until then
- ``reserve(task, ctx) -> None``                 commit side effects once the task is admitted

Rules are configuration (pydantic models); the little state some need (rate-limit
buckets) lives in the context the scheduler passes in.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.priority import Priority
from policies.reasons import Reason, rejected, unavailable
from policies.validation import NOT_BOOL, check_texts, quoted
from policies.versions import is_min_version

if TYPE_CHECKING:  # the task type lives in the scheduler; rules only read its fields
    from scheduler.tasks import TaskSpec

_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


# ----------------------------------------------------------------------------- context
@dataclass
class RateBuckets:
    """Token buckets keyed by (rule, coop, member); time comes from the caller."""

    state: dict[tuple, tuple[float, float]] = field(default_factory=dict)

    def available(self, key: tuple, rate: float, burst: float, now: float) -> float:
        tokens, last = self.state.get(key, (burst, now))
        return min(burst, tokens + max(0.0, now - last) * rate)

    def take(self, key: tuple, rate: float, burst: float, now: float) -> None:
        """One token. A bucket holds 0..burst: one a permissive policy lets pass empty stays at 0 (no debt
        that would outlast the burst), and a clock stepped back refills nothing twice."""
        tokens, last = self.state.get(key, (burst, now))  # available(), inline: once per admission
        self.state[key] = (max(0.0, min(burst, tokens + max(0.0, now - last) * rate) - 1.0), max(last, now))


@dataclass
class RuleContext:
    """What a rule may look at besides the task: the time, and shared rule state."""

    now: float
    runtime_s: float
    buckets: RateBuckets


@dataclass(frozen=True)
class Constraint:
    """What one rule asks of the executors a task may run on; ``None`` fields ask nothing."""

    source: str
    regions: frozenset[str] | None = None
    capabilities: tuple[tuple[str, str | None], ...] = ()
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()


# ----------------------------------------------------------------------------- protocols
@runtime_checkable
class AdmissionCheck(Protocol):
    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None: ...


@runtime_checkable
class ExecutorConstraint(Protocol):
    def constrain(self, task: TaskSpec, ctx: RuleContext) -> Constraint | None: ...


@runtime_checkable
class PriorityAdjustment(Protocol):
    def adjust(self, task: TaskSpec, ctx: RuleContext) -> float: ...


@runtime_checkable
class Deferral(Protocol):
    def hold_until(self, task: TaskSpec, ctx: RuleContext) -> float | None: ...


@runtime_checkable
class StartGate(Protocol):
    def closed_until(self, task: TaskSpec, ctx: RuleContext) -> float | None: ...


@runtime_checkable
class AdmissionReserve(Protocol):
    def reserve(self, task: TaskSpec, ctx: RuleContext) -> None: ...


# ----------------------------------------------------------------------------- rules
class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="shown in messages; defaults to the rule type",
                             examples=["gdpr"])

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        """``type`` has a default in Python but is the discriminator a policy's rules are read by: required."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        if "type" in schema.get("properties", {}) and "type" not in schema.setdefault("required", []):
            schema["required"].insert(0, "type")
        return schema

    @field_validator("tags", check_fields=False)  # the rules that select tasks by tag
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_texts(v, 100, "tags")


def _no_reason(task: TaskSpec, ctx: RuleContext) -> None:
    return None


def _no_time(task: TaskSpec, ctx: RuleContext) -> None:
    return None


def _applies(tags: tuple[str, ...], task: TaskSpec) -> bool:
    return not tags or any(t in task.tags for t in tags)


class DataSovereignty(_Rule):
    """Tasks carrying one of ``tags`` (every task when ``tags`` is empty) run only in ``region``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]}]})

    type: Literal["DataSovereignty"] = "DataSovereignty"
    region: str | tuple[str, ...] = Field(description="a region, or several that are all acceptable",
                                          examples=["eu-central"])
    tags: tuple[str, ...] = Field(default=(), max_length=64, examples=[["patient-data", "clinical-trial"]])

    @field_validator("region")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, tuple) and not v or v == "":
            raise ValueError("a region name such as 'eu-central' (or a non-empty list of them)")
        check_texts((v,) if isinstance(v, str) else v, 100, "region names", count=64)
        return v

    @property
    def regions(self) -> frozenset[str]:
        return frozenset((self.region,) if isinstance(self.region, str) else self.region)

    def constrain(self, task: TaskSpec, ctx: RuleContext) -> Constraint | None:
        if not _applies(self.tags, task):
            return None
        return Constraint(source=self.label, regions=self.regions)


class TimeWindow(_Rule):
    """Tasks of ``priorities`` (all when empty) may start only in the allowed hours and days.

    ``action="reject"`` refuses them outside the window (code ``unavailable``: resubmit
    later); ``action="defer"`` admits them and holds them until the window opens. The
    window governs every start, not only admission: a task admitted while it was open
    but still queued when it closes waits for the next opening (under a strict policy;
    permissive and monitoring policies only hold ``defer`` windows). Hours 0-23 and days
    0=Sunday..6=Saturday are read in ``timezone``, in quarter-hour steps.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "TimeWindow", "allowed_hours": [22, 23, 0, 1, 2, 3, 4, 5],
         "allowed_days": [0, 1, 2, 3, 4, 5, 6], "priorities": ["low"], "action": "defer"}]})

    type: Literal["TimeWindow"] = "TimeWindow"
    allowed_hours: tuple[Annotated[int, NOT_BOOL], ...] = Field(
        default=tuple(range(24)), max_length=168, examples=[[22, 23, 0, 1, 2, 3, 4, 5]],
        json_schema_extra={"minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 23}})
    allowed_days: tuple[Annotated[int, NOT_BOOL], ...] = Field(
        default=tuple(range(7)), max_length=49, examples=[[1, 2, 3, 4, 5]],
        json_schema_extra={"minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 6}})
    priorities: tuple[Priority, ...] = Field(default=(), max_length=16, examples=[["low", "normal"]])
    timezone: str = Field(default="UTC", max_length=100, examples=["Europe/Berlin"])
    action: Literal["reject", "defer"] = "reject"

    @field_validator("allowed_hours")
    @classmethod
    def _hours(cls, v):
        bad = [h for h in v if not 0 <= h <= 23]
        if bad or not v:
            raise ValueError(f"hours 0-23, at least one (got {quoted(bad[0]) if bad else 'none'})")
        return tuple(sorted(set(v)))

    @field_validator("allowed_days")
    @classmethod
    def _days(cls, v):
        bad = [d for d in v if not 0 <= d <= 6]
        if bad or not v:
            raise ValueError(f"days 0 (Sunday) to 6 (Saturday), at least one (got {quoted(bad[0]) if bad else 'none'})")
        return tuple(sorted(set(v)))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v):
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ('America'), a name too long
            raise ValueError(f"an IANA time zone name such as 'UTC' or 'Europe/Berlin' (got {quoted(v)})") from None
        return v

    def _open_at(self, t: float) -> bool:
        return _open(self.timezone, self.allowed_hours, self.allowed_days, int(t // 60))

    def next_opening(self, now: float) -> float | None:
        """The first moment at or after ``now`` when the window is open.

        Steps in quarter hours, so zones offset by :30 or :45 (India, Nepal) open on time.
        """
        if self._open_at(now):
            return now
        start = (int(now) // 900 + 1) * 900
        for step in range(4 * 24 * 8):  # a week and a day covers every pattern, DST included
            t = start + step * 900
            if self._open_at(t):
                return float(t)
        return None  # pragma: no cover - validators guarantee a non-empty window

    def _governs(self, task: TaskSpec) -> bool:
        return not self.priorities or task.priority in self.priorities

    def _describe(self, now: float) -> str:
        local = dt.datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        hours = ",".join(f"{h:02d}" for h in self.allowed_hours)
        days = ",".join(_DAYS[d] for d in self.allowed_days)
        return (f"hours {hours} on {days} ({self.timezone}); "
                f"it is {local:%H:%M} {_DAYS[(local.weekday() + 1) % 7]} there now")

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        return self.bound_check()(task, ctx)

    def bound_check(self):
        """``check`` with the window's fields read once (the admission hot path calls this)."""
        if self.action != "reject":
            return _no_reason
        priorities, timezone, hours, days = self.priorities, self.timezone, self.allowed_hours, self.allowed_days
        last = [(None, False)]  # (minute, open then): one slot, replaced whole, so a reader never sees half

        def check(task: TaskSpec, ctx: RuleContext) -> Reason | None:
            if priorities and task.priority not in priorities:
                return None
            minute = int(ctx.now // 60)
            asked, is_open = last[0]
            if asked != minute:
                is_open = _open(timezone, hours, days, minute)
                last[0] = (minute, is_open)
            return None if is_open else self._closed_reason(task, ctx)
        return check

    def _closed_reason(self, task: TaskSpec, ctx: RuleContext) -> Reason:
        opening = self.next_opening(ctx.now)
        when = dt.datetime.fromtimestamp(opening, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if opening else "?"
        return unavailable(self.label, f"{task.priority.value}-priority tasks may start only in "
                           f"{self._describe(ctx.now)}; resubmit at {when} or raise the priority")

    def hold_until(self, task: TaskSpec, ctx: RuleContext) -> float | None:
        return self.closed_until(task, ctx) if self.action == "defer" else None

    def bound_hold_until(self):
        return self.closed_until if self.action == "defer" else _no_time

    def closed_until(self, task: TaskSpec, ctx: RuleContext) -> float | None:
        """Windows govern starts: a task admitted while open but still queued at the close waits again."""
        if not self._governs(task) or self._open_at(ctx.now):
            return None
        return self.next_opening(ctx.now)


@functools.lru_cache(maxsize=4096)
def _open(timezone: str, hours: tuple[int, ...], days: tuple[int, ...], minute: int) -> bool:
    """Whether a window is open during ``minute`` (epoch minutes): one zone conversion per minute."""
    local = dt.datetime.fromtimestamp(minute * 60, ZoneInfo(timezone))
    day = (local.weekday() + 1) % 7  # Python: Monday=0; here Sunday=0
    return local.hour in hours and day in days


class MemberPriority(_Rule):
    """Scales a member's effective priority (applied after the ``max_priority`` check)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "MemberPriority", "member": "did:icn:building-automation", "multiplier": 3.0}]})

    type: Literal["MemberPriority"] = "MemberPriority"
    member: str = Field(min_length=1, max_length=200, examples=["did:icn:building-automation"])
    multiplier: Annotated[float, NOT_BOOL] = Field(gt=0, le=100, allow_inf_nan=False, examples=[2.0])

    def adjust(self, task: TaskSpec, ctx: RuleContext) -> float:
        return self.bound_adjust()(task, ctx)

    def bound_adjust(self):
        member, multiplier = self.member, self.multiplier

        def adjust(task: TaskSpec, ctx: RuleContext) -> float:
            return multiplier if task.member == member else 1.0
        return adjust


class RequireCapability(_Rule):
    """Tasks (those carrying one of ``tags``, or all) need executors with this capability."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "RequireCapability", "capability": "hipaa-compliant", "min_version": "1.0"}]})

    type: Literal["RequireCapability"] = "RequireCapability"
    capability: str = Field(min_length=1, max_length=100, examples=["hipaa-compliant"])
    min_version: str | None = Field(default=None, max_length=50, examples=["1.0"], description=(
        "compared part by part (1.10 > 1.2, 2022.1 > 2021.10); a pre-release (2.0-rc1) is below its release"))
    tags: tuple[str, ...] = Field(default=(), max_length=64, examples=[["patient-data"]])

    @field_validator("min_version")
    @classmethod
    def _version(cls, v):
        if v is not None and not is_min_version(v):
            raise ValueError(f"a version such as '1.0' or '2.1.3': up to three numeric parts of at most 99999 "
                             f"(got {quoted(v)})")
        return v

    def constrain(self, task: TaskSpec, ctx: RuleContext) -> Constraint | None:
        if not _applies(self.tags, task):
            return None
        return Constraint(source=self.label, capabilities=((self.capability, self.min_version),))


class ExecutorFilter(_Rule):
    """Only ``whitelist`` executors (when non-empty), never ``blacklist`` ones."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "ExecutorFilter", "whitelist": ["exec-berlin-1", "exec-berlin-2"], "blacklist": ["exec-old"]}]})

    type: Literal["ExecutorFilter"] = "ExecutorFilter"
    whitelist: tuple[str, ...] = Field(default=(), max_length=10_000, examples=[["exec-berlin-1"]])
    blacklist: tuple[str, ...] = Field(default=(), max_length=10_000, examples=[["exec-compromised"]])

    @field_validator("whitelist", "blacklist")
    @classmethod
    def _ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_texts(v, 200, "executor ids")

    def constrain(self, task: TaskSpec, ctx: RuleContext) -> Constraint | None:
        if not self.whitelist and not self.blacklist:
            return None
        return Constraint(source=self.label, allow=frozenset(self.whitelist) or None,
                          deny=frozenset(self.blacklist))


class RateLimit(_Rule):
    """A token bucket per member (or per coop): ``rate`` submissions per second, ``burst`` at once. Head
    replicas on one Redis store share the buckets: what one admits counts on the others."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "RateLimit", "rate": 2.0, "burst": 10}]})

    type: Literal["RateLimit"] = "RateLimit"
    rate: Annotated[float, NOT_BOOL] = Field(gt=0, le=1e6, allow_inf_nan=False, examples=[2.0])
    burst: Annotated[int, NOT_BOOL] = Field(default=10, ge=1, le=1_000_000, examples=[10])
    per: Literal["member", "coop"] = "member"

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        return self.bound_check()(task, ctx)

    def reserve(self, task: TaskSpec, ctx: RuleContext) -> None:
        self.bound_reserve()(task, ctx)

    def _bucket(self) -> tuple:
        """What tells this rule's buckets apart from another RateLimit's: its name, and its parameters
        (unnamed rules all bear the type's name; two limits on one member must not share tokens)."""
        return (self.label, self.rate, self.burst, self.per)

    def bound_check(self):
        """``check`` with the rule's fields read once (the admission hot path calls this)."""
        label, rate, burst, per_member = self.label, self.rate, self.burst, self.per == "member"
        bucket = self._bucket()

        def check(task: TaskSpec, ctx: RuleContext) -> Reason | None:
            member = task.member
            tokens = ctx.buckets.available((bucket, task.coop_id, member if per_member else "*"), rate, burst,
                                           ctx.now)
            if tokens >= 1.0 - 1e-9:  # (a retry exactly when told must not miss by a rounding error)
                return None
            wait = math.ceil((1.0 - tokens) / rate * 100) / 100  # rounded up: retrying then succeeds
            who = f"member {member}" if per_member else f"coop {task.coop_id}"
            return unavailable(label, f"rate limit {rate:g}/s (burst {burst}) reached for {who}; "
                               f"retry in {wait:.2f} s")
        return check

    def bound_reserve(self):
        rate, burst, per_member = self.rate, self.burst, self.per == "member"
        bucket = self._bucket()

        def reserve(task: TaskSpec, ctx: RuleContext) -> None:
            ctx.buckets.take((bucket, task.coop_id, task.member if per_member else "*"), rate, burst, ctx.now)
        return reserve


class TaskLimits(_Rule):
    """Upper bounds for a single task; ``None`` means no bound."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "TaskLimits", "max_cpus": 16, "max_gpus": 2, "max_memory_mb": 65536, "max_runtime_s": 86400}]})

    type: Literal["TaskLimits"] = "TaskLimits"
    max_cpus: Annotated[float | None, NOT_BOOL] = Field(default=None, gt=0, allow_inf_nan=False, examples=[16])
    max_gpus: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, allow_inf_nan=False, examples=[2])
    max_memory_mb: Annotated[int | None, NOT_BOOL] = Field(default=None, ge=0, examples=[65536])
    max_runtime_s: Annotated[float | None, NOT_BOOL] = Field(default=None, gt=0, allow_inf_nan=False, examples=[86400])

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        return self.bound_check()(task, ctx)

    def bound_check(self):
        """``check`` with the limits read once (the admission hot path calls this)."""
        label, max_cpus, max_gpus, max_memory_mb, max_runtime_s = (
            self.label, self.max_cpus, self.max_gpus, self.max_memory_mb, self.max_runtime_s)

        def check(task: TaskSpec, ctx: RuleContext) -> Reason | None:
            r = task.resources
            cpus, gpus, memory_mb = r.cpus, r.gpus, r.memory_mb
            if ((max_cpus is None or cpus <= max_cpus) and (max_gpus is None or gpus <= max_gpus)
                    and (max_memory_mb is None or memory_mb <= max_memory_mb)
                    and (max_runtime_s is None or ctx.runtime_s <= max_runtime_s)):
                return None  # the usual case, without building the list of what is over
            over = []
            if max_cpus is not None and cpus > max_cpus:
                over.append(f"{cpus:g} CPUs (max {max_cpus:g})")
            if max_gpus is not None and gpus > max_gpus:
                over.append(f"{gpus:g} GPUs (max {max_gpus:g})")
            if max_memory_mb is not None and memory_mb > max_memory_mb:
                over.append(f"{memory_mb} MB memory (max {max_memory_mb})")
            if max_runtime_s is not None and ctx.runtime_s > max_runtime_s:
                over.append(f"max_runtime_s {ctx.runtime_s:g} (max {max_runtime_s:g})")
            if not over:
                return None
            return rejected(label, "task exceeds this coop's per-task limits: " + ", ".join(over)
                            + "; ask for less or split the work")
        return check


BUILTIN_RULES = (DataSovereignty, TimeWindow, MemberPriority, RequireCapability,
                 ExecutorFilter, RateLimit, TaskLimits)
