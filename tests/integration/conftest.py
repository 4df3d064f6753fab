"""One real multi-node Ray cluster per test session (several raylets on this machine).

Regions are Ray node labels (``region=...``), as ``coopsched executor join`` reads them
on a real cluster. Every process started here is stopped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import ray
from ray.cluster_utils import Cluster

REGIONS = ("us-west", "eu-central", "eu-central", "ap-south")
NODE_CPUS = 2


@dataclass
class ClusterNode:
    node_id: str
    region: str
    index: int


@dataclass
class RayTestCluster:
    cluster: Cluster
    nodes: list[ClusterNode]

    def in_region(self, region: str) -> list[ClusterNode]:
        return [n for n in self.nodes if n.region == region]


def _node_args(region: str, index: int, head: bool) -> dict:
    args = {"num_cpus": NODE_CPUS, "labels": {"region": region, "coopsched-node": str(index)},
            "object_store_memory": 80 * 1024 * 1024}
    if head:
        args["include_dashboard"] = False
    return args


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=_node_args(REGIONS[0], 0, True))
    for i, region in enumerate(REGIONS[1:], start=1):
        cluster.add_node(**_node_args(region, i, False))
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="coopsched-test", log_to_driver=False)
    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        labels = info.get("Labels", {})
        nodes.append(ClusterNode(info["NodeID"], labels["region"], int(labels["coopsched-node"])))
    nodes.sort(key=lambda n: n.index)
    try:
        yield RayTestCluster(cluster, nodes)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server (AOF on) per session, on a free port; stopped at the end."""
    from tests.redis_server import RedisServer
    server = RedisServer(appendonly=True).start()
    try:
        yield server
    finally:
        server.cleanup()
