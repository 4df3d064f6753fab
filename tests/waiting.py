"""Waiting for a real cluster to get somewhere, with a deadline and a message that says where it got stuck."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], limit_s: float = 60.0, what: str = "condition", every_s: float = 0.1):
    """The first truthy value of ``predicate()``; AssertionError after ``limit_s``."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


def wait_state(handle, state: str, limit_s: float = 30.0):
    """The job's status once it is in ``state``."""
    return wait_for(lambda: (s := handle.status()).state.value == state and s, limit_s,
                    f"job {handle.id} to be {state} (it is {handle.status().state.value})", every_s=0.05)


def settled(client, coop_id: str, member: str, limit_s: float = 15.0):
    """The member's usage once nothing of theirs runs or holds a reservation."""
    return wait_for(lambda: (u := client.usage(coop_id, member)).running == 0 and u.reserved_cpu_hours == 0 and u,
                    limit_s, f"the usage of {member} to settle", every_s=0.05)
