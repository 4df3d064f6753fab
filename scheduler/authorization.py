"""What a verified principal may do: ``authorize(principal, method, args, facts) -> Refusal | None``.

Pure: no Ray, no store. ``args`` are the call's arguments by name (the head binds them to
the method's signature first); ``facts`` answers the few questions that need the head's
state (whose job is this, whose executor, whose key).

- **operator** (the key the head was started with): everything.
- **admin** of coop C: C's policy (set, remove, roll back, diff, shadow, plug-in
  management), C's quotas, executors and members' and executors' keys, and forgetting
  a damaged job record the store keeps under C; reads everything in C (jobs, usage,
  members, change log, audit samples). Admins do not submit: a person who is both
  registers a member key too.
- **member** M of coop C: submits only tasks with ``coop_id == C`` and ``member == M``;
  reads and cancels only its own jobs; reads only its own usage and C's active policy.
- **executor** E of coop C: only its own heartbeats and usage reports.

A method not in the table is the operator's alone (deny by default). Listings are
narrowed rather than refused where the caller left the scope open (``jobs()`` of a member
lists its own jobs): see ``narrow``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from scheduler.identity import Principal, Refusal, RefusalCode, Role, key_id_of

__all__ = ["Facts", "OPEN_METHODS", "authorize", "narrow", "visible"]

OPEN_METHODS = frozenset({"ping", "metrics_address", "whoami"})
"""Any registered key may call these."""


class Facts(Protocol):
    def job_owner(self, task_id: str) -> tuple[str, str] | None: ...     # (coop_id, member)
    def executor_coop(self, executor_id: str) -> str | None: ...
    def key_owner(self, key_id: str) -> Principal | None: ...


def _forbidden(principal: Principal, what: str, fix: str) -> Refusal:
    return Refusal(code=RefusalCode.FORBIDDEN, message=f"{principal.describe()} may not {what}; {fix}")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


# ----------------------------------------------------------------------------- checks per kind of call
def _submit_one(p: Principal, task: Any) -> Refusal | None:
    coop, member = _get(task, "coop_id"), _get(task, "member")
    if p.role is Role.MEMBER and coop == p.coop_id and member == p.subject:
        return None
    if p.role is Role.MEMBER:
        return _forbidden(p, f"submit as member {member!r} of coop {coop!r}",
                          f"a member submits only as itself: coop={p.coop_id!r}, member={p.subject!r}")
    return _forbidden(p, "submit tasks", "submit with a member key (`coopsched keys add --role member ...`)")


def _submit(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    return _submit_one(p, args.get("task"))


def _submit_many(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    items = args.get("items")
    if not isinstance(items, (list, tuple)):
        return _forbidden(p, "submit a batch that is not a list", "send a list of (task, payload, data_refs)")
    for item in items:
        task = item[0] if isinstance(item, (list, tuple)) and item else item
        refused = _submit_one(p, task)
        if refused is not None:
            return refused
    return None


def _own_job(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    task_id = args.get("task_id")
    owner = facts.job_owner(task_id) if isinstance(task_id, str) else None
    if owner is not None:
        coop, member = owner
        if p.role is Role.MEMBER and coop == p.coop_id and member == p.subject:
            return None
        if p.role is Role.ADMIN and coop == p.coop_id:
            return None
    whose = "its own jobs" if p.role is Role.MEMBER else f"jobs of coop {p.coop_id}"
    return _forbidden(p, f"see or change job {str(task_id)[:40]!r}",
                      f"it is not one of {whose} (or it does not exist)")


def _damaged_job_of_own_coop(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """``forget_damaged_job``: an admin of the coop the store keeps beside the record. SQLite keeps it in a column
    of its own; a damaged Redis record says nothing of whose it was, so there the operator alone forgets it. A
    member may not, even its own: forgetting releases a reservation, as an admin's quota reset does."""
    task_id = args.get("task_id")
    owner = facts.job_owner(task_id) if isinstance(task_id, str) else None
    if p.role is Role.ADMIN and owner is not None and owner[0] is not None and owner[0] == p.coop_id:
        return None
    return _forbidden(p, f"forget job {str(task_id)[:40]!r}", (
        f"an admin forgets the damaged records the store keeps under its own coop ({p.coop_id}); this one is "
        "not, or the store does not say whose it is (or there is no such job): ask the operator")
        if p.role is Role.ADMIN else "a damaged job record is forgotten by its coop's admin or the operator")


