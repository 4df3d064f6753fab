"""The client's coop administration: policies, members' usage and quotas, the change log, audit samples.

A mixin of ``scheduler.client.Client`` (its calls go through ``Client._call``, signed as every call is), as
``scheduler.head_admin`` is of the head: what a coop admin does, beside what members do with their jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from policies.loader import load_policy
from policies.model import CoopPolicy
from policies.validation import parse
from scheduler.usage import CoopUsageRecord, UsageRecord


class ClientAdministration:
    """Policies, usage and quotas, the change log and audit samples (a mixin of ``Client``)."""

    _call: Callable[..., Any]  # Client's: every call signed and sent to the head

    # ------------------------------------------------------------------ policies
    def set_policy(self, policy: CoopPolicy | dict | str | Path) -> CoopPolicy:
        """Install a policy (a model, a dict, JSON text, or a path to a JSON file)."""
        return CoopPolicy(**self._call("set_policy", _policy_json(policy)))

    def get_policy(self, coop: str) -> CoopPolicy | None:
        data = self._call("get_policy", coop)
        return CoopPolicy(**data) if data else None

    def list_policies(self) -> list[CoopPolicy]:
        return [CoopPolicy(**p) for p in self._call("list_policies")]

    def remove_policy(self, coop: str) -> bool:
        return self._call("remove_policy", coop)

    def policy_history(self, coop: str) -> list[dict[str, Any]]:
        """Every version: number, author, time, predecessor, note and the policy (None for a removal)."""
        return self._call("policy_history", coop)

    def rollback_policy(self, coop: str, version: int) -> CoopPolicy:
        return CoopPolicy(**self._call("rollback_policy", coop, version))

    def diff_policy(self, coop: str, policy: CoopPolicy | dict | str | Path | None = None, *,
                    a: int | None = None, b: int | None = None) -> list[dict[str, Any]]:
        """Changes from version ``a`` (default: active) to ``policy`` (a model, dict or file) or version ``b``."""
        return self._call("diff_policy", coop, None if policy is None else _policy_json(policy), a, b)

    def shadow_policy(self, policy: CoopPolicy | dict | str | Path, last_n: int = 100) -> list[dict[str, Any]]:
        """Replay the coop's last ``last_n`` jobs under ``policy`` beside the active one; changes nothing.
        Each item: task_id, member, before, after, change (unchanged, now refused, now admitted,
        placed elsewhere)."""
        return self._call("shadow_policy", _policy_json(policy), last_n)

    def plugin_management(self, coop: str, rule: str, action: str, data: dict | None = None) -> dict[str, Any]:
        """Run a plug-in rule's management action (e.g. a vDAG quota checker's ``reset_quota``)."""
        return self._call("plugin_management", coop, rule, action, data or {})

    def coop_usage(self, coop: str) -> CoopUsageRecord:
        """All of ``coop``'s members together this month, against its ``coop_quota``."""
        return CoopUsageRecord(**self._call("coop_usage", coop))

    def members(self, coop: str) -> list[UsageRecord]:
        """This month's usage of every member who submitted to ``coop``."""
        return [UsageRecord(**u) for u in self._call("members", coop)]

    def changes(self, coop: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The change log (policies, quotas, executors), newest first."""
        return self._call("changes", coop, limit)

    # ------------------------------------------------------------------ quota management (seed 000's actions)
    def get_quota(self, coop: str, member: str) -> UsageRecord:
        return UsageRecord(**self.head_quota("get_quota", coop, member))

    def reset_quota(self, coop: str, member: str) -> UsageRecord:
        """Forget this month's usage of ``member``."""
        return UsageRecord(**self.head_quota("reset_quota", coop, member))

    def set_quota(self, coop: str, member: str, *, cpu_hours: float | None = None, gpu_hours: float | None = None,
                  credits: float | None = None) -> UsageRecord:
        """Set this month's used amounts of ``member``: those given (at least one); the others keep theirs."""
        amounts = {k: v for k, v in (("cpu_hours", cpu_hours), ("gpu_hours", gpu_hours), ("credits", credits))
                   if v is not None}
        return UsageRecord(**self.head_quota("set_quota", coop, member, **amounts))

    def update_limit(self, coop: str, member: str, **limits: Any) -> UsageRecord:
        """Change ``member``'s own quota (``cpu_hours_per_month=20`` ...): a new policy version."""
        return UsageRecord(**self.head_quota("update_limit", coop, member, **limits))

    def update_default_limit(self, coop: str, **limits: Any) -> CoopPolicy:
        return CoopPolicy(**self.head_quota("update_default_limit", coop, None, **limits))

    def add_whitelist(self, coop: str, member: str) -> UsageRecord:
        """``member`` bypasses quota checks from now on."""
        return UsageRecord(**self.head_quota("add_whitelist", coop, member))

    def remove_whitelist(self, coop: str, member: str) -> UsageRecord:
        return UsageRecord(**self.head_quota("remove_whitelist", coop, member))

    def clear_all(self, coop: str) -> list[str]:
        """Forget this month's usage of every member of ``coop``."""
        return self.head_quota("clear_all", coop, None)["cleared"]

    def head_quota(self, action: str, coop: str, member: str | None, **values: Any) -> Any:
        return self._call("quota", action, coop, member, **values)

    # ------------------------------------------------------------------ audit samples
    def audit(self, action: str = "list", session_id: str | None = None, seq_no: int | None = None,
              **filters: Any) -> Any:
        """``get`` / ``latest`` / ``list`` / ``delete`` audit records (session id: ``coop/member``)."""
        return self._call("audit", action, session_id, seq_no, **filters)


def _policy_json(policy: CoopPolicy | dict | str | Path) -> dict[str, Any]:
    """A policy given as a model, a dict, JSON text or a path to a JSON file, validated (``InvalidRequest``
    naming the field), as the head takes it."""
    if isinstance(policy, (str, Path)) and not str(policy).lstrip().startswith("{"):
        policy = load_policy(policy)
    return parse(CoopPolicy, policy, what="policy").model_dump(mode="json")
