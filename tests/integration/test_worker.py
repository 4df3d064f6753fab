"""The worker actor on a real multi-node Ray cluster: placement, measurement, limits, reports."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402

from executors.fake_nvml import FakeGpu, FakeNvml  # noqa: E402
from executors.measure import TaskError  # noqa: E402
from executors.worker import start_worker  # noqa: E402
from scheduler.executor_spec import ExecutorOffer  # noqa: E402
from scheduler.usage import UsageReport  # noqa: E402

pytestmark = pytest.mark.integration

# Ray's workers cannot import this test module by name: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAMESPACE = "coopsched-test"  # the conftest driver's namespace


@ray.remote(num_cpus=0)
class RecordingTracker:
    """A real tracker stand-in: keeps every report it is sent and acknowledges it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def report_many(self, items: list[tuple[dict[str, Any], dict | None]]) -> list[bool]:
        self.received.extend(report for report, _ in items)
        return [True] * len(items)

    def reports(self) -> list[dict[str, Any]]:
        return self.received


@ray.remote(num_cpus=0)
class RecordingHead:
    """A real head stand-in that keeps the heartbeats it receives."""

    def __init__(self) -> None:
        self.offers: list[dict[str, Any]] = []

    def heartbeat(self, offer: dict[str, Any]) -> None:
        self.offers.append(offer)

    def received(self) -> list[dict[str, Any]]:
        return self.offers


# --- builders and helpers ----------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_spec(fn: Callable[..., Any], *args: Any, task_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    spec = {"task_id": task_id or unique("task"), "coop_id": "research:biolab", "member": "did:icn:alice",
            "attempt": 1, "cpus": 1.0, "gpus": 0.0, "memory_mb": 0, "max_runtime_s": 20.0,
            "payload": [ray.put((fn, args, {}))]}
    return {**spec, **overrides}


def eventually(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.1)


def report_for(tracker: Any, task_id: str, timeout_s: float = 20.0) -> UsageReport:
    def received() -> dict[str, Any] | None:
        return next((r for r in ray.get(tracker.reports.remote()) if r["task_id"] == task_id), None)

    return UsageReport.model_validate(eventually(received, timeout_s, f"a report for {task_id}"))


class Executor:
    """A worker actor on one eu-central node, with its own recording tracker."""

    def __init__(self, node_id: str, *, tracker_exists: bool = True, **worker_options: Any) -> None:
        self.node_id = node_id
        self.tracker_name = unique("tracker")
        self.tracker = self.start_tracker() if tracker_exists else None
        self.worker = start_worker(unique("exec"), node_id, namespace=NAMESPACE, tracker_name=self.tracker_name,
                                   head_name=worker_options.pop("head_name", unique("no-head")), **worker_options)

    def start_tracker(self) -> Any:
        self.tracker = RecordingTracker.options(name=self.tracker_name, namespace=NAMESPACE).remote()
        return self.tracker

    def run(self, spec: dict[str, Any]) -> UsageReport:
        assert isinstance(ray.get(self.worker.start.remote(spec))[0], ray.ObjectRef)
        return report_for(self.tracker, spec["task_id"])

    def value(self, task_id: str) -> Any:
        (ref,) = ray.get(self.worker.result_ref.remote(task_id))
        return ray.get(ref)

    def stop(self) -> None:
        for actor in (self.worker, self.tracker):
            if actor is not None:
                ray.kill(actor)


@pytest.fixture
def eu_node(ray_cluster: Any) -> str:
    return ray_cluster.in_region("eu-central")[-1].node_id


@pytest.fixture
def executor(eu_node: str) -> Iterator[Executor]:
    ex = Executor(eu_node)
    try:
        yield ex
    finally:
        ex.stop()


# --- the user's functions ----------------------------------------------------------------


def where_am_i() -> str:
    return ray.get_runtime_context().get_node_id()


def burn_cpu(seconds: float) -> int:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def hold_memory(mb: int) -> int:
    """Touch ``mb`` MiB and return the RSS (MiB) the process had before."""
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    block = b"\x01" * (mb * 1024 * 1024)  # every page written, so every page resident
    return before if block else -1


