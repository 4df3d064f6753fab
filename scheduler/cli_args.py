"""The ``coopsched`` command's arguments turned into checked values: ``UsageError`` (exit 2) for a wrong
command line, the common flags a command refuses (``Unused``, ``check_common_flags``), and the checks and
conversions the commands in ``scheduler.cli_commands`` share."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


class Unused(NamedTuple):
    """Common flags a command has no use for: given, they are refused (exit 2) rather than ignored."""
    flags: tuple[str, ...]  # e.g. ("--address", "--key")
    why: str                # why the command does without them
    example: str            # the command line without them
    json: str | None = None  # why it has no machine-readable output either (then --json is refused too)


_CONNECTING = {"--address": ("a Ray cluster address, HOST:PORT (or ray://HOST:PORT, or auto)", "10.0.0.5:6379"),
               "--key": ("the private key file that signs requests (left out: $COOPSCHED_KEY)", "alice.key")}


def _shown(value: str) -> str:
    """``value`` quoted, unless it may be key text itself (never echoed)."""
    return repr(value) if len(value) <= 200 and "\n" not in value and "PRIVATE" not in value else "<not shown>"


def check_common_flags(args) -> None:
    """``--address`` and ``--key``: refused by a command that would ignore them (``args.unused``), and refused
    empty by the others (an empty ``--address`` was the local cluster, an empty ``--key`` ``$COOPSCHED_KEY``)."""
    unused = getattr(args, "unused", None)
    if unused is not None and unused.json is not None and getattr(args, "json", False):
        command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
        raise UsageError(f"{command} takes no --json: {unused.json} (got --json); leave it out, e.g. "
                         f"`{unused.example}` (--json is for the commands that answer with data, e.g. "
                         f"`coopsched --json job list`)")
    for flag, (accepted, example) in _CONNECTING.items():
        value = getattr(args, flag[2:], None)
        if value is None:
            continue
        if unused is not None and flag in unused.flags:
            command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
            raise UsageError(f"{command} takes no {flag}: {unused.why} (got {flag} {_shown(value)}); leave it out, "
                             f"e.g. `{unused.example}` ({flag} is for the commands that talk to the head, e.g. "
                             f"`coopsched {flag} {example} job list`)")
        if not value.strip():
            raise UsageError(f"{flag} takes {accepted}, e.g. {flag} {example} (got {_shown(value)})")


def key_of(args):
    """The private key file that signs requests: ``--key``, else ``$COOPSCHED_KEY``, else none (dev mode)."""
    return getattr(args, "key", None) or os.environ.get("COOPSCHED_KEY") or None


def _pairs(pairs: list[str] | None, flag: str, example: str) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} takes NAME=VALUE, e.g. {flag} {example} (got {pair!r})")
        out[name] = value
    return out


def _limits(args) -> dict[str, Any]:
    fields = ("cpu_hours_per_month", "gpu_hours_per_month", "max_concurrent_tasks", "max_priority",
              "credits_per_month", "default_max_runtime_s")
    limits = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    if not limits:
        raise UsageError("give at least one limit, e.g. --cpu-hours-per-month 20 or --max-concurrent-tasks 5")
    from policies.model import MemberQuota
    from policies.validation import parse
    parse(MemberQuota, limits, what="quota limits")
    return limits


def _json_data(text: str | None) -> dict:
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data takes a JSON object, e.g. --data '{{\"session_id\": \"s1\"}}' ({exc.msg})") \
            from None
    if not isinstance(data, dict):
        raise UsageError(f"--data takes a JSON object, e.g. --data '{{\"session_id\": \"s1\"}}' (got {text!r})")
    return data


def _whole(value: int, flag: str, low: int, high: int, example: int) -> int:
    if not low <= value <= high:
        raise UsageError(f"{flag} takes a whole number from {low} to {high:,}, e.g. {flag} {example} (got {value})")
    return value


def _amounts(args) -> dict[str, float]:
    """``quota set``'s amounts: those given (at least one); the others keep their value."""
    from policies.validation import parse
    from scheduler.admin import UsedAmounts
    amounts = {f: getattr(args, f) for f in ("cpu_hours", "gpu_hours", "credits") if getattr(args, f) is not None}
    if not amounts:
        raise UsageError("give at least one amount, e.g. --cpu-hours 2.5 (the others keep their value)")
    parse(UsedAmounts, amounts, what="quota action")
    return amounts


_TWO_VERSIONS = "--coop COOP --base A --to B, e.g. coopsched policy diff --coop timebank:seattle --base 2 --to 3"


def _check_diff(args, policy) -> None:
    """``policy diff`` compares FILE with the active version (or ``--base A``), or version A with B of
    ``--coop``: a flag of the other form is refused, not dropped."""
    if policy is None:
        if not (args.coop and args.base is not None and args.to is not None):
            given = [f"{flag} {value!r}" for flag, value in (("--coop", args.coop), ("--base", args.base),
                                                             ("--to", args.to)) if value is not None]
            raise UsageError(f"policy diff takes FILE (compared with the active version, or with --base A), e.g. "
                             f"coopsched policy diff timebank.json, or {_TWO_VERSIONS} "
                             f"(got {', '.join(given) if given else 'neither'})")
    elif args.to is not None:
        raise UsageError(f"policy diff FILE compares FILE with the active version (or with --base A): FILE is the "
                         f"side --to would name (got FILE {args.file} and --to {args.to}); give FILE, e.g. "
                         f"coopsched policy diff {args.file} --base {args.to}, or two versions: {_TWO_VERSIONS}")
    elif args.coop is not None and args.coop != policy.coop_id:
        raise UsageError(f"--coop takes the coop of FILE, which is compared with its own coop's policy (got --coop "
                         f"{args.coop!r}; {args.file} is a policy of {policy.coop_id!r}): leave --coop out, e.g. "
                         f"coopsched policy diff {args.file}, or compare two versions: {_TWO_VERSIONS}")
    for flag, version in (("--base", args.base), ("--to", args.to)):
        if version is not None:
            _version(version, flag, f"{flag} 2")


def _version(version: int, flag: str, example: str) -> None:
    if version < 1:
        raise UsageError(f"{flag} takes a policy version, a whole number >= 1 (see `coopsched policy history COOP`), "
                         f"e.g. {example} (got {version})")
