"""Coopsched on a real multi-node Ray cluster: placement, waiting, quotas, timeouts, cancel, retries."""

from __future__ import annotations

import sys
import time

import pytest

from tests.waiting import settled, wait_for, wait_state

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

from scheduler.client import Client, shutdown  # noqa: E402
from scheduler.job_handle import JobCancelled, JobFailed, PolicyViolation, RuntimeLimitExceeded  # noqa: E402
from scheduler.names import TRACKER_NAME, worker_name  # noqa: E402

pytestmark = pytest.mark.integration
NS = "coopsched-it"
LAB, BANK = "research:lab", "timebank:it"


def where_am_i(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


def busy(seconds: float) -> float:
    end = time.time() + seconds
    while time.time() < end:
        pass
    return seconds


@pytest.fixture(scope="module")
def coop(ray_cluster):
    client = Client.local(namespace=NS, store="memory://")
    nodes = ray_cluster.nodes
    client.set_policy({"coop_id": LAB, "enforcement_mode": "strict",
                       "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 10},
                       "rules": [{"type": "DataSovereignty", "name": "gdpr", "region": "eu-central",
                                  "tags": ["patient-data"]},
                                 {"type": "RequireCapability", "name": "hipaa", "capability": "hipaa-compliant",
                                  "min_version": "1.0", "tags": ["phi"]},
                                 {"type": "ExecutorFilter", "name": "quarantine", "blacklist": ["lab-us"]}]})
    client.set_policy({"coop_id": BANK, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 2}})
    executors = {
        "lab-us": (nodes[0], LAB, {}), "lab-eu-1": (nodes[1], LAB, {"hipaa-compliant": "1.1"}),
        "lab-eu-2": (nodes[2], LAB, {}), "lab-ap": (nodes[3], LAB, {}),
        "bank-us": (nodes[0], BANK, {}), "bank-ap": (nodes[3], BANK, {}),
    }
    for executor_id, (node, coop_id, caps) in executors.items():
        client.register_executor(executor_id, coop=coop_id, node_id=node.node_id, capabilities=caps,
                                 trust=0.9 if executor_id == "lab-us" else 0.5, heartbeat_interval_s=0.5,
                                 resources={"cpus": 2})
    yield client, {e: n.node_id for e, (n, _, _) in executors.items()}
    shutdown(NS)


def test_gdpr_job_runs_only_in_eu_central(coop, ray_cluster):
    client, _ = coop
    eu = {n.node_id for n in ray_cluster.in_region("eu-central")}
    handles = [client.submit(where_am_i, coop=LAB, member="alice", tags=["patient-data"], max_runtime_s=60)
               for _ in range(4)]
    ran_on = {h.result(timeout=60) for h in handles}
    assert ran_on <= eu
    assert {h.status().executor_id for h in handles} <= {"lab-eu-1", "lab-eu-2"}


def test_capability_job_runs_only_where_the_capability_is(coop):
    client, node_of = coop
    handles = [client.submit(where_am_i, coop=LAB, member="alice", tags=["phi"], max_runtime_s=60) for _ in range(3)]
    assert {h.result(timeout=60) for h in handles} == {node_of["lab-eu-1"]}


def test_blacklisted_executor_never_gets_work(coop):
    client, node_of = coop
    handles = client.map(where_am_i, [0.0] * 6, coop=LAB, member="bob", max_runtime_s=60)
    ran_on = {h.result(timeout=60) for h in handles}
    assert node_of["lab-us"] not in ran_on  # the most trusted executor, but blacklisted
    assert all(h.status().executor_id != "lab-us" for h in handles)


def test_member_at_max_concurrent_tasks_waits_then_runs(coop):
    client, _ = coop
    handles = [client.submit(where_am_i, 1.5, coop=BANK, member="carol", max_runtime_s=60) for _ in range(3)]
    time.sleep(0.3)
    states = [h.status() for h in handles]
    waiting = [s for s in states if s.state.value == "queued"]
    assert len(waiting) == 1 and "max_concurrent_tasks (2)" in waiting[0].reason
    for h in handles:
        h.result(timeout=60)
    assert all(h.status().state.value in ("running", "succeeded") for h in handles)


def test_quota_used_up_by_real_runs_rejects_the_next_job(coop):
    client, _ = coop
    client.set_policy({"coop_id": "quota:small", "default_quota": {"cpu_hours_per_month": 6.5 / 3600}})
    client.register_executor("small-1", coop="quota:small", resources={"cpus": 2}, region="us-west")
    for _ in range(2):  # each projects 5 CPU-s and really uses ~1: 0 + 5, then ~1 + 5 fit in 6.5
        client.submit(where_am_i, 1.0, coop="quota:small", member="dora", max_runtime_s=5).result(timeout=60)
        settled(client, "quota:small", "dora")
    with pytest.raises(PolicyViolation) as refused:  # ~2 used + 5 projected > 6.5
        client.submit(where_am_i, coop="quota:small", member="dora", max_runtime_s=5)
    reason = refused.value.decision.reasons[0]
    assert reason.source == "quota:cpu" and "monthly CPU quota exceeded" in reason.message
    assert client.usage("quota:small", "dora").cpu_hours * 3600 > 2.0


