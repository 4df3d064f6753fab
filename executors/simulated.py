"""Simulated executors: a first-class executor that runs tasks in virtual time.

``Simulation`` drives a ``SchedulerCore`` exactly as the Ray runtime does — submit,
schedule, run, report usage — except that a task's run is an event on a virtual clock.
Unit tests, the core demo and the benchmarks use it; nothing here is a mock of the core.

Like a real worker, each simulated executor starts a placed task only when it fits the
executor's own resources, and keeps the rest (an executor registered with
``dispatch_ahead`` is handed more than it can run at once) in its queue, first in first
out, starting the next the moment a running task ends. An attempt the core preempts (an owner
reclaiming its executor from a borrower, or a task of higher priority of its coop taking its
room) stops at once and reports the time it ran, uncharged.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from executors.local_queue import Amounts, LocalQueue
from policies.reasons import Decision
from scheduler.core import SchedulerCore
from scheduler.executor_spec import ExecutorSpec
from scheduler.placement import Placement
from scheduler.tasks import TaskSpec
from scheduler.usage import Outcome, UsageRecord, UsageReport

DEFAULT_START = 1_795_000_000.0  # 2026-11-18 (a Wednesday), 11:06:40 UTC


def _amounts(task: TaskSpec) -> Amounts:
    r = task.resources
    return (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb)


class VirtualClock:
    """A clock that moves only when told to; pass it as ``SchedulerCore(clock=...)``."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"time only moves forward (asked to move {seconds} s)")
        self.now += seconds
        return self.now

    def set(self, t: float) -> None:
        if t < self.now:
            raise ValueError(f"time only moves forward ({t} < {self.now})")
        self.now = float(t)


