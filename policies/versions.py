"""Capability versions as sortable numbers, so the executor table can compare them with numpy."""

from __future__ import annotations

import re

_PART = re.compile(r"\d+")
_RELEASE = re.compile(r"\s*[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)", re.S)
_PRE_RELEASE = re.compile(r"[-_.]?[A-Za-z]")  # 2.0-rc1, 2.0rc1, 2.0.dev3, 2.0-beta: below 2.0
_BASE = 100_000
ABSENT = -1.0
"""The version key of a capability an executor does not have."""


def version_key(version: str | None) -> float:
    """``"2.1.3"`` -> 2.1.3 as one number: up to three numeric parts, each capped at 99,999 (so
    calendar versions such as ``2021.10`` compare as they should), exact in a float.

    A pre-release (``2.0-rc1``, ``2.0b2``, ``2.0.dev3``) sorts just below its release, so it does not
    satisfy a ``min_version`` of ``2.0``; build metadata (``2.0+cuda``) is ignored, as in SemVer.
    ``None`` or ``""`` (any version) is 0.0, which every present capability satisfies.
    """
    if not version:
        return 0.0
    match = _RELEASE.match(version)
    if match is None:  # (validators accept only text starting with a number)
        parts = [min(int(p), _BASE - 1) for p in _PART.findall(version)[:3]] + [0, 0, 0]
        return float((parts[0] * _BASE + parts[1]) * _BASE + parts[2])
    major, minor, patch, rest = match.groups()
    a, b, c = (min(int(p or 0), _BASE - 1) for p in (major, minor, patch))
    key = float((a * _BASE + b) * _BASE + c)
    return key - 0.5 if rest and _PRE_RELEASE.match(rest) else key


def is_version(text: str) -> bool:
    return bool(_PART.match(text.strip().lstrip("vV")))
