"""What a node offers an executor: CPUs, memory and NVIDIA GPUs, found at registration.

``discover_node`` describes the node once, for registration; ``sample_gpus`` reads GPU
load for heartbeats. GPUs are read through NVML (``pynvml``, from the ``nvidia-ml-py``
package) or through any object with the same API, such as
:class:`executors.fake_nvml.FakeNvml`. A node without a driver or without GPUs is
normal: both functions then report no GPUs, log one warning per process and never raise.
This module does not import Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

_log = logging.getLogger("coopsched.discovery")

_MIB = 1024 * 1024
_CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")

T = TypeVar("T")


class NvmlApi(Protocol):
    """The part of the NVML API discovery uses; ``pynvml`` and ``FakeNvml`` provide it."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...


class GpuInfo(BaseModel):
    """One GPU as registered: its NVML index, model name, UUID and total memory."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    name: str = Field(description="e.g. 'NVIDIA A100-SXM4-40GB'")
    uuid: str = Field(description="e.g. 'GPU-5d2a...'; stable across reboots, unlike index")
    memory_mb: int = Field(ge=0)


class NodeInventory(BaseModel):
    """What one node offers: CPUs this process may use, memory it may use, and GPUs."""

    model_config = ConfigDict(frozen=True)

    cpus: float = Field(gt=0)
    memory_mb: int = Field(ge=0)
    gpus: list[GpuInfo] = Field(default_factory=list)
    gpu_memory_mb: int = Field(default=0, ge=0, description="sum of gpus[].memory_mb")

    @model_validator(mode="before")
    @classmethod
    def _sum_gpu_memory(cls, data: Any) -> Any:
        """Fill in ``gpu_memory_mb`` from ``gpus`` when the caller leaves it out."""
        if isinstance(data, dict) and "gpu_memory_mb" not in data:
            # Malformed GPUs are left for field validation, which says what is wrong.
            with suppress(TypeError, ValueError, KeyError):
                data = {**data, "gpu_memory_mb": sum(_memory_mb_of(g) for g in data.get("gpus", []))}
        return data

    @model_validator(mode="after")
    def _check_gpu_memory(self) -> NodeInventory:
        total = sum(g.memory_mb for g in self.gpus)
        if self.gpu_memory_mb != total:
            raise ValueError(
                f"gpu_memory_mb must be the sum of gpus[].memory_mb: received "
                f"{self.gpu_memory_mb}, the GPUs add up to {total}; leave gpu_memory_mb out "
                f"to have it computed, e.g. NodeInventory(cpus=8, memory_mb=32768, gpus=[...])"
            )
        return self

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


def _memory_mb_of(gpu: GpuInfo | dict[str, Any]) -> int:
    return gpu.memory_mb if isinstance(gpu, GpuInfo) else int(gpu["memory_mb"])


class GpuSample(BaseModel):
    """One GPU's load at one moment, for heartbeats."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    uuid: str
    utilisation_pct: float = Field(ge=0, le=100)
    memory_used_mb: int = Field(ge=0)
    memory_total_mb: int = Field(ge=0)


def discover_node(nvml: NvmlApi | None = None) -> NodeInventory:
    """Describe this node; ``nvml`` defaults to the real ``pynvml``. Never raises for GPUs."""
    return NodeInventory(
        cpus=_usable_cpus(),
        memory_mb=_usable_memory_bytes() // _MIB,
        gpus=_each_gpu(nvml, _read_info),
    )


def sample_gpus(nvml: NvmlApi | None = None) -> list[GpuSample]:
    """Read each GPU's utilisation and memory use; an empty list when NVML is unavailable."""
    return _each_gpu(nvml, _read_sample)


def reset_warning_state() -> None:
    """Forget that the "NVML unavailable" and skipped-GPU warnings were logged (for tests)."""
    global _warned
    with _warned_lock:
        _warned = False
        _warned_gpus.clear()


# --- CPUs and memory ---------------------------------------------------------------