@dataclass
class SimulatedRun:
    """How a submitted task behaves when it runs: its duration and how it ends."""

    duration_s: float = 1.0
    outcome: Outcome = Outcome.SUCCEEDED
    cpu_utilisation: float = 0.9  # share of its cores the process keeps busy


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    task_id: str = field(compare=False)
    executor_id: str = field(compare=False)
    started_at: float = field(compare=False)
    outcome: Outcome = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Simulation:
    """A core, a virtual clock and simulated executors, stepped by events."""

    def __init__(self, core: SchedulerCore | None = None, clock: VirtualClock | None = None) -> None:
        self.clock = clock or VirtualClock()
        self.core = core or SchedulerCore(clock=self.clock)
        self.runs: dict[str, SimulatedRun] = {}
        self.placements: list[Placement] = []
        self.reports: list[UsageReport] = []
        self._events: list[_Event] = []
        self._seq = itertools.count()
        self._queues: dict[str, LocalQueue[Placement]] = {}  # executor -> what it runs and what waits there

    # -- set-up ------------------------------------------------------------------
    def add_executor(self, spec: ExecutorSpec | dict) -> ExecutorSpec:
        """Register (or register again) an executor; one registered larger starts what waits in its
        queue and now fits, at once (as the real worker does when the head sends its new capacity)."""
        registered = self.core.register_executor(spec)
        if registered.executor_id in self._queues:
            self._queue(registered.executor_id)
        return registered

    def add_executors(self, specs: Iterable[ExecutorSpec | dict]) -> None:
        for spec in specs:
            self.add_executor(spec)

    def submit(self, task: TaskSpec | dict, run: SimulatedRun | None = None, **run_kwargs) -> Decision:
        decision = self.core.submit(task)
        self.runs[decision.task_id] = run or SimulatedRun(**run_kwargs)
        return decision

    # -- time --------------------------------------------------------------------
    def step(self) -> list[Placement]:
        """Place what fits now and start those tasks (their ends become events). Attempts the round preempted
        (reclaimed by an owner, or for a task of higher priority) stop first, as the head has their workers
        stop them, so the room they leave is there for the tasks placed in their stead."""
        placed = self.core.schedule()
        for task_id, executor_id in self.core.drain_preempted():
            self._stop(task_id, executor_id)
        for p in placed:
            limit = self.core.runtime_limit(p.task.task_id)
            if self._queue(p.executor_id).offer(p.task_id, _amounts(p.task), p, now=self.clock(), limit_s=limit):
                self._start(p)
        self.placements.extend(placed)
        return placed

    def waiting(self, executor_id: str) -> list[str]:
        """Task ids handed to this executor that wait in its own queue for resources to free up."""
        queue = self._queues.get(executor_id)
        return queue.keys() if queue is not None else []

    def _queue(self, executor_id: str) -> LocalQueue[Placement]:
        queue = self._queues.get(executor_id)
        if queue is None:
            queue = self._queues[executor_id] = LocalQueue()
        if executor_id in self.core.table:  # as registered now (it may have been registered again)
            r = self.core.table.spec(executor_id).resources
            capacity = (r.cpus, r.gpus, r.memory_mb, r.gpu_memory_mb)
            if queue.capacity != capacity:
                queue.capacity = capacity
                for p in queue.ready(self.clock()):  # it grew: what waited there may start now, oldest first
                    self._start(p)
        return queue

    def _start_waiting(self, executor_id: str) -> None:
        """Start the executor's queued tasks, oldest first, while the next one fits what is free."""
        queue = self._queues.get(executor_id)
        if queue is not None and executor_id in self.core.table:
            for p in queue.ready(self.clock()):
                self._start(p)

    def _start(self, p: Placement) -> None:
        now = self.clock()
        run = self.runs.get(p.task_id, SimulatedRun())
        limit = self.core.runtime_limit(p.task.task_id)
        duration, outcome = run.duration_s, run.outcome
        if duration > limit:
            duration, outcome = limit, Outcome.TIMEOUT
        heapq.heappush(self._events, _Event(now + duration, next(self._seq), p.task_id, p.executor_id,
                                            now, outcome, p.attempt))

    def run(self, until: float | None = None, max_events: int = 10_000_000) -> int:
        """Process events (task ends, window openings) until none are left or ``until``. Returns events run."""
        done = 0
        self.step()
        while done < max_events:
            nxt = self._next_time()
            if nxt is None or (until is not None and nxt > until):
                break
            self.clock.set(max(nxt, self.clock()))
            while self._events and self._events[0].at <= self.clock():
                self._finish(heapq.heappop(self._events))
                done += 1
            self.step()
        if until is not None and until > self.clock():
            self.clock.set(until)
            self.step()
        return done

    def kill_executor(self, executor_id: str) -> list[str]:
        """The executor vanishes mid-run: its tasks are retried elsewhere by the core."""
        lost = self.core.remove_executor(executor_id)
        self._events = [e for e in self._events if e.executor_id != executor_id]
        heapq.heapify(self._events)
        self._queues.pop(executor_id, None)
        return lost

    def cancel(self, task_id: str) -> None:
        """Cancel like a member would; a running task stops now and is charged the time it ran."""
        self.core.cancel(task_id)
        self._stop(task_id)

    def _stop(self, task_id: str, executor_id: str | None = None) -> bool:
        """The executor (None: whichever has it) stops the task: running, it ends now (its report says how long
        it ran); waiting in the executor's queue, it ends having used nothing. False: no such task there."""
        now = self.clock()
        for i, e in enumerate(self._events):
            if e.task_id == task_id and executor_id in (None, e.executor_id):
                self._events.pop(i)
                heapq.heapify(self._events)
                self._finish(_Event(now, next(self._seq), task_id, e.executor_id, e.started_at, Outcome.CANCELLED,
                                    e.attempt))
                return True
        for queue_of, queue in self._queues.items():
            if executor_id in (None, queue_of) and (waiting := queue.remove(task_id)) is not None:
                self._finish(_Event(now, next(self._seq), task_id, queue_of, now, Outcome.CANCELLED,
                                    waiting.attempt), started=False)
                return True
        return False

    def usage(self, coop_id: str, member: str) -> UsageRecord:
        return self.core.usage(coop_id, member)

    # -- internals -----------------------------------------------------------------
    def _finish(self, event: _Event, started: bool = True) -> None:
        task = self.core.task(event.task_id)
        queue = self._queues.get(event.executor_id)
        if started and task is not None and queue is not None:
            queue.ended(event.task_id)
        job = self.core.job(event.task_id)
        if job is None or job.executor_id != event.executor_id:
            self._start_waiting(event.executor_id)
            return
        assert task is not None
        run = self.runs.get(event.task_id, SimulatedRun())
        wall = event.at - event.started_at
        report = UsageReport(task_id=event.task_id, executor_id=event.executor_id, coop_id=task.coop_id,
                             member=task.member, started_at=event.started_at, ended_at=event.at,
                             cpu_seconds=task.resources.cpus * wall, gpu_seconds=task.resources.gpus * wall,
                             cpu_time_s=task.resources.cpus * wall * run.cpu_utilisation, outcome=event.outcome,
                             attempt=event.attempt)
        self.reports.append(report)
        self.core.complete(report)
        self._start_waiting(event.executor_id)

    def _next_time(self) -> float | None:
        times = [self._events[0].at] if self._events else []
        hold = self.core.queue.earliest_hold(self.clock())
        if hold is not None:
            times.append(hold)
        return min(times) if times else None
