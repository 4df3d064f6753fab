"""Node discovery: CPUs, memory, and GPUs through real and fake NVML. No Ray."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from executors import discovery
from executors.discovery import GpuInfo, NodeInventory, NvmlApi, discover_node, sample_gpus
from executors.fake_nvml import (
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_UNINITIALIZED,
    FakeGpu,
    FakeNvml,
    NVMLError,
)

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def fresh_warning_state() -> None:
    discovery.reset_warning_state()


def nvml_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "coopsched.discovery" and r.levelno == logging.WARNING]


def nvml_library_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def cases(*rows: tuple[object, ...]) -> list[object]:
    """Table rows whose first column, the case name, becomes the test id (pytest.param rows pass through)."""
    return [pytest.param(*row, id=str(row[0])) if type(row) is tuple else row for row in rows]


def a100(**overrides: object) -> FakeGpu:
    return FakeGpu(**overrides)  # type: ignore[arg-type]


def l4(**overrides: object) -> FakeGpu:
    return FakeGpu(**{"name": "NVIDIA L4", "memory_mb": 23034, **overrides})  # type: ignore[arg-type]


# --- CPUs and memory ----------------------------------------------------------------


def test_cpus_and_memory_are_plausible() -> None:
    node = discover_node(FakeNvml(gpus=[]))
    meminfo_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])

    assert 1 <= node.cpus <= (os.cpu_count() or 1)
    assert 64 <= node.memory_mb <= meminfo_kb // 1024 + 1


@pytest.mark.parametrize(
    ("name", "content", "want"),
    cases(
        ("no cgroup v2 file", None, None),
        ("unlimited", "max\n", None),
        ("a limit", "1073741824\n", 1073741824),
        ("empty", "", None),
        ("garbage", "lots", None),
    ),
)
def test_cgroup_limit_bytes(tmp_path: Path, name: str, content: str | None, want: int | None) -> None:
    path = tmp_path / "memory.max"
    if content is not None:
        path.write_text(content)

    assert discovery._cgroup_limit_bytes(path) == want


@pytest.mark.parametrize(
    ("name", "limit_of_physical", "want_of_physical"),
    cases(
        ("a smaller limit wins", 0.5, 0.5),
        ("a larger limit is ignored", 4.0, 1.0),
    ),
)
def test_memory_honours_a_smaller_cgroup_limit(
    tmp_path: Path, name: str, limit_of_physical: float, want_of_physical: float
) -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    path = tmp_path / "memory.max"
    path.write_text(f"{int(physical * limit_of_physical)}\n")

    assert discovery._usable_memory_bytes(path) == int(physical * want_of_physical)


# --- GPUs found ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "nvml", "want_names", "want_memory_mb"),
    cases(
        ("two A100s", FakeNvml(gpus=[a100(), a100()]), ["NVIDIA A100-SXM4-40GB"] * 2, 2 * 40960),
        ("mixed models", FakeNvml(gpus=[a100(), l4()]), ["NVIDIA A100-SXM4-40GB", "NVIDIA L4"], 40960 + 23034),
        ("old pynvml returns bytes", FakeNvml(gpus=[l4(), l4()], bytes_strings=True), ["NVIDIA L4"] * 2, 2 * 23034),
        ("driver but no GPUs", FakeNvml(gpus=[]), [], 0),
    ),
)
def test_discover_node_lists_gpus(
    caplog: pytest.LogCaptureFixture, name: str, nvml: FakeNvml, want_names: list[str], want_memory_mb: int
) -> None:
    node = discover_node(nvml)

    assert [g.name for g in node.gpus] == want_names
    assert [g.uuid for g in node.gpus] == [f"GPU-fake-0000-{i}" for i in range(len(want_names))]
    assert [g.index for g in node.gpus] == list(range(len(want_names)))
    assert node.gpu_count == len(want_names)
    assert node.gpu_memory_mb == want_memory_mb
    assert nvml_warnings(caplog) == []


def test_sample_gpus_follows_the_load() -> None:
    nvml = FakeNvml(gpus=[a100(), l4()])
    steps = [
        {"utilisation_pct": 0.0, "memory_used_mb": 0},
        {"utilisation_pct": 87.0, "memory_used_mb": 12000},
        {"utilisation_pct": 5.0, "memory_used_mb": 300},
    ]
    for step in steps:
        nvml.gpus[1].utilisation_pct = step["utilisation_pct"]
        nvml.gpus[1].memory_used_mb = int(step["memory_used_mb"])

        idle, busy = sample_gpus(nvml)

        assert (idle.uuid, idle.utilisation_pct, idle.memory_used_mb, idle.memory_total_mb) == (
            "GPU-fake-0000-0", 0.0, 0, 40960
        )
        assert (busy.uuid, busy.utilisation_pct, busy.memory_used_mb, busy.memory_total_mb) == (
            "GPU-fake-0000-1", step["utilisation_pct"], step["memory_used_mb"], 23034
        )


def test_every_init_is_shut_down() -> None:
    calls: list[tuple[str, Callable[[FakeNvml], object]]] = [
        ("discover", discover_node),
        ("sample", sample_gpus),
        ("discover again", discover_node),
    ]
    nvml = FakeNvml(gpus=[a100(), a100()])
    for i, (name, call) in enumerate(calls, start=1):
        call(nvml)

        assert (nvml.init_calls, nvml.shutdown_calls, nvml.initialised) == (i, i, False), name


# --- No GPUs to be had --------------------------------------------------------------


def real_pynvml(monkeypatch: pytest.MonkeyPatch) -> NvmlApi | None:
    return None


def pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> NvmlApi | None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    return None


@pytest.mark.parametrize(
    ("name", "make_nvml", "want_in_warning"),
    cases(
        pytest.param(
            "real pynvml, no driver", real_pynvml, "NVMLError_LibraryNotFound",
            id="real pynvml, no driver",
            marks=pytest.mark.skipif(nvml_library_loads(), reason="this machine has an NVIDIA driver"),
        ),
        ("pynvml not installed", pynvml_not_installed, "pynvml"),
        ("driver not loaded", lambda mp: FakeNvml(gpus=[a100()], fail_init=True), "Driver Not Loaded"),
    ),
)
def test_no_gpus_warns_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    make_nvml: Callable[[pytest.MonkeyPatch], NvmlApi | None],
    want_in_warning: str,
) -> None:
    nvml = make_nvml(monkeypatch)

    nodes = [discover_node(nvml), discover_node(nvml)]
    samples = sample_gpus(nvml)

    assert [(n.gpus, n.gpu_count, n.gpu_memory_mb) for n in nodes] == [([], 0, 0)] * 2
    assert all(n.cpus >= 1 and n.memory_mb > 0 for n in nodes)
    assert samples == []
    (warning,) = nvml_warnings(caplog)
    assert "NVML unavailable" in warning and "this node reports no GPUs" in warning
    assert want_in_warning in warning
    if isinstance(nvml, FakeNvml):
        assert not nvml.initialised


def test_a_lost_gpu_is_skipped_and_said_once_and_the_others_are_still_offered(caplog: pytest.LogCaptureFixture) -> None:
    # before, one GPU failing its query hid every GPU of the node (discovery and heartbeat samples alike)
    nvml = FakeNvml(gpus=[a100(), a100(lost=True), l4()])

    nodes = [discover_node(nvml), discover_node(nvml)]
    samples = sample_gpus(nvml)

    assert [[g.index for g in n.gpus] for n in nodes] == [[0, 2]] * 2
    assert nodes[0].gpu_memory_mb == a100().memory_mb + l4().memory_mb
    assert [s.index for s in samples] == [0, 2]
    (warning,) = nvml_warnings(caplog)
    assert warning.startswith("GPU 1 does not answer NVML") and "GPU is lost" in warning
    assert not nvml.initialised


class _NoDeviceAccess(FakeNvml):
    """NVML that starts but answers for no device (no permission, as in a container without /dev/nvidia*)."""

    def nvmlDeviceGetHandleByIndex(self, index: int):  # type: ignore[override]
        self._require_init()
        raise NVMLError(4)  # NVML_ERROR_NO_PERMISSION


def test_nvml_that_answers_for_no_gpu_is_said_once_as_nvml_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    nvml = _NoDeviceAccess(gpus=[a100() for _ in range(8)])

    assert discover_node(nvml).gpus == [] and sample_gpus(nvml) == []
    (warning,) = nvml_warnings(caplog)  # not one "GPU i does not answer" per GPU
    assert "NVML unavailable" in warning and "this node reports no GPUs" in warning


def test_reset_warning_state_lets_the_warning_be_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(fail_init=True)

    discover_node(nvml)
    discovery.reset_warning_state()
    discover_node(nvml)

    assert len(nvml_warnings(caplog)) == 2


# --- The models ---------------------------------------------------------------------


def test_inventory_computes_gpu_memory_and_rejects_a_wrong_sum() -> None:
    gpus = [GpuInfo(index=0, name="NVIDIA L4", uuid="GPU-a", memory_mb=23034)] * 2

    assert NodeInventory(cpus=8, memory_mb=32768, gpus=gpus).gpu_memory_mb == 46068
    with pytest.raises(ValidationError, match="gpu_memory_mb must be the sum of gpus"):
        NodeInventory(cpus=8, memory_mb=32768, gpus=gpus, gpu_memory_mb=1)


# --- The fake behaves like NVML -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "call", "want_code"),
    cases(
        ("count before init", lambda n: n.nvmlDeviceGetCount(), NVML_ERROR_UNINITIALIZED),
        ("shutdown before init", lambda n: n.nvmlShutdown(), NVML_ERROR_UNINITIALIZED),
        ("index past the end", lambda n: (n.nvmlInit(), n.nvmlDeviceGetHandleByIndex(1)), NVML_ERROR_INVALID_ARGUMENT),
        ("negative index", lambda n: (n.nvmlInit(), n.nvmlDeviceGetHandleByIndex(-1)), NVML_ERROR_INVALID_ARGUMENT),
        ("a handle from another fake", lambda n: (n.nvmlInit(), n.nvmlDeviceGetName(other_handle())),
         NVML_ERROR_INVALID_ARGUMENT),
    ),
)
def test_fake_nvml_raises_like_nvml(name: str, call: Callable[[FakeNvml], object], want_code: int) -> None:
    nvml = FakeNvml(gpus=[a100()])

    with pytest.raises(FakeNvml.NVMLError) as caught:
        call(nvml)

    assert caught.value.value == want_code


def other_handle() -> object:
    other = FakeNvml()
    other.nvmlInit()
    return other.nvmlDeviceGetHandleByIndex(0)


def test_fake_nvml_reports_memory_in_bytes() -> None:
    nvml = FakeNvml(gpus=[a100(memory_used_mb=1024, utilisation_pct=42.4)])
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)

    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    utilisation = nvml.nvmlDeviceGetUtilizationRates(handle)

    assert (memory.total, memory.used, memory.free) == (40960 * MIB, 1024 * MIB, 39936 * MIB)
    assert (utilisation.gpu, utilisation.memory) == (42, 0)
    assert NVMLError is FakeNvml.NVMLError
