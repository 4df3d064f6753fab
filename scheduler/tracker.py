"""The tracker actor: the durable inbox for workers' usage reports.

A worker sends each finished attempt's ``UsageReport`` here and resends until it gets
"yes". The tracker stores the report (idempotent by task id and attempt: a resend is
answered "yes" again and stored once; a *different* report for a stored attempt — say a
forged one that arrived first — is passed to the head, which verifies the executor's
signature, instead of being dropped as a duplicate), then forwards it to the head, which settles the
ledger in the state store (the accounts of record) and frees the executor. While the
head is unreachable (restarting), reports wait in the store and are forwarded when it
is back; a restarted tracker finds the ones it had not forwarded yet in its store.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from policies.validation import InvalidRequest, parse
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME
from scheduler.state_store import default_store_url, open_store
from scheduler.usage import UsageReport

log = logging.getLogger("coopsched.tracker")


class Tracker:
    def __init__(self, head_name: str = HEAD_NAME, namespace: str = NAMESPACE, resend_interval_s: float = 0.5,
                 store_url: str | None = None):
        self.head_name = head_name
        self.namespace = namespace
        self.resend_interval_s = resend_interval_s
        self.store_url = store_url or default_store_url()
        self.store = open_store(self.store_url)
        self._unforwarded: dict[tuple[str, int], dict] = {
            (r["task_id"], r.get("attempt", 1)): r for r in self.store.unforwarded_reports()}
        self._head = None
        self._loop_task: asyncio.Task | None = None

    async def report(self, report: dict, signed: dict | None = None) -> bool:
        """Accept one report. True means "stored"; resending the same one is harmless.

        ``signed``: the executor's signature of the report (``scheduler.identity.sign_request``), kept
        beside it in the store and forwarded with it; the head verifies it (signed mode)."""
        self._ensure_loop()
        try:
            r = parse(UsageReport, report, what="usage report")
        except InvalidRequest as exc:
            log.warning("refused a malformed usage report: %s", exc)
            raise
        data = r.model_dump(mode="json")
        if signed is not None:
            data["signed"] = signed
        key = (r.task_id, r.attempt)
        if self.store.put_report(data):
            self._unforwarded[key] = data
            await self._forward(key)
            return True
        stored = next((s for s in self.store.reports(r.task_id) if s.get("attempt", 1) == r.attempt), None)
        if stored is None or stored == data:
            return True  # a resend of what is stored
        # A different report for the same attempt: e.g. a forged one (from another executor, or unsigned)
        # reached the inbox first. It is not stored over the first; the head, which verifies signatures and
        # knows where the attempt runs, decides. "Yes" only once the head has it, so the worker resends.
        try:
            head = self._head or ray.get_actor(self.head_name, namespace=self.namespace)
            await head.on_report.remote(data)
        except Exception as exc:  # noqa: BLE001  # the head is restarting: the worker will resend
            self._head = None
            log.info("head unreachable (%s) for a second report of %s attempt %d", type(exc).__name__, *key)
            return False
        return True

    def pending(self) -> int:
        return len(self._unforwarded)

    def count(self) -> int:
        return len(self.store.reports())

    async def ping(self) -> dict:
        self._ensure_loop()
        return {"pending": len(self._unforwarded), "store": self.store_url.split("@")[-1]}

    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._resend_loop())

    async def _forward(self, key: tuple[str, int]) -> None:
        data = self._unforwarded.get(key)
        if data is None:
            return
        try:
            head = self._head or ray.get_actor(self.head_name, namespace=self.namespace)
            self._head = head
            await head.on_report.remote(data)
        except Exception as exc:  # the head is restarting or gone: keep the report, retry later
            self._head = None
            log.info("head unreachable (%s); %d report(s) waiting", type(exc).__name__, len(self._unforwarded))
            return
        self._unforwarded.pop(key, None)
        self.store.mark_forwarded(*key)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resend_interval_s)
            for key in list(self._unforwarded):
                await self._forward(key)


def start_tracker(namespace: str = NAMESPACE, name: str = TRACKER_NAME, head_name: str = HEAD_NAME,
                  store_url: str | None = None):
    """Start (or find) the detached tracker actor. It costs no CPU slot and restarts on failure."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    actor = ray.remote(Tracker).options(name=name, namespace=namespace, lifetime="detached", num_cpus=0,
                                         max_restarts=-1, max_task_retries=-1, max_concurrency=1000,
                                         get_if_exists=True)
    handle = actor.remote(head_name=head_name, namespace=namespace, store_url=store_url)
    return handle
