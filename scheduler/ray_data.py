"""Data locality from Ray: the share of a task's ObjectRef bytes already on each node."""

from __future__ import annotations

import logging

import ray

log = logging.getLogger("coopsched.head")


class RayDataLocator:
    """``DataLocator`` over ObjectRefs the head was handed with tasks (keyed by their hex id).

    Each admitted task holds its refs from ``remember`` until ``release`` (it finished, whichever way);
    a ref named by several tasks stays until the last of them releases it."""

    def __init__(self) -> None:
        self._refs: dict[str, ray.ObjectRef] = {}
        self._holders: dict[str, int] = {}  # key -> tasks holding it
        self._held: dict[str, tuple[str, ...]] = {}  # task id -> its keys

    @staticmethod
    def keys_of(refs: list) -> list[str]:
        return [ref.hex() for ref in refs]

    def remember(self, task_id: str, refs: list[ray.ObjectRef]) -> None:
        if task_id in self._held:
            return
        keys = tuple(dict.fromkeys(ref.hex() for ref in refs))
        by_key = {ref.hex(): ref for ref in refs}
        for key in keys:
            self._refs.setdefault(key, by_key[key])
            self._holders[key] = self._holders.get(key, 0) + 1
        self._held[task_id] = keys

    def release(self, task_id: str) -> None:
        for key in self._held.pop(task_id, ()):
            left = self._holders.get(key, 1) - 1
            if left <= 0:
                self._holders.pop(key, None)
                self._refs.pop(key, None)
            else:
                self._holders[key] = left

    def holders(self) -> list[str]:
        """The tasks holding refs now."""
        return list(self._held)

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