def raise_value_error(message: str) -> None:
    raise ValueError(message)


# --- tests ---------------------------------------------------------------------------------


def test_a_task_runs_on_the_node_its_worker_is_pinned_to(executor: Executor, ray_cluster: Any) -> None:
    other_nodes = {n.node_id for n in ray_cluster.nodes} - {executor.node_id}
    spec = make_spec(where_am_i)

    report = executor.run(spec)

    assert report.outcome == "succeeded"
    assert executor.value(spec["task_id"]) == executor.node_id
    assert executor.value(spec["task_id"]) not in other_nodes
    assert ray.get(executor.worker.ping.remote())["node_id"] == executor.node_id
    assert (report.coop_id, report.member) == ("research:biolab", "did:icn:alice")


def test_a_malformed_spec_is_refused_with_the_field_named(executor: Executor) -> None:
    spec = make_spec(where_am_i)
    spec["payload"] = spec["payload"][0]  # the ObjectRef itself, not in a list

    with pytest.raises(ray.exceptions.RayTaskError, match="payload"):
        ray.get(executor.worker.start.remote(spec))
    assert ray.get(executor.worker.running.remote()) == []


def test_a_cpu_bound_task_is_charged_allocated_cores_times_wall(executor: Executor) -> None:
    report = executor.run(make_spec(burn_cpu, 0.5, cpus=1.5))

    assert report.outcome == "succeeded"
    assert report.cpu_time_s >= 0.4
    assert report.wall_seconds >= report.cpu_time_s * 0.9
    assert report.cpu_seconds == pytest.approx(1.5 * report.wall_seconds)
    assert report.gpu_seconds == 0.0


def test_peak_memory_covers_what_the_task_allocated(executor: Executor) -> None:
    spec = make_spec(hold_memory, 120, memory_mb=512)

    report = executor.run(spec)

    rss_before_mb = executor.value(spec["task_id"])
    assert report.outcome == "succeeded"
    assert report.peak_memory_mb >= 100
    assert report.peak_memory_mb >= rss_before_mb + 115


def test_a_task_over_its_runtime_limit_is_killed_and_charged_only_the_time_used(executor: Executor) -> None:
    spec = make_spec(time.sleep, 30, max_runtime_s=1.0)

    report = executor.run(spec)

    assert report.outcome == "timeout"
    assert 1.0 <= report.wall_seconds <= 5.0
    assert report.cpu_seconds == pytest.approx(1.0 * report.wall_seconds)
    assert "max_runtime_s" in (report.error or "")
    assert ray.get(executor.worker.running.remote()) == []


def test_a_cancelled_task_stops_and_is_reported_cancelled(executor: Executor) -> None:
    spec = make_spec(time.sleep, 30)
    assert isinstance(ray.get(executor.worker.start.remote(spec))[0], ray.ObjectRef)
    assert ray.get(executor.worker.start.remote(spec)) is None  # the same task id while it runs
    assert ray.get(executor.worker.running.remote()) == [spec["task_id"]]
    time.sleep(0.5)

    assert ray.get(executor.worker.cancel.remote(spec["task_id"])) is True
    report = report_for(executor.tracker, spec["task_id"])

    assert report.outcome == "cancelled"
    assert report.wall_seconds < 10
    assert ray.get(executor.worker.running.remote()) == []
    assert ray.get(executor.worker.cancel.remote(spec["task_id"])) is False
    with pytest.raises(ray.exceptions.RayError):
        executor.value(spec["task_id"])


def test_a_raising_task_fails_with_its_traceback_and_a_task_error_value(executor: Executor) -> None:
    spec = make_spec(raise_value_error, "the sample file is missing")

    report = executor.run(spec)

    assert report.outcome == "failed"
    assert "ValueError: the sample file is missing" in (report.error or "")
    assert "raise_value_error" in (report.error or "")
    value = executor.value(spec["task_id"])
    assert isinstance(value, TaskError)
    assert value.type_name == "ValueError"
    assert isinstance(value.exception, ValueError)
    assert ray.get(executor.worker.forget.remote(spec["task_id"])) is True
    assert ray.get(executor.worker.result_ref.remote(spec["task_id"])) is None


