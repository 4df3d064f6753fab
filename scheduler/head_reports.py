"""The head's side of usage reports and heartbeats (a mixin of ``scheduler.head.Head``).

A report (forwarded by the tracker, one by one or in batches) settles its job once, frees its executor,
tunes the executor's rounds ahead when it asks for that (``dispatch_ahead="auto"``), samples the job into an
audit record when the coop's policy says so, and starts a scheduling round; a heartbeat refreshes the
executor's offer (bringing an offline one back) and starts one too.
"""

from __future__ import annotations

import asyncio
import logging
import time

from policies.validation import parse
from scheduler.executor_spec import ExecutorOffer
from scheduler.head_auth import guarded
from scheduler.head_dispatch import KEEP_RESULTS
from scheduler.state_store import AuditRecord
from scheduler.tasks import JobState

log = logging.getLogger("coopsched.head")

_WITH_VALUE = (JobState.SUCCEEDED, JobState.FAILED)  # ended states whose attempt has a value (or TaskError)


class Reports:
    """``on_report``, ``on_reports`` and ``heartbeat``, and what a settled report sets off."""

    async def on_report(self, report: dict) -> bool:
        """A usage report from the tracker; settles the ledger once and frees the executor.

        In signed mode the report carries its executor's signature (``report["signed"]``, see
        ``scheduler.head_auth``); a report not signed by the executor it names is refused, counted and
        charges nobody. A malformed report raises ``InvalidRequest`` naming the field."""
        self._ensure_watchdog()
        with self._writes():
            settled = self._settle(report)
            self._schedule()  # before _fetch_refs: the references ride on the dispatch it starts
            self._fetch_refs()
            self._persist()
        return settled

    async def on_reports(self, reports: list[dict]) -> list[bool]:
        """Several reports in one call (the tracker forwards what arrived while its last call was in
        flight): each settled as by ``on_report``, then one scheduling round and one write of what
        changed. A malformed item answers False (the tracker only forwards reports it validated)."""
        self._ensure_watchdog()
        answers = []
        with self._writes():
            for report in reports:
                try:
                    answers.append(self._settle(report))
                except ValueError as exc:
                    log.warning("refused a malformed usage report in a batch: %s", exc)
                    answers.append(False)
            self._schedule()
            self._fetch_refs()
            self._persist()
        return answers

    def _settle(self, report: dict) -> bool:
        report = dict(report) if isinstance(report, dict) else report
        signed = report.pop("signed", None) if isinstance(report, dict) else None
        if self.gate.check_report(report, signed, self.facts) is not None:
            return False
        record = self.core.complete(report)
        task_id = report.get("task_id", "")
        if record is not None:
            self._tune_ahead(report)
            self._dispatched.pop(task_id, None)
            if task_id in self._results:
                self._results.move_to_end(task_id)
            while len(self._results) > KEEP_RESULTS:
                self._results.popitem(last=False)
            self._maybe_audit(task_id, report)
            if task_id not in self._results and self.core.state_of(task_id) in _WITH_VALUE:
                # launched from its worker's queue (core.complete checked the report's executor is the job's)
                self._refs_wanted.setdefault(report["executor_id"], []).append(task_id)
                self._fetching.add(task_id)
                return True  # waiters hear of it once the reference is here (_fetch_refs)
        self._notify(task_id)
        return record is not None

    def _tune_ahead(self, report: dict) -> None:
        """An executor registered with ``dispatch_ahead="auto"``: its rounds ahead from its jobs' run times and the
        gap a report and a dispatch take (``scheduler.ahead_tuning``), changed when they call for it."""
        executor_id = report["executor_id"]
        spec = self.core.table.spec(executor_id) if executor_id in self.core.table else None
        if spec is None or not spec.dispatch_ahead_auto:
            return
        now = time.time()
        ended = float(report["ended_at"])
        self.ahead_tuner.reported(executor_id, ended - float(report["started_at"]), now - ended)
        rounds = self.ahead_tuner.proposal(executor_id, spec.dispatch_ahead, now)
        if rounds is not None:
            spec = self.core.set_dispatch_ahead(executor_id, rounds)
            self.store.put_executor(spec.model_dump(mode="json"), self.core.table.status_of(executor_id).value)
            log.info("executor %s now takes %d round(s) ahead (dispatch_ahead auto)", executor_id, rounds)

    def _maybe_audit(self, task_id: str, report: dict) -> None:
        """Sample the completed job into an audit record, off the dispatch path."""
        task = self.core.task(task_id)
        policy = self.core.policy(task.coop_id) if task else None
        if task is None or policy is None or policy.audit is None:
            return
        count = self._audit_counts[task.coop_id] = self._audit_counts.get(task.coop_id, 0) + 1
        sampling = policy.audit
        if task.member not in sampling.members and not (sampling.one_in and count % sampling.one_in == 0):
            return
        status = self.core.job(task_id)
        session = f"{task.coop_id}/{task.member}"

        def write() -> None:
            seq_no = self.store.next_audit_seq(session)  # by the store: replicas of the head share the numbers
            self.store.put_audit(AuditRecord(
                session_id=session, seq_no=seq_no, timestamp=time.time(),
                coop_id=task.coop_id, member=task.member, task=task.model_dump(mode="json"),
                result={"state": status.state.value, "error": status.error, "executor_id": status.executor_id},
                usage={k: report.get(k) for k in ("cpu_seconds", "gpu_seconds", "cpu_time_s", "peak_memory_mb",
                                                   "started_at", "ended_at", "attempt")}))

        asyncio.get_running_loop().run_in_executor(None, write).add_done_callback(_audit_written)

    @guarded
    async def heartbeat(self, offer: dict) -> bool:
        self._ensure_watchdog()  # after a restart, the first heartbeat starts the watchdog again
        parsed = parse(ExecutorOffer, offer, what="executor offer")
        self._fresh()  # (checked against the memory _writes would rebuild)
        if parsed.executor_id not in self.core.table:
            return False
        with self._writes():  # what this round places (e.g. on an executor back from offline) is written
            was = self.core.table.status_of(parsed.executor_id)
            self.core.update_executor(parsed)
            if self.core.table.status_of(parsed.executor_id) is not was:  # offline -> active: a restart knows
                self._store_status(parsed.executor_id)
            self._schedule()
            self._persist()
        return True


def _audit_written(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:  # said now, not when it is collected
        log.error("an audit record was not written: %s: %s", type(future.exception()).__name__, future.exception())
