"""Malformed input for the bad-input tests: valid examples of every model read from outside, and mutations.

``mutations(example)`` breaks an example in one place (a wrong type, a huge or negative
number, NaN or infinity, a megabyte string, odd unicode, an unknown rule ``type``, an
extra key, a missing key) and says where; ``check(model, data, where)`` parses it and
asserts what any refusal must say. Used by ``tests/unit/test_bad_input.py`` (no Ray) and
``tests/integration/test_bad_input_head.py`` (the real head).
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from policies.model import CoopPolicy, MemberQuota
from policies.reference import RULES
from policies.validation import InvalidRequest, parse
from policies.validation import _key as shown_key  # how a path shows a key (escaped, cut)
from scheduler.executor_spec import ExecutorOffer, ExecutorSpec
from scheduler.tasks import TaskSpec
from scheduler.usage import UsageReport
from tests.builders import START

MB_STRING = "x" * 1_000_000
ODD_STRINGS = [
    "",                                   # empty
    "\u200f\u202eevil\u202c",              # RTL mark and override
    "a\u200db\u200c",                      # zero-width joiner / non-joiner
    "\U0001F468\u200d\U0001F469\u200d\U0001F467",  # an emoji family (ZWJ sequence)
    "nul\x00byte",
    "\ufeffbom",
    "tab\tnew\nline",
    " padded ",
    "é" * 300,
    "../../etc/passwd",
    "America",                             # a zoneinfo directory, not a zone
    "1.0; DROP TABLE usage",
]
BAD_VALUES = [
    None, True, False, 0, -1, 1.5, 10**30, -(10**30), 10**400, math.nan, math.inf, -math.inf,
    [], {}, [1, "a", None], {"k": "v"}, {"type": "nope"}, (), MB_STRING, *ODD_STRINGS,
]
TAGS = {rule.model_fields["type"].default for rule in RULES}  # discriminator tags: rules[0].TimeWindow...
SAFE_KEY = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_0123456789:-"), min_size=1, max_size=12)
KEY = st.text(st.characters(blacklist_characters=".[]"), max_size=50)  # no path syntax in keys
SHORT_MESSAGE = 2_500  # one broken place gives at most a few errors, each a line or two

# ----------------------------------------------------------------------------- valid examples
EVERY_RULE_POLICY = {
    "coop_id": "research:biolab",
    "governance_domain": "research:biolab:council",
    "description": "every rule type, so every rule's fields get broken",
    "enforcement_mode": "permissive",
    "default_quota": {"cpu_hours_per_month": 100.0, "gpu_hours_per_month": 20.0, "max_concurrent_tasks": 10,
                      "max_priority": "high", "credits_per_month": 1000, "default_max_runtime_s": 3600},
    "member_quotas": {"did:icn:alice": {"cpu_hours_per_month": 20.0, "max_priority": "critical"}},
    "rules": [
        {"type": "DataSovereignty", "name": "gdpr", "region": "eu-central", "tags": ["patient-data"]},
        {"type": "DataSovereignty", "name": "eu-any", "region": ["eu-central", "eu-west"]},
        {"type": "TimeWindow", "name": "nights", "allowed_hours": [22, 23, 0, 1], "allowed_days": [1, 2, 3],
         "priorities": ["low"], "timezone": "Europe/Berlin", "action": "defer"},
        {"type": "MemberPriority", "member": "did:icn:ops", "multiplier": 2.0},
        {"type": "RequireCapability", "capability": "hipaa-compliant", "min_version": "1.0", "tags": ["phi"]},
        {"type": "ExecutorFilter", "whitelist": ["exec-berlin-1"], "blacklist": ["exec-old"]},
        {"type": "RateLimit", "rate": 2.0, "burst": 10, "per": "coop"},
        {"type": "TaskLimits", "max_cpus": 16, "max_gpus": 2, "max_memory_mb": 65536, "max_runtime_s": 86400},
        {"type": "plugin", "name": "max-tags", "uri": "tests.fixtures.rule_plugins:MaxTags",
         "parameters": {"limit": 3, "nested": {"list": [1, 2.5, "x", None, True]}}, "timeout_ms": 50},
        {"type": "expression", "name": "gpu-tagged", "expression": 'task.gpus == 0.0 || "gpu" in task.tags',
         "message": "GPU tasks must carry the 'gpu' tag", "code": "unavailable", "tags": ["gpu"]},
    ],
    "scoring_weights": {"trust": 0.25, "capacity": 0.2, "queue": 0.15, "rtt": 0.15, "data": 0.15, "hints": 0.1},
    "audit": {"one_in": 20, "members": ["did:icn:new"]},
    "quota_whitelist": ["did:icn:emergency"],
    "version": 3,
}
TASK = {"task_id": "job-7f3a", "coop_id": "research:biolab", "member": "did:icn:alice",
        "resources": {"cpus": 2, "gpus": 1, "memory_mb": 4096, "gpu_memory_mb": 1024},
        "priority": "high", "tags": ["gpu", "batch"], "max_runtime_s": 600,
        "hints": {"regions": ["eu-central"], "executors": ["exec-berlin-1"], "data": ["dataset:genomes"]},
        "capabilities": {"cuda": "12.0", "hipaa-compliant": None}, "max_retries": 1, "name": "train"}
EXECUTOR = {"executor_id": "exec-berlin-1", "coop_id": "research:biolab", "node_id": "node-a", "region": "eu-central",
            "capabilities": {"hipaa-compliant": "1.2"}, "trust": 0.9,
            "resources": {"cpus": 16, "gpus": 1, "memory_mb": 65536, "gpu_memory_mb": 40960},
            "price_cpu_hour": 1.0, "price_gpu_hour": 10.0, "rtt_ms": 12.5, "labels": {"rack": "b2"},
            "open_to": ["*"]}
OFFER = {"executor_id": "exec-berlin-1", "queue_depth": 2, "rtt_ms": 14.0,
         "gpu_utilisation_pct": 35.0, "gpu_memory_used_mb": 1024}
REPORT = {"task_id": "job-7f3a", "executor_id": "exec-berlin-1", "coop_id": "research:biolab",
          "member": "did:icn:alice", "started_at": START, "ended_at": START + 60, "cpu_seconds": 120.0,
          "gpu_seconds": 30.0, "cpu_time_s": 57.3, "peak_memory_mb": 512.0, "credits": 2.0,
          "outcome": "failed", "attempt": 2, "error": "Traceback ..."}
QUOTA = {"cpu_hours_per_month": 10.0, "gpu_hours_per_month": 0.0, "max_concurrent_tasks": 3,
         "max_priority": "normal", "credits_per_month": None, "default_max_runtime_s": 3600}

EXAMPLES: dict[str, tuple[type[BaseModel], dict]] = {
    "policy": (CoopPolicy, EVERY_RULE_POLICY),
    "task": (TaskSpec, TASK),
    "executor": (ExecutorSpec, EXECUTOR),
    "offer": (ExecutorOffer, OFFER),
    "report": (UsageReport, REPORT),
    "quota": (MemberQuota, QUOTA),
}


# ----------------------------------------------------------------------------- mutations
Path = tuple  # keys and list indexes from the root


def paths(value: Any, here: Path = ()) -> list[Path]:
    """Every place in a JSON value: the root, each container and each leaf."""
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*here, i))
    return out


def at(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def replaced(data: Any, path: Path, new: Any) -> Any:
    """``data`` with ``new`` at ``path``, copying only the containers on the way (not the values)."""
    if not path:
        return new
    out = copy.copy(data)
    out[path[0]] = replaced(data[path[0]], path[1:], new) if len(path) > 1 else new
    return out


def deleted(data: Any, path: Path) -> Any:
    out = copy.copy(data)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = deleted(data[path[0]], path[1:])
    return out


@st.composite
def mutations(draw, example: dict) -> tuple[Any, Path]:
    """``example`` broken in one place, and that place."""
    path = draw(st.sampled_from(paths(example)))
    node = at(example, path)
    kinds = ["replace", "replace", "replace"]
    if path and isinstance(at(example, path[:-1]), dict):
        kinds.append("delete")
    if isinstance(node, dict):
        kinds += ["extra", "unknown-type"] if "type" in node else ["extra"]
    kind = draw(st.sampled_from(kinds))
    if kind == "replace":
        return replaced(example, path, draw(st.sampled_from(BAD_VALUES) | st.text(max_size=20))), path
    if kind == "delete":
        return deleted(example, path), path
    if kind == "unknown-type":
        return replaced(example, (*path, "type"), draw(st.sampled_from(["Nope", "plugin ", "", "TIMEWINDOW",
                                                                         *ODD_STRINGS[1:5]]))), path
    key = draw(SAFE_KEY.filter(lambda k: k not in node))
    return replaced(example, (*path, key), draw(st.sampled_from(BAD_VALUES))), (*path, key)


# ----------------------------------------------------------------------------- what an error must say
_PART = re.compile(r"\[(\d+)\]|\[key\]|([^.\[]+)")


def components(path: str) -> list:
    return [int(m.group(1)) if m.group(1) else m.group(2) or "[key]" for m in _PART.finditer(path)]


def in_input(path: str, data: Any) -> list:
    """The input path an error's path names: its parts walked through ``data``, discriminator tags dropped.

    Every part must be found in the input, except a last one (a missing field) and ``[key]``.
    """
    parts = components(path)
    walked: list = []
    current = data
    for i, part in enumerate(parts):
        if isinstance(current, dict) and part in TAGS and current.get("type") == part:
            continue  # the rule type the input was read as (``rules[0].TimeWindow``)
        if isinstance(current, list) and isinstance(part, int) and part < len(current):
            walked.append(part)
            current = current[part]
        elif isinstance(current, dict) and any(shown_key(k) == part for k in current):
            key = next(k for k in current if shown_key(k) == part)
            walked.append(key)
            current = current[key]
        else:
            assert i == len(parts) - 1 or parts[i + 1:] == ["[key]"], (
                f"{path!r} names {part!r}, which is not in the input")
            walked.append(part)
            break
    return walked


def related(a: list, b: Path) -> bool:
    n = min(len(a), len(b))
    return list(a[:n]) == list(b[:n])


def assert_says_how_to_fix(exc: InvalidRequest, data: Any, broken: Path | None = None) -> None:
    """Every error names a path of ``data`` (one of them the ``broken`` place), what it received and accepts."""
    message = str(exc)
    assert exc.errors and "received" in message and "accepted" in message, message
    assert len(message) < SHORT_MESSAGE, f"{len(message)} characters: {message[:300]}"
    json.dumps(exc.errors)  # plain strings: the error travels anywhere
    try:  # a string is read as JSON text
        structure = json.loads(data) if isinstance(data, (str, bytes)) else data
    except ValueError:
        assert [e.path for e in exc.errors] == [""], message  # not JSON: the whole input is wrong
        return
    named = [in_input(e.path, structure) for e in exc.errors]
    if broken is not None:
        assert any(related(n, broken) for n in named), f"broke {broken}, errors name {named}: {message}"


def check(model: type[BaseModel], data: Any, broken: Path | None = None) -> BaseModel | None:
    """``parse`` gives a valid model (None: an ``InvalidRequest`` that says where and how to fix it)."""
    try:
        result = parse(model, data)
    except InvalidRequest as exc:
        assert_says_how_to_fix(exc, data, broken)
        return None
    assert isinstance(result, model)
    text = result.model_dump_json()  # a valid model is storable and reads back as itself
    assert parse(model, text) == result
    return result
