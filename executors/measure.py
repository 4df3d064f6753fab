"""Run a user's function and measure it, inside the process that runs the task.

``run_measured((fn, args, kwargs))`` is what the worker actor launches as a Ray task: it
calls ``fn(*args, **kwargs)`` and returns ``(value, metrics)``. ``metrics`` says when the
call started and ended (``time.time``), how much CPU time this process (and any child
process it waited for) used during the call, and the process's peak resident memory
during the call. A user's exception never escapes: the value is then a
:class:`TaskError` and ``metrics["error"]`` holds the traceback.

Peak memory comes from the kernel's high-water mark: writing ``5`` to
``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, and ``VmHWM`` is read from
``/proc/self/status`` after the call. Where ``clear_refs`` is not writable a thread samples
``/proc/self/statm`` every few milliseconds instead (it can miss a short spike); without
``/proc`` at all, the process's lifetime peak from ``getrusage`` is reported (an upper
bound). The figure is the whole process's RSS, so it includes the interpreter and
whatever the process had loaded before the call. This module does not import Ray.
"""

from __future__ import annotations

import os
import pickle
import resource
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from executors.task_context import TaskContext, running_as

__all__ = ["MAX_ERROR_CHARS", "TaskError", "run_measured", "truncate_error"]

MAX_ERROR_CHARS = 20_000
"""Longest traceback kept in ``metrics["error"]`` (``UsageReport.error`` allows no more)."""

_PROC_SELF = Path("/proc/self")
_SAMPLE_INTERVAL_S = 0.005
_KIB = 1024
_MIB = 1024 * 1024


class TaskError:
    """What a task returns instead of a value when the user's function raised.

    ``type_name`` and ``message`` describe the exception, ``traceback`` is the formatted
    traceback, and ``exception`` is the original exception object when it survives a
    pickle round trip (None otherwise, e.g. for an exception holding a lock or a socket).
    ``raise_()`` re-raises the original, or a ``RuntimeError`` carrying the traceback.
    """

    def __init__(self, type_name: str, message: str, traceback: str, exception: BaseException | None = None) -> None:
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.exception = exception

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskError:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001  # a user's __str__ that raises must not lose the task's report
            message = f"<{type(exc).__name__}: str() failed>"
        return cls(type(exc).__name__, message, text, _picklable_or_none(exc))

    def raise_(self) -> None:
        if self.exception is not None:
            raise self.exception
        raise RuntimeError(f"the task raised {self.type_name}: {self.message}\n{self.traceback}")

    def __repr__(self) -> str:
        return f"TaskError({self.type_name}: {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskError):
            return NotImplemented
        return (self.type_name, self.message, self.traceback) == (other.type_name, other.message, other.traceback)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


def run_measured(payload: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | bytes,
                 context: dict[str, Any] | None = None) -> tuple[object, dict[str, Any]]:
    """Call ``fn(*args, **kwargs)`` from ``payload`` (the tuple, or its cloudpickled bytes) and return
    ``(value, metrics)``; during the call ``executors.task_context.current_task()`` is ``context`` (the
    worker's ``TaskContext`` fields: which task and attempt this is, for its checkpoints), if given.

    ``metrics`` keys: ``started_at``, ``ended_at`` (epoch seconds), ``cpu_time_s``,
    ``peak_memory_mb``, ``memory_method`` (``hwm``, ``sampled`` or ``rusage``), ``pid``
    and ``error`` (None, or the traceback text cut to ``MAX_ERROR_CHARS``). Never raises
    for an exception from ``fn`` (a malformed payload is reported the same way), except
    ``KeyboardInterrupt``, which is how Ray interrupts a task cancelled without force.
    """
    with _peak_rss() as peak:
        started_at = time.time()
        cpu_before = _cpu_time()
        try:
            if isinstance(payload, (bytes, bytearray)):  # as the member signed it: unpickled only here
                from ray import cloudpickle
                payload = cloudpickle.loads(payload)
            fn, args, kwargs = payload
            with running_as(TaskContext.of(context) if context else None):
                value: object = fn(*args, **kwargs)
            error = None
        except KeyboardInterrupt:
            raise  # Ray's cancel(force=False) interrupts the task this way: let Ray see it
        # Whatever else the user's code raises (SystemExit included) is the task's
        # outcome, not the runner's failure.
        except BaseException as exc:  # noqa: BLE001
            value = TaskError.from_exception(exc)
            error = truncate_error(value.traceback)
        cpu_used = max(0.0, _cpu_time() - cpu_before - peak.overhead_cpu_s())  # (a sampler thread's time is
        # the measuring's, not the task's)
        ended_at = time.time()
    metrics = {
        "started_at": started_at,
        "ended_at": max(ended_at, started_at),
        "cpu_time_s": cpu_used,
        "peak_memory_mb": peak.mb,
        "memory_method": peak.method,
        "pid": os.getpid(),
        "error": error,
    }
    return value, metrics