def test_reports_are_resent_until_a_tracker_appears(eu_node: str) -> None:
    ex = Executor(eu_node, tracker_exists=False)
    try:
        spec = make_spec(where_am_i)
        assert isinstance(ray.get(ex.worker.start.remote(spec))[0], ray.ObjectRef)
        eventually(lambda: ray.get(ex.worker.report_of.remote(spec["task_id"])), what="the task to end")
        time.sleep(0.6)  # at least one retry finds no tracker
        assert ray.get(ex.worker.unsent_reports.remote()) == 1

        ex.start_tracker()
        report = report_for(ex.tracker, spec["task_id"])

        assert report.outcome == "succeeded"
        eventually(lambda: ray.get(ex.worker.unsent_reports.remote()) == 0, what="the unsent list to empty")
    finally:
        ex.stop()


def test_heartbeats_reach_the_head_with_gpu_load(eu_node: str) -> None:
    head_name = unique("head")
    head = RecordingHead.options(name=head_name, namespace=NAMESPACE).remote()
    nvml = FakeNvml(gpus=[FakeGpu(utilisation_pct=40.0, memory_used_mb=1000),
                          FakeGpu(utilisation_pct=80.0, memory_used_mb=3000)])
    ex = Executor(eu_node, head_name=head_name, heartbeat_interval_s=0.2, nvml=nvml)
    try:
        offers = eventually(lambda: ray.get(head.received.remote()), what="a heartbeat")

        offer = ExecutorOffer.model_validate(offers[0])
        assert offer.queue_depth == 0
        assert offer.gpu_utilisation_pct == pytest.approx(60.0)
        assert offer.gpu_memory_used_mb == 4000
    finally:
        ex.stop()
        ray.kill(head)


def test_start_many_launches_a_batch_and_every_report_arrives(executor: Executor) -> None:
    specs = [make_spec(where_am_i) for _ in range(3)]
    refs = ray.get(executor.worker.start_many.remote(specs), timeout=30)
    assert [ray.get(r[0], timeout=30) for r in refs] == [executor.node_id] * 3
    for spec in specs:
        assert report_for(executor.tracker, spec["task_id"]).outcome == "succeeded"


def test_start_many_with_one_malformed_spec_launches_none(executor: Executor) -> None:
    good, bad = make_spec(where_am_i), {**make_spec(where_am_i), "cpus": -1}
    with pytest.raises(ray.exceptions.RayTaskError, match="cpus"):
        ray.get(executor.worker.start_many.remote([good, bad]), timeout=30)
    assert ray.get(executor.worker.running.remote()) == []
    assert ray.get(executor.worker.result_ref.remote(good["task_id"])) is None


