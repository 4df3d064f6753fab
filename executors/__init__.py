"""The worker side: node discovery, simulated executors, and (with Ray) the worker actor."""

from executors.discovery import GpuInfo, NodeInventory, discover_node
from executors.fake_nvml import FakeGpu, FakeNvml
from executors.simulated import SimulatedRun, Simulation, VirtualClock

__all__ = [
    "FakeGpu",
    "FakeNvml",
    "GpuInfo",
    "NodeInventory",
    "SimulatedRun",
    "Simulation",
    "VirtualClock",
    "discover_node",
]
