"""run_measured without Ray: values, errors, CPU time, peak memory and its fallbacks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from executors import measure
from executors.measure import MAX_ERROR_CHARS, TaskError, run_measured, truncate_error

MIB = 1024 * 1024


def burn_cpu(seconds: float) -> int:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def touch_memory(mb: int) -> int:
    block = b"\x01" * (mb * MIB)  # every page written, so every page resident
    return len(block)


def current_rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raise_(exc: BaseException) -> None:
    raise exc


def test_returns_the_value_and_the_call_times() -> None:
    before = time.time()
    value, metrics = run_measured((divmod, (17, 5), {}))
    after = time.time()

    assert value == (3, 2)
    assert before <= metrics["started_at"] <= metrics["ended_at"] <= after
    assert metrics["error"] is None
    assert metrics["pid"] == os.getpid()


def test_passes_keyword_arguments() -> None:
    value, _ = run_measured((sorted, ([3, 1, 2],), {"reverse": True}))
    assert value == [3, 2, 1]


def test_measures_cpu_time_of_the_call_only() -> None:
    _, idle = run_measured((time.sleep, (0.2,), {}))
    _, busy = run_measured((burn_cpu, (0.3,), {}))

    assert idle["cpu_time_s"] < 0.1
    assert busy["cpu_time_s"] >= 0.29
    assert busy["ended_at"] - busy["started_at"] >= 0.29


def test_counts_cpu_time_of_children_it_waited_for() -> None:
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    _, metrics = run_measured((subprocess.run, ([sys.executable, "-c", code],), {"check": True}))

    assert metrics["cpu_time_s"] >= 0.25


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_sees_an_allocation_freed_before_the_call_returned() -> None:
    baseline = current_rss_mb()
    _, metrics = run_measured((touch_memory, (150,), {}))

    assert metrics["memory_method"] in {"hwm", "sampled"}
    assert metrics["peak_memory_mb"] >= baseline + 140
    assert current_rss_mb() < metrics["peak_memory_mb"] - 100  # the block was freed


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_the_high_water_mark_is_reset_for_each_call() -> None:
    run_measured((touch_memory, (150,), {}))
    _, small = run_measured((len, ("x",), {}))

    if small["memory_method"] == "hwm":
        assert small["peak_memory_mb"] < current_rss_mb() + 50


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_falls_back_to_sampling_statm_when_clear_refs_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_proc = tmp_path / "proc"
    fake_proc.mkdir()
    (fake_proc / "clear_refs").mkdir()  # writing to a directory fails, as a read-only file would
    (fake_proc / "statm").symlink_to("/proc/self/statm")
    monkeypatch.setattr(measure, "_PROC_SELF", fake_proc)
    baseline = current_rss_mb()

    def hold(mb: int) -> int:
        block = b"\x01" * (mb * MIB)
        time.sleep(0.05)  # long enough for the sampler to see it
        return len(block)

    _, metrics = run_measured((hold, (120,), {}))

    assert metrics["memory_method"] == "sampled"
    assert metrics["peak_memory_mb"] >= baseline + 110


def test_falls_back_to_the_lifetime_peak_without_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "_PROC_SELF", tmp_path / "no-proc")

    _, metrics = run_measured((len, ("x",), {}))

    assert metrics["memory_method"] == "rusage"
    assert metrics["peak_memory_mb"] > 0


@pytest.mark.parametrize(
    ("name", "exc", "type_name", "keeps_original"),
    [
        ("a plain exception", ValueError("the sample file is missing"), "ValueError", True),
        ("SystemExit", SystemExit(3), "SystemExit", True),
        ("an exception holding a lock", Unpicklable(), "Unpicklable", False),
    ],
)
def test_an_exception_becomes_a_task_error_value(
    name: str, exc: BaseException, type_name: str, keeps_original: bool
) -> None:
    value, metrics = run_measured((raise_, (exc,), {}))

    assert isinstance(value, TaskError), name
    assert value.type_name == type_name
    assert value.message == str(exc)
    assert "raise_" in value.traceback and type_name in value.traceback
    assert metrics["error"] == value.traceback
    assert (value.exception is exc) is keeps_original
    restored = pickle.loads(pickle.dumps(value))  # a TaskError always crosses processes
    assert restored == value


def test_keyboard_interrupt_is_left_to_ray_cancellation() -> None:
    with pytest.raises(KeyboardInterrupt):
        run_measured((raise_, (KeyboardInterrupt(),), {}))


def test_a_malformed_payload_is_reported_not_raised() -> None:
    value, metrics = run_measured(("not a function", (), {}))  # type: ignore[arg-type]

    assert isinstance(value, TaskError)
    assert value.type_name == "TypeError"
    assert metrics["error"]


def test_task_error_raise_reraises_the_original_or_a_runtime_error() -> None:
    original = KeyError("k")
    with pytest.raises(KeyError):
        TaskError.from_exception(original).raise_()
    with pytest.raises(RuntimeError, match="the task raised Unpicklable: holds a lock"):
        TaskError("Unpicklable", "holds a lock", "Traceback ...").raise_()


def test_a_long_traceback_is_cut_to_its_end() -> None:
    def ping(n: int) -> Any:  # alternating frames, which Python does not fold together
        if n == 0:
            raise RuntimeError("bottom of the stack")
        return pong(n - 1)

    def pong(n: int) -> Any:
        return ping(n)

    _, metrics = run_measured((ping, (200,), {}))

    assert len(metrics["error"]) <= MAX_ERROR_CHARS
    assert metrics["error"].startswith("[a traceback of")
    assert metrics["error"].rstrip().endswith("RuntimeError: bottom of the stack")


@pytest.mark.parametrize(("text", "limit", "kept_whole"), [("short", 100, True), ("x" * 500, 100, False)])
def test_truncate_error(text: str, limit: int, kept_whole: bool) -> None:
    cut = truncate_error(text, limit)
    assert (cut == text) is kept_whole
    assert len(cut) <= limit


def test_an_exception_whose_str_raises_is_still_reported_as_the_tasks_error():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    error = TaskError.from_exception(Unprintable())
    assert error.type_name == "Unprintable" and "str() failed" in error.message


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_the_rss_samplers_own_cpu_time_is_not_charged_to_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_proc = tmp_path / "proc"
    fake_proc.mkdir()
    (fake_proc / "clear_refs").mkdir()  # not writable: the sampling fallback
    (fake_proc / "statm").symlink_to("/proc/self/statm")
    monkeypatch.setattr(measure, "_PROC_SELF", fake_proc)
    _, metrics = run_measured((time.sleep, (1.0,), {}))
    assert metrics["memory_method"] == "sampled"
    assert metrics["cpu_time_s"] < 0.02  # the sampler alone used 0.06-0.09 s of a sleeping task's second
