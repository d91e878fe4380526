"""A real three-node Redis Cluster on loopback, built from the same redis-server binary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from prescore.store.embedded_redis import RedisProcess, free_port, server_binary


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid too."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


class RedisCluster3:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, data_dir: Path) -> None:
        self.nodes = [
            RedisProcess(
                data_dir / f"node{i}",
                port=_cluster_port(),
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        cli = str(Path(server_binary()).with_name("redis-cli"))
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [redis.Redis(port=n.port).cluster("info") for n in self.nodes]
            if all(i["cluster_state"] == "ok" for i in infos):
                return self
            time.sleep(0.2)
        raise RuntimeError("cluster did not reach state ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
