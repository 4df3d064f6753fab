"""The head's coop-administration calls: policies and their history, quota actions, audit
samples, plug-in management, shadow evaluation and the change log.

A mixin of ``scheduler.head.Head`` (the Ray actor): these methods use its core, store and
change log, and every change they make is entered in the change log. Each is ``@guarded``
(``scheduler.head_auth``): verified and authorized before it runs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from policies import plugins
from policies.model import CoopPolicy
from policies.validation import FieldError, InvalidRequest, parse, quoted
from scheduler import admin
from scheduler.executor_spec import ExecutorStatus
from scheduler.head_auth import current_caller, guarded
from scheduler.identity import Role
from scheduler.ledger import Cost, period_of
from scheduler.shadow import shadow_evaluate
from scheduler.state_store import PolicyVersion
from scheduler.tasks import TaskSpec

MAX_SHADOW_JOBS = 10_000
"""Jobs one dry run of a policy replays at most."""
AUDIT_DELETE_ALL = 1_000_000  # records of one session an admin's delete-all reads (to keep only its coop's)


class CoopAdministration:
    """Policies, quotas, audit, plug-ins: what a coop admin does through the head."""

    # ------------------------------------------------------------------ policies
    @guarded
    async def set_policy(self, policy: dict, author: str = "admin", note: str = "") -> dict:
        return self._set_policy(policy, author, note)

    def _set_policy(self, policy: dict, author: str, note: str = "") -> dict:
        """Set a policy for a caller already verified (``set_policy``, a rollback, a quota action)."""
        parsed = self.core.set_policy(policy)
        version = self.store.put_policy(parsed.coop_id, parsed.model_dump(mode="json"), author, time.time(), note)
        self._policy_stored(parsed.coop_id, version.version)
        self._log(parsed.coop_id, "policy.set", author, {"version": version.version, "note": note})
        with self._writes():  # a raised limit or quota lets waiting tasks start now, not at the next event
            self._schedule()
            self._persist()
        return parsed.model_dump(mode="json")

    @guarded
    async def get_policy(self, coop_id: str) -> dict | None:
        policy = self.core.policy(admin.check_coop(coop_id, "policy"))
        return policy.model_dump(mode="json") if policy else None

    @guarded
    async def list_policies(self) -> list[dict]:
        return [p.model_dump(mode="json") for p in self.core.policies()]

    @guarded
    async def remove_policy(self, coop_id: str, author: str = "admin") -> bool:
        removed = self.core.remove_policy(admin.check_coop(coop_id, "policy")) is not None
        if removed:
            self.store.remove_policy(coop_id, author, time.time())
            self._policy_stored(coop_id, None)
            self._log(coop_id, "policy.remove", author, {})
        return removed

    @guarded
    async def policy_history(self, coop_id: str) -> list[dict]:
        return [v.model_dump(mode="json") for v in self.store.policy_history(admin.check_coop(coop_id, "policy"))]

    @guarded
    async def rollback_policy(self, coop_id: str, version: int, author: str = "admin") -> dict:
        old = self.store.policy_version(admin.check_coop(coop_id, "policy"), admin.check_version(version))
        if old is not None:
            _readable(old)
        if old is None or old.policy is None:
            raise KeyError(f"coop {coop_id} has no policy version {version} to roll back to; "
                           f"see `coopsched policy history {coop_id}`")
        return self._set_policy(old.policy, author, note=f"rollback to version {version}")

    @guarded
    async def diff_policy(self, coop_id: str, policy: dict | None = None, a: int | None = None,
                          b: int | None = None) -> list[dict]:
        """Changes from version ``a`` (default: the active one) to ``policy`` or version ``b``."""
        admin.check_coop(coop_id, "policy")
        for field, version in (("a", a), ("b", b)):
            if version is not None:
                admin.check_version(version, "policy diff", field)
        base = self._version(coop_id, a) if a is not None else self.store.active_policy(coop_id)
        if base is not None:
            _readable(base)
        if b is not None:
            new = self._version(coop_id, b).policy
        else:
            new = parse(CoopPolicy, policy, what="policy").model_dump(mode="json") if policy is not None else None
        return admin.diff(base.policy if base else None, new)

    def _version(self, coop_id: str, version: int) -> PolicyVersion:
        found = self.store.policy_version(coop_id, version)
        if found is None:
            raise KeyError(f"coop {coop_id} has no policy version {version}; see `coopsched policy history {coop_id}`")
        return _readable(found)

    @guarded
    async def shadow_policy(self, policy: dict, last_n: int = 100) -> list[dict]:
        """What ``policy`` would have decided for its coop's last ``last_n`` jobs (nothing changes)."""
        if type(last_n) is not int or not 1 <= last_n <= MAX_SHADOW_JOBS:
            raise InvalidRequest("dry run", [FieldError("last_n", quoted(last_n),
                                                        f"a whole number from 1 to {MAX_SHADOW_JOBS:,}", "100")])
        proposed = parse(CoopPolicy, policy, what="policy")
        records = self.store.jobs(coop_id=proposed.coop_id)[-last_n:]
        tasks = [(r["submitted_at"], TaskSpec(**r["task"])) for r in records if r.get("task")]
        now = time.time()
        usage = {m: self.store.standing(proposed.coop_id, m, period_of(now))[0] for m in {t.member for _, t in tasks}}
        executors = [spec for spec, status, _ in self.core.executors() if status is ExecutorStatus.ACTIVE]
        outcomes = shadow_evaluate(self.core.policy(proposed.coop_id), proposed, executors, tasks, usage, now,
                                   held=self.core.held(proposed.coop_id, now, exclude={t.task_id for _, t in tasks}),
                                   still_open={t.task_id for _, t in tasks if (state := self.core.state_of(t.task_id))
                                               is not None and not state.finished})
        return [o.as_dict() for o in outcomes]

    @guarded
    async def plugin_management(self, coop_id: str, rule_name: str, action: str, data: dict | None = None,
                                author: str = "admin") -> dict:
        """A plug-in rule's management action (seed 000's ``management(action, data)``), off the event loop."""
        policy = self.core.policy(admin.check_coop(coop_id, what="plug-in management"))
        if policy is None:
            raise KeyError(f"coop {coop_id} has no policy; set one first")
        data = {} if data is None else data
        answer = await asyncio.get_running_loop().run_in_executor(
            None, lambda: plugins.manage(policy, rule_name, action, data))
        self._log(coop_id, "plugin.management", author, {"rule": rule_name, "action": action,
                                                           "status": answer.get("status")})
        return answer

    @guarded
    async def members(self, coop_id: str) -> list[dict]:
        """This month's usage of every member who submitted to ``coop_id`` or has usage this month (an
        admin may have set it)."""
        return [self.core.usage(coop_id, m).model_dump(mode="json")
                for m in self._members_of(admin.check_coop(coop_id, "members"))]

    @guarded
    async def coop_usage(self, coop_id: str) -> dict:
        """Every member of ``coop_id`` together this month, against its ``coop_quota`` (its members may read it:
        what the coop as a whole has left is theirs to know)."""
        return self.core.coop_usage(admin.check_coop(coop_id, "coop_usage")).model_dump(mode="json")

    def _members_of(self, coop_id: str) -> list[str]:
        """Who submitted to ``coop_id``, and who has usage or open reservations there this month."""
        submitted = {j["member"] for j in self.store.jobs(coop_id=coop_id)
                     if isinstance(j.get("member"), str)}  # (a damaged record may not say whose it was)
        return sorted(submitted | set(self.store.usage_members(coop_id, period_of(time.time()))))

    @guarded
    async def changes(self, coop_id: str | None = None, limit: int = 100) -> list[dict]:
        if coop_id is not None:
            admin.check_coop(coop_id, "changes")
        return self.store.changes(coop_id, admin.check_limit(limit, "changes"))

    # ------------------------------------------------------------------ quota management
    @guarded
    async def quota(self, action: str, coop_id: str, member: str | None = None, author: str = "admin",
                    **values: Any) -> dict:
        """The seed's quota actions; each is entered in the change log. Returns the member's usage
        (or the policy, for default-limit changes)."""
        if action not in admin.QUOTA_ACTIONS:
            raise InvalidRequest("quota action", [FieldError("action", quoted(action), ", ".join(
                admin.QUOTA_ACTIONS), "reset_quota")])
        policy = self.core.policy(admin.check_coop(coop_id))
        if policy is None:
            raise KeyError(f"coop {coop_id} has no policy; set one first")
        now = time.time()
        if action == "clear_all":
            members = self._members_of(coop_id)
            with self.store.batch():
                for m in members:
                    self.store.set_usage(coop_id, m, period_of(now), Cost(), completed=0)
            self._log(coop_id, "quota.clear_all", author, {"members": members})
            return {"cleared": members}
        if action == "update_default_limit":
            new = admin.with_default_limits(policy, values)
            self._set_policy(new.model_dump(mode="json"), author, note="update_default_limit")
            self._log(coop_id, "quota.update_default_limit", author, dict(values))
            return new.model_dump(mode="json")
        member = admin.check_member(member)
        if action == "reset_quota":
            self.store.set_usage(coop_id, member, period_of(now), Cost(), completed=0)
        elif action == "set_quota":
            used = admin.used_amounts(values, self.core.ledger.standing(coop_id, member, now).used)
            self.store.set_usage(coop_id, member, period_of(now), used)
        elif action == "update_limit":
            self._set_policy(admin.with_member_limits(policy, member, values).model_dump(mode="json"),
                                  author, note=f"update_limit {member}")
        elif action in ("add_whitelist", "remove_whitelist"):
            self._set_policy(admin.with_whitelist(policy, member, action == "add_whitelist")
                                  .model_dump(mode="json"), author, note=f"{action} {member}")
        if action != "get_quota":
            self._log(coop_id, f"quota.{action}", author, {"member": member, **values})
        return self.core.usage(coop_id, member).model_dump(mode="json")

    # ------------------------------------------------------------------ audit
    @guarded
    async def audit(self, action: str, session_id: str | None = None, seq_no: int | None = None,
                    **filters: Any) -> Any:
        # An admin sees only its coop's records, by the coop stored in each: a session id is
        # "COOP/MEMBER" and coop ids may hold "/", so its prefix alone does not tell the coop.
        caller = current_caller()
        own = caller.coop_id if caller is not None and caller.role is Role.ADMIN else None
        mine = (lambda r: r is not None and (own is None or r.coop_id == own))
        if session_id is not None and (not isinstance(session_id, str) or not session_id or len(session_id) > 401):
            raise InvalidRequest("audit", [FieldError("session_id", quoted(session_id), "COOP/MEMBER",
                                                      "timebank:seattle/did:icn:alice")])
        if seq_no is not None and (isinstance(seq_no, bool) or not isinstance(seq_no, int)):
            raise InvalidRequest("audit", [FieldError("seq_no", quoted(seq_no), "a whole number", "3")])
        unknown = sorted(set(filters) - {"coop_id", "member", "since", "limit"})
        if unknown:
            raise InvalidRequest("audit", [FieldError(unknown[0], quoted(filters[unknown[0]]), "a filter of audit "
                                                      "list: coop_id, member, since or limit", "limit=50")])
        if action == "get":
            record = self.store.get_audit(session_id, seq_no)
        elif action == "latest":
            record = self.store.latest_audit(session_id) if own is None else \
                next(iter(self.store.list_audit(coop_id=own, session_id=session_id, limit=1)), None)
        elif action == "list":
            if "limit" in filters:
                admin.check_limit(filters["limit"], "audit list")
            if own is not None:
                filters["coop_id"] = own  # in the query, so that the limit counts the caller's records
            return [r.model_dump(mode="json") for r in self.store.list_audit(session_id=session_id, **filters)
                    if mine(r)]
        elif action == "delete":
            if own is None:
                return self.store.delete_audit(session_id, seq_no)
            if seq_no is not None:
                return self.store.delete_audit(session_id, seq_no) if mine(self.store.get_audit(session_id, seq_no)) \
                    else 0
            # one session id can be two coops' ("a" + "b/m" and "a/b" + "m"): only the caller's records go
            return sum(self.store.delete_audit(session_id, r.seq_no) for r in self.store.list_audit(
                coop_id=own, session_id=session_id, limit=AUDIT_DELETE_ALL) if mine(r))
        else:
            raise InvalidRequest("audit action", [FieldError("action", quoted(action),
                                                                   "get, latest, list or delete", "latest")])
        return record.model_dump(mode="json") if mine(record) else None


def _readable(version: PolicyVersion) -> PolicyVersion:
    """``version``, unless its stored text is damaged: then a ``KeyError`` that says so (its policy, None, is no
    removal, and must not be diffed or rolled back to as one)."""
    if version.damaged:
        raise KeyError(f"coop {version.coop_id}'s policy version {version.version} is damaged in the store "
                       f"({version.damaged[:120]}); it cannot be read, diffed or rolled back to. Set the policy "
                       f"from its file again (`coopsched policy set FILE`); see `coopsched policy history "
                       f"{version.coop_id}`")
    return version
