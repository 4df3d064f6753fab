"""Prometheus metrics of one head: read from the core when scraped, plus two latency histograms.

Nothing on the admission or placement path pays for the counters: the core keeps plain
``CoreCounters``, and ``CoreCollector`` turns them — with the queue, the executor table
and the ledger — into metric families only when Prometheus scrapes. The head times
admission and placement into the two histograms of ``SchedulerMetrics``.

Each head has its own ``CollectorRegistry`` (never prometheus_client's global one), so
several heads or cores in one process do not clash. Every metric is described in
docs/metrics.md.

The collector runs on the HTTP server's thread while the head's event loop changes the
core. It copies what it reads first (copying a dict is one step under the GIL) and reads
again when a structure changed under it, so a scrape sees each value as it was at some
moment during the scrape; it never takes a lock the scheduler waits on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.validation import FieldError, InvalidRequest
from scheduler.executor_spec import ExecutorStatus

if TYPE_CHECKING:
    from scheduler.core import SchedulerCore

log = logging.getLogger("coopsched.metrics")
PREFIX = "coopsched_"
SECONDS_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""50 µs .. 1 s: the seed's target for policy evaluation is under 5 ms."""

COMPLETED_OUTCOMES = ("succeeded", "failed", "timeout", "cancelled")  # scheduler.usage.Outcome values
FAILED_OUTCOMES = ("failed", "timeout", "lost")
PREEMPTION_CAUSES = ("reclaim", "priority")  # an owner's reclaim; a task of higher priority of the coop
_READ_ATTEMPTS = 5
REFUSAL_REASONS = ("unsigned", "unknown_key", "forged", "expired", "replayed", "forbidden")  # identity.RefusalCode

T = TypeVar("T")


