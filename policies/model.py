"""A cooperative's scheduling policy: quotas, rules, enforcement mode, scoring weights."""

from __future__ import annotations

from enum import Enum
from math import inf as INF
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from policies.expression import ExpressionRule
from policies.plugins import PluginRule
from policies.priority import Priority
from policies.rules import (DataSovereignty, ExecutorFilter, MemberPriority, RateLimit,
                            RequireCapability, TaskLimits, TimeWindow)
from policies.validation import NOT_BOOL, check_texts

Rule = Annotated[
    Union[DataSovereignty, TimeWindow, MemberPriority, RequireCapability, ExecutorFilter,
          RateLimit, TaskLimits, PluginRule, ExpressionRule],
    Field(discriminator="type"),
]


class Reclaim(str, Enum):
    """Whether a coop's waiting tasks may stop other coops' tasks running on the coop's own executors to take
    them back (as Kueue's ``reclaimWithinCohort``).

    - ``never``: a borrower's running task keeps the executor until it ends (owners come first only among
      waiting tasks).
    - ``lower_priority``: only borrowers' tasks of lower priority (low < normal < high < critical) are stopped.
    - ``any``: any borrower's task may be stopped.

    A stopped task goes back to the queue: its stopped attempt is not charged and not counted against its
    ``max_retries``, and it does not go back to that executor until that attempt has ended there.
    """

    NEVER = "never"
    LOWER_PRIORITY = "lower_priority"
    ANY = "any"


class WithinCoop(str, Enum):
    """Whether a coop's waiting task may stop the coop's own running tasks of lower priority to take their room
    (as Kueue's ``withinClusterQueue``).

    - ``never``: a task waits for its coop's running tasks to end, whatever their priorities.
    - ``lower_priority``: a task that fits no executor for want of room stops, on one executor it may use, the
      fewest of its coop's running tasks of lower *effective* priority (priority x the member's
      ``MemberPriority`` multiplier, as the queue orders them) that make room, newest first.

    A stopped task goes back to the queue as a reclaimed one does (uncharged for the stopped attempt, its
    ``max_retries`` kept, not back on that executor until that attempt has ended there).
    """

    NEVER = "never"
    LOWER_PRIORITY = "lower_priority"


class EnforcementMode(str, Enum):
    """What happens to a task that violates the policy.

    - ``strict``: it is rejected.
    - ``permissive``: it is admitted; the violation comes back as a warning on the
      decision and is recorded in the job's history.
    - ``monitoring``: it is admitted; the violation is only counted (metrics).
    """

    STRICT = "strict"
    PERMISSIVE = "permissive"
    MONITORING = "monitoring"


class MemberQuota(BaseModel):
    """One member's limits for a calendar month (UTC). ``None`` limits are unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"cpu_hours_per_month": 10.0, "gpu_hours_per_month": 0.0, "max_concurrent_tasks": 3,
         "max_priority": "normal", "credits_per_month": None, "default_max_runtime_s": 3600}]})

    cpu_hours_per_month: Annotated[float | None, NOT_BOOL] = Field(default=10.0, ge=0, allow_inf_nan=False, examples=[10.0], description=(
        "cores x hours per calendar month, checked on projected use (used + reserved + this task)"))
    gpu_hours_per_month: Annotated[float | None, NOT_BOOL] = Field(default=0.0, ge=0, allow_inf_nan=False, examples=[4.0],
                                              description="GPUs x hours per calendar month, projected like CPU")
    max_concurrent_tasks: Annotated[int, NOT_BOOL] = Field(default=3, ge=1, le=1_000_000, examples=[3],
                                      description="more tasks than this wait in the queue (they are not refused)")
    max_priority: Priority = Field(default=Priority.NORMAL, examples=["normal"],
                                   description="the highest priority the member may ask for")
    credits_per_month: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, allow_inf_nan=False, examples=[500], description=(
        "credits per month, projected at the dearest executor that could run the task"))
    default_max_runtime_s: Annotated[float, NOT_BOOL] = Field(default=3600.0, gt=0, le=30 * 86400, allow_inf_nan=False,
                                         examples=[3600], description="runtime limit for tasks that declare none")


class CoopQuota(BaseModel):
    """What all of a coop's members may use together in a calendar month (UTC), beside each one's own
    ``MemberQuota``: as Slurm's ``GrpTRESMins`` bounds an account over its users. Projected as member quotas
    are (used + reserved + the task's projected cost), in the policy's enforcement mode; members in
    ``quota_whitelist`` are not held to it (what they use still counts in it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"cpu_hours_per_month": 500.0, "gpu_hours_per_month": 40.0, "credits_per_month": None}]})

    cpu_hours_per_month: Annotated[float | None, NOT_BOOL] = Field(
        default=None, ge=0, allow_inf_nan=False, examples=[500.0],
        description="cores x hours all members together may use per month (null: no coop-wide limit)")
    gpu_hours_per_month: Annotated[float | None, NOT_BOOL] = Field(
        default=None, ge=0, allow_inf_nan=False, examples=[40.0], description="GPUs x hours, likewise")
    credits_per_month: Annotated[float | None, NOT_BOOL] = Field(
        default=None, ge=0, allow_inf_nan=False, examples=[5000], description="credits, likewise")


