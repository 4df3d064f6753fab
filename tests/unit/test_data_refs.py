"""hints.data naming Ray ObjectRefs (scheduler/ray_data.py, scheduler/head.py), without a cluster: the real
Head class on an asyncio loop with stand-in workers (tests/unit/test_head_interleavings.py), ObjectRefs
built from ids, and Ray's object-location lookup answered from a table."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import ray

from policies.validation import InvalidRequest

from scheduler.executor_spec import ExecutorSpec
from scheduler.head import Head
from tests.unit.test_head_interleavings import COOP, FakeWorker, no_ray_started, report, settle, task  # noqa: F401

_stores = itertools.count()


async def make_head(store_url: str | None = None) -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=store_url or f"memory://data-refs-{next(_stores)}")
    head._watchdog = object()
    head.core.set_policy({"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000,
                                                             "max_concurrent_tasks": 100}})
    return head


def ref(n: int) -> ray.ObjectRef:
    return ray.ObjectRef(n.to_bytes(28, "big"))


@pytest.fixture
def locations(monkeypatch):
    """Where each object is, as ray.experimental.get_object_locations would say: hex -> (size, nodes)."""
    where: dict[str, tuple[int, list[str]]] = {}

    def fake(refs, timeout_ms=-1):
        return {r: {"object_size": where[r.hex()][0], "node_ids": where[r.hex()][1]}
                for r in refs if r.hex() in where}
    monkeypatch.setattr(ray.experimental, "get_object_locations", fake)
    return where


async def add(head: Head, worker: FakeWorker, node: str, cpus: float = 1) -> None:
    spec = ExecutorSpec(executor_id=worker.executor_id, coop_id=COOP, region="us-west", node_id=node,
                        resources={"cpus": cpus})
    await head.register_executor(spec.model_dump(mode="json"))
    head._workers[worker.executor_id] = worker


def test_a_ref_shared_by_two_jobs_keeps_its_locality_after_the_first_one_ends(locations):
    """Two queued jobs name the same ObjectRef. When the first one settled, the head forgot the ref
    outright, so the second job was placed as if it had no data: on the executor without the bytes."""
    data = ref(7)
    locations[data.hex()] = (10_000_000, ["n2"])  # the bytes are on n2 only

    async def main():
        h = await make_head()
        e1, e2 = FakeWorker("e1"), FakeWorker("e2")
        await add(h, e1, "n1")
        await add(h, e2, "n2")
        await h.submit(task("F1"), b"f")  # fillers: both executors busy
        await h.submit(task("F2"), b"f")
        await settle()
        await h.submit(task("A"), b"a", [data])
        await h.submit(task("B"), b"b", [data])
        await settle()
        assert h.core.job("A").state.value == "queued" and h.core.job("B").state.value == "queued"
        f2_on = h.core.job("F2").executor_id
        f1_on = h.core.job("F1").executor_id
        assert {f1_on, f2_on} == {"e1", "e2"}
        # free e2 only: A (first in the queue) goes there
        filler_on_e2 = "F1" if f1_on == "e2" else "F2"
        filler_on_e1 = "F2" if filler_on_e2 == "F1" else "F1"
        await h.on_reports([report(filler_on_e2, "e2", 1)])
        await settle()
        assert h.core.job("A").executor_id == "e2"
        # A ends and e1 frees in the same round: B chooses between two free executors
        await h.on_reports([report("A", "e2", 1), report(filler_on_e1, "e1", 1)])
        await settle()
        b = h.core.explain("B")
        assert h.core.job("B").executor_id == "e2", (
            f"B went to {h.core.job('B').executor_id}, away from its data; explain: {b.get('summary')}")
    asyncio.run(main())


def test_more_refs_than_hints_data_allows_make_a_job_the_head_cannot_recover(tmp_path, locations):
    """Hints.data holds at most 1,024 keys. The head appended the refs' keys unvalidated, so a job naming
    1,100 refs was admitted and stored with 1,100 keys, and a restarted head failed in _recover (Ray would
    restart it forever). Now the submission is refused, naming hints.data, and the head restarts."""
    url = f"sqlite:///{tmp_path}/state.db"
    refs = [ref(i + 1) for i in range(1100)]

    async def main():
        h = await make_head(url)
        await add(h, FakeWorker("e1"), "n1")
        with pytest.raises(InvalidRequest, match="hints.data"):
            await h.submit(task("BIG"), b"x", refs)
        assert (await h.submit(task("OK"), b"x", refs[:1000]))["admitted"]
        restarted = Head.__new__(Head)
        await Head.__init__(restarted, store_url=url)  # as Ray restarts the head actor
        assert restarted.core.job("OK") is not None and restarted.core.job("BIG") is None
    asyncio.run(main())


def test_the_client_refuses_more_data_refs_than_hints_data_allows():
    """The same limit at the edge: 1,100 string keys were refused with InvalidRequest, 1,100 ObjectRefs not."""
    from scheduler.client import Client

    c = Client.__new__(Client)
    with pytest.raises(InvalidRequest, match="hints.data"):
        c._task(abs, (1,), {}, coop=COOP, member="alice", hints={"data": [f"k{i}" for i in range(1100)]})
    with pytest.raises(InvalidRequest, match="hints.data"):
        c._task(abs, (1,), {}, coop=COOP, member="alice", hints={"data": [ref(i + 1) for i in range(1100)]})


def test_a_rejected_job_does_not_keep_its_data_refs(locations):
    """A refused submission was never settled, so nothing forgot its refs: the head kept the ObjectRefs
    (pinning their objects in the object store) for as long as it lived."""
    data = ref(9)

    async def main():
        h = await make_head()
        await add(h, FakeWorker("e1"), "n1")
        huge = {**task("R"), "resources": {"cpus": 64}}  # no executor can ever run it: rejected
        decision = await h.submit(huge, b"r", [data])
        assert not decision["admitted"]
        assert data.hex() not in h.locator._refs
    asyncio.run(main())


def test_a_job_cancelled_while_queued_releases_its_payload_and_data_refs(locations):
    """Cancelled before the start: no usage report ever comes, and only a settlement dropped the payload and
    the data refs, so both stayed in the head's memory (a payload over 64 KiB pinned in the object store)."""
    data = ref(11)

    async def main():
        h = await make_head()
        await add(h, FakeWorker("e1"), "n1")
        await h.submit(task("F"), b"f")  # e1 busy
        await settle()
        await h.submit(task("Q"), b"q" * 100, [data])
        await settle()
        assert h.core.job("Q").state.value == "queued"
        assert await h.cancel("Q") == "cancelled"
        assert "Q" not in h._payloads, "payload of a cancelled job still held"
        assert data.hex() not in h.locator._refs, "data ref of a cancelled job still held"
    asyncio.run(main())


def test_a_bad_data_refs_argument_is_refused_naming_it():
    async def main():
        h = await make_head()
        with pytest.raises(InvalidRequest, match="data_refs: received"):
            await h.submit(task("A"), b"a", ["not-a-ref"])
        assert h.core.job("A") is None
    asyncio.run(main())
