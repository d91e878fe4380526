"""The store layout at scale: memory per user, and publish cost beside unrelated keys.

    python -m bench.bench_store [--users 200000] [--unrelated 2000000] [--rounds 3]

Starts its own redis-server and writes ``--users`` top-10 payloads in the demo's ``reco``
shape (prescore.encoding.ranking_payloads.RankingPayloads over 2,000 hotels, as the bulk
job encodes them),
then measures, in one run:

- **bytes per user**, from ``INFO memory`` (used_memory before and after the writes, on a
  flushed server) and from ``MEMORY USAGE`` of every key written, for four layouts: JSON
  payloads as a plain key each (the layout before buckets), JSON in hash buckets, compact
  payloads as plain keys, and compact payloads in hash buckets (the layout now);
- **publish with unrelated keys**: the seconds to verify and switch a version of
  ``--users`` keys, and to retire the previous one, with an empty server and then with
  ``--unrelated`` other keys in the same db, for the bucket layout (HLEN of the version's
  buckets; UNLINK of its buckets) beside the SCAN over the keyspace it replaced (the same
  version counted and its plain-key copy removed by SCAN MATCH).

Rounds alternate, medians are shown, and the ratio with / without unrelated keys is the
median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from prescore.encoding import keys
from prescore.encoding.codec import PayloadShape
from prescore.encoding.ranking_payloads import RankingPayloads
from prescore.settings import StoreSettings
from prescore.store import values
from prescore.store.embedded_redis import RedisProcess
from prescore.store.values import Placed
from prescore.store.versions import Versions

SHAPE = PayloadShape("user_id", "items", "hotel_id")  # the demo's reco (prescore.toml)
HOTELS, K = 2000, 10
MODEL_VERSION = "20261201T100000.000Z-abcdef"


def payloads(users: int) -> tuple[list[str], list[bytes], list[bytes], RankingPayloads]:
    """Keys, compact and JSON payloads of ``users`` users, and their encoder (its frame)."""
    enc = RankingPayloads(
        SHAPE,
        [f"h{i}" for i in range(HOTELS)],
        model="reco",
        model_version=MODEL_VERSION,
        scored_at="2026-12-01T10:00:00Z",
    )
    rng = np.random.default_rng(7)
    ids = [f"u{i}" for i in range(users)]
    compact: list[bytes] = []
    plain: list[bytes] = []
    for start in range(0, users, 10_000):
        part = ids[start : start + 10_000]
        items = rng.integers(0, HOTELS, (len(part), K))
        scores = np.sort(rng.random((len(part), K)), axis=1)[:, ::-1]
        found = np.full(len(part), K)
        compact += enc.encode_compact(part, items, scores, found)
        plain += enc.encode_grid(part, items, scores, found)
    return ids, compact, plain, enc


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _memory_usage(client: redis.Redis, names: list[str]) -> int:
    total = 0
    for start in range(0, len(names), 1000):
        pipe = client.pipeline(transaction=False)
        for name in names[start : start + 1000]:
            pipe.memory_usage(name, samples=0)
        total += sum(int(n or 0) for n in pipe.execute())
    return total


def layout_bytes(
    client: redis.Redis, ids: list[str], stored: list[bytes], buckets: bool
) -> tuple[float, float]:
    """(INFO used_memory, MEMORY USAGE) per user of one layout, on a flushed server."""
    client.flushall()
    before = _used(client)
    where = Placed("reco", MODEL_VERSION, keys.bucket_count(len(ids)) if buckets else 0)
    if buckets:
        values.write(client, where, zip(ids, stored, strict=True))
        names = where.bucket_names()
    else:
        names = [keys.value_key("reco", MODEL_VERSION, k) for k in ids]
        for start in range(0, len(ids), 1000):
            client.mset(
                dict(zip(names[start : start + 1000], stored[start : start + 1000], strict=True))
            )
    used = _used(client) - before
    return used / len(ids), _memory_usage(client, names) / len(ids)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def publish_seconds(
    client: redis.Redis, ids: list[str], stored: list[bytes], enc: RankingPayloads
) -> dict[str, float]:
    """Seconds of verify + switch and of retiring the previous version (buckets), and of
    the SCAN count and SCAN delete of the same version as plain keys."""
    v = Versions(client, "reco", StoreSettings(keep_versions=1))
    out: dict[str, float] = {}
    for step in ("old", "new"):
        started = time.perf_counter()
        info = v.begin("reco", MODEL_VERSION, expected_keys=len(ids))
        where = Placed.of(v.dataset, info)
        values.write_frames(client, where, {0: enc.frame()})
        values.write(client, where, zip(ids, stored, strict=True))
        if step == "old":
            v.publish(info.version, len(ids))
            continue
        version = info.version
        switch = _timed(lambda: v.publish(version, len(ids), retire=False))  # noqa: B023
        out["whole publish: begin, write, verify, switch"] = time.perf_counter() - started
        out["verify and switch (HLEN of its buckets)"] = switch
        out["retire the previous version (UNLINK its buckets)"] = _timed(v.retire_old)
    legacy = Placed("reco", "scan", 0)
    for start in range(0, len(ids), 1000):
        client.mset(
            {
                legacy.write_back(k): p
                for k, p in zip(
                    ids[start : start + 1000], stored[start : start + 1000], strict=True
                )
            }
        )
    out["before: count by SCAN MATCH"] = _timed(lambda: values.count(client, legacy))
    out["before: delete by SCAN MATCH"] = _timed(lambda: values.delete(client, legacy))
    return out


def add_unrelated(client: redis.Redis, n: int) -> None:
    for start in range(0, n, 10_000):
        client.mset({f"other:{i}": b"x" * 16 for i in range(start, min(n, start + 10_000))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--unrelated", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    ids, compact, plain, enc = payloads(args.users)
    proc = RedisProcess(Path(tempfile.mkdtemp(prefix="bench-store-"))).start()
    client = redis.Redis.from_url(proc.url)
    try:
        layouts = {
            "JSON, a plain key each (before)": (plain, False),
            "JSON in hash buckets": (plain, True),
            "compact, a plain key each": (compact, False),
            "compact in hash buckets (now)": (compact, True),
        }
        memory = {
            name: layout_bytes(client, ids, stored, b) for name, (stored, b) in layouts.items()
        }
        empty: dict[str, list[float]] = {}
        crowded: dict[str, list[float]] = {}
        for n in range(args.rounds):
            client.flushall()
            for name, s in publish_seconds(client, ids, compact, enc).items():
                empty.setdefault(name, []).append(s)
            client.flushall()
            add_unrelated(client, args.unrelated)
            for name, s in publish_seconds(client, ids, compact, enc).items():
                crowded.setdefault(name, []).append(s)
            print(f"round {n + 1} done", flush=True)
    finally:
        client.close()
        proc.stop()
    print_tables(args, memory, empty, crowded, len(plain[0]), len(compact[0]))
    return 0


def print_tables(
    args: argparse.Namespace,
    memory: dict[str, tuple[float, float]],
    empty: dict[str, list[float]],
    crowded: dict[str, list[float]],
    json_len: int,
    compact_len: int,
) -> None:
    med = statistics.median
    print(
        f"\nMemory, {args.users:,} users, top {K} of {HOTELS} hotels (JSON {json_len} bytes, "
        f"compact {compact_len} bytes a payload)\n"
    )
    print("| layout | bytes/user (INFO used_memory) | bytes/user (MEMORY USAGE) |")
    print("|---|---:|---:|")
    for name, (used, usage) in memory.items():
        print(f"| {name} | {used:,.0f} | {usage:,.0f} |")
    print(
        f"\nPublish of {args.users:,} keys, alone and beside {args.unrelated:,} unrelated "
        f"keys ({args.rounds} rounds, medians)\n"
    )
    print("| step | seconds, empty server | seconds, with unrelated keys | ratio |")
    print("|---|---:|---:|---:|")
    for name in empty:
        ratio = med(c / e for c, e in zip(crowded[name], empty[name], strict=True))
        print(f"| {name} | {med(empty[name]):.3f} | {med(crowded[name]):.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
