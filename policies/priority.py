"""Task priority levels.

Priorities are names in JSON (``"low"``, ``"normal"``, ``"high"``, ``"critical"``) and
ordered by ``rank``. The queue orders by an *effective* priority: ``rank`` times the
member's multipliers (see ``policies.rules.MemberPriority``).
"""

from __future__ import annotations

from enum import Enum


class Priority(str, Enum):
    """How urgent a task is; ``max_priority`` in a quota caps what a member may ask for."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank >= other.rank


_RANK = {Priority.LOW: 1, Priority.NORMAL: 2, Priority.HIGH: 3, Priority.CRITICAL: 4}
