"""Coop administration as pure functions over policies: quota management and policy diffs.

The seed's quota-checker management actions (get_quota, reset_quota, set_quota,
update_limit, update_default_limit, add_whitelist, remove_whitelist, clear_all) map
onto a new policy version (limits, whitelist) or onto this month's usage (reset, set).
The head applies them through the store and enters each in the change log.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from policies.model import CoopPolicy, MemberQuota
from policies.validation import NOT_BOOL, FieldError, InvalidRequest, parse, quoted
from scheduler.ledger import Cost, to_units

QUOTA_ACTIONS = ("get_quota", "reset_quota", "set_quota", "update_limit", "update_default_limit",
                 "add_whitelist", "remove_whitelist", "clear_all")


def with_member_limits(policy: CoopPolicy, member: str, limits: dict[str, Any]) -> CoopPolicy:
    """A new policy where ``member``'s quota has ``limits`` changed (starting from their current quota)."""
    _some(limits)
    base = policy.quota_for(member).model_dump(mode="json")
    quota = parse(MemberQuota, {**base, **limits}, what="quota limits")
    quotas = {**policy.member_quotas, member: quota}
    return policy.model_copy(update={"member_quotas": quotas})


def _some(limits: dict[str, Any]) -> None:
    """No limits is a mistake: it would still write a version (and pin a member to a copy of the default)."""
    if not limits:
        raise InvalidRequest("quota limits", [FieldError("limits", "nothing", "at least one of " + ", ".join(
            MemberQuota.model_fields), '{"cpu_hours_per_month": 20}')])


def with_default_limits(policy: CoopPolicy, limits: dict[str, Any]) -> CoopPolicy:
    _some(limits)
    quota = parse(MemberQuota, {**policy.default_quota.model_dump(mode="json"), **limits}, what="quota limits")
    return policy.model_copy(update={"default_quota": quota})


def with_whitelist(policy: CoopPolicy, member: str, present: bool) -> CoopPolicy:
    members = [m for m in policy.quota_whitelist if m != member] + ([member] if present else [])
    return policy.model_copy(update={"quota_whitelist": tuple(sorted(members))})


class UsedAmounts(BaseModel):
    """The amounts ``set_quota`` writes as a member's use this month; one left out keeps its value."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"cpu_hours": 2.5, "gpu_hours": 0.0, "credits": 10.0}, {"gpu_hours": 1.5}]})

    cpu_hours: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=1e9, allow_inf_nan=False, examples=[2.5])
    gpu_hours: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=1e9, allow_inf_nan=False, examples=[0.0])
    credits: Annotated[float | None, NOT_BOOL] = Field(default=None, ge=0, le=1e12, allow_inf_nan=False, examples=[10.0])


def used_amounts(values: dict[str, Any], current: Cost) -> Cost:
    """``set_quota``'s values over the member's ``current`` use (amounts left out stay as they are);
    ``InvalidRequest`` naming the bad one, or saying none was given."""
    used = parse(UsedAmounts, values, what="quota action")
    if used.cpu_hours is None and used.gpu_hours is None and used.credits is None:
        raise InvalidRequest("quota action", [FieldError("cpu_hours", "nothing", "at least one of cpu_hours, "
                                                         "gpu_hours and credits (the others keep their value)",
                                                         '{"gpu_hours": 1.5}')])
    return Cost(current.cpu if used.cpu_hours is None else to_units(used.cpu_hours),
                current.gpu if used.gpu_hours is None else to_units(used.gpu_hours),
                current.credits if used.credits is None else to_units(used.credits))


def _check_id(value: Any, field: str, what: str, kind: str, example: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidRequest(what, [FieldError(field, quoted(value, 60), f"a {kind} id of 1-200 characters", example)])
    return value


def check_coop(coop_id: Any, what: str = "quota action") -> str:
    """``coop_id`` of an admin action (quota, plug-in management), checked before it is looked up."""
    return _check_id(coop_id, "coop_id", what, "coop", "timebank:seattle")


def check_member(member: Any, what: str = "quota action") -> str:
    return _check_id(member, "member", what, "member", "did:icn:alice")


def check_version(version: Any, what: str = "policy", field: str = "version") -> int:
    """A policy version number: a whole number >= 1 (a bool is not one)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidRequest(what, [FieldError(field, quoted(version, 40), "a policy version: a whole number >= 1 "
                                               "(see policy_history)", "3")])
    return version


def check_listing(coop_id: Any, member: Any, limit: Any, what: str) -> None:
    """A listing's scope (``jobs``, ``queue``): each of coop, member and limit checked when given."""
    if coop_id is not None:
        check_coop(coop_id, what)
    if member is not None:
        check_member(member, what)
    if limit is not None:
        check_limit(limit, what)


def check_limit(limit: Any, what: str) -> int:
    """How many rows a listing may answer: a whole number >= 0 (the stores read a negative one differently)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1_000_000:
        raise InvalidRequest(what, [FieldError("limit", quoted(limit, 40), "a whole number from 0 to 1,000,000",
                                               "100")])
    return limit


def check_task_id(task_id: Any, what: str = "job") -> str:
    return _check_id(task_id, "task_id", what, "job", "job-7f3a")


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Changes between two JSON values as ``{"path", "op", "old", "new"}`` (op: added, removed, changed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append({"path": sub, "op": "added", "old": None, "new": new[key]})
            elif key not in new:
                out.append({"path": sub, "op": "removed", "old": old[key], "new": None})
            else:
                out.extend(diff(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out.extend(diff(a, b, f"{path}[{i}]"))
        return out
    if old != new:
        return [{"path": path or "(root)", "op": "changed", "old": old, "new": new}]
    return []
