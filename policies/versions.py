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


_FOURTH_PART = re.compile(r"\.\d")


def is_version(text: str) -> bool:
    """An executor's capability version: any text ``version_key`` reads (it starts with a number).

    Beyond three parts or 99,999 a part saturates, which keeps every comparison with a valid
    ``min_version`` (``is_min_version``) right: a build ``20240115`` is above any minimum there can
    be, and ``12.2.0.1`` satisfies ``12.2`` and not ``12.3``. (Stores written by earlier releases
    hold such versions: they must still load.)"""
    return bool(_PART.match(text.strip().lstrip("vV")))


def is_min_version(text: str) -> bool:
    """A ``min_version``: up to three numeric parts of at most 99,999, so that ``version_key`` orders
    it exactly (``20250101`` would equal ``20240101``). A pre-release is accepted and sorts below its
    release; its number is not compared (``2.0-rc1`` equals ``2.0-rc2``)."""
    match = _RELEASE.match(text)
    if match is None or not _PART.match(text.strip().lstrip("vV")):
        return False
    major, minor, patch, rest = match.groups()
    if any(int(p) >= _BASE for p in (major, minor, patch) if p):
        return False
    return not _FOURTH_PART.match(rest)