def test_timeout_and_cancel_charge_only_the_time_used(coop):
    client, _ = coop
    timed = client.submit(busy, 30, coop=BANK, member="erin", max_runtime_s=1.5, resources={"cpus": 2})
    with pytest.raises(RuntimeLimitExceeded):
        timed.result(timeout=60)
    cancelled = client.submit(where_am_i, 30, coop=BANK, member="erin", max_runtime_s=60)
    wait_state(cancelled, "running")
    time.sleep(1.0)
    cancelled.cancel()
    with pytest.raises(JobCancelled):
        cancelled.result(timeout=60)
    t, c = timed.status(), cancelled.status()
    assert (t.state.value, c.state.value) == ("timeout", "cancelled")
    # charged the limit, not the moment the kill landed: never more than admission reserved (2 CPUs x 1.5 s)
    assert 1.5 <= t.wall_seconds < 8 and t.charged_cpu_hours == pytest.approx(2 * 1.5 / 3600, rel=1e-3)
    assert 1.0 <= c.wall_seconds < 8 and c.charged_cpu_hours < 8 / 3600


def test_killed_worker_task_is_retried_elsewhere_and_charged_once(coop):
    client, _ = coop
    h = client.submit(where_am_i, 3.0, coop=BANK, member="fred", max_runtime_s=60, max_retries=1)
    first = wait_state(h, "running").executor_id
    worker = ray.get_actor(worker_name(first), namespace=NS)
    wait_for(lambda: h.id in ray.get(worker.running.remote(), timeout=10), 30, "the worker to hold the job")
    time.sleep(0.5)  # (placed is not yet dispatched: a kill before the dispatch just runs it on the restarted worker)
    ray.kill(worker, no_restart=False)
    h.result(timeout=90)
    status = wait_state(h, "succeeded")
    assert status.attempts == 2 and status.executor_id != first
    usage = settled(client, BANK, "fred")
    assert usage.tasks_completed == 1
    assert usage.cpu_hours * 3600 == pytest.approx(status.wall_seconds, rel=1e-3)


def two_megabytes() -> bytes:
    return b"x" * 2_000_000  # too large to travel inline: it lives in the object store, owned by the worker


def test_the_value_of_a_job_whose_worker_died_after_it_succeeded_is_reported_lost_not_waited_for(coop):
    client, _ = coop
    h = client.submit(two_megabytes, coop=BANK, member="gina", max_runtime_s=60)
    executor = wait_state(h, "succeeded").executor_id  # finished; nobody fetched the value yet
    worker = ray.get_actor(worker_name(executor), namespace=NS)
    before = ray.get(worker.ping.remote(), timeout=30)["incarnation"]
    ray.kill(worker, no_restart=False)  # the value's owner dies (and Ray restarts the actor, without it)

    def restarted():
        try:
            return ray.get(worker.ping.remote(), timeout=5)["incarnation"] != before
        except ray.exceptions.RayError:
            return False
    wait_for(restarted, 60, "the worker's restart")
    started = time.monotonic()
    with pytest.raises(JobFailed, match="no longer available"):
        h.result(timeout=30)
    assert time.monotonic() - started < 20  # said so, rather than asking again until the timeout


def test_data_locality_prefers_the_node_holding_the_object(coop):
    client, node_of = coop
    client.set_policy({"coop_id": "data:lab", "scoring_weights": {"data": 5.0}})
    for executor_id in ("data-us", "data-ap"):
        node = node_of["lab-us" if executor_id == "data-us" else "lab-ap"]
        client.register_executor(executor_id, coop="data:lab", node_id=node, resources={"cpus": 2},
                                 trust=1.0 if executor_id == "data-ap" else 0.0)
    blob = ray.put(b"x" * 2_000_000)  # lives on this driver's node: the head node, us-west
    h = client.submit(where_am_i, coop="data:lab", member="gil", hints={"data": [blob]}, max_runtime_s=60)
    assert h.result(timeout=60) == node_of["lab-us"]
    assert h.explain()["placement"]["breakdown"]["data"] == pytest.approx(5.0)