class ResourceAmounts(BaseModel):
    """A lending or borrowing limit as amounts per resource, as Kueue's ``lendingLimit`` and ``borrowingLimit``
    are quantities per resource: ``{"cpus": 16, "gpus": 2}``. A resource it does not name is not bounded by it
    (``{"gpus": 0}`` lends CPUs as ``open_to`` allows and no GPU)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [{"cpus": 16, "gpus": 2}]})

    cpus: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=10_000_000, allow_inf_nan=False,
                                                    examples=[16], description="CPUs (null: not bounded)")
    gpus: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False,
                                                    examples=[2], description="GPUs (null: not bounded)")

    @model_validator(mode="after")
    def _names_a_resource(self) -> ResourceAmounts:
        if self.cpus is None and self.gpus is None:
            raise ValueError('name cpus, gpus or both, e.g. {"cpus": 16, "gpus": 2} (for no limit, null)')
        return self

    def caps(self) -> tuple[float, float]:
        """(CPUs, GPUs) it bounds to, ``inf`` for a resource it does not name."""
        return (INF if self.cpus is None else self.cpus, INF if self.gpus is None else self.gpus)


# A lending or borrowing limit: a fraction of the CPUs and of the GPUs, or amounts per resource.
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), NOT_BOOL]  # (NOT_BOOL last: the schema keeps minimum/maximum)
SharingLimit = Annotated[Union[Annotated[Fraction, Tag("fraction")], Annotated[ResourceAmounts, Tag("amounts")]],
                         Discriminator(lambda v: "amounts" if isinstance(v, (dict, ResourceAmounts)) else "fraction")]


class ScoringWeights(BaseModel):
    """Weights of the placement score's features; they need not sum to 1."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"trust": 0.25, "capacity": 0.20, "queue": 0.15, "rtt": 0.15, "data": 0.15, "hints": 0.10}]})

    trust: Annotated[float, NOT_BOOL] = Field(default=0.25, ge=0, le=100, allow_inf_nan=False, examples=[0.25])
    capacity: Annotated[float, NOT_BOOL] = Field(default=0.20, ge=0, le=100, allow_inf_nan=False, examples=[0.20])
    queue: Annotated[float, NOT_BOOL] = Field(default=0.15, ge=0, le=100, allow_inf_nan=False, examples=[0.15])
    rtt: Annotated[float, NOT_BOOL] = Field(default=0.15, ge=0, le=100, allow_inf_nan=False, examples=[0.15])
    data: Annotated[float, NOT_BOOL] = Field(default=0.15, ge=0, le=100, allow_inf_nan=False, examples=[0.15])
    hints: Annotated[float, NOT_BOOL] = Field(default=0.10, ge=0, le=100, allow_inf_nan=False, examples=[0.10])

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.trust, self.capacity, self.queue, self.rtt, self.data, self.hints)


DEFAULT_WEIGHTS = ScoringWeights()


