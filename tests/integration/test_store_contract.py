"""The StateStore contract: the same tests against every backend (SQLite file, memory, real Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from scheduler.ledger import Cost, Ledger
from scheduler.state_store import AuditRecord, DamagedJobDeletion, ReserveResult, TaskHold, open_store

pytestmark = pytest.mark.integration
P = "2026-11"


def _url(kind: str, request, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    if kind == "memory":
        return "memory://"
    server = request.getfixturevalue("redis_server")
    import redis
    redis.Redis.from_url(server.url).flushdb()
    return server.url


@pytest.fixture(params=["sqlite", "memory", "redis"])
def store_url(request, tmp_path):
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "redis"])
def durable_url(request, tmp_path):
    """The backends that promise durability (``memory://`` is gone with the process by definition)."""
    return _url(request.param, request, tmp_path)


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


# --------------------------------------------------------------------------- policies
def test_policy_versions_history_and_removal(store):
    v1 = store.put_policy("c", {"coop_id": "c", "version": 1}, "alice", 10.0, "first")
    v2 = store.put_policy("c", {"coop_id": "c", "enforcement_mode": "permissive"}, "bob", 20.0)
    assert (v1.version, v1.predecessor, v2.version, v2.predecessor) == (1, None, 2, 1)
    assert store.active_policy("c").version == 2 and store.active_policy("c").author == "bob"
    assert store.policy_version("c", 1).policy == {"coop_id": "c", "version": 1}
    assert [v.version for v in store.policy_history("c")] == [1, 2]
    assert [p.coop_id for p in store.active_policies()] == ["c"]
    assert store.active_policy_versions() == {"c": 2}  # (what a head replica's refresh reads)
    assert store.remove_policy("c", "carol", 30.0)
    assert store.active_policy("c") is None and store.active_policies() == []
    assert store.active_policy_versions() == {}
    assert not store.remove_policy("c", "carol", 31.0)
    assert [v.version for v in store.policy_history("c")] == [1, 2, 3]  # the removal is a version too
    assert store.policy_history("c")[-1].policy is None
    v4 = store.put_policy("c", {"coop_id": "c"}, "dan", 40.0)
    assert (v4.version, v4.predecessor) == (4, 3) and store.active_policy("c").version == 4
    assert store.active_policy("unknown") is None and store.policy_history("unknown") == []


# --------------------------------------------------------------------------- executors
def test_executors_round_trip(store):
    store.put_executor({"executor_id": "b", "region": "eu"}, "active")
    store.put_executor({"executor_id": "a", "region": "us"}, "active")
    store.put_executor({"executor_id": "b", "region": "eu"}, "draining")
    assert store.executors() == [({"executor_id": "b", "region": "eu"}, "draining"),  # in registration order
                                 ({"executor_id": "a", "region": "us"}, "active")]
    assert store.remove_executor("a") and not store.remove_executor("a")
    assert [s["executor_id"] for s, _ in store.executors()] == ["b"]


# --------------------------------------------------------------------------- key registry
def test_keys_round_trip_and_survive_a_reopen(store_url):
    store = open_store(store_url)
    store.put_key("k_b", {"public_key": "B", "role": "member", "coop_id": "c", "subject": "bob"})
    store.put_key("k_a", {"public_key": "A", "role": "admin", "coop_id": "c", "subject": "ann"})
    store.put_key("k_b", {"public_key": "B", "role": "member", "coop_id": "c", "subject": "bobby"})
    again = open_store(store_url)  # a restarted head sees the same registry
    try:
        assert [k["subject"] for k in again.keys()] == ["ann", "bobby"]
        assert again.remove_key("k_a") and not again.remove_key("k_a")
        assert [k["subject"] for k in store.keys()] == ["bobby"]
    finally:
        again.close()
        store.close()


def test_a_nonce_is_claimed_once_until_it_expires(store):
    assert store.claim_nonce("k1", "n1", 0.3)
    assert not store.claim_nonce("k1", "n1", 0.3)
    assert store.claim_nonce("k2", "n1", 0.3) and store.claim_nonce("k1", "n2", 0.3)  # per key, per nonce
    time.sleep(0.4)
    assert store.claim_nonce("k1", "n1", 0.3)  # expired: claimable again (by then its request is expired too)


# --------------------------------------------------------------------------- ledger
def test_reserve_settle_release_idempotent(store):
    cost, measured = Cost(3_000_000, 0, 2_000_000), Cost(1_500_000, 0, 1_000_000)
    assert store.reserve("t1", "c", "m", P, cost) is ReserveResult.RESERVED
    assert store.reserve("t1", "c", "m", P, cost) is ReserveResult.DUPLICATE
    assert store.standing("c", "m", P) == (Cost(), cost, 0)
    assert store.settle("t1", "c", "m", P, measured)
    assert not store.settle("t1", "c", "m", P, measured)
    assert store.standing("c", "m", P) == (measured, Cost(), 1)
    assert store.reserve("t1", "c", "m", P, cost) is ReserveResult.DUPLICATE  # settled ids stay settled
    assert not store.release("t1")
    assert store.reserve("t2", "c", "m", P, cost) is ReserveResult.RESERVED
    assert store.release("t2") and not store.release("t2")
    assert store.standing("c", "m", P) == (measured, Cost(), 1)


def test_settle_without_reservation_uses_given_period(store):
    assert store.settle("t9", "c", "m", "2026-12", Cost(5, 0, 0))
    assert store.standing("c", "m", "2026-12") == (Cost(5, 0, 0), Cost(), 1)
    assert store.standing("c", "m", P) == (Cost(), Cost(), 0)


def test_settle_charges_the_reservations_period(store):
    store.reserve("t1", "c", "m", "2026-11", Cost(10, 0, 0))
    store.settle("t1", "c", "m", "2026-12", Cost(7, 0, 0))
    assert store.standing("c", "m", "2026-11") == (Cost(7, 0, 0), Cost(), 1)
    assert store.standing("c", "m", "2026-12") == (Cost(), Cost(), 0)


@pytest.mark.parametrize("limits, want", [
    (Cost(10, -1, -1), ReserveResult.RESERVED),        # 4 used + 3 held + 3 = 10 <= 10
    (Cost(9, -1, -1), ReserveResult.OVER_LIMIT),
    (Cost(-1, -1, 5), ReserveResult.OVER_LIMIT),       # credits 3 + 3 > 5
    (Cost(-1, 0, -1), ReserveResult.OVER_LIMIT),       # a zero GPU limit refuses any GPU use
    (None, ReserveResult.RESERVED),
], ids=["fits-exactly", "cpu-over", "credits-over", "zero-gpu-limit", "no-limits"])
def test_reserve_checks_limits_atomically(store, limits, want):
    store.settle("old", "c", "m", P, Cost(4, 0, 0))
    store.reserve("held", "c", "m", P, Cost(3, 0, 3))
    assert store.reserve("new", "c", "m", P, Cost(3, 1, 3), limits) is want
    used, held, _ = store.standing("c", "m", P)
    assert held == (Cost(6, 1, 6) if want is ReserveResult.RESERVED else Cost(3, 0, 3))


def test_concurrent_reservations_never_overshoot(store_url):
    """Eight writers with their own connections race for one member's quota."""
    stores = [open_store(store_url) for _ in range(8)]
    results: list[ReserveResult] = []
    lock = threading.Lock()

    def writer(i: int, s) -> None:
        for j in range(25):
            r = s.reserve(f"w{i}-{j}", "c", "m", P, Cost(1, 0, 0), Cost(50, -1, -1))
            with lock:
                results.append(r)

    threads = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(ReserveResult.RESERVED) == 50
        assert stores[0].standing("c", "m", P)[1] == Cost(50, 0, 0)
    finally:
        for s in stores:
            s.close()


def test_set_usage_and_snapshot_restore_a_ledger(store):
    store.reserve("t1", "c", "m", P, Cost(2, 0, 0))
    store.settle("t2", "c", "m", P, Cost(5, 1, 1))
    store.set_usage("c", "x", P, Cost(9, 0, 0))
    ledger = Ledger.restore(store.ledger_snapshot())
    assert ledger.reservation("t1").cost == Cost(2, 0, 0)
    assert ledger.is_settled("t2") and ledger.charged("t2") == Cost(5, 1, 1)
    assert store.standing("c", "x", P)[0] == Cost(9, 0, 0)
    store.set_usage("c", "m", P, Cost())
    assert store.standing("c", "m", P) == (Cost(), Cost(2, 0, 0), 1)
    store.set_usage("c", "m", P, Cost(), completed=0)  # a reset: the month's completed count goes too
    assert store.standing("c", "m", P) == (Cost(), Cost(2, 0, 0), 0)


def test_usage_members_are_those_with_usage_or_holds_in_that_month(store):
    store.reserve("t1", "c", "held-only", P, Cost(2, 0, 0))
    store.settle("t2", "c", "settled", P, Cost(5, 1, 1))
    store.set_usage("c", "set:by/admin", P, Cost(9, 0, 0))
    store.set_usage("c:sub", "other-coop", P, Cost(1, 0, 0))  # a coop id extending "c" is another coop
    store.set_usage("c", "last-month", "2026-10", Cost(1, 0, 0))
    assert store.usage_members("c", P) == ["held-only", "set:by/admin", "settled"]
    assert store.usage_members("c", "2026-10") == ["last-month"]
    assert store.usage_members("nobody", P) == []


def test_a_coops_standing_sums_its_members_month_and_nothing_else(store):
    store.reserve("t1", "c", "held-only", P, Cost(2, 0, 0))
    store.reserve("t2", "c", "settled", P, Cost(4, 1, 0))
    store.settle("t2", "c", "settled", P, Cost(3, 1, 1))
    store.settle("t3", "c", "settled", P, Cost(5, 0, 2))
    store.set_usage("c", "set:by/admin", P, Cost(9, 0, 0))
    store.set_usage("c:sub", "other-coop", P, Cost(100, 0, 0))  # a coop id extending "c" is another coop
    store.settle("t4", "c", "last-month", "2026-10", Cost(50, 0, 0))
    assert store.coop_standing("c", P) == (Cost(17, 1, 3), Cost(2, 0, 0), 2)
    assert store.coop_standing("c", "2026-10") == (Cost(50, 0, 0), Cost(), 1)
    assert store.coop_standing("nobody", P) == (Cost(), Cost(), 0)
    store.release("t1")
    assert store.coop_standing("c", P)[1] == Cost()


def test_a_reservation_no_unfinished_job_owns_is_released_once_past_the_grace_and_only_once(store):
    """What a head cut off between an admission's reserve and its job record leaves held (no record, or a retry's
    finished one) is released once older than the grace; a job a restarted head would run keeps its hold."""
    owners = {"lost": None, "retried": "rejected", "cancelled": "cancelled", "queued": "queued",
              "running": "running", "newer": "a-state-of-a-newer-release"}
    for i, (task_id, state) in enumerate(owners.items()):
        assert store.reserve(task_id, "c", "m", P, Cost(10 ** i, 0, 0)) is ReserveResult.RESERVED
        if state is not None:
            store.put_job(task_id, {"task_id": task_id, "coop_id": "c", "member": "m", "state": state,
                                    "submitted_at": float(i)})
    everything = store.standing("c", "m", P)[1]
    assert store.release_orphaned_reservations(3600.0) == []  # all younger than an hour
    assert store.standing("c", "m", P)[1] == everything
    assert store.release_orphaned_reservations(0.0) == ["cancelled", "lost", "retried"]
    assert store.standing("c", "m", P)[1] == Cost(1000 + 10_000 + 100_000, 0, 0)  # queued, running, newer
    assert store.release_orphaned_reservations(0.0) == []  # released once
    assert not store.release("lost")
    assert [r[0] for r in Ledger.restore(store.ledger_snapshot()).snapshot()["reservations"]] == \
        ["newer", "queued", "running"]


# --------------------------------------------------------------------------- jobs
def test_jobs_and_payloads(store):
    for i, (member, state) in enumerate([("a", "queued"), ("b", "running"), ("a", "succeeded")]):
        store.put_job(f"j{i}", {"task_id": f"j{i}", "coop_id": "c", "member": member, "state": state,
                                "submitted_at": float(i), "history": [{"state": state}]})
    store.put_job("j0", {"task_id": "j0", "coop_id": "c", "member": "a", "state": "running", "submitted_at": 0.0})
    assert store.get_job("j0")["state"] == "running" and store.get_job("nope") is None
    assert [j["task_id"] for j in store.jobs(coop_id="c")] == ["j0", "j1", "j2"]
    assert [j["task_id"] for j in store.jobs(member="a")] == ["j0", "j2"]
    assert [j["task_id"] for j in store.jobs(state="running")] == ["j0", "j1"]
    assert [j["task_id"] for j in store.jobs(limit=1)] == ["j0"]
    assert sorted(j["task_id"] for j in store.unfinished_jobs()) == ["j0", "j1"]
    blob = bytes(range(256)) * 10
    store.put_payload("j0", blob)
    assert store.get_payload("j0") == blob
    store.delete_payload("j0")
    assert store.get_payload("j0") is None


def test_a_jobs_first_record_is_written_only_where_none_is(store):
    """Two head replicas deciding one task id at once: the first record stays, with its indices; the one that
    comes second writes nothing (the head then answers with the first). Its owner's later records: as before."""
    first = {"task_id": "t", "coop_id": "c", "member": "a", "state": "queued", "submitted_at": 2.0}
    assert store.create_job("t", first)
    assert not store.create_job("t", {**first, "member": "b", "state": "rejected", "submitted_at": 1.0})
    assert store.get_job("t") == first
    assert [j["task_id"] for j in store.jobs(state="queued")] == ["t"] and store.jobs(state="rejected") == []
    assert [j["task_id"] for j in store.jobs(member="a")] == ["t"] and store.jobs(member="b") == []
    assert [j["task_id"] for j in store.unfinished_jobs()] == ["t"]
    assert store.reserve("t", "c", "a", P, Cost(5, 0, 0)) is ReserveResult.RESERVED
    assert store.release_orphaned_reservations(0.0) == []  # the created record owns its reservation
    store.put_job("t", {**first, "state": "running"})
    assert [j["task_id"] for j in store.jobs(state="running")] == ["t"] and store.jobs(state="queued") == []
    assert store.create_job("r", {"task_id": "r", "coop_id": "c", "member": "a", "state": "rejected",
                                  "submitted_at": 3.0})
    assert [j["task_id"] for j in store.jobs(coop_id="c")] == ["t", "r"]
    assert [j["task_id"] for j in store.unfinished_jobs()] == ["t"]


def test_replicas_creating_one_jobs_first_record_at_once_write_it_exactly_once(store_url):
    stores = [open_store(store_url) for _ in range(4)]
    try:
        created: list[str] = []
        barrier = threading.Barrier(len(stores))

        def decide(s, member: str) -> None:
            barrier.wait()
            if s.create_job("t", {"task_id": "t", "coop_id": "c", "member": member, "state": "queued",
                                  "submitted_at": 1.0}):
                created.append(member)
        threads = [threading.Thread(target=decide, args=(s, f"m{i}")) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(created) == 1 and stores[0].get_job("t")["member"] == created[0]
        assert [j["member"] for j in stores[0].jobs()] == created
    finally:
        for s in stores:
            s.close()


def test_what_holds_a_task_id_in_the_ledger_is_its_reservation_with_its_time_or_its_charge(store):
    assert store.task_hold("t") is None
    before = time.time()
    store.reserve("t", "c", "alice", P, Cost(5, 0, 0))
    hold = store.task_hold("t")
    assert (hold.coop_id, hold.member, hold.settled) == ("c", "alice", False)
    assert before - 1.0 <= hold.reserved_at <= time.time() + 1.0  # by the store's clock (on this machine)
    store.settle("t", "c", "alice", P, Cost(3, 0, 0))
    assert store.task_hold("t") == TaskHold(coop_id="c", member="alice", settled=True)
    store.reserve("gone", "c", "alice", P, Cost(5, 0, 0))
    store.release("gone")
    assert store.task_hold("gone") is None


def _damage(store, task_id: str, text: bytes) -> None:
    """Overwrite the JSON of a job's record as a disk or a hand edit would (the backend's own indices stay)."""
    if hasattr(store, "_r"):
        store._r.set(store._k("job", task_id), text)
    else:
        store._conn.execute("UPDATE jobs SET record = CAST(? AS TEXT) WHERE task_id = ?", (text, task_id))


@pytest.mark.parametrize("text", [b'{"task_id": "j1", "sta', b"\xff\xfe{}", b"[1, 2]"],
                         ids=["cut short", "not UTF-8", "not an object"])
def test_a_damaged_job_record_is_answered_as_damaged_with_its_stored_state(store, text):
    for i, state in enumerate(["queued", "running", "succeeded"]):
        store.put_job(f"j{i}", {"task_id": f"j{i}", "coop_id": "c", "member": "a", "state": state,
                                "submitted_at": float(i)})
    _damage(store, "j1", text)
    damaged = store.get_job("j1")
    assert (damaged["task_id"], damaged["state"], damaged["submitted_at"], bool(damaged["damaged"])) == \
        ("j1", "running", 1.0, True)  # what the store keeps beside the JSON (SQLite: coop and member too)
    assert [(j["task_id"], "damaged" in j) for j in store.jobs(coop_id="c")] == \
        [("j0", False), ("j1", True), ("j2", False)]
    assert [(j["task_id"], j["state"], "damaged" in j) for j in store.unfinished_jobs()] == \
        [("j0", "queued", False), ("j1", "running", True)]


@pytest.mark.parametrize("text", [b'{"task_id": "j1", "sta', b"\xff\xfe{}", b"[1, 2]"],
                         ids=["cut short", "not UTF-8", "not an object"])
def test_a_damaged_job_record_is_deleted_with_its_index_entries_payload_and_reservation(store, text):
    """``delete_damaged_job``: a damaged record goes with everything kept for it alone (its open reservation
    released, off its member's month); a charge stays charged. Its id submitted again, by another coop's member,
    is listed under that one only: no index entry of the deleted record is left (on Redis, where a damaged
    record does not say whose it was, nor where the ledger does not say either: the refused j2)."""
    records = {"j0": ("queued", Cost(5, 0, 0)), "j1": ("running", Cost(7, 1, 2)), "j2": ("rejected", None),
               "j3": ("succeeded", Cost(3, 0, 0))}
    for i, (task_id, (state, cost)) in enumerate(records.items()):
        if cost is not None:
            store.reserve(task_id, "c", "a", P, cost)
        store.put_job(task_id, {"task_id": task_id, "coop_id": "c", "member": "a", "state": state,
                                "submitted_at": float(i)})
    store.settle("j3", "c", "a", P, Cost(2, 0, 0))
    store.put_payload("j1", b"pickled call")
    for task_id in ("j1", "j2", "j3"):
        _damage(store, task_id, text)
    assert store.standing("c", "a", P) == (Cost(2, 0, 0), Cost(12, 1, 2), 1)

    assert store.delete_damaged_job("j1") == DamagedJobDeletion(
        task_id="j1", outcome="deleted", coop_id="c", member="a", state="running", released=Cost(7, 1, 2), period=P,
        payload_deleted=True)
    assert store.standing("c", "a", P) == (Cost(2, 0, 0), Cost(5, 0, 0), 1)  # j0's is still held
    refused, charged = store.delete_damaged_job("j2"), store.delete_damaged_job("j3")
    assert (refused.outcome, refused.state, refused.released, refused.payload_deleted) == \
        ("deleted", "rejected", None, False)
    assert (charged.outcome, charged.coop_id, charged.member, charged.state, charged.released) == \
        ("deleted", "c", "a", "succeeded", None)
    assert store.standing("c", "a", P) == (Cost(2, 0, 0), Cost(5, 0, 0), 1)  # the charge stays
    assert store.task_hold("j3") == TaskHold(coop_id="c", member="a", settled=True)
    assert (store.get_job("j1"), store.get_payload("j1"), store.task_hold("j1")) == (None, None, None)
    assert store.release_orphaned_reservations(0.0) == []  # nothing of j1's was left held
    assert [j["task_id"] for j in store.jobs()] == ["j0"]
    assert [j["task_id"] for j in store.unfinished_jobs()] == ["j0"]
    assert store.jobs(state="running") == [] and store.jobs(state="rejected") == []
    assert store.delete_damaged_job("j1") == DamagedJobDeletion(task_id="j1", outcome="not_found")
    for task_id in ("j1", "j2", "j3"):
        assert store.create_job(task_id, {"task_id": task_id, "coop_id": "other", "member": "b", "state": "queued",
                                          "submitted_at": 9.0})
    assert [j["task_id"] for j in store.jobs(coop_id="c")] == ["j0"]
    assert [j["task_id"] for j in store.jobs(member="a")] == ["j0"]
    assert [j["task_id"] for j in store.jobs(coop_id="other", member="b")] == ["j1", "j2", "j3"]


def test_a_readable_job_record_or_an_unknown_id_is_not_deleted_as_damaged(store):
    record = {"task_id": "t", "coop_id": "c", "member": "a", "state": "running", "submitted_at": 1.0}
    store.reserve("t", "c", "a", P, Cost(5, 0, 0))
    store.put_job("t", record)
    store.put_payload("t", b"pickled call")
    assert store.delete_damaged_job("t") == DamagedJobDeletion(task_id="t", outcome="not_damaged")
    assert store.delete_damaged_job("nope") == DamagedJobDeletion(task_id="nope", outcome="not_found")
    assert (store.get_job("t"), store.get_payload("t")) == (record, b"pickled call")
    assert store.standing("c", "a", P)[1] == Cost(5, 0, 0)
    assert [j["task_id"] for j in store.jobs(coop_id="c", member="a", state="running")] == ["t"]
    assert [j["task_id"] for j in store.unfinished_jobs()] == ["t"]


def test_a_redis_record_written_over_while_it_is_being_deleted_as_damaged_is_kept(request, tmp_path, monkeypatch):
    """The check and the delete are one: a head that writes the job's record again (it still holds the job)
    between the store's read and its EXEC makes the EXEC fail, and the check, run again, finds it readable."""
    url = _url("redis", request, tmp_path)
    store, head = open_store(url), open_store(url)
    try:
        record = {"task_id": "t", "coop_id": "c", "member": "a", "state": "running", "submitted_at": 1.0}
        store.reserve("t", "c", "a", P, Cost(5, 0, 0))
        store.put_job("t", record)
        _damage(store, "t", b'{"task_id": "t", "sta')
        read_indices, wrote = store._indexed, []

        def meanwhile(task_id: str):  # (read between the WATCH'd GET and the MULTI)
            if not wrote:
                wrote.append(head.put_job("t", record))
            return read_indices(task_id)

        monkeypatch.setattr(store, "_indexed", meanwhile)
        assert store.delete_damaged_job("t") == DamagedJobDeletion(task_id="t", outcome="not_damaged")
        assert wrote and store.get_job("t") == record and store.standing("c", "a", P)[1] == Cost(5, 0, 0)
        assert [j["task_id"] for j in store.jobs(coop_id="c", member="a", state="running")] == ["t"]
    finally:
        store.close()
        head.close()


def _damage_row(store, kind: str, text: bytes) -> None:
    """Overwrite the stored JSON of executor e1, policy version 2 of coop c, the report of (t1, 1) or key k1."""
    if hasattr(store, "_r"):
        key, field = {"executor": (store._k("executors"), "e1"), "policy": (store._k("policy", "versions", "c"), 2),
                      "report": (store._k("reports", "t1"), 1), "key": (store._k("keys"), "k1")}[kind]
        store._r.hset(key, field, text)
        return
    table, column, where = {"executor": ("executors", "spec", "executor_id = 'e1'"),
                            "policy": ("policies", "policy", "coop_id = 'c' AND version = 2"),
                            "report": ("reports", "report", "task_id = 't1'"),
                            "key": ("keys", "principal", "key_id = 'k1'")}[kind]
    store._conn.execute(f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {where}", (text,))


@pytest.mark.parametrize("text", [b'{"spec": {"executor_id": "e1", "sta', b"\xff\xfe{}", b"[1, 2]"],
                         ids=["cut short", "not UTF-8", "not an object"])
def test_a_damaged_executor_policy_report_or_key_is_answered_as_damaged_and_the_others_as_stored(store, text):
    for i in (0, 1):
        store.put_executor({"executor_id": f"e{i}"}, "active")
        store.put_report({"task_id": f"t{i}", "attempt": 1})
        store.put_key(f"k{i}", {"subject": f"s{i}"})
    for version in (1, 2, 3):
        store.put_policy("c", {"coop_id": "c", "v": version}, "alice", float(version))
    for kind in ("executor", "policy", "report", "key"):
        _damage_row(store, kind, text)
    assert [(s["executor_id"], "damaged" in s) for s, _ in store.executors()] == [("e0", False), ("e1", True)]
    assert [(v.version, v.policy is None, bool(v.damaged)) for v in store.policy_history("c")] == \
        [(1, False, False), (2, True, True), (3, False, False)]
    assert store.policy_version("c", 2).damaged and not store.active_policy("c").damaged
    assert [(r["task_id"], r["attempt"], "damaged" in r) for r in store.reports()] == \
        [("t0", 1, False), ("t1", 1, True)]
    assert [(r["task_id"], "damaged" in r) for r in store.unforwarded_reports()] == [("t0", False), ("t1", True)]
    assert [("damaged" in r) for r in store.reports("t1")] == [True]
    assert [(r.get("key_id") or r["subject"], "damaged" in r) for r in store.keys()] == [("s0", False), ("k1", True)]
    store.put_policy("c", {"coop_id": "c", "v": 4}, "alice", 4.0)  # a damaged version does not stop the next
    assert store.active_policy("c").policy == {"coop_id": "c", "v": 4}


@pytest.mark.parametrize("text", [b'{"half_life_s": 36', b"\xff\xfe{}", b"[1, 2]"],
                         ids=["cut short", "not UTF-8", "not an object"])
def test_a_heads_state_is_kept_per_owner_and_name_and_answered_as_damaged_when_unreadable(store, text):
    assert store.head_state("head-a", "borrowing_history") is None
    store.put_head_state("head-a", "borrowing_history", {"used": {"c": [1.5, 0.0]}})
    store.put_head_state("head-a", "borrowing_history", {"used": {"c": [2.5, 1.0]}})  # written over
    store.put_head_state("head-b", "borrowing_history", {"used": {}})
    assert store.head_state("head-a", "borrowing_history") == {"used": {"c": [2.5, 1.0]}}
    assert store.head_state("head-b", "borrowing_history") == {"used": {}}
    assert store.head_state("head-a", "other") is None
    if hasattr(store, "_r"):
        store._r.hset(store._k("head_state", "head-a"), "borrowing_history", text)
    else:
        store._conn.execute("UPDATE head_state SET state = CAST(? AS TEXT) WHERE owner = 'head-a'", (text,))
    assert "damaged" in store.head_state("head-a", "borrowing_history")
    assert store.head_state("head-b", "borrowing_history") == {"used": {}}  # the other head's is untouched
    store.put_head_state("head-a", "borrowing_history", {"used": {}})  # and a damaged one is written over
    assert store.head_state("head-a", "borrowing_history") == {"used": {}}


def test_a_checkpoint_is_kept_per_task_replaced_by_the_next_and_deleted(store):
    assert store.get_checkpoint("t1") is None
    store.put_checkpoint("t1", 1, 100.25, b"step 3")
    store.put_checkpoint("t1", 2, 160.5, b"\x00step 7\xff")  # the next attempt's replaces it
    store.put_checkpoint("t2", 1, 101.0, b"")
    assert store.get_checkpoint("t1") == (2, 160.5, b"\x00step 7\xff")
    assert store.checkpoint_info("t1") == (2, 160.5, 8) and store.checkpoint_info("t3") is None
    assert store.get_checkpoint("t2") == (1, 101.0, b"")
    store.delete_payload("t1")  # the job finished: what it needed to run goes, its checkpoint too
    store.delete_payload("t1")  # (deleting what is gone is no error)
    assert store.get_checkpoint("t1") is None and store.get_checkpoint("t2").attempt == 1
    store.put_payload("t2", b"payload")
    store.delete_payload("t2")
    assert store.get_checkpoint("t2") is None and store.get_payload("t2") is None


def test_a_checkpoint_survives_reopening_and_goes_with_a_damaged_job_record(durable_url):
    s = open_store(durable_url)
    s.put_job("t", {"task_id": "t", "coop_id": "c", "member": "m", "state": "running", "submitted_at": 1.0})
    s.put_checkpoint("t", 1, 5.0, b"state")
    s.close()
    again = open_store(durable_url)
    try:
        assert again.get_checkpoint("t") == (1, 5.0, b"state")
        _damage(again, "t", b'{"task_id": "t", "sta')
        assert again.delete_damaged_job("t").outcome == "deleted"
        assert again.get_checkpoint("t") is None
    finally:
        again.close()


def test_a_heads_state_survives_reopening(durable_url):
    s = open_store(durable_url)
    s.put_head_state("head-a", "borrowing_history", {"sampled_at": 12.5, "used": {"c": [3.0, 0.5]}})
    s.close()
    again = open_store(durable_url)
    try:
        assert again.head_state("head-a", "borrowing_history") == {"sampled_at": 12.5, "used": {"c": [3.0, 0.5]}}
    finally:
        again.close()


# --------------------------------------------------------------------------- reports
def test_reports_are_idempotent_by_task_and_attempt(store):
    r1 = {"task_id": "t", "attempt": 1, "executor_id": "e1", "cpu_seconds": 2.0}
    r2 = {"task_id": "t", "attempt": 2, "executor_id": "e2", "cpu_seconds": 3.0}
    assert store.put_report(r1) and not store.put_report(r1) and store.put_report(r2)
    assert [r["attempt"] for r in store.reports("t")] == [1, 2]
    assert len(store.unforwarded_reports()) == 2
    store.mark_forwarded([("t", 1)])
    assert store.unforwarded_reports() == [r2]
    store.mark_forwarded([("t", 2), ("never-stored", 1)])  # a batch; an unknown key changes nothing
    assert store.unforwarded_reports() == []


# --------------------------------------------------------------------------- change log
def test_change_log_is_append_only_newest_first(store):
    seqs = [store.log_change("c", "policy.set", "alice", 1.0, {"version": 1}),
            store.log_change("d", "quota.reset", "bob", 2.0, {"member": "m"}),
            store.log_change("c", "quota.set", "alice", 3.0, {"member": "m", "cpu_hours": 5})]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [c["kind"] for c in store.changes("c")] == ["quota.set", "policy.set"]
    assert store.changes("c")[0]["detail"] == {"member": "m", "cpu_hours": 5}
    assert [c["actor"] for c in store.changes(limit=2)] == ["alice", "bob"]


# --------------------------------------------------------------------------- audit
def audit(session: str, seq: int, t: float, member: str = "m") -> AuditRecord:
    return AuditRecord(session_id=session, seq_no=seq, timestamp=t, coop_id="c", member=member,
                       task={"task_id": f"{session}-{seq}"}, result={"state": "succeeded"}, usage={"cpu_hours": 0.1})


def test_audit_records(store):
    for seq, t in [(0, 1.0), (1, 2.0), (2, 3.0)]:
        store.put_audit(audit("s1", seq, t))
    store.put_audit(audit("s2", 0, 4.0, member="n"))
    assert store.get_audit("s1", 1).timestamp == 2.0 and store.get_audit("s1", 9) is None
    assert store.latest_audit("s1").seq_no == 2 and store.latest_audit("none") is None
    assert [(r.session_id, r.seq_no) for r in store.list_audit()] == [("s2", 0), ("s1", 2), ("s1", 1), ("s1", 0)]
    assert [r.seq_no for r in store.list_audit(session_id="s1", since=2.0)] == [2, 1]
    assert [r.member for r in store.list_audit(member="n")] == ["n"]
    assert [r.seq_no for r in store.list_audit(limit=2, coop_id="c")] == [0, 2]
    assert store.delete_audit("s1", 1) == 1 and store.get_audit("s1", 1) is None
    assert store.delete_audit("s1") == 2 and store.latest_audit("s1") is None
    assert store.latest_audit("s2").seq_no == 0


# --------------------------------------------------------------------------- durability
def test_data_survives_reopening(durable_url):
    s = open_store(durable_url)
    s.put_policy("c", {"coop_id": "c"}, "a", 1.0)
    s.reserve("t", "c", "m", P, Cost(1, 2, 3))
    s.put_job("t", {"task_id": "t", "coop_id": "c", "member": "m", "state": "queued", "submitted_at": 1.0})
    s.close()
    again = open_store(durable_url)
    assert again.active_policy("c").version == 1
    assert again.standing("c", "m", P) == (Cost(), Cost(1, 2, 3), 0)
    assert again.get_job("t")["state"] == "queued"
    again.close()


def test_a_batch_of_writes_lands_whole_and_keeps_each_write_atomic(durable_url):
    s = open_store(durable_url)
    with s.batch():
        s.put_job("a", {"task_id": "a", "coop_id": "c", "member": "m", "state": "queued", "submitted_at": 1.0})
        assert s.reserve("a", "c", "m", P, Cost(1, 0, 0)) is not None
        assert s.get_job("a")["state"] == "queued"  # the batch reads its own writes
        with pytest.raises(TypeError):
            s.put_job("b", {"task_id": "b", "state": object()})  # fails alone: nothing of it is written
        with s.batch():  # a batch inside a batch joins it
            assert s.put_report({"task_id": "a", "attempt": 1, "executor_id": "e"})
    s.close()
    again = open_store(durable_url)
    assert again.get_job("a")["state"] == "queued" and again.get_job("b") is None
    assert again.standing("c", "m", P)[1] == Cost(1, 0, 0) and len(again.reports("a")) == 1
    again.close()


def test_what_a_failed_batch_wrote_before_it_failed_is_kept(durable_url):
    s = open_store(durable_url)
    with pytest.raises(RuntimeError):
        with s.batch():
            s.put_job("kept", {"task_id": "kept", "coop_id": "c", "member": "m", "state": "queued",
                               "submitted_at": 1.0})
            raise RuntimeError("a bug after the first write")
    assert s.get_job("kept")["state"] == "queued"  # as if written without the batch
    s.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])  # Redis: every write is atomic alone, a batch groups none
def test_other_threads_never_see_half_a_batch(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    writer, reader = open_store(url), open_store(url)
    seen: list = []
    job = {"task_id": "x", "coop_id": "c", "member": "m", "submitted_at": 1.0}
    with writer.batch():
        writer.put_job("x", {**job, "state": "queued"})
        t = threading.Thread(target=lambda: seen.append(reader.get_job("x")))
        t.start()
        t.join(0.3)  # a file: the reader sees the last commit at once; memory (one connection): it waits
        writer.put_job("x", {**job, "state": "running"})
    t.join(5)
    assert len(seen) == 1 and (seen[0] is None or seen[0]["state"] == "running")  # never the half-done "queued"
    assert reader.get_job("x")["state"] == "running"
    writer.close()
    reader.close()


def test_bad_url_is_a_clear_error():
    from policies.validation import InvalidRequest
    with pytest.raises(InvalidRequest, match="sqlite:///PATH"):
        open_store("postgres://nope")


def test_a_task_asking_nothing_of_a_dimension_over_its_quota_is_still_reserved(store):
    """A member over the GPU quota (settled more than reserved, or set by an admin) may still run CPU-only
    work: like the ledger, every backend checks only the dimensions a task uses."""
    store.set_usage("c", "m", P, Cost(gpu=5_000_000))
    limits = Cost(cpu=10_000_000, gpu=1_000_000, credits=-1)
    assert store.reserve("cpu-only", "c", "m", P, Cost(cpu=1_000_000, gpu=0), limits) is ReserveResult.RESERVED
    assert store.reserve("gpu-too", "c", "m", P, Cost(cpu=1, gpu=1), limits) is ReserveResult.OVER_LIMIT


def test_a_report_without_an_attempt_counts_as_the_first(store):
    assert store.put_report({"task_id": "t1", "outcome": "succeeded"}) is True
    assert store.put_report({"task_id": "t1", "outcome": "succeeded"}) is False
    assert [r["task_id"] for r in store.reports("t1")] == ["t1"]


def test_a_limited_audit_listing_breaks_equal_timestamps_by_session_then_sequence_number(store):
    for seq in (9, 10):
        store.put_audit(AuditRecord(session_id="s", seq_no=seq, timestamp=100.0, coop_id="c", member="m",
                                    task={}, result={}, usage={}))
    for filters in ({}, {"coop_id": "c"}, {"coop_id": "c", "member": "m"}):
        assert [r.seq_no for r in store.list_audit(limit=1, **filters)] == [10], filters


def test_a_negative_limit_answers_alike_on_every_backend(store):
    """SQLite read LIMIT -1 as 'all', Redis as nothing (the head refuses a negative limit; the stores agree)."""
    for i in range(3):
        store.put_job(f"j{i}", {"task_id": f"j{i}", "coop_id": "c", "member": "m", "state": "queued",
                                "submitted_at": float(i)})
    store.log_change("c", "policy.set", "a", 1.0, {})
    store.put_audit(AuditRecord(session_id="c/m", seq_no=0, timestamp=1.0, coop_id="c", member="m",
                                task={}, result={}, usage={}))
    assert (store.jobs(limit=-1), store.jobs(coop_id="c", limit=-1), store.changes(limit=-1),
            store.list_audit(limit=-1)) == ([], [], [], [])


def test_a_ledger_snapshot_after_a_reset_lists_no_completed_count(store):
    store.settle("t", "c", "m", P, Cost(5, 0, 0))
    store.set_usage("c", "m", P, Cost(), completed=0)  # what a quota reset does
    assert store.ledger_snapshot()["completed"] == []


def test_executors_come_back_in_registration_order(store):
    """A restarted head rebuilds its table in this order, so placement ties go as before (they went by id)."""
    for executor_id in ("zeta", "alpha", "mid"):
        store.put_executor({"executor_id": executor_id}, "active")
    store.put_executor({"executor_id": "zeta", "trust": 0.1}, "offline")  # an update keeps its place
    assert [spec["executor_id"] for spec, _ in store.executors()] == ["zeta", "alpha", "mid"]
    assert store.executors()[0] == ({"executor_id": "zeta", "trust": 0.1}, "offline")
    store.remove_executor("zeta")
    store.put_executor({"executor_id": "zeta"}, "active")  # registered again: last
    assert [spec["executor_id"] for spec, _ in store.executors()] == ["alpha", "mid", "zeta"]


def test_audit_numbers_continue_from_stored_records_and_are_never_given_twice(store):
    for seq in (0, 1, 4):  # records written before the counter existed (an older store)
        store.put_audit(audit("s1", seq, float(seq)))
    assert [store.next_audit_seq("s1") for _ in range(3)] == [5, 6, 7]
    assert store.next_audit_seq("fresh") == 0
    store.delete_audit("s1")
    assert store.next_audit_seq("s1") == 8  # a deleted record's number is not given again


def test_concurrent_writers_never_share_an_audit_number(store_url):
    """Head replicas (each its own connection) numbering one session's audit samples at once."""
    stores = [open_store(store_url) for _ in range(6)]
    got: list[int] = []
    lock = threading.Lock()

    def writer(s) -> None:
        mine = [s.next_audit_seq("c/m") for _ in range(20)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=writer, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == list(range(120))
    finally:
        for s in stores:
            s.close()


def test_a_redis_executor_registered_before_orders_were_kept_keeps_its_place_when_its_status_is_written(
        request, tmp_path):
    """A Redis store written before executor_order existed lists its executors by id, as SQLite lists them
    by rowid. Writing one's status (a heartbeat back from offline, a drain, set_trust) gave it a fresh
    sequence number: it moved behind every other executor, and placement ties after the next restart went
    elsewhere. SQLite's upsert keeps the row's place."""
    store = open_store(_url("redis", request, tmp_path))
    try:
        for executor_id in ("a", "b", "c"):
            store.put_executor({"executor_id": executor_id}, "active")
        store._r.delete(store._k("executor_order"), store._k("executor_seq"))  # as an older release left it
        assert [s["executor_id"] for s, _ in store.executors()] == ["a", "b", "c"]
        store.put_executor({"executor_id": "a"}, "offline")  # its status written (Head._store_status)
        assert [s["executor_id"] for s, _ in store.executors()] == ["a", "b", "c"]
        store.put_executor({"executor_id": "new"}, "active")  # registered now: last
        assert [s["executor_id"] for s, _ in store.executors()] == ["a", "b", "c", "new"]
    finally:
        store.close()


def test_a_redis_executor_or_policy_entry_of_another_shape_is_answered_as_damaged(request, tmp_path):
    """On Redis an executor's status and a version's author, time and note live inside the JSON with the spec or
    policy: an object that lacks them is as unreadable as broken text (SQLite keeps them in their own columns)."""
    store = open_store(_url("redis", request, tmp_path))
    try:
        store.put_executor({"executor_id": "e1"}, "active")
        store.put_policy("c", {"coop_id": "c"}, "alice", 1.0)
        store._r.hset(store._k("executors"), "e1", b'{"spec": 1}')
        store._r.hset(store._k("policy", "versions", "c"), 1, b'{"policy": {"coop_id": "c"}}')
        (spec, status), = store.executors()
        assert (spec["executor_id"], bool(spec["damaged"]), status) == ("e1", True, "unknown")
        active = store.active_policy("c")
        assert (active.version, active.policy, "KeyError" in active.damaged) == (1, None, True)
    finally:
        store.close()
