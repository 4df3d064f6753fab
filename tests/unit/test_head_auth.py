"""The head's request gate without Ray: @guarded on a small stand-in head, a key registry in a list."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from scheduler.head_auth import AccessRefused, AuthSettings, RequestGate, guarded
from scheduler.identity import Principal, generate_key, public_key_b64, sign_request

NOW = 1_795_000_000.0
OPERATOR, ADMIN, ALICE = generate_key(), generate_key(), generate_key()


class Store:
    shared = False  # one head's store, like SQLite

    def __init__(self, keys=()):
        self._keys = list(keys)

    def keys(self):
        return list(self._keys)


def principal(key, role, coop, subject) -> dict:
    return {"public_key": public_key_b64(key), "role": role, "coop_id": coop, "subject": subject}


class Facts:
    def job_owner(self, task_id):
        return {"ja": ("c", "alice"), "jb": ("c", "bob")}.get(task_id)

    def executor_coop(self, executor_id):
        return None

    def key_owner(self, key_id):
        return None


class StandIn:
    """Just enough of a head: a gate, facts, and guarded methods that record what they were called with."""

    def __init__(self, mode: str, store: Store, refused: list):
        settings = AuthSettings(mode=mode, operator_key=public_key_b64(OPERATOR) if mode == "signed" else None)
        self.now = NOW  # the head starts at NOW; requests come later
        self.gate = RequestGate(settings, store, on_refused=refused.append, clock=lambda: self.now)
        self.now = NOW + 2
        self.facts = Facts()

    @guarded
    async def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None) -> list:
        return [{"coop_id": coop_id, "member": member}]

    @guarded
    async def set_policy(self, policy: dict, author: str = "admin", note: str = "") -> dict:
        return {"author": author, "coop_id": policy["coop_id"]}


def call(head, method, *args, key=None, envelope=None, **kwargs):
    if key is not None:
        envelope = sign_request(key, method, args, kwargs, now=head.now)
    return asyncio.run(getattr(head, method)(*args, _request={"signed": envelope}, **kwargs))


def test_the_wrapper_shows_the_request_argument_to_ray():
    params = inspect.signature(StandIn.set_policy).parameters
    assert list(params)[-1] == "_request" and not hasattr(StandIn.set_policy, "__wrapped__")


def test_dev_mode_answers_everything_and_says_so():
    head = StandIn("dev", Store(), [])
    assert call(head, "jobs", "c", None) == {"ok": [{"coop_id": "c", "member": None}], "dev_mode": True}
    assert asyncio.run(head.jobs("c")) == [{"coop_id": "c", "member": None}]  # a bare handle call: the bare value


def test_signed_mode_verifies_narrows_and_names_the_author():
    refused: list = []
    head = StandIn("signed", Store([principal(ADMIN, "admin", "c", "ann"), principal(ALICE, "member", "c", "alice")]),
                   refused)
    assert call(head, "jobs", None, None, key=ALICE)["ok"] == [{"coop_id": "c", "member": "alice"}]
    assert call(head, "set_policy", {"coop_id": "c"}, key=ADMIN)["ok"] == {"author": "admin:ann", "coop_id": "c"}
    assert call(head, "set_policy", {"coop_id": "other"}, key=ADMIN)["refused"]["code"] == "forbidden"
    assert call(head, "set_policy", {"coop_id": "c"}, key=ALICE)["refused"]["code"] == "forbidden"
    assert call(head, "jobs", None, None)["refused"]["code"] == "unsigned"
    with pytest.raises(AccessRefused, match="unsigned"):
        asyncio.run(head.jobs("c"))
    assert refused == ["forbidden", "forbidden", "unsigned", "unsigned"]


def test_a_key_another_replica_added_is_found_in_the_store():
    store = Store()
    head = StandIn("signed", store, [])
    store._keys.append(principal(ALICE, "member", "c", "alice"))
    assert "ok" in call(head, "jobs", None, None, key=ALICE)


def test_auth_settings_name_what_is_missing():
    with pytest.raises(ValueError, match="operator"):
        AuthSettings(mode="signed")
    with pytest.raises(ValueError, match="mode"):
        AuthSettings(mode="open")
    assert Principal.model_validate(principal(ALICE, "member", "c", "alice")).subject == "alice"