def _own_jobs(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    task_ids = args.get("task_ids")
    if not isinstance(task_ids, (list, tuple)):
        return _forbidden(p, "wait for jobs given as anything but a list", "send a list of job ids")
    for task_id in task_ids:
        refused = _own_job(p, {"task_id": task_id}, facts)
        if refused is not None:
            return refused
    return None


def _member_scope(coop_arg: str, member_arg: str | None, *, admin_only: bool = False):
    """A call about (coop, member): a member for itself, an admin for its coop."""
    def check(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
        coop = args.get(coop_arg)
        member = args.get(member_arg) if member_arg else None
        if p.role is Role.ADMIN and coop == p.coop_id:
            return None
        if not admin_only and p.role is Role.MEMBER and coop == p.coop_id and member == p.subject:
            return None
        if p.role is Role.ADMIN:
            return _forbidden(p, f"act on coop {coop!r}", f"an admin manages only its own coop ({p.coop_id})")
        if p.role is Role.MEMBER and not admin_only:
            return _forbidden(p, f"read the usage of {member!r} in coop {coop!r}",
                              f"a member reads only its own: coop={p.coop_id!r}, member={p.subject!r}")
        return _forbidden(p, "do this", f"ask an admin of coop {coop!r}")
    return check


def _coop_admin(coop_of: Callable[[Mapping[str, Any], Facts], Any], what: str):
    def check(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
        coop = coop_of(args, facts)
        if p.role is Role.ADMIN and coop is not None and coop == p.coop_id:
            return None
        if p.role is Role.ADMIN:
            return _forbidden(p, f"{what} of coop {coop!r}", f"an admin manages only its own coop ({p.coop_id})")
        return _forbidden(p, what, "this is for the coop's admin (or the operator)")
    return check


def _policy_read(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    coop = args.get("coop_id")
    if p.role in (Role.ADMIN, Role.MEMBER) and coop == p.coop_id:
        return None
    return _forbidden(p, f"read the policy of coop {coop!r}", f"read your own coop's ({p.coop_id})")


def _coop_read(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """``coop_usage(coop_id)``: the coop's own members and admin."""
    coop = args.get("coop_id")
    if p.role in (Role.ADMIN, Role.MEMBER) and coop == p.coop_id:
        return None
    return _forbidden(p, f"read the usage of coop {coop!r}", f"read your own coop's ({p.coop_id})")


def _scoped_listing(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """``jobs(coop_id, member)``, ``queue(coop_id, member)``, ``changes(coop_id)``: an open scope is narrowed;
    another one is refused."""
    coop, member = args.get("coop_id"), args.get("member")
    if p.role is Role.ADMIN and coop in (None, p.coop_id):
        return None
    if p.role is Role.MEMBER and coop in (None, p.coop_id) and member in (None, p.subject) \
            and "member" in args:
        return None
    if p.role is Role.EXECUTOR:
        return _forbidden(p, "list jobs or changes", "an executor key only heartbeats and reports usage")
    return _forbidden(p, f"list coop {coop!r}" + (f", member {member!r}" if member else ""),
                      f"leave the coop and member out, or give your own ({p.coop_id}"
                      + (f", {p.subject})" if p.role is Role.MEMBER else ")"))


def _readable_by_coop(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """``list_policies()``, ``executors()``, ``list_keys()``: the answer is filtered to the caller's coop."""
    if p.role is Role.ADMIN or (p.role is Role.MEMBER and "coop_id" not in args):
        return None
    return _forbidden(p, "list these", "this listing is for coop admins")


def _quota(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    if args.get("action") == "get_quota" and p.role is Role.MEMBER:
        return _member_scope("coop_id", "member")(p, args, facts)
    return _coop_admin(lambda a, f: a.get("coop_id"), "manage quotas")(p, args, facts)


def _audit(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    if p.role is not Role.ADMIN:
        return _forbidden(p, "read audit samples", "audit samples are for the coop's admin")
    session = args.get("session_id")
    if session is None and args.get("action") == "list" \
            and _get(args.get("filters") or {}, "coop_id") in (None, p.coop_id):
        return None  # narrowed to the admin's coop
    if isinstance(session, str) and session.startswith(f"{p.coop_id}/"):
        return None
    return _forbidden(p, f"read audit session {session!r}",
                      f"give a session of your coop ('{p.coop_id}/MEMBER') or list with coop_id={p.coop_id!r}")


def _executor_of_coop(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    executor_id = args.get("executor_id")
    coop = facts.executor_coop(executor_id) if isinstance(executor_id, str) else None
    if p.role is Role.ADMIN and coop is not None and coop == p.coop_id:
        return None
    return _forbidden(p, f"manage executor {str(executor_id)[:40]!r}",
                      f"an admin manages only its own coop's executors ({p.coop_id})"
                      if p.role is Role.ADMIN else "this is for the coop's admin")


def _own_executor(field: str):
    def check(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
        executor_id = _get(args.get(field) or {}, "executor_id")
        if p.role is Role.EXECUTOR and executor_id == p.subject and isinstance(executor_id, str) \
                and facts.executor_coop(executor_id) == p.coop_id:  # a key of another coop naming it: no
            return None
        return _forbidden(p, f"speak for executor {str(executor_id)[:40]!r}",
                          "only that executor's own key signs its heartbeats and usage reports")
    return check


def _taken_key(p: Principal, public_key: Any, facts: Facts) -> Refusal | None:
    """An admin may not register a public key that is already someone's outside its coop's members and
    executors: that would take the key (and so the identity) over, the operator's or an admin's included."""
    if not isinstance(public_key, str):
        return None
    try:
        owner = facts.key_owner(key_id_of(public_key))
    except ValueError:
        return None  # not a key: validation says so, with the field named
    if owner is None or (owner.coop_id == p.coop_id and owner.role in (Role.MEMBER, Role.EXECUTOR)):
        return None
    return _forbidden(p, "register a key that is already registered to someone else",
                      "a key identifies one principal; register a new key pair for this one")


def _add_key(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    new = args.get("principal")
    role, coop = _get(new, "role"), _get(new, "coop_id")
    role = getattr(role, "value", role)
    if p.role is Role.ADMIN and coop == p.coop_id and role in (Role.MEMBER.value, Role.EXECUTOR.value):
        subject = _get(new, "subject")
        owner = facts.executor_coop(subject) if role == Role.EXECUTOR.value and isinstance(subject, str) else None
        if owner not in (None, p.coop_id):
            return _forbidden(p, f"register a key for executor {subject[:40]!r}",
                              f"it is an executor of coop {owner!r}; an admin keys its own coop's ({p.coop_id})")
        return _taken_key(p, _get(new, "public_key"), facts)
    if p.role is Role.ADMIN:
        return _forbidden(p, f"register a {role} key for coop {coop!r}",
                          f"an admin registers member and executor keys of its own coop ({p.coop_id}); "
                          "admin keys are registered by the operator")
    return _forbidden(p, "register keys", "ask your coop's admin")


def _remove_key(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    key_id = args.get("key_id")
    owner = facts.key_owner(key_id) if isinstance(key_id, str) else None
    if p.role is Role.ADMIN and owner is not None and owner.coop_id == p.coop_id \
            and owner.role in (Role.MEMBER, Role.EXECUTOR):
        return None
    return _forbidden(p, f"remove key {str(key_id)[:40]!r}",
                      f"an admin removes member and executor keys of its own coop ({p.coop_id})"
                      if p.role is Role.ADMIN else "ask your coop's admin")


def _register_executor(p: Principal, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """An admin registers executors of its own coop, and registers again only its own: an executor id of
    another coop is not taken over by naming it."""
    refusal = _coop_admin(lambda a, f: _get(a.get("spec") or {}, "coop_id"), "register an executor")(p, args, facts)
    if refusal is not None:
        return refusal
    executor_id = _get(args.get("spec") or {}, "executor_id")
    owner = facts.executor_coop(executor_id) if isinstance(executor_id, str) else None
    if owner not in (None, p.coop_id):
        return _forbidden(p, f"register executor {executor_id[:40]!r}",
                          f"it is registered to coop {owner!r}; its own admin registers it again")
    return _taken_key(p, args.get("public_key"), facts)


def _policy_coop(args: Mapping[str, Any], facts: Facts) -> Any:
    return _get(args.get("policy") or {}, "coop_id")


RULES: dict[str, Callable[[Principal, Mapping[str, Any], Facts], Refusal | None]] = {
    "submit": _submit,
    "submit_many": _submit_many,
    "status": _own_job,
    "wait_result": _own_job,
    "wait_results": _own_jobs,
    "cancel": _own_job,
    "explain": _own_job,
    "checkpoint": _own_job,
    "forget_damaged_job": _damaged_job_of_own_coop,
    "jobs": _scoped_listing,
    "queue": _scoped_listing,
    "changes": _scoped_listing,
    "usage": _member_scope("coop_id", "member"),
    "get_policy": _policy_read,
    "list_policies": _readable_by_coop,
    "executors": _readable_by_coop,
    "list_keys": _readable_by_coop,
    "set_policy": _coop_admin(_policy_coop, "set the policy"),
    "shadow_policy": _coop_admin(_policy_coop, "dry-run a policy"),
    "remove_policy": _coop_admin(lambda a, f: a.get("coop_id"), "remove the policy"),
    "rollback_policy": _coop_admin(lambda a, f: a.get("coop_id"), "roll back the policy"),
    "diff_policy": _coop_admin(lambda a, f: a.get("coop_id"), "diff the policy"),
    "policy_history": _coop_admin(lambda a, f: a.get("coop_id"), "read the policy history"),
    "plugin_management": _coop_admin(lambda a, f: a.get("coop_id"), "run plug-in management"),
    "coop_usage": _coop_read,
    "members": _coop_admin(lambda a, f: a.get("coop_id"), "list the members' usage"),
    "quota": _quota,
    "audit": _audit,
    "register_executor": _register_executor,
    "drain": _executor_of_coop,
    "set_trust": _executor_of_coop,
    "remove_executor": _executor_of_coop,
    "heartbeat": _own_executor("offer"),
    "report": _own_executor("report"),
    "add_key": _add_key,
    "remove_key": _remove_key,
}


def authorize(principal: Principal, method: str, args: Mapping[str, Any], facts: Facts) -> Refusal | None:
    """None if ``principal`` may call ``method`` with ``args`` (by name); otherwise a ``forbidden`` Refusal."""
    if principal.role is Role.OPERATOR or method in OPEN_METHODS:
        return None
    rule = RULES.get(method)
    if rule is None:
        return _forbidden(principal, f"call {method!r}", "only the operator may")
    if principal.role is Role.EXECUTOR and method not in ("heartbeat", "report"):
        return _forbidden(principal, f"call {method!r}", "an executor key only heartbeats and reports usage")
    return rule(principal, args, facts)


def narrow(principal: Principal, method: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments with an open scope closed to what ``principal`` may see (after ``authorize``)."""
    if principal.role is Role.OPERATOR:
        return args
    if method in ("jobs", "queue", "changes", "list_keys") and principal.role in (Role.ADMIN, Role.MEMBER):
        args = {**args, "coop_id": principal.coop_id}
        if method in ("jobs", "queue") and principal.role is Role.MEMBER:
            args["member"] = principal.subject
    if method == "audit" and principal.role is Role.ADMIN and args.get("session_id") is None:
        args = {**args, "filters": {**(args.get("filters") or {}), "coop_id": principal.coop_id}}
    return args


def visible(principal: Principal, method: str, answer: Any) -> Any:
    """A listing's answer filtered to the caller's coop (``list_policies``, ``executors``, ``list_keys``)."""
    if principal.role is Role.OPERATOR or method not in ("list_policies", "executors", "list_keys"):
        return answer
    return [item for item in answer if _get(item, "coop_id") == principal.coop_id]
