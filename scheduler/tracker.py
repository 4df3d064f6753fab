"""The tracker actor: the durable inbox for workers' usage reports.

A worker sends each finished attempt's ``UsageReport`` here and resends until it gets
"yes". The tracker stores the report (idempotent by task id and attempt: a resend is
answered "yes" again and stored once; a *different* report for a stored attempt — say a
forged one that arrived first — is passed to the head, which verifies the executor's
signature, instead of being dropped as a duplicate), then forwards it to the head — what
arrived while the last forward was in flight goes in one ``on_reports`` call — which settles
the ledger in the state store (the accounts of record) and frees the executor. While the
head is unreachable (restarting), reports wait in the store and are forwarded when it
is back; a restarted tracker finds the ones it had not forwarded yet in its store.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from policies.validation import FieldError, InvalidRequest, parse
from scheduler.damaged_records import is_damaged
from scheduler.heap import freeze_in_actor
from scheduler.names import HEAD_NAME, NAMESPACE, TRACKER_NAME
from scheduler.state_store import default_store_url, open_store
from scheduler.usage import UsageReport

log = logging.getLogger("coopsched.tracker")

FORWARD_BATCH = 200
"""Reports forwarded to the head in one call at most."""


class Tracker:
    async def __init__(self, head_name: str = HEAD_NAME, namespace: str = NAMESPACE,  # type: ignore[misc]
                       resend_interval_s: float = 0.5, store_url: str | None = None):
        # async: Ray runs it on the actor's loop, so a restarted tracker starts forwarding what it had
        # stored and acknowledged before it died at once, without waiting for someone to call it
        self.head_name = head_name
        self.namespace = namespace
        self.resend_interval_s = resend_interval_s
        self.store_url = store_url or default_store_url()
        self.store = open_store(self.store_url)
        self._unforwarded: dict[tuple[str, int], dict] = {}
        self._damaged: list[tuple[str, int]] = []  # stored reports that cannot be read (the store logged each)
        for r in self.store.unforwarded_reports():
            if is_damaged(r):  # not forwarded, so it charges nobody, and it stays unforwarded in the store as it
                # was (for an operator to repair); it holds up none of the others. The worker's copy, if it
                # sends it again, is passed to the head (``_store``: it differs from what is stored)
                self._damaged.append((r["task_id"], r["attempt"]))
            else:
                self._unforwarded[(r["task_id"], r.get("attempt", 1))] = r
        self._head = None
        self._loop_task: asyncio.Task | None = None
        self._forward_now = asyncio.Event()
        if self._unforwarded:
            self._ensure_loop()
        freeze_in_actor()  # what start-up made lives as long as the actor: no GC scans of it

    async def report(self, report: dict, signed: dict | None = None) -> bool:
        """Accept one report. True means "stored"; resending the same one is harmless.

        ``signed``: the executor's signature of the report (``scheduler.identity.sign_request``), kept
        beside it in the store and forwarded with it; the head verifies it (signed mode)."""
        self._ensure_loop()
        return await self._accept(report, signed)

    async def report_many(self, items: list) -> list[bool]:
        """Several ``(report, signed)`` pairs in one call (a worker sends what ended since its last
        delivery); each answered as by ``report``, a malformed one with False."""
        self._ensure_loop()
        if not isinstance(items, list):
            raise InvalidRequest("usage reports", [FieldError(
                "items", type(items).__name__, "a list of [report, signature or null] pairs",
                '[[{"task_id": "job-7f3a", ...}, null]]')])
        answers: list[bool | dict] = []
        with self.store.batch():  # one group commit for the lot
            for item in items:
                report, signed = item if isinstance(item, (list, tuple)) and len(item) == 2 else (item, None)
                try:
                    answers.append(self._store(report, signed))
                except InvalidRequest:
                    answers.append(False)
        return [answer if isinstance(answer, bool) else await self._differs(answer) for answer in answers]

    async def _accept(self, report: dict, signed: dict | None) -> bool:
        answer = self._store(report, signed)
        return answer if isinstance(answer, bool) else await self._differs(answer)

    def _store(self, report: dict, signed: dict | None) -> bool | dict:
        """Validate and store one report: True if stored now or a resend of what is stored; the report
        (as stored data) if a *different* one is stored for the same attempt (see ``_differs``)."""
        try:
            r = parse(UsageReport, report, what="usage report")
        except InvalidRequest as exc:
            log.warning("refused a malformed usage report: %s", exc)
            raise
        data = r.model_dump(mode="json")
        if signed is not None:
            if not _is_envelope(signed):  # stored as JSON, checked by the head: it must at least be that
                log.warning("refused a usage report whose signature is not a signed envelope: %.80r", signed)
                raise InvalidRequest("usage report", [FieldError(
                    "signed", repr(signed)[:60], "null or the signed envelope (an object of text and numbers)",
                    '{"key_id": "k1", "signature": "...", ...}')])
            data["signed"] = signed
        if self.store.put_report(data):
            self._unforwarded[(r.task_id, r.attempt)] = data
            self._forward_now.set()
            return True
        stored = next((s for s in self.store.reports(r.task_id) if s.get("attempt", 1) == r.attempt), None)
        # True: a resend of what is stored. One stored damaged differs too: the head, not the damaged copy, decides
        return True if stored is None or stored == data else data

    async def _differs(self, data: dict) -> bool:
        key = (data["task_id"], data.get("attempt", 1))
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
        return {"pending": len(self._unforwarded), "store": self.store_url.split("@")[-1],
                "damaged": len(self._damaged), "damaged_reports": [list(k) for k in self._damaged[:20]]}

    def _ensure_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._forward_loop())

    async def _forward_loop(self) -> None:
        """Forward what waits as soon as a report arrives, and again every ``resend_interval_s``.
        Reports that arrive while a forward is in flight go together in the next one."""
        while True:
            try:
                await asyncio.wait_for(self._forward_now.wait(), timeout=self.resend_interval_s)
            except asyncio.TimeoutError:
                pass
            self._forward_now.clear()
            try:
                while self._unforwarded and await self._forward_batch():
                    pass
            except Exception:  # noqa: BLE001  # a bug here must not end forwarding
                log.exception("forwarding reports failed; retrying in %.1f s", self.resend_interval_s)

    async def _forward_batch(self) -> bool:
        """Send up to FORWARD_BATCH waiting reports in one call; False if the head is unreachable."""
        batch = list(self._unforwarded.items())[:FORWARD_BATCH]
        try:
            head = self._head or ray.get_actor(self.head_name, namespace=self.namespace)
            self._head = head
            await head.on_reports.remote([data for _, data in batch])
        except Exception as exc:  # noqa: BLE001  # the head is restarting or gone: keep them, retry later
            self._head = None
            log.info("head unreachable (%s); %d report(s) waiting", type(exc).__name__, len(self._unforwarded))
            return False
        for key, _ in batch:
            self._unforwarded.pop(key, None)
        self.store.mark_forwarded([key for key, _ in batch])
        return True


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


def _is_envelope(signed: object) -> bool:
    """A signature as workers send it: a small flat object of text, numbers, booleans and nulls."""
    return isinstance(signed, dict) and len(signed) <= 32 and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool))) and
        (not isinstance(v, str) or len(v) <= 10_000) for k, v in signed.items())
