"""Deltas of the live version: an incremental publish against a full one, and the lookup
with deltas against none, measured side by side.

``python -m bench.bench_deltas [--users N] [--share F] [--rounds R] [--duration S]``

Starts its own redis-server. The users' top-10 lists (bench_publish's, a parquet list
column) are published in full as three datasets of the same shape, ``d0``, ``d1`` and
``d10``; then ``d1`` gets one delta and ``d10`` ten, each of ``--share`` of the users
(their lists re-scored). Measured:

1. *Publish*: each round publishes the whole table again in full (into ``d0``), then the
   share as a delta (into ``d1``, whose deltas are rolled back between rounds); wall
   seconds and the Redis commands each ran (INFO's ``total_commands_processed``).
2. *Lookup*: one ``lookup.serve`` (2 workers) serves all three; each round asks each
   dataset in turn (interleaved), single GETs and batchGets of 100 random users at the
   same concurrency; medians of the rounds, and each dataset's ratio to ``d0`` (the median
   of the rounds' ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from bench.bench_lookup import ROOT, Server
from bench.bench_publish import write_list_parquet
from bench.loadgen import Result, Target, run_load
from prescore.data.datasets import Catalog, Dataset, load
from prescore.publishing.parquet import publish_file
from prescore.settings import StoreSettings
from prescore.store import deltas
from prescore.store.embedded_redis import RedisProcess, free_port
from prescore.store.versions import Versions

NAMES = ("d0", "d1", "d10")
DELTAS = {"d0": 0, "d1": 1, "d10": 10}
CONFIG = "".join(
    f'[datasets.{name}]\nkind = "external"\nkey_field = "user_id"\nlist_field = "items"\n'
    f'entry_field = "hotel_id"\n\n'
    for name in NAMES
)


def write_share(full: Path, out: Path, share: float, seed: int) -> int:
    """A random ``share`` of the users of ``full``, each list's scores lowered by 0.1%
    (what a re-scoring of those users would publish, within the drift gate); how many."""
    table = pq.read_table(full)
    rng = np.random.default_rng(seed)
    chosen = table.filter(pa.array(rng.random(table.num_rows) < share))
    items = chosen.column("items").combine_chunks()
    flat = items.flatten()
    scores = pc.round(pc.multiply(flat.field("score"), 0.999), 4)
    rescored = pa.StructArray.from_arrays(
        [flat.field("hotel_id"), flat.field("price"), scores], names=["hotel_id", "price", "score"]
    )
    lists = pa.ListArray.from_arrays(items.offsets, rescored)
    pq.write_table(pa.table({"user_id": chosen.column("user_id"), "items": lists}), out)
    return chosen.num_rows


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def settled(client: redis.Redis, timeout_s: float = 30.0) -> None:
    """Wait until Redis has freed what the last publish's gc unlinked (its lazyfree
    thread frees in the background, on the cores a publish measured next would use)."""
    deadline = time.monotonic() + timeout_s
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)


def timed_publish(
    client: redis.Redis, store: StoreSettings, dataset: Dataset, path: Path, **options: Any
) -> tuple[float, int, int]:
    """(seconds, Redis commands, rows) of one publish, begun on a settled Redis."""
    settled(client)
    before, started = commands(client), time.perf_counter()
    report = publish_file(client, store, dataset, str(path), say=lambda line: None, **options)
    seconds = time.perf_counter() - started
    if not report.published:
        raise RuntimeError(f"{dataset.name}: not published")
    return seconds, commands(client) - before - 1, report.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--share", type=float, default=0.01, help="of the users, a delta")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a load")
    parser.add_argument(
        "--publish-only", action="store_true", help="measure the publishes, not the lookup"
    )
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-deltas-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "prescore.toml"
        config.write_text(CONFIG)
        catalog = load(config, {})
        full = tmp / "full.parquet"
        write_list_parquet(full, args.users)
        server = RedisProcess(tmp / "redis").start()
        client = redis.Redis.from_url(server.url)
        store = StoreSettings()
        lookup: Server | None = None
        try:
            shares = [tmp / f"share{n}.parquet" for n in range(10)]
            sizes = [write_share(full, p, args.share, n) for n, p in enumerate(shares)]
            for name in NAMES:
                timed_publish(client, store, catalog.get(name), full)
                for path in shares[: DELTAS[name]]:
                    timed_publish(client, store, catalog.get(name), path, incremental=True)
            print(f"{args.users} users; deltas of {sizes[0]} users ({args.share:.0%})", flush=True)
            publish_rounds(client, store, catalog, full, shares[0], args.rounds)
            if args.publish_only:
                return 0
            lookup = start_lookup(server.url, config, tmp)
            lookup_rounds(lookup.base, args, tmp)
        finally:
            if lookup is not None:
                lookup.stop()
            server.stop()
    return 0


def publish_rounds(
    client: redis.Redis,
    store: StoreSettings,
    catalog: Catalog,
    full: Path,
    share: Path,
    rounds: int,
) -> None:
    rows: dict[str, list[tuple[float, int, int]]] = {"full": [], "delta": []}
    d1 = Versions(client, "d1", store)
    for _ in range(rounds):
        rows["full"].append(timed_publish(client, store, catalog.get("d0"), full))
        delta = timed_publish(client, store, catalog.get("d1"), share, incremental=True)
        rows["delta"].append(delta)
        d1.drop_delta(deltas.read(client, "d1")[1][0])  # d1 keeps its one delta
    print("\n| publish | keys | seconds (median) | Redis commands | seconds / full |")
    print("|---|---:|---:|---:|---:|")
    full_s = statistics.median(r[0] for r in rows["full"])
    for name, found in rows.items():
        seconds = statistics.median(r[0] for r in found)
        ratio = statistics.median(d[0] / f[0] for d, f in zip(found, rows["full"], strict=True))
        print(
            f"| {name} | {found[0][2]:,} | {seconds:.3f} | {found[0][1]:,} | "
            f"{ratio if name == 'delta' else seconds / full_s:.3f} |"
        )


def start_lookup(redis_url: str, config: Path, tmp: Path) -> Server:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    for name in ("PRESCORE_FALLBACK_URL", "LOOKUP_THREADS", "LOOKUP_WORKERS"):
        env.pop(name, None)
    env.update({"PRESCORE_CONFIG": str(config), "PRESCORE_VAR": str(tmp)})
    port = free_port()
    cmd = [sys.executable, "-m", "lookup.serve", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    return Server("lookup", cmd, env, port, probe="/v1/datasets/d0/u0").start(tmp)


def lookup_rounds(base: str, args: argparse.Namespace, tmp: Path) -> None:
    results: dict[tuple[str, str], list[Result]] = {}
    for _ in range(args.rounds):
        for kind in ("single", "batch"):
            for name in NAMES:
                target = Target(
                    keys=args.users,
                    single=f"/v1/datasets/{name}/",
                    batch=f"/v1/datasets/{name}:batchGet",
                    field="keys",
                    key_prefix="u",
                )
                one = run_load(base, target, kind, args.connections, args.duration, "auto", tmp)
                results.setdefault((kind, name), []).append(one)
    print("\n| lookup | deltas | req/s (median) | p50 ms | p99 ms | errors | req/s / no deltas |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (kind, name), found in results.items():
        none = results[(kind, "d0")]
        ratio = statistics.median(r.rps / n.rps for r, n in zip(found, none, strict=True))
        print(
            f"| {kind} | {DELTAS[name]} | {statistics.median(r.rps for r in found):,.0f} | "
            f"{statistics.median(r.p50_ms for r in found):.2f} | "
            f"{statistics.median(r.p99_ms for r in found):.2f} | "
            f"{sum(r.errors for r in found)} | {ratio:.3f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
