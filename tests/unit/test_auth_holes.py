"""Holes a security review found in the signed head, each closed: another coop's key taken over by a
trailing newline, another coop's audit records reached through a shared session id, another member's
job id reused, a revoked key brought back by a registry reload that read before the removal.

The real ``Head`` class on an asyncio loop with a memory store, every call signed (see test_signed_head)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from policies.validation import InvalidRequest
from scheduler.identity import generate_key, key_id_of, sign_request
from scheduler.state_store import AuditRecord
from tests.unit.test_signed_head import A, ADMIN_A, ADMIN_B, ALICE, B, call, make_head, pub, spec, task

SHARED_SESSION = "coop:a/secret/zoe"  # coop "coop:a" + member "secret/zoe", and coop "coop:a/secret" + "zoe"


def test_an_admin_cannot_take_over_another_coops_key_by_adding_it_with_a_trailing_newline():
    async def main():
        h = await make_head()
        answer = await call(h, ADMIN_B, "add_key", {"public_key": pub(ADMIN_A) + "\n", "role": "member",
                                                    "coop_id": B, "subject": "mallory"})
        assert "refused" in answer, answer
        assert "ok" in await call(h, ADMIN_A, "get_policy", A)  # still coop A's admin
    asyncio.run(main())


def test_registering_an_executor_cannot_take_over_a_key_given_with_a_trailing_newline():
    async def main():
        h = await make_head()
        answer = await call(h, ADMIN_B, "register_executor", spec("eb", B), public_key=pub(ADMIN_A) + "\n")
        assert "refused" in answer, answer
        assert "ok" in await call(h, ADMIN_A, "get_policy", A)
    asyncio.run(main())


def _record(seq: int, coop: str, member: str) -> AuditRecord:
    return AuditRecord(session_id=SHARED_SESSION, seq_no=seq, timestamp=time.time() + seq, coop_id=coop,
                       member=member, task={"task_id": f"t{seq}"}, result={"state": "succeeded"}, usage={})


async def _shared_session_head():
    h = await make_head()
    h.store.put_audit(_record(0, "coop:a/secret", "zoe"))  # another coop's record
    h.store.put_audit(_record(1, "coop:a", "secret/zoe"))  # coop A's own, the latest
    h.store.put_audit(_record(2, "coop:a/secret", "zoe"))  # the other coop's again, now the latest
    return h


@pytest.mark.parametrize("seq_no", [0, None], ids=["one record", "the whole session"])
def test_an_admin_deletes_only_its_own_coops_records_of_a_session_id_two_coops_share(seq_no):
    async def main():
        h = await _shared_session_head()
        deleted = await call(h, ADMIN_A, "audit", "delete", SHARED_SESSION, seq_no)
        assert deleted == {"ok": 0 if seq_no == 0 else 1, "dev_mode": False}
        assert h.store.get_audit(SHARED_SESSION, 0) is not None
        assert h.store.get_audit(SHARED_SESSION, 2) is not None
        assert (h.store.get_audit(SHARED_SESSION, 1) is None) == (seq_no is None)
    asyncio.run(main())


def test_an_admin_sees_its_own_latest_and_listed_records_of_a_shared_session_id():
    async def main():
        h = await _shared_session_head()
        latest = await call(h, ADMIN_A, "audit", "latest", SHARED_SESSION)
        assert latest["ok"]["seq_no"] == 1 and latest["ok"]["coop_id"] == "coop:a"
        listed = await call(h, ADMIN_A, "audit", "list", SHARED_SESSION, limit=1)
        assert [r["seq_no"] for r in listed["ok"]] == [1]  # the limit counts the caller's records
    asyncio.run(main())


def test_a_task_id_of_another_members_job_is_refused_and_tells_nothing_of_that_job():
    async def main():
        h = await make_head()
        mallory = generate_key()
        assert "ok" in await call(h, ADMIN_B, "add_key", {"public_key": pub(mallory), "role": "member",
                                                          "coop_id": B, "subject": "mallory"})
        first = await call(h, ALICE, "submit", task("nightly-report", resources={"cpus": 64}))
        assert first["ok"]["coop_id"] == A
        with pytest.raises(InvalidRequest) as err:
            await call(h, mallory, "submit", task("nightly-report", coop_id=B, member="mallory"))
        assert "task_id" in str(err.value) and A not in str(err.value) and "alice" not in str(err.value)
        again = await call(h, ALICE, "submit", task("nightly-report", resources={"cpus": 64}))
        assert again["ok"] == first["ok"]  # its own member's resubmission still answers the first decision
        assert h.core.forget("nightly-report")  # the store's record answers now (a job the core let go)
        with pytest.raises(InvalidRequest):
            await call(h, mallory, "submit", task("nightly-report", coop_id=B, member="mallory"))
        assert (await call(h, ALICE, "submit", task("nightly-report", resources={"cpus": 64})))["ok"] == first["ok"]
    asyncio.run(main())


def test_a_key_removed_while_the_registry_is_being_reloaded_stays_removed():
    async def main():
        h = await make_head()
        alice_id = key_id_of(pub(ALICE))
        read, removed = threading.Event(), threading.Event()
        original = h.store.keys

        def slow_keys():  # the reads thread has read the registry, then is descheduled
            records = original()
            read.set()
            removed.wait(10)
            return records

        h.store.keys = slow_keys
        h.gate._loaded_at = float("-inf")
        envelope = sign_request(generate_key(), "ping", (), {}, now=time.time())  # an unknown key: a reload
        loop = asyncio.get_running_loop()
        verifying = loop.run_in_executor(None, lambda: h.gate._verify("ping", (), {}, envelope))
        assert await loop.run_in_executor(None, read.wait, 10)  # the reload read the registry
        h.store.keys = original
        assert await call(h, ADMIN_A, "remove_key", alice_id) == {"ok": True, "dev_mode": False}
        removed.set()
        await verifying
        assert h.gate.verifier.get(alice_id) is None, "the revoked key is back in the verifier"
        assert "refused" in await call(h, ALICE, "get_policy", A)
    asyncio.run(main())


def test_removing_an_executor_leaves_another_coops_executor_key_of_the_same_id():
    async def main():
        h = await make_head()
        mine, theirs = generate_key(), generate_key()
        assert "ok" in await call(h, ADMIN_A, "add_key", {"public_key": pub(mine), "role": "executor",
                                                          "coop_id": A, "subject": "shared-name"})
        assert "ok" in await call(h, ADMIN_B, "register_executor", spec("shared-name", B), public_key=pub(theirs))
        h._worker = lambda executor_id: None  # no worker actor to stop (and no Ray to ask: a unit test)
        assert "ok" in await call(h, ADMIN_B, "remove_executor", "shared-name")
        assert h.gate.verifier.get(key_id_of(pub(theirs))) is None  # its own key goes with it
        assert h.gate.verifier.get(key_id_of(pub(mine))) is not None  # coop A's stays
    asyncio.run(main())


def test_a_key_removed_while_a_reload_applies_its_read_stays_removed(monkeypatch):
    """The reload applies its read under the gate's lock; a removal on the main loop now takes that lock too,
    so it lands before the read (and the reload reads again) or after the apply, never in between."""
    from scheduler import head_auth
    from scheduler.identity import Principal

    async def main():
        h = await make_head()
        alice_id = key_id_of(pub(ALICE))
        applying = threading.Event()

        class HookedPrincipal(Principal):
            @classmethod
            def model_validate(cls, record, *a, **kw):
                p = Principal.model_validate(record, *a, **kw)
                if p.key_id == alice_id and not applying.is_set():  # the reads thread, inside _apply_keys
                    applying.set()
                    time.sleep(1.0)  # the removal below is made meanwhile
                return p

        monkeypatch.setattr(head_auth, "Principal", HookedPrincipal)
        loop = asyncio.get_running_loop()
        reloading = loop.run_in_executor(None, h.gate._load_keys)
        assert await loop.run_in_executor(None, applying.wait, 10)  # the reload is applying its read
        # what remove_key does once its request is verified (a request verified before the reload began
        # reaches this while the reload runs): the store first, then the gate's memory
        h.store.remove_key(alice_id)
        h.gate.remove_principal(alice_id)  # waits for the reload's apply, then removes
        await reloading
        monkeypatch.setattr(head_auth, "Principal", Principal)
        assert h.gate.verifier.get(alice_id) is None, "the revoked key is back in the verifier"
        assert "refused" in await call(h, ALICE, "get_policy", A)
    asyncio.run(main())


def test_registering_an_executor_with_a_new_key_revokes_its_old_one():
    """A rotation: the old key (perhaps the reason for rotating) must stop signing heartbeats and reports."""
    async def main():
        h = await make_head()
        old, new = generate_key(), generate_key()
        assert "ok" in await call(h, ADMIN_A, "register_executor", spec("rotating", A), public_key=pub(old))
        assert "ok" in await call(h, ADMIN_A, "register_executor", spec("rotating", A), public_key=pub(new))
        assert h.gate.verifier.get(key_id_of(pub(old))) is None
        assert h.gate.verifier.get(key_id_of(pub(new))) is not None
        assert "ok" in await call(h, ADMIN_A, "register_executor", spec("rotating", A), public_key=pub(new))
        assert h.gate.verifier.get(key_id_of(pub(new))) is not None  # the same key again: kept
    asyncio.run(main())