class CoreCollector(Collector):
    """Counters and gauges of one ``SchedulerCore``, built at scrape time."""

    def __init__(self, core: SchedulerCore) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        core = self.core
        c = core.counters
        policies = _read(core.policies)
        coops = [p.coop_id for p in policies]

        yield _counter("tasks_submitted", "Tasks submitted, admitted or not.", ["coop"],
                       _with_zeros(dict(c.submitted), coops))
        yield _counter("tasks_admitted", "Tasks admitted (queued or deferred), in any enforcement mode.", ["coop"],
                       _with_zeros(dict(c.admitted), coops))
        yield _counter("tasks_rejected_policy", "Tasks refused: by a strict policy, for want of a policy or of any "
                       "executor that could ever run them, or by the ledger's quota re-check.", ["coop"],
                       _with_zeros(dict(c.rejected), coops))
        yield _counter("policy_violations", "Policy violations found at admission, in every enforcement mode "
                       "(the only place monitoring-mode violations show).", ["coop", "rule", "mode"],
                       _with_zeros(dict(c.violations), _violation_keys(policies)))
        yield _counter("quota_exceeded", "Admissions that found a quota exceeded (in any mode), by quota.",
                       ["coop", "quota"], _with_zeros(dict(c.quota_exceeded), [(k, q) for k in coops for q in QUOTAS]))
        completed = dict(c.completed)
        yield _counter("tasks_completed", "Task attempts that ended on an executor and were charged, by outcome.",
                       ["coop", "outcome"], _with_zeros(completed, [(k, o) for k in coops for o in COMPLETED_OUTCOMES]))
        failed = {k: v for k, v in completed.items() if k[1] in ("failed", "timeout")}
        failed.update({(coop, "lost"): n for coop, n in dict(c.gave_up).items()})
        yield _counter("tasks_failed", "Tasks that ended without a value: raised (failed), ran out of time "
                       "(timeout), or lost every attempt with its executor (lost).", ["coop", "outcome"],
                       _with_zeros(failed, [(k, o) for k in coops for o in FAILED_OUTCOMES]))
        yield _counter("tasks_retried", "Attempts sent back to the queue after their executor was lost.", ["coop"],
                       _with_zeros(dict(c.retried), coops))
        yield _counter("tasks_preempted", "Running attempts stopped to make room: their executor's owner reclaimed "
                       "it (reclaim), or a task of higher priority of their coop needed it (preempt_within_coop); "
                       "each job waits again, uncharged for that attempt.", ["coop", "cause"],
                       _with_zeros(dict(c.preempted), [(k, why) for k in coops for why in PREEMPTION_CAUSES]))
        yield _counter("decisions_withdrawn", "Admission decisions this head took back because another head "
                       "replica had recorded one for the same task id first (they stay in the submitted, admitted "
                       "and rejected counts).", ["coop"], _with_zeros(dict(c.withdrawn), coops))
        yield _counter("usage_reports_refused", "Usage reports refused (unknown task, or not from the executor "
                       "the task was placed on); nothing was charged.", ["reason"], dict(c.refused_reports))

        member_completed, member_credits = dict(c.member_completed), dict(c.member_credits)
        yield _counter("member_tasks_completed", "A member's task attempts that ended and were charged, since the "
                       "head started.", ["coop", "member"], member_completed)
        yield _counter("member_credits_spent", "Credits charged to a member since the head started.",
                       ["coop", "member"], member_credits)
        yield _gauge("member_cpu_hours", "A member's CPU-hours this calendar month (UTC), from the ledger; members "
                     "with a task completed since the head started.", ["coop", "member"],
                     self._month_cpu_hours(set(member_completed) | set(member_credits)))

        depth = _read(core.queue.depth_by_coop)
        yield _gauge("queue_depth", "Admitted tasks waiting for an executor (queued or deferred).", ["coop"],
                     _with_zeros(depth, coops))
        yield _gauge("borrowed_share", "The dominant share of the fleet (the larger of its CPU and GPU fractions, of "
                     "active executors) that a coop's running tasks hold on other coops' executors: what coops take "
                     "turns by at what is left to borrow.", ["coop"], _with_zeros(_read(core.borrowed_shares), coops))
        yield _gauge("borrowed_share_decayed", "A coop's decayed average dominant share of the fleet held on other "
                     "coops' executors (halved every borrowing half-life): what fair borrowing adds to its share now.",
                     ["coop"], _with_zeros(_read(core.borrowed_history_shares), coops))
        yield _gauge("lent_share", "The dominant share of a coop's active executors (the larger of their CPU and GPU "
                     "fractions) that other coops' running tasks hold: what the coop's lending_limit bounds.", ["coop"],
                     _read(core.lent_shares))
        yield from self._executor_families()

    def _month_cpu_hours(self, members: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """From the ledger (the store): if it cannot be read, this family is left out, not the scrape."""
        now = self.core.clock()
        out = {}
        try:
            for coop, member in sorted(members):
                standing = self.core.ledger.standing(coop, member, now)
                if standing.tasks_completed or standing.used.cpu or standing.reserved.cpu:  # seen this month
                    out[(coop, member)] = standing.used.cpu_hours
        except Exception as exc:  # noqa: BLE001  # the store is down: every other metric still answers
            log.warning("member CPU-hours left out of this scrape: the ledger could not be read (%s: %s)",
                        type(exc).__name__, exc)
            return {}
        return out

    def _executor_families(self) -> Iterator[Metric]:
        table = self.core.table
        counts: dict[tuple[str, str, str], int] = {}
        columns: dict[str, dict[tuple[str, str, str], float]] = {"free_cpus": {}, "free_gpus": {}, "cpus": {},
                                                                  "gpus": {}}
        for executor_id, row in list(table.rows.items()):
            spec = table.specs[row]
            if spec is None or spec.executor_id != executor_id:
                continue  # removed while we read
            try:
                status = table.status_of(executor_id)
            except KeyError:
                continue
            free_cpus, free_gpus = float(table.free_cpus[row]), float(table.free_gpus[row])
            cpus, gpus = float(table.total_cpus[row]), float(table.total_gpus[row])
            if table.rows.get(executor_id) != row or table.specs[row] is not spec:
                continue  # removed (its row perhaps taken by another) while we read: next scrape
            for s in ExecutorStatus:
                counts.setdefault((spec.coop_id, spec.region, s.value), 0)
            counts[(spec.coop_id, spec.region, status.value)] += 1
            key = (executor_id, spec.coop_id, spec.region)
            ahead = spec.dispatch_ahead  # free counts down from (1 + ahead) x resources; report the real part
            columns["free_cpus"][key] = max(0.0, free_cpus - ahead * spec.resources.cpus)
            columns["free_gpus"][key] = max(0.0, free_gpus - ahead * spec.resources.gpus)
            columns["cpus"][key] = cpus
            columns["gpus"][key] = gpus
        yield _gauge("executors", "Registered executors by status (active, draining, offline).",
                     ["coop", "region", "status"], counts)
        labels = ["executor", "coop", "region"]
        yield _gauge("executor_free_cpus", "CPUs of an executor not reserved by running tasks.", labels,
                     columns["free_cpus"])
        yield _gauge("executor_free_gpus", "GPUs of an executor not reserved by running tasks.", labels,
                     columns["free_gpus"])
        yield _gauge("executor_cpus", "CPUs an executor offers.", labels, columns["cpus"])
        yield _gauge("executor_gpus", "GPUs an executor offers.", labels, columns["gpus"])


class SchedulerMetrics:
    """One head's metrics: a private registry holding the core's collector and two histograms.

        metrics = SchedulerMetrics(core)
        with metrics.policy_evaluation.time():
            core.submit(task)
        address = metrics.serve(0)       # "0.0.0.0:41234"; scrape http://HOST:41234/metrics
    """

    def __init__(self, core: SchedulerCore) -> None:
        self.registry = CollectorRegistry()
        self.collector = CoreCollector(core)
        self.registry.register(self.collector)
        self.policy_evaluation = Histogram(
            PREFIX + "policy_evaluation_seconds", "Time to admit one task: policy rules, quota and ledger "
            "reservation (SchedulerCore.submit).", registry=self.registry, buckets=SECONDS_BUCKETS)
        self.placement = Histogram(
            PREFIX + "placement_seconds", "Time to place one task: a scheduling round's duration "
            "(SchedulerCore.schedule) shared among the tasks it placed.", registry=self.registry,
            buckets=SECONDS_BUCKETS)
        self.store_resyncs = Counter(
            PREFIX + "store_resyncs", "Times the head rebuilt its memory from the state store after the store "
            "refused a call's writes (a full disk, an I/O error, the store unreachable).", registry=self.registry)
        self.orphaned_reservations_released = Counter(
            PREFIX + "orphaned_reservations_released", "Reservations the head released because no unfinished job "
            "record owned them for ORPHAN_GRACE_S (a head stopped, or lost its store, between admitting a job and "
            "recording it).", registry=self.registry)
        self.requests_refused = Counter(
            PREFIX + "requests_refused", "Requests the head refused before doing anything, by reason: unsigned, "
            "unknown_key, forged, expired, replayed, forbidden (nothing was changed or charged).", ["reason"],
            registry=self.registry)
        for reason in REFUSAL_REASONS:  # every series exists from the first scrape
            self.requests_refused.labels(reason=reason)
        self._server: Any = None
        self.address: str | None = None

    def refused(self, reason: str) -> None:
        self.requests_refused.labels(reason=reason).inc()

    def placed(self, placements: int, seconds: float) -> None:
        """A scheduling round took ``seconds`` and placed ``placements`` tasks (rounds placing none are not
        observed: they run on every heartbeat)."""
        if placements > 0:
            each = seconds / placements
            for _ in range(placements):
                self.placement.observe(each)

    def exposition(self) -> str:
        """The metrics in Prometheus' text format, as a scrape would see them."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int, addr: str = "0.0.0.0", advertise_host: str | None = None) -> str:
        """Serve ``/metrics`` on ``addr:port`` (port 0: a free one) from a daemon thread.
        Returns ``host:port`` as served (``advertise_host`` replaces a wildcard ``addr``)."""
        if self._server is not None:
            raise RuntimeError(f"metrics are already served at {self.address}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidRequest("metrics port", [FieldError("metrics_port", repr(port),
                                                             "a TCP port 1-65535, or 0 for any free one", "9464")])
        try:
            self._server, _ = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve Prometheus metrics on {addr}:{port}: {exc.strerror or exc}; "
                          "choose another port (e.g. metrics_port=9464 or --metrics-port 9464), or 0 for "
                          "any free one") from exc
        served = self._server.server_port
        host = advertise_host if advertise_host and addr in ("0.0.0.0", "::", "") else addr
        self.address = f"[{host}]:{served}" if ":" in host else f"{host}:{served}"
        return self.address

    def close(self) -> None:
        """Stop serving (the head's process ending stops it too)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.address = None


# ----------------------------------------------------------------------------- helpers
def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_label_values(key), float(value))
    return family


def _gauge(name: str, doc: str, labels: list[str], values: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_label_values(key), float(value))
    return family


def _label_values(key: Any) -> list[str]:
    return [str(k) for k in key] if isinstance(key, tuple) else [str(key)]


QUOTAS = ("cpu", "gpu", "credits", "priority", "confirm", "coop_cpu", "coop_gpu", "coop_credits")


def _violation_keys(policies: Iterable) -> list[tuple[str, str, str]]:
    """(coop, source, mode) of every violation a policy can report: its rules, the quotas, a relaxation."""
    keys = []
    for policy in policies:
        mode = policy.enforcement_mode.value
        sources = [getattr(rule, "label", None) or getattr(rule, "name", None) or getattr(rule, "type", "rule")
                   for rule in policy.rules] + [f"quota:{q}" for q in QUOTAS[:4]] + ["placement"]
        keys.extend((policy.coop_id, source, mode) for source in dict.fromkeys(sources))
    return keys


def _with_zeros(values: dict, keys: Iterable) -> dict:
    """``values`` plus a 0 for each of ``keys`` not in it: a coop's series exist from its first scrape,
    so ``increase()`` sees its first event."""
    out = dict.fromkeys(keys, 0)
    out.update(values)
    return out


def _read(read: Callable[[], T]) -> T:
    """``read()``, again if the head changed what it iterates meanwhile (dict changed size)."""
    for _ in range(_READ_ATTEMPTS - 1):
        try:
            return read()
        except RuntimeError:
            continue
    return read()
