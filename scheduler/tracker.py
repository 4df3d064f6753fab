"""The tracker actor: receives workers' usage reports, keeps the accounts of record, forwards to the head.

Reports are idempotent by (task id, attempt): a worker that resends after a lost
acknowledgement is answered "yes" again and nothing is counted twice. Settled usage is
kept in a ``Ledger`` (in memory until the durable store arrives, which implements the
same facts); the head's scheduling core settles its own working ledger from the same
report, so the accounts and the admission view agree. When the head is unreachable
(restarting), reports wait here and are forwarded when it is back.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from policies.validation import InvalidRequest, parse
from scheduler.ledger import Cost, Ledger
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME
from scheduler.usage import UsageReport

log = logging.getLogger("coopsched.tracker")


class Tracker:
    def __init__(self, head_name: str = HEAD_NAME, namespace: str = NAMESPACE, resend_interval_s: float = 0.5):
        self.head_name = head_name
        self.namespace = namespace
        self.resend_interval_s = resend_interval_s
        self.ledger = Ledger()
        self.reports: dict[tuple[str, int], UsageReport] = {}
        self._unforwarded: dict[tuple[str, int], UsageReport] = {}
        self._head = None
        self._loop_task: asyncio.Task | None = None

    async def report(self, report: dict) -> bool:
        """Accept one report. True means "stored"; resending the same one is harmless."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._resend_loop())
        try:
            r = parse(UsageReport, report, what="usage report")
        except InvalidRequest as exc:
            log.warning("refused a malformed usage report: %s", exc)
            raise
        key = (r.task_id, r.attempt)
        if key in self.reports:
            return True
        self.reports[key] = r
        self._unforwarded[key] = r
        await self._forward(key)
        return True

    async def settled(self, task_id: str, executor_id: str) -> None:
        """The head accepted this task's report: charge it in the accounts of record."""
        for (tid, _), r in self.reports.items():
            if tid == task_id and r.executor_id == executor_id:
                self.ledger.settle(task_id, r.coop_id, r.member, Cost.of(r.cpu_seconds / 3600, r.gpu_seconds / 3600,
                                                                         r.credits or 0.0), r.ended_at)

    def pending(self) -> int:
        return len(self._unforwarded)

    def count(self) -> int:
        return len(self.reports)

    def ping(self) -> bool:
        return True

    async def _forward(self, key: tuple[str, int]) -> None:
        r = self._unforwarded.get(key)
        if r is None:
            return
        try:
            head = self._head or ray.get_actor(self.head_name, namespace=self.namespace)
            self._head = head
            await head.on_report.remote(r.model_dump(mode="json"))
            self._unforwarded.pop(key, None)
        except Exception as exc:  # the head is restarting or gone: keep the report, retry later
            self._head = None
            log.info("head unreachable (%s); %d report(s) waiting", type(exc).__name__, len(self._unforwarded))

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resend_interval_s)
            for key in list(self._unforwarded):
                await self._forward(key)


def start_tracker(namespace: str = NAMESPACE, name: str = TRACKER_NAME, head_name: str = HEAD_NAME):
    """Start (or find) the detached tracker actor. It costs no CPU slot and restarts on failure."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    actor = ray.remote(Tracker).options(name=name, namespace=namespace, lifetime="detached", num_cpus=0,
                                         max_restarts=-1, max_task_retries=-1, max_concurrency=1000,
                                         get_if_exists=True)
    return actor.remote(head_name=head_name, namespace=namespace)
