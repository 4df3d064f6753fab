"""Plain counters the core keeps; the Ray head exports them to Prometheus."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CoreCounters:
    submitted: Counter = field(default_factory=Counter)          # coop
    admitted: Counter = field(default_factory=Counter)           # coop
    rejected: Counter = field(default_factory=Counter)           # coop
    violations: Counter = field(default_factory=Counter)         # (coop, rule, mode)
    quota_exceeded: Counter = field(default_factory=Counter)     # (coop, quota kind)
    completed: Counter = field(default_factory=Counter)          # (coop, outcome)
    retried: Counter = field(default_factory=Counter)            # coop
    preempted: Counter = field(default_factory=Counter)          # (coop, cause): attempts stopped to make room
    gave_up: Counter = field(default_factory=Counter)            # coop: failed after every attempt was lost
    refused_reports: Counter = field(default_factory=Counter)    # why
    withdrawn: Counter = field(default_factory=Counter)          # coop: decisions taken back (another replica's won)
    member_completed: Counter = field(default_factory=Counter)   # (coop, member)
    member_credits: Counter = field(default_factory=Counter)     # (coop, member)