class AuditSampling(BaseModel):
    """Which completed jobs are copied into audit records for review (seed 000's quality checker)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"one_in": 20, "members": ["did:icn:new-member"]}]})

    one_in: Annotated[int | None, NOT_BOOL] = Field(default=None, ge=1, le=1_000_000, examples=[20],
                               description="sample one in N completed jobs (null: none by count)")
    members: tuple[str, ...] = Field(default=(), max_length=1000, examples=[["did:icn:new-member"]],
                                     description="every completed job of these members is sampled")

    @field_validator("members")
    @classmethod
    def _members(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_texts(v, 200, "member ids")


class CoopPolicy(BaseModel):
    """Everything a cooperative decides about how its members' tasks are scheduled."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"coop_id": "timebank:seattle", "enforcement_mode": "strict",
         "default_quota": {"cpu_hours_per_month": 10.0, "max_concurrent_tasks": 3, "max_priority": "normal"},
         "rules": [{"type": "TaskLimits", "max_cpus": 8}]}]})

    coop_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$",
                         examples=["timebank:seattle"], description="the cooperative this policy governs")
    governance_domain: str | None = Field(default=None, max_length=200, examples=["timebank:seattle:governance"],
                                          description="the body that decides on changes to it")
    rules: tuple[Rule, ...] = Field(default=(), max_length=1000, description="rules, each by its `type`")
    member_quotas: dict[str, MemberQuota] = Field(default_factory=dict, max_length=100_000, examples=[
        {"did:icn:alice": {"cpu_hours_per_month": 20.0}}], description="quotas of named members")
    default_quota: MemberQuota = Field(default_factory=MemberQuota, description="everyone else's quota")
    coop_quota: CoopQuota | None = Field(default=None, examples=[{"cpu_hours_per_month": 500.0}], description=(
        "what all members together may use per month, beside each one's own quota (null: no coop-wide limit)"))
    enforcement_mode: EnforcementMode = Field(default=EnforcementMode.STRICT, examples=["strict"], description=(
        "strict rejects violations; permissive admits them with a warning; monitoring admits and only counts"))
    reclaim: Reclaim = Field(default=Reclaim.NEVER, examples=["lower_priority"], description=(
        "whether this coop's waiting tasks may stop other coops' tasks running on its own executors: never, "
        "lower_priority or any (the stopped task waits again, uncharged, its retries kept)"))
    preempt_within_coop: WithinCoop = Field(default=WithinCoop.NEVER, examples=["lower_priority"], description=(
        "whether this coop's waiting tasks may stop the coop's own running tasks of lower effective priority "
        "when nothing has room for them: never or lower_priority (the stopped task waits again, uncharged, its "
        "retries kept)"))
    max_stop_grace_s: Annotated[float | None, NOT_BOOL] = Field(
        default=None, ge=0, le=300, allow_inf_nan=False, examples=[10], description=(
            "the longest a task stopped to make room on this coop's executors (a reclaim of a borrower's task, a "
            "preemption of its own) has to save and end: its stop_grace_s, capped at this (0: killed at once; "
            "null: as the task asks, up to 300 s)"))
    lending_limit: SharingLimit | None = Field(
        default=None, examples=[0.5, {"cpus": 16, "gpus": 0}], description=(
            "the most other coops' tasks may hold of this coop's active executors at once: a fraction of their "
            "CPUs and of their GPUs, or amounts per resource ({\"cpus\": 16, \"gpus\": 0}; a resource not named "
            "is not bounded) (0: lend nothing; null: as the executors' open_to allows)"))
    borrowing_limit: SharingLimit | None = Field(
        default=None, examples=[0.25, {"gpus": 2}], description=(
            "the most this coop's tasks may hold of other coops' executors at once: a fraction of the fleet's "
            "CPUs and of its GPUs (every coop's active executors), or amounts per resource ({\"gpus\": 2}; a "
            "resource not named is not bounded) (0: borrow nothing; null: no limit)"))
    scoring_weights: ScoringWeights | None = Field(default=None, description="placement weights (default below)")
    audit: AuditSampling | None = Field(default=None, description="audit sampling of completed jobs")
    quota_whitelist: tuple[str, ...] = Field(default=(), max_length=10_000,
                                             description="members who bypass the monthly CPU, GPU and credit quotas (not max_priority or max_concurrent_tasks)",
                                             examples=[["did:icn:emergency-services"]])
    version: Annotated[int, NOT_BOOL] = Field(default=1, ge=1, examples=[1], description="the author's own version label")
    description: str | None = Field(default=None, max_length=2000, description="what the policy is for")

    @field_validator("member_quotas")
    @classmethod
    def _members(cls, v: dict[str, MemberQuota]) -> dict[str, MemberQuota]:
        check_texts(v, 200, "member ids")
        return v

    @field_validator("quota_whitelist")
    @classmethod
    def _whitelisted(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_texts(v, 200, "member ids")

    @model_validator(mode="after")
    def _rule_names_unique(self) -> CoopPolicy:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name is not None and rule.name in seen:
                raise ValueError(f"rule names must be unique: rules[{seen[rule.name]}] and rules[{i}] "
                                 f"are both named {rule.name!r}")
            if rule.name is not None:
                seen[rule.name] = i
        return self

    @model_validator(mode="after")
    def _default_runtime_within_task_limits(self) -> CoopPolicy:
        """A task that declares no runtime gets its quota's ``default_max_runtime_s``: above a TaskLimits
        ``max_runtime_s`` it would refuse every such task, over a number the member never gave."""
        quotas = [("default_quota", self.default_quota),
                  *((f"member_quotas.{m}", q) for m, q in self.member_quotas.items())]
        for i, rule in enumerate(self.rules):
            limit = getattr(rule, "max_runtime_s", None) if getattr(rule, "type", None) == "TaskLimits" else None
            if limit is None:
                continue
            for where, quota in quotas:
                if quota.default_max_runtime_s > limit:
                    raise ValueError(
                        f"{where}.default_max_runtime_s is {quota.default_max_runtime_s:g} s, above rules[{i}] "
                        f"TaskLimits max_runtime_s {limit:g} s: every task declaring no runtime would be refused; "
                        f"set default_max_runtime_s to at most {limit:g}")
        return self

    def quota_for(self, member: str) -> MemberQuota:
        return self.member_quotas.get(member, self.default_quota)

    @property
    def weights(self) -> ScoringWeights:
        return self.scoring_weights or DEFAULT_WEIGHTS