def sleep_and_time(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def test_with_its_capacity_given_the_worker_starts_what_fits_and_queues_the_rest(executor: Executor) -> None:
    specs = [make_spec(sleep_and_time, 0.4) for _ in range(3)]
    answers = ray.get(executor.worker.start_many.remote(specs, {"cpus": 1}), timeout=30)
    assert isinstance(answers[0][0], ray.ObjectRef) and answers[1:] == ["queued", "queued"]
    assert set(ray.get(executor.worker.running.remote())) == {s["task_id"] for s in specs}  # queued count too
    assert ray.get(executor.worker.ping.remote())["queued"] == 2
    reports = [report_for(executor.tracker, s["task_id"]) for s in specs]
    refs = ray.get(executor.worker.result_refs.remote([s["task_id"] for s in specs]))
    windows = [ray.get(r[0], timeout=30) for r in refs]
    for (_, ended), (started, _) in zip(windows, windows[1:]):
        assert started >= ended - 0.01  # one after another, in the order handed over
    for report, (started, ended) in zip(reports, windows):
        assert report.outcome == "succeeded"
        assert report.started_at == pytest.approx(started, abs=0.1)  # charged from its start, not its arrival
        assert report.cpu_seconds == pytest.approx(ended - started, abs=0.15)


def test_a_short_task_passes_a_queued_wide_one_when_it_ends_before_that_one_could_start(executor: Executor) -> None:
    """Backfill in the worker's queue: "wide" (2 CPUs) waits for "long" (up to 20 s); "short" (at most
    5 s) runs beside "long" at once, since it ends before "wide" could start whatever happens."""
    long_ = make_spec(sleep_and_time, 1.0)
    wide = make_spec(sleep_and_time, 0.1, cpus=2.0)
    short = make_spec(sleep_and_time, 0.1, max_runtime_s=5.0)
    answers = ray.get(executor.worker.start_many.remote([long_, wide, short], {"cpus": 2}), timeout=30)
    assert answers[1] == "queued" and isinstance(answers[2][0], ray.ObjectRef)  # launched at once, past "wide"
    reports = {name: report_for(executor.tracker, s["task_id"]) for name, s in
               (("long", long_), ("wide", wide), ("short", short))}
    assert all(r.outcome == "succeeded" for r in reports.values())
    assert reports["wide"].started_at >= reports["long"].ended_at - 0.01  # (when "short" really starts is
    # Ray's affair: a second worker process may take longer than "long" runs on a loaded machine)
    assert ray.get(executor.worker.ping.remote())["backfilled"] >= 1


def test_cancelling_the_queued_task_that_held_the_reservation_starts_the_next_one_at_once(executor: Executor
                                                                                          ) -> None:
    running = make_spec(sleep_and_time, 1.0)
    wide = make_spec(sleep_and_time, 0.1, cpus=2.0)  # waits for "running"; holds the reservation
    endless = make_spec(sleep_and_time, 0.1, max_runtime_s=None)  # no limit: it may not pass "wide"
    answers = ray.get(executor.worker.start_many.remote([running, wide, endless], {"cpus": 2}), timeout=30)
    assert answers[1:] == ["queued", "queued"]
    assert ray.get(executor.worker.cancel.remote(wide["task_id"])) is True
    assert ray.get(executor.worker.ping.remote())["queued"] == 0  # "endless" launched at the cancel, not later
    reports = {name: report_for(executor.tracker, s["task_id"]) for name, s in
               (("running", running), ("wide", wide), ("endless", endless))}
    assert reports["wide"].outcome == "cancelled" and reports["endless"].outcome == "succeeded"


def test_a_queued_task_cancelled_before_it_starts_is_reported_having_used_nothing(executor: Executor) -> None:
    running, queued = make_spec(sleep_and_time, 1.0), make_spec(sleep_and_time, 0.1)
    assert ray.get(executor.worker.start_many.remote([running, queued], {"cpus": 1}))[1] == "queued"
    assert ray.get(executor.worker.cancel.remote(queued["task_id"])) is True
    report = report_for(executor.tracker, queued["task_id"])
    assert report.outcome == "cancelled" and report.cpu_seconds == 0.0 and "never started" in report.error
    assert ray.get(executor.worker.result_ref.remote(queued["task_id"])) is None
    assert report_for(executor.tracker, running["task_id"]).outcome == "succeeded"


@pytest.mark.parametrize("bad, field", [({"cpus": -1}, "cpus"), ({"cpus": "many"}, "cpus"), ([1], "Resources")])
def test_a_bad_capacity_is_refused_with_the_field_named_and_nothing_starts(executor: Executor, bad: Any,
                                                                              field: str) -> None:
    spec = make_spec(where_am_i)
    with pytest.raises(ray.exceptions.RayTaskError, match=field):
        ray.get(executor.worker.start_many.remote([spec], bad), timeout=30)
    assert ray.get(executor.worker.running.remote()) == []


def test_missing_names_only_the_tasks_the_worker_has_no_trace_of(executor: Executor) -> None:
    done, running = make_spec(where_am_i), make_spec(sleep_and_time, 1.0)
    executor.run(done)
    assert ray.get(executor.worker.start_many.remote([running], {"cpus": 1}))[0]
    assert ray.get(executor.worker.missing.remote([done["task_id"], running["task_id"], "never-seen"])) == [
        "never-seen"]
    with pytest.raises(ray.exceptions.RayTaskError, match="list of task ids"):
        ray.get(executor.worker.missing.remote("job-7f3a"))