def square_or_fail(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    time.sleep(0.2)
    return x * x


def test_gather_returns_values_in_order_and_raises_the_first_failure(coop):
    client, _ = coop
    # at most 2 at once for this coop's members: most of the batch queues, so gather waits at the head
    handles = client.map(square_or_fail, range(6), coop=BANK, member="ivan", max_runtime_s=60)
    assert client.gather(handles, timeout=60) == [x * x for x in range(6)]
    assert all(h._started is not None for h in handles)  # result() now needs no call to the head
    assert [h.result(timeout=60) for h in handles] == [x * x for x in range(6)]
    mixed = client.map(square_or_fail, [1, -2, 3], coop=BANK, member="ivan", max_runtime_s=60)
    with pytest.raises(JobFailed, match="negative: -2"):
        client.gather(mixed, timeout=60)
    assert mixed[2].result(timeout=60) == 9  # the others ran on


def test_gather_times_out_with_the_count_of_jobs_not_started(coop):
    client, _ = coop
    handles = client.map(where_am_i, [3.0, 3.0, 3.0], coop=BANK, member="judy", max_runtime_s=60)
    with pytest.raises(TimeoutError, match="1 of 3 jobs not started"):  # two run at once, the third waits
        client.gather(handles, timeout=0.5)
    assert len(client.gather(handles, timeout=60)) == 3


def test_the_tracker_answers_a_batch_of_reports_item_by_item(coop):
    client, _ = coop
    tracker = ray.get_actor(TRACKER_NAME, namespace=NS)
    now = time.time()
    report = {"task_id": "never-submitted", "executor_id": "bank-us", "coop_id": BANK, "member": "kim",
              "started_at": now - 1, "ended_at": now, "cpu_seconds": 1.0, "outcome": "succeeded", "attempt": 1}
    before = client.usage(BANK, "kim")
    answers = ray.get(tracker.report_many.remote([({"task_id": 5}, None), (report, None), (report, None)]))
    assert answers == [False, True, True]  # malformed; stored; a resend of what is stored
    time.sleep(1.0)  # forwarded to the head, which knows no such job
    assert client.usage(BANK, "kim") == before
    with pytest.raises(ray.exceptions.RayTaskError, match="items"):
        ray.get(tracker.report_many.remote("not a list"))


AHEAD = "queue:it"


def sleep_and_time(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@pytest.fixture(scope="module")
def ahead(coop):
    """One executor of 1 CPU that takes two rounds ahead (``dispatch_ahead=2``), for its own coop."""
    client, node_of = coop
    client.set_policy({"coop_id": AHEAD, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 10}})
    client.register_executor("ahead-1", coop=AHEAD, node_id=node_of["lab-eu-2"], resources={"cpus": 1},
                             dispatch_ahead=2, heartbeat_interval_s=0.5)
    return client


def test_an_executor_taking_work_ahead_runs_it_in_turn_and_charges_each_job_its_own_run(ahead):
    client = ahead
    handles = client.map(sleep_and_time, [0.4] * 3, coop=AHEAD, member="lena", max_runtime_s=60)
    states = [h.status() for h in handles]
    assert [s.state.value for s in states] == ["running"] * 3  # all three handed over at once
    assert sum("handed over ahead" in s.reason for s in states) == 2
    windows = client.gather(handles, timeout=60)  # two values come from the worker's queue (result_refs)
    for (_, ended), (started, _) in zip(windows, windows[1:]):
        assert started >= ended - 0.01  # one CPU: one after another
    for h, (started, ended) in zip(handles, windows):
        status = wait_state(h, "succeeded")
        assert status.started_at == pytest.approx(started, abs=0.2)  # its real start, not its hand-over
        assert status.charged_cpu_hours == pytest.approx((ended - started) / 3600, abs=2e-4)


def test_a_job_cancelled_while_it_waits_at_the_executor_is_charged_nothing(ahead):
    client = ahead
    running, waiting = client.map(sleep_and_time, [1.0, 0.1], coop=AHEAD, member="mona", max_runtime_s=60)
    assert "handed over ahead" in waiting.status().reason
    waiting.cancel()
    with pytest.raises(JobCancelled):
        waiting.result(timeout=30)
    assert wait_state(waiting, "cancelled").charged_cpu_hours == 0.0
    started, ended = running.result(timeout=30)
    assert settled(client, AHEAD, "mona").cpu_hours == pytest.approx((ended - started) / 3600, abs=2e-4)


def test_a_worker_killed_with_jobs_in_its_queue_runs_them_all_again_each_charged_once(ahead):
    client = ahead
    handles = client.map(sleep_and_time, [1.5, 0.2, 0.2], coop=AHEAD, member="nina", max_runtime_s=60,
                         max_retries=2)
    worker = ray.get_actor(worker_name("ahead-1"), namespace=NS)
    wait_for(lambda: ray.get(worker.ping.remote())["queued"] == 2, 30.0, "two jobs in the worker's queue")
    ray.kill(worker, no_restart=False)  # the first runs, the other two wait in the worker's queue
    assert len(client.gather(handles, timeout=120)) == 3
    statuses = [wait_state(h, "succeeded") for h in handles]
    assert [s.attempts for s in statuses] == [2, 2, 2]  # the running one and both queued were lost with it
    usage = settled(client, AHEAD, "nina")
    assert usage.tasks_completed == 3  # the lost attempts are free
    # usage is kept in hours to 6 decimals: 3.6 ms per job at most
    assert usage.cpu_hours * 3600 == pytest.approx(sum(s.wall_seconds for s in statuses), abs=3 * 0.0036)


@ray.remote(num_cpus=0)
class SlowWorker:
    """Stands in for an executor's worker: answers every dispatch after 2 s and remembers each batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def start_many(self, specs, capacity=None):
        import asyncio
        self.batches.append([s["task_id"] for s in specs])
        await asyncio.sleep(2.0)
        return [[ray.put(None)] for _ in specs]

    async def missing(self, task_ids):
        return []  # it holds them all (the watchdog asks)

    async def seen(self):
        return self.batches


def test_what_is_placed_while_a_dispatch_is_in_flight_goes_in_the_next_call(coop):
    client, node_of = coop
    client.set_policy({"coop_id": "slow:it", "default_quota": {"cpu_hours_per_month": 100,
                                                               "max_concurrent_tasks": 10}})
    worker = SlowWorker.options(name=worker_name("slow-1"), namespace=NS).remote()
    client.register_executor("slow-1", coop="slow:it", node_id=node_of["lab-ap"], resources={"cpus": 8})
    try:
        first = client.submit(where_am_i, coop="slow:it", member="olga", max_runtime_s=60)
        wait_for(lambda: ray.get(worker.seen.remote()), 10.0, "the first dispatch")  # in flight for 2 s now
        rest = [client.submit(where_am_i, coop="slow:it", member="olga", max_runtime_s=60) for _ in range(4)]
        batches = wait_for(lambda: len(b := ray.get(worker.seen.remote())) >= 2 and b, 10.0, "two dispatch calls")
        assert batches == [[first.id], [h.id for h in rest]]  # one call for the four, not four
    finally:
        client.remove_executor("slow-1")


def _collector(actor_self) -> tuple[int, int]:
    """Inside an actor: (objects frozen, objects a full collection would scan)."""
    import gc
    return gc.get_freeze_count(), len(gc.get_objects())


def test_the_actors_start_up_state_is_frozen_out_of_garbage_collection(coop):
    """Head, tracker and workers froze what they made at start (Ray, gRPC, pydantic: tens of thousands of
    objects), so a full collection scans only what they made since (scheduler.heap)."""
    from scheduler.names import HEAD_NAME
    actors = {"head": ray.get_actor(HEAD_NAME, namespace=NS), "tracker": ray.get_actor(TRACKER_NAME, namespace=NS),
              "worker": ray.get_actor(worker_name("lab-eu-2"), namespace=NS)}
    counts = {role: ray.get(a.__ray_call__.remote(_collector), timeout=30) for role, a in actors.items()}
    for role, (frozen, scanned) in counts.items():
        assert frozen > 20_000 and frozen > scanned, (role, frozen, scanned)


AUTO = "auto:it"


def trivial(x: int) -> int:
    return x


def test_an_auto_executor_takes_work_ahead_once_its_jobs_prove_short(coop):
    """``dispatch_ahead="auto"`` on real Ray: trivial jobs end in far less time than a report and a dispatch
    take, so after a few the head hands this executor rounds ahead (and stores the value)."""
    client, node_of = coop
    client.set_policy({"coop_id": AUTO, "default_quota": {"cpu_hours_per_month": 100, "max_concurrent_tasks": 100}})
    client.register_executor("auto-1", coop=AUTO, node_id=node_of["lab-eu-2"], resources={"cpus": 1},
                             dispatch_ahead="auto")
    assert {e["executor_id"]: e for e in client.executors()}["auto-1"]["dispatch_ahead"] == 0
    for _ in range(8):  # one at a time: each a report the tuner learns from
        assert client.submit(trivial, 7, coop=AUTO, member="ava", max_runtime_s=60).result(timeout=30) == 7
    spec = {e["executor_id"]: e for e in client.executors()}["auto-1"]
    assert spec["dispatch_ahead_auto"] and spec["dispatch_ahead"] >= 1, spec
    assert client.gather(client.map(trivial, range(20), coop=AUTO, member="ava", max_runtime_s=60),
                         timeout=60) == list(range(20))
