"""Forgetting a damaged job record through a head on Redis: its reservation is released off the member's month,
what the head held on executors for it is free, and a head started afterwards finds nothing of it (no damaged
job to hold for, none in a listing). The heads are the real ``Head`` class on an asyncio loop (worker handles
stand in, as in tests/unit/test_head_recovery_held_capacity.py); only the Redis server is real infrastructure
(the session's, tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from scheduler.ledger import Cost, period_of
from tests.integration.test_redis_damaged_job_without_a_state_index import placed_then_damaged, redis_head
from tests.unit.test_head_interleavings import COOP, no_ray_started  # noqa: F401
from tests.unit.test_head_recovery_held_capacity import Worker

pytestmark = pytest.mark.integration


def test_a_damaged_job_forgotten_on_redis_releases_its_reservation_and_leaves_nothing_a_restart_holds(redis_server):
    url = redis_server.url
    raw = redis.Redis.from_url(url)
    raw.flushdb()

    store = placed_then_damaged(url, raw)
    store.close()

    async def forgotten():
        head = await redis_head(url, {"e1": Worker("e1")})  # it ended while no head ran
        held = head.core.held_where("run"), head.store.standing(COOP, "alice", period_of(time.time()))[1]
        answer = await head.forget_damaged_job("run")
        left = head.core.held_where("run"), head.store.standing(COOP, "alice", period_of(time.time()))[1]
        head.store.close()
        return held, answer, left

    (held, reserved), answer, (held_after, reserved_after) = asyncio.run(forgotten())
    assert held == ["e1"] and reserved.cpu > 0
    assert (answer["forgotten"], answer["coop_id"], answer["member"], answer["state"]) == (True, COOP, "alice",
                                                                                           "running")
    assert answer["holds_released"] == ["e1"] and answer["payload_deleted"]
    assert (held_after, reserved_after) == ([], Cost())

    async def restarted():
        head = await redis_head(url, {"e1": Worker("e1")})
        found = head.recovered["damaged"], head.core.held_where("run"), await head.jobs(COOP), \
            await head.status("run")
        head.store.close()
        return found

    assert asyncio.run(restarted()) == (0, [], [], None)
    raw.flushdb()
    raw.close()