def _usable_cpus() -> float:
    """CPUs this process may run on (its affinity mask), else all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def _usable_memory_bytes(cgroup_memory_max: Path = _CGROUP_MEMORY_MAX) -> int:
    """Physical memory, capped by a cgroup v2 limit when that is smaller."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit_bytes(cgroup_memory_max)
    return physical if limit is None else min(physical, limit)


def _cgroup_limit_bytes(path: Path) -> int | None:
    """The number in a cgroup v2 ``memory.max``; None when absent, unreadable or ``max``."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --- GPUs through NVML ---------------------------------------------------------------

_warned = False
_warned_gpus: set[int] = set()  # indexes of GPUs already said to be skipped
_warned_lock = threading.Lock()


def _each_gpu(nvml: NvmlApi | None, read: Callable[[NvmlApi, Any, int], T]) -> list[T]:
    """Apply ``read(api, handle, index)`` to every GPU that answers. NVML itself failing (no driver, no
    library) means no GPUs; one GPU failing (fallen off the bus) is skipped, and said once, so a node with
    eight GPUs and one lost still offers seven."""
    try:
        api = nvml if nvml is not None else _import_pynvml()
        with _nvml_session(api):
            out, failed = [], []
            for i in range(api.nvmlDeviceGetCount()):
                try:
                    out.append(read(api, api.nvmlDeviceGetHandleByIndex(i), i))
                except Exception as err:  # noqa: BLE001 (as below: a broken GPU is not a broken node)
                    failed.append((i, err))
            if failed and not out:  # no GPU answers (no permission, old bindings, the driver going): it is
                raise failed[0][1]  # NVML that does not work, said once as such below
            for i, err in failed:
                _warn_gpu_once(i, err)
            return out
    # NVML fails in many ways (NVMLError subclasses, OSError from ctypes, AttributeError
    # from old bindings); none of them is a reason to take the executor down.
    except Exception as err:  # noqa: BLE001
        _warn_once(err)
        return []


def _import_pynvml() -> NvmlApi:
    import pynvml  # the nvidia-ml-py package

    return cast(NvmlApi, pynvml)  # an untyped module with the right functions


@contextmanager
def _nvml_session(api: NvmlApi) -> Iterator[None]:
    """nvmlInit, then nvmlShutdown whatever happens inside (only if init succeeded)."""
    api.nvmlInit()
    try:
        yield
    finally:
        with suppress(Exception):  # a failed shutdown must not discard what was read
            api.nvmlShutdown()


def _read_info(api: NvmlApi, handle: Any, index: int) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=_text(api.nvmlDeviceGetName(handle)),
        uuid=_text(api.nvmlDeviceGetUUID(handle)),
        memory_mb=api.nvmlDeviceGetMemoryInfo(handle).total // _MIB,
    )


def _read_sample(api: NvmlApi, handle: Any, index: int) -> GpuSample:
    memory = api.nvmlDeviceGetMemoryInfo(handle)
    return GpuSample(
        index=index,
        uuid=_text(api.nvmlDeviceGetUUID(handle)),
        utilisation_pct=float(api.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_mb=memory.used // _MIB,
        memory_total_mb=memory.total // _MIB,
    )


def _text(value: str | bytes) -> str:
    """pynvml before 11.5 returns names and UUIDs as bytes."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _warn_once(err: Exception) -> None:
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    _log.warning(
        "NVML unavailable (%s: %s): this node reports no GPUs. If it has NVIDIA GPUs, "
        "check that the driver is loaded (nvidia-smi works) and that nvidia-ml-py is installed.",
        type(err).__name__,
        err,
    )


def _warn_gpu_once(index: int, err: Exception) -> None:
    with _warned_lock:
        if index in _warned_gpus:
            return
        _warned_gpus.add(index)
    _log.warning(
        "GPU %d does not answer NVML (%s: %s): this node reports its other GPUs without it. Check it with "
        "nvidia-smi; tasks Ray places on it may fail until it is reset or taken out (CUDA_VISIBLE_DEVICES).",
        index,
        type(err).__name__,
        err,
    )
