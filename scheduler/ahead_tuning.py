"""How many rounds ahead to hand an executor registered with ``dispatch_ahead="auto"``, from what the head measures.

An executor that takes work ahead (``ExecutorSpec.dispatch_ahead = k``) is handed up to ``1 + k`` times what it
can run; its worker starts the next task the moment one ends. Without it, each ending costs the executor a gap:
the report travels to the head (worker, tracker, head), the head places the next task and hands it over (a
dispatch call). For jobs much longer than that gap, ``k = 0`` loses little and keeps placement exact (nothing
waits in an executor's queue, where a reclaim or an urgent task cannot reach it); for short jobs the gap is most
of the time and ``k`` should cover it: by Little's law, the tasks that end during one gap, ``gap / run time``.

``AheadTuner`` keeps, per executor, a moving average of its jobs' run times (from their reports) and of the gap
(the report's way to the head, from the report's end time to its arrival, plus the executor's dispatch calls),
and proposes ``k = ceil(gap / run time)`` (0 when the gap is under a tenth of a run: ``MIN_GAP_SHARE``), at most
``max_ahead``; a change is proposed at most every ``SETTLE_S`` and only after ``MIN_SAMPLES`` reports, so a
burst of odd jobs does not churn it. Pure: no Ray, no clock of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.2  # weight of the newest sample in the moving averages
MIN_SAMPLES = 5  # reports of an executor before its first proposal
SETTLE_S = 5.0  # the least time between two changes of one executor's rounds ahead
MIN_GAP_SHARE = 0.1  # a gap under this share of a run time: no rounds ahead


@dataclass
class _Seen:
    run_s: float | None = None  # moving average of its jobs' run times
    report_s: float | None = None  # ... of a report's way from its end to the head
    dispatch_s: float | None = None  # ... of a dispatch call's round trip
    samples: int = 0
    changed_at: float = -math.inf


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


class AheadTuner:
    """Per executor, the rounds ahead its measured run times and gaps call for (``proposal``)."""

    def __init__(self, max_ahead: int) -> None:
        self.max_ahead = max_ahead
        self._seen: dict[str, _Seen] = {}

    def dispatched(self, executor_id: str, seconds: float) -> None:
        """A dispatch call to the executor's worker took ``seconds`` (there and back)."""
        seen = self._seen.setdefault(executor_id, _Seen())
        seen.dispatch_s = _average(seen.dispatch_s, max(0.0, seconds))

    def reported(self, executor_id: str, run_s: float, report_s: float) -> None:
        """A job ran ``run_s`` there; its report reached the head ``report_s`` after it ended."""
        seen = self._seen.setdefault(executor_id, _Seen())
        seen.run_s = _average(seen.run_s, max(0.0, run_s))
        seen.report_s = _average(seen.report_s, max(0.0, report_s))
        seen.samples += 1

    def proposal(self, executor_id: str, current: int, now: float) -> int | None:
        """The rounds ahead to set now, or None to keep ``current`` (too few reports, changed too recently, or
        the same)."""
        seen = self._seen.get(executor_id)
        if seen is None or seen.samples < MIN_SAMPLES or seen.run_s is None or now - seen.changed_at < SETTLE_S:
            return None
        want = self._rounds(seen)
        if want == current:
            return None
        seen.changed_at = now
        return want

    def _rounds(self, seen: _Seen) -> int:
        gap = (seen.report_s or 0.0) + (seen.dispatch_s or 0.0)
        run = seen.run_s or 0.0
        if run <= 0.0:
            return self.max_ahead if gap > 0.0 else 0
        share = gap / run
        return 0 if share < MIN_GAP_SHARE else min(self.max_ahead, math.ceil(share))

    def forget(self, executor_id: str) -> None:
        self._seen.pop(executor_id, None)
