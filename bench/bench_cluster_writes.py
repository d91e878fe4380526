"""A version's writes on a 3-node Redis Cluster: fenced per bucket beside unfenced.

    python -m bench.bench_cluster_writes [--rows 200000] [--rounds 3]

Starts a three-node cluster on loopback (tests.redis_cluster, the binary the tests use)
and writes ``--rows`` payloads of about 600 bytes into a registered version in one
process, 10,000 rows a batch as the job writes, each round two ways in turn on an
emptied cluster: fenced (prescore.store.writers.fence: a script on each bucket's node lands
its keys only while the bucket holds the writer's token) and unfenced (the same batches'
HSETs in one cluster pipeline, unchecked). keys/s medians of the rounds; the ratio is
the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis

from prescore.settings import RedisSettings, StoreSettings
from prescore.store import values
from prescore.store.redis_client import connect
from prescore.store.versions import Versions
from tests.redis_cluster import RedisCluster3


def _write(url: str, rows: list[tuple[str, bytes]], fenced: bool) -> float:
    client = connect(RedisSettings(url=url, cluster=True, socket_timeout_s=30.0))
    assert isinstance(client, redis.RedisCluster)
    for node in client.get_primaries():
        client.flushall(target_nodes=node)  # untimed: each write starts on an empty cluster
    versions = Versions(client, "bench", StoreSettings())
    info = versions.begin("m", "1", expected_keys=len(rows))
    where, fence = versions.placed(info.version), versions.fence(info.version)
    started = time.perf_counter()
    written = values.write(client, where, rows, fence=fence if fenced else None)
    rate = written / (time.perf_counter() - started)
    versions.publish(info.version, written)  # every key landed
    client.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [(f"u{i:08d}", b'{"p":"' + b"x" * 590 + b'"}') for i in range(args.rows)]
    fenced: list[float] = []
    unfenced: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-writes-") as tmp:
        cluster = RedisCluster3(Path(tmp)).start()
        try:
            for n in range(args.rounds):
                fenced.append(_write(cluster.url, rows, fenced=True))
                unfenced.append(_write(cluster.url, rows, fenced=False))
                print(
                    f"round {n + 1}: fenced {fenced[-1]:,.0f}, unfenced {unfenced[-1]:,.0f}",
                    flush=True,
                )
        finally:
            cluster.stop()
    med = statistics.median
    ratio = med(f / u for f, u in zip(fenced, unfenced, strict=True))
    where = f"3-node Redis Cluster on loopback, 1 process, {args.rounds} rounds"
    print(f"\n{args.rows} keys, {where}\n")
    print("| path | keys/s | vs unfenced |")
    print("|---|---:|---:|")
    name = "fenced per bucket (a script on each bucket's node)"
    print(f"| {name} | {med(fenced):,.0f} | {ratio:.2f} |")
    print(f"| unfenced (cluster pipeline of HSETs) | {med(unfenced):,.0f} | 1.00 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
