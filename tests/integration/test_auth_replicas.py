"""Two head replicas' request gates on one real Redis store (no Ray): what one accepted, the other
refuses as a replay; a key removed through one is refused by the other within KEY_REFRESH_S."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.head_auth import KEY_REFRESH_S, AuthSettings, RequestGate, guarded
from scheduler.identity import Principal, Role, generate_key, public_key_b64, sign_request
from scheduler.state_store import open_store

pytestmark = pytest.mark.integration

OPERATOR, ALICE = generate_key(), generate_key()
START = 1_795_000_000.0


class Replica:
    """The gate of one head replica over a shared store, with a clock the test moves."""

    def __init__(self, store, refused: list[str]) -> None:
        self.now = START
        self.gate = RequestGate(AuthSettings(mode="signed", operator_key=public_key_b64(OPERATOR)), store,
                                on_refused=refused.append, clock=lambda: self.now)
        self.now = START + 1
        self.facts = None

    @guarded
    async def ping(self) -> str:
        return "pong"


def ping(replica: Replica, envelope: dict) -> dict:
    return asyncio.run(replica.ping(_request={"signed": envelope}))


@pytest.fixture
def store(redis_server):
    import redis
    redis.Redis.from_url(redis_server.url).flushdb()
    s = open_store(redis_server.url)
    yield s
    s.close()


def test_a_request_accepted_by_one_replica_is_a_replay_to_the_other(store):
    refused: list[str] = []
    a, b = Replica(store, refused), Replica(store, refused)
    envelope = sign_request(OPERATOR, "ping", (), {}, now=a.now)

    assert ping(a, envelope) == {"ok": "pong", "dev_mode": False}
    answer = ping(b, envelope)

    assert answer["refused"]["code"] == "replayed" and "another head replica" in answer["refused"]["message"]
    assert ping(a, envelope)["refused"]["code"] == "replayed"  # and to the first, by its own cache
    assert refused == ["replayed", "replayed"]
    assert "ok" in ping(b, sign_request(OPERATOR, "ping", (), {}, now=b.now))  # a fresh request passes


def test_a_key_removed_through_one_replica_is_refused_by_the_other(store):
    alice = Principal(public_key=public_key_b64(ALICE), role=Role.MEMBER, coop_id="c", subject="alice")
    store.put_key(alice.key_id, alice.model_dump(mode="json"))
    refused: list[str] = []
    b = Replica(store, refused)
    assert "ok" in ping(b, sign_request(ALICE, "ping", (), {}, now=b.now))

    store.remove_key(alice.key_id)  # what another replica's remove_key does
    b.now += KEY_REFRESH_S + 0.5
    answer = ping(b, sign_request(ALICE, "ping", (), {}, now=b.now))

    assert answer["refused"]["code"] == "unknown_key"
    assert "ok" in ping(b, sign_request(OPERATOR, "ping", (), {}, now=b.now))  # the operator's key stays
