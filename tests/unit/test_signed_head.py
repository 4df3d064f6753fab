"""The head in signed mode, against callers who overstep: admins of one coop reaching into another,
keys taken over, crafted objects, malformed calls.

The ``Head`` is the real class (not its Ray actor) on an asyncio loop with a memory store, every call
signed as a client would sign it; no Ray cluster is needed (the worker handle is a stand-in). The same
gate on Ray is tested in tests/integration/test_auth.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from policies.validation import InvalidRequest
from scheduler.authorization import authorize
from scheduler.head import Head
from scheduler.identity import Principal, generate_key, public_key_b64, sign_request
from scheduler.state_store import AuditRecord
from scheduler.tasks import Resources, TaskSpec
from tests.unit.test_head_interleavings import FakeWorker

OPERATOR, ADMIN_A, ADMIN_B, ALICE, EXEC_A, EXEC_B = (generate_key() for _ in range(6))
A, B = "coop:a", "coop:b"
_stores = itertools.count()


def pub(key) -> str:
    return public_key_b64(key)


async def call(head: Head, key, method: str, *args, **kwargs):
    envelope = sign_request(key, method, args, kwargs, now=time.time())
    return await getattr(head, method)(*args, _request={"signed": envelope}, **kwargs)


def spec(executor_id: str, coop: str, **kw) -> dict:
    return {"executor_id": executor_id, "coop_id": coop, "region": "us-west", "node_id": "n1",
            "resources": {"cpus": 4}, **kw}


def task(task_id: str, **kw) -> dict:
    return {"task_id": task_id, "coop_id": A, "member": "alice", "resources": {"cpus": 1}, "max_runtime_s": 60, **kw}


async def make_head() -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=f"memory://signed-head-{next(_stores)}",
                        auth={"mode": "signed", "operator_key": pub(OPERATOR)})
    head._watchdog = object()
    head.gate.verifier._forgotten_until = 0  # requests are signed right after the head starts
    for coop, admin, name in ((A, ADMIN_A, "ann"), (B, ADMIN_B, "bea")):
        assert "ok" in await call(head, OPERATOR, "add_key", {"public_key": pub(admin), "role": "admin",
                                                               "coop_id": coop, "subject": name})
        assert "ok" in await call(head, OPERATOR, "set_policy", {"coop_id": coop, "default_quota": {
            "cpu_hours_per_month": 1000, "max_concurrent_tasks": 100}})
    assert "ok" in await call(head, ADMIN_A, "add_key", {"public_key": pub(ALICE), "role": "member", "coop_id": A,
                                                          "subject": "alice"})
    assert "ok" in await call(head, ADMIN_A, "register_executor", spec("ea", A), public_key=pub(EXEC_A))
    head._workers["ea"] = FakeWorker("ea")
    return head


def run(test):
    asyncio.run(test())


def test_an_admin_cannot_take_over_another_coops_executor_by_registering_its_id():
    async def main():
        h = await make_head()
        answer = await call(h, ADMIN_B, "register_executor", spec("ea", B), public_key=pub(EXEC_B))
        assert "refused" in answer and "registered to coop 'coop:a'" in answer["refused"]["message"]
        assert h.core.table.spec("ea").coop_id == A
    run(main)


def test_an_executor_key_speaks_only_for_an_executor_of_its_own_coop():
    class Facts:
        def executor_coop(self, executor_id):
            return {"ea": A}.get(executor_id)

    forged = Principal(public_key=pub(EXEC_B), role="executor", coop_id=B, subject="ea")
    for method, field in (("heartbeat", "offer"), ("report", "report")):
        assert authorize(forged, method, {field: {"executor_id": "ea"}}, Facts()) is not None

    async def main():
        h = await make_head()
        answer = await call(h, ADMIN_B, "add_key", {"public_key": pub(EXEC_B), "role": "executor",
                                                    "coop_id": B, "subject": "ea"})
        assert "refused" in answer and "executor of coop 'coop:a'" in answer["refused"]["message"]
    run(main)


@pytest.mark.parametrize("whose", ["another coop's admin", "the operator"])
def test_an_admin_cannot_register_a_key_that_is_already_someone_elses(whose):
    key = ADMIN_A if whose == "another coop's admin" else OPERATOR

    async def main():
        h = await make_head()
        answer = await call(h, ADMIN_B, "add_key", {"public_key": pub(key), "role": "member", "coop_id": B,
                                                    "subject": "mallory"})
        assert "refused" in answer
        assert "ok" in await call(h, key, "get_policy", A)  # still who they were
        assert "ok" in await call(h, OPERATOR, "set_policy", {"coop_id": A})
    run(main)


def test_an_admin_reads_and_deletes_only_its_coops_audit_records_whatever_the_session_id():
    async def main():
        h = await make_head()
        h.store.put_audit(AuditRecord(session_id="coop:a/secret/zoe", seq_no=0, timestamp=time.time(),
                                      coop_id="coop:a/secret", member="zoe", task={"task_id": "t"},
                                      result={"state": "succeeded"}, usage={}))
        assert (await call(h, ADMIN_A, "audit", "latest", "coop:a/secret/zoe"))["ok"] is None
        assert (await call(h, ADMIN_A, "audit", "list", "coop:a/secret/zoe"))["ok"] == []
        await call(h, ADMIN_A, "audit", "delete", "coop:a/secret/zoe")
        assert h.store.latest_audit("coop:a/secret/zoe") is not None
    run(main)


def test_a_task_spec_made_without_validation_is_validated_at_the_head():
    crafted = TaskSpec.model_construct(task_id="neg", coop_id=A, member="alice", max_runtime_s=3600.0,
                                       resources=Resources.model_construct(cpus=-1000.0, gpus=0.0, memory_mb=0,
                                                                           gpu_memory_mb=0))

    async def main():
        h = await make_head()
        with pytest.raises(InvalidRequest, match="cpus"):
            await call(h, ALICE, "submit", {**task("neg"), "resources": crafted.resources}, b"p", [])
        with pytest.raises(InvalidRequest, match="cpus"):
            await call(h, ALICE, "submit", crafted, b"p", [])
        assert h.core.task("neg") is None and h.core.usage(A, "alice").reserved_cpu_hours == 0
    run(main)


def test_an_executor_cannot_raise_its_own_trust():
    async def main():
        h = await make_head()
        before = h.core.table.spec("ea").trust
        with pytest.raises(InvalidRequest, match="trust"):
            await call(h, EXEC_A, "heartbeat", {"executor_id": "ea", "trust": 1.0})
        assert float(h.core.table.trust[h.core.table.rows["ea"]]) == before
    run(main)


def test_a_malformed_item_of_a_batch_answers_with_its_error_and_the_rest_go_on():
    async def main():
        h = await make_head()
        out = (await call(h, ALICE, "submit_many", [(task("G1"), b"p", []), (task("G2"), b"p")]))["ok"]
        assert out[0]["admitted"] and "items[1]" in out[1]["error"]
        assert h.store.get_job("G1") is not None and h.core.task("G2") is None
    run(main)


def test_registering_a_drained_executor_again_keeps_it_drained_in_the_store_too():
    async def main():
        h = await make_head()
        assert "ok" in await call(h, ADMIN_A, "drain", "ea")
        assert "ok" in await call(h, ADMIN_A, "register_executor", spec("ea", A, trust=0.8))
        assert h.core.table.status_of("ea").value == "draining"
        assert dict((s["executor_id"], st) for s, st in h.store.executors())["ea"] == "draining"
    run(main)


@pytest.mark.parametrize("args", [(A,), (A, "alice", "extra")], ids=["missing", "extra"])
def test_a_call_with_the_wrong_arguments_is_a_validation_error(args):
    async def main():
        h = await make_head()
        with pytest.raises(InvalidRequest, match="arguments"):
            await call(h, ALICE, "usage", *args)
    run(main)


@pytest.mark.parametrize("last_n", [0, -1, 10**9, 2.5])
def test_a_dry_run_over_an_impossible_number_of_jobs_is_refused(last_n):
    async def main():
        h = await make_head()
        with pytest.raises(InvalidRequest, match="last_n"):
            await call(h, ADMIN_A, "shadow_policy", {"coop_id": A}, last_n)
    run(main)
