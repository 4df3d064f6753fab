"""Where a task's input data already lives, as a fraction of its bytes per node.

The core asks a ``DataLocator``; ``DataCatalog`` is the plain in-memory one used by the
simulator and tests. The Ray runtime supplies one that asks Ray where objects are.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol


class DataLocator(Protocol):
    def fractions(self, keys: tuple[str, ...]) -> dict[str, float]:
        """node_id -> fraction (0..1) of the bytes behind ``keys`` already on that node."""
        ...


class DataCatalog:
    """Known copies of named data: key -> {node_id: size in bytes}."""

    def __init__(self) -> None:
        self._copies: dict[str, dict[str, int]] = defaultdict(dict)

    def register(self, key: str, node_id: str, size_bytes: int) -> None:
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        self._copies[key][node_id] = size_bytes

    def forget(self, key: str, node_id: str | None = None) -> None:
        if node_id is None:
            self._copies.pop(key, None)
        else:
            self._copies.get(key, {}).pop(node_id, None)

    def fractions(self, keys: tuple[str, ...]) -> dict[str, float]:
        total = 0
        local: dict[str, int] = defaultdict(int)
        for key in dict.fromkeys(keys):  # a key named twice is still its bytes once
            copies = self._copies.get(key)
            if not copies:
                continue
            size = max(copies.values())
            total += size
            for node, held in copies.items():
                local[node] += min(held, size)
        if total <= 0:
            return {}
        return {node: held / total for node, held in local.items()}
