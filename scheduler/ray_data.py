"""Data locality from Ray: the share of a task's ObjectRef bytes already on each node."""

from __future__ import annotations

import logging

import ray

log = logging.getLogger("coopsched.head")


class RayDataLocator:
    """``DataLocator`` over ObjectRefs the head was handed with tasks (keyed by their hex id)."""

    def __init__(self) -> None:
        self._refs: dict[str, ray.ObjectRef] = {}

    def remember(self, refs: list[ray.ObjectRef]) -> list[str]:
        keys = []
        for ref in refs:
            key = ref.hex()
            self._refs[key] = ref
            keys.append(key)
        return keys

    def forget(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._refs.pop(key, None)

    def fractions(self, keys: tuple[str, ...]) -> dict[str, float]:
        refs = [self._refs[k] for k in keys if k in self._refs]
        if not refs:
            return {}
        try:
            locations = ray.experimental.get_object_locations(refs, timeout_ms=200)
        except Exception as exc:  # locality is a preference: never fail placement over it
            log.warning("object locations unavailable: %s", exc)
            return {}
        total = 0
        local: dict[str, int] = {}
        for info in locations.values():
            size = int(info.get("object_size") or 0)
            total += size
            for node in info.get("node_ids", ()):
                local[node] = local.get(node, 0) + size
        if total <= 0:
            return {}
        return {node: held / total for node, held in local.items()}
