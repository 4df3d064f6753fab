"""A working NVML in memory, for machines without NVIDIA GPUs.

``FakeNvml`` provides the pynvml functions that :mod:`executors.discovery` calls, with the
same signatures, return shapes (memory in bytes, utilisation in whole percent, opaque
handles) and failure modes (``NVMLError`` with pynvml's error codes before ``nvmlInit``,
for a bad index, for a lost GPU, or from ``nvmlInit`` when the driver is "not loaded").
Unit tests use it, and the demo uses it to make a laptop look like a GPU node::

    nvml = FakeNvml(gpus=[FakeGpu(), FakeGpu(name="NVIDIA L4", memory_mb=23034)])
    discover_node(nvml).gpu_count        # 2
    nvml.gpus[1].utilisation_pct = 80.0  # the next sample_gpus(nvml) reports it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_MIB = 1024 * 1024

# pynvml's codes for the errors the fake can raise.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """What FakeNvml raises, like pynvml's NVMLError: ``value`` is the NVML error code."""

    def __init__(self, value: int) -> None:
        self.value = value
        super().__init__(_MESSAGES.get(value, f"NVML Error with code {value}"))

    def __reduce__(self) -> tuple[type[NVMLError], tuple[int]]:  # picklable across Ray
        return (NVMLError, (self.value,))


@dataclass
class FakeGpu:
    """One simulated GPU. Mutable: change its load between samples."""

    name: str = "NVIDIA A100-SXM4-40GB"
    memory_mb: int = 40960
    utilisation_pct: float = 0.0
    memory_used_mb: int = 0
    memory_busy_pct: float = 0.0
    """Time the memory was being read or written (pynvml's ``utilization.memory``)."""
    lost: bool = False
    """Fell off the bus: queries on it raise NVMLError code 15, as a real lost GPU does."""


@dataclass(frozen=True)
class FakeMemoryInfo:
    """Like pynvml's ``c_nvmlMemory_t``: bytes."""

    total: int
    free: int
    used: int


@dataclass(frozen=True)
class FakeUtilization:
    """Like pynvml's ``c_nvmlUtilization_t``: whole percent over the last sample period."""

    gpu: int
    memory: int


@dataclass(frozen=True)
class _FakeHandle:
    """Opaque to callers, as pynvml's ``c_nvmlDevice_t`` is."""

    owner: int
    index: int


class FakeNvml:
    """An in-memory NVML with pynvml's function names; pass it where ``pynvml`` goes.

    ``gpus`` defaults to one A100 40GB; ``FakeNvml(gpus=[])`` is a driver with no GPUs.
    ``fail_init`` makes ``nvmlInit`` raise "Driver Not Loaded". ``bytes_strings`` returns
    names and UUIDs as bytes, as pynvml did before 11.5. ``init_calls`` and
    ``shutdown_calls`` count every call, failed ones included.
    """

    NVMLError = NVMLError

    def __init__(
        self,
        gpus: Sequence[FakeGpu] | None = None,
        fail_init: bool = False,
        bytes_strings: bool = False,
    ) -> None:
        self.gpus: list[FakeGpu] = list(gpus) if gpus is not None else [FakeGpu()]
        self.fail_init = fail_init
        self.bytes_strings = bytes_strings
        self.init_calls = 0
        self.shutdown_calls = 0
        self._sessions = 0  # NVML is reference-counted: each init needs its own shutdown

    @property
    def initialised(self) -> bool:
        return self._sessions > 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.fail_init:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self._sessions += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._require_init()
        self._sessions -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _FakeHandle:
        self._require_init()
        if not isinstance(index, int) or not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _FakeHandle(owner=id(self), index=index)

    def nvmlDeviceGetName(self, handle: _FakeHandle) -> str | bytes:
        return self._string(self._gpu(handle).name)

    def nvmlDeviceGetUUID(self, handle: _FakeHandle) -> str | bytes:
        self._gpu(handle)
        return self._string(f"GPU-fake-0000-{handle.index}")

    def nvmlDeviceGetMemoryInfo(self, handle: _FakeHandle, version: int | None = None) -> FakeMemoryInfo:
        gpu = self._gpu(handle)
        total = gpu.memory_mb * _MIB
        used = min(gpu.memory_used_mb * _MIB, total)
        return FakeMemoryInfo(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: _FakeHandle) -> FakeUtilization:
        gpu = self._gpu(handle)
        return FakeUtilization(gpu=round(gpu.utilisation_pct), memory=round(gpu.memory_busy_pct))

    def _require_init(self) -> None:
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: _FakeHandle) -> FakeGpu:
        self._require_init()
        if not isinstance(handle, _FakeHandle) or handle.owner != id(self) or handle.index >= len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _string(self, text: str) -> str | bytes:
        return text.encode() if self.bytes_strings else text