# --- CPU time ----------------------------------------------------------------------------


def _cpu_time() -> float:
    """This process's CPU time plus that of the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# --- peak memory -------------------------------------------------------------------------


class _PeakRss:
    """The result of :func:`_peak_rss`, filled in when the block ends."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.mb = 0.0
        self.overhead_cpu_s: Callable[[], float] = lambda: 0.0  # the measuring's own CPU time, not the task's


@contextmanager
def _peak_rss(proc: Path | None = None) -> Iterator[_PeakRss]:
    """Measure the process's peak RSS over the ``with`` block, by the best means available."""
    proc = proc or _PROC_SELF
    if _reset_high_water_mark(proc) and _read_hwm_kib(proc) is not None:
        peak = _PeakRss("hwm")
        try:
            yield peak
        finally:
            peak.mb = (_read_hwm_kib(proc) or 0) * _KIB / _MIB
        return
    if _read_statm_bytes(proc) is not None:
        peak = _PeakRss("sampled")
        sampler = _RssSampler(proc)
        sampler.start()
        peak.overhead_cpu_s = sampler.cpu_s
        try:
            yield peak
        finally:
            peak.mb = sampler.stop() / _MIB
        return
    peak = _PeakRss("rusage")
    try:
        yield peak
    finally:
        peak.mb = _lifetime_peak_bytes() / _MIB


def _reset_high_water_mark(proc: Path) -> bool:
    try:
        (proc / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _read_hwm_kib(proc: Path) -> int | None:
    try:
        with open(proc / "status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:	  13516 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_statm_bytes(proc: Path) -> int | None:
    """Current RSS: the second field of ``statm``, in pages."""
    try:
        return int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _lifetime_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * _KIB  # bytes on macOS, KiB on Linux


class _RssSampler:
    """A daemon thread that keeps the largest RSS read from ``statm`` until stopped."""

    def __init__(self, proc: Path, interval_s: float = _SAMPLE_INTERVAL_S) -> None:
        self._proc = proc
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coopsched-rss-sampler", daemon=True)
        self.peak = 0

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def cpu_s(self) -> float:
        """CPU seconds this sampler's thread has used so far (0 where the platform cannot tell)."""
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))
        except (OSError, AttributeError, TypeError):
            return 0.0

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        current = _read_statm_bytes(self._proc)
        if current is not None and current > self.peak:
            self.peak = current


# --- errors ------------------------------------------------------------------------------


def _picklable_or_none(exc: BaseException) -> BaseException | None:
    """The exception itself if it can cross a process boundary, else None.

    Plain ``pickle`` is stricter than the ``cloudpickle`` Ray uses (it cannot carry a class
    defined inside a function), so an exception kept here always travels.
    """
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001  # anything pickling raises means "not picklable"
        return None
    return exc


def truncate_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Keep the end of a long traceback (where the exception is), marked as cut."""
    if len(text) <= limit:
        return text
    marker = f"[a traceback of {len(text)} characters, cut to its end]\n"
    return marker + text[len(text) - (limit - len(marker)):]
