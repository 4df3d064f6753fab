"""Capability versions as sortable numbers, so the executor table can compare them with numpy."""

from __future__ import annotations

import re

_PART = re.compile(r"\d+")
ABSENT = -1.0
"""The version key of a capability an executor does not have."""


def version_key(version: str | None) -> float:
    """``"2.1.3"`` -> 2_001_003.0; up to three numeric parts, each capped at 999.

    ``None`` or ``""`` (any version) is 0.0, which every present capability satisfies.
    """
    if not version:
        return 0.0
    parts = [min(int(p), 999) for p in _PART.findall(version)[:3]]
    parts += [0] * (3 - len(parts))
    return float(parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2])


def is_version(text: str) -> bool:
    return bool(_PART.match(text.strip().lstrip("vV")))
