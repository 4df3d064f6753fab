"""Rate-limit token buckets kept in a shared store, so head replicas spend a member's tokens together.

``policies.rules.RateBuckets`` keeps each head's buckets in its memory: with two replicas on one Redis, a
member sending to both would get twice the rate its coop's ``RateLimit`` allows. On a shared store
(``StateStore.shared``) the head gives its core these buckets instead: each one is a Redis hash, read
(``available``) and spent (``take``) by one Lua script each, on the Redis server's clock, so every replica
refills a bucket by the same time (the caller's ``now`` is not used).

Admission checks a bucket, then spends a token once it has admitted the task (as with one head). Two
replicas checking one member's last token at the same moment may both admit: the bucket then stays at 0
(no debt), so a burst can pass by at most one task per replica racing for it, never the rate over time. A
store that fails a read fails the rule's check (an ``error`` reason: a strict policy refuses the task); one
that fails a take leaves the task admitted (counted as the rule's error), as a failing rule reserve does.

No Redis import here: the store's ``rate_tokens`` and ``take_rate_token`` (``scheduler.redis_store``) do the
talking.
"""

from __future__ import annotations

import json
import math
from typing import Any

from policies.rules import RateBuckets

MAX_IDLE_S = 366 * 86400  # the longest an idle bucket is kept: a bucket slower than that to refill starts full


class StoreRateBuckets(RateBuckets):
    """``RateBuckets`` over a store that implements ``rate_tokens(name, rate, burst)`` and
    ``take_rate_token(name, rate, burst, keep_s)``."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    def available(self, key: tuple, rate: float, burst: float, now: float) -> float:
        return self.store.rate_tokens(bucket_name(key), rate, burst)

    def take(self, key: tuple, rate: float, burst: float, now: float) -> None:
        # kept until it would be full again (and a minute more), then gone: a bucket not seen is full
        keep_s = min(MAX_IDLE_S, math.ceil(burst / rate) + 60)
        self.store.take_rate_token(bucket_name(key), rate, burst, keep_s)


def bucket_name(key: tuple) -> str:
    """A bucket's key (rule label, rate, burst, per; coop; member or "*") as one string."""
    return json.dumps(list(key), separators=(",", ":"), default=str)
