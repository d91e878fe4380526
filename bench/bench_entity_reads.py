"""What live inference holds and reads for a key's entity row: keyed reads of the table
(fallback.keyed_rows, what the fallback does) against holding the whole table (what it
did: every entity in every pod's memory, read again every few minutes), at two table
sizes, each in a fresh process: resident memory, and the time to find the rows of one
key and of a batch of 20 keys (medians of --reads).

    python -m bench.bench_entity_reads [--sizes 1000000,10000000] [--reads 30]

Tables are generated under var/bench-entities (string keys, a few feature columns, row
groups of 1M rows, in random key order as a table appended to over time would be).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench-entities"


def _table(rows: int, ordered: bool) -> Path:
    path = WORK / f"users-{rows}{'-sorted' if ordered else ''}.parquet"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(rows)
    order = np.arange(rows) if ordered else rng.permutation(rows)
    if ordered:  # by key as text, the order a sort by the key column gives
        order = np.array(sorted(order.tolist(), key=lambda i: f"u{i}"))
    table = pa.table({
        "user_id": pa.array([f"u{i}" for i in order.tolist()]),
        "segment": pa.array(rng.choice(["budget", "family", "premium"], rows)),
        "age": rng.integers(18, 90, rows),
        "score": rng.random(rows),
    })  # fmt: skip
    WORK.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=1_000_000)
    return path


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, path: str, rows: int, reads: int) -> None:
    """One measurement, in this (fresh) process; prints a JSON line."""
    import pyarrow.dataset  # noqa: F401  (imported before the base: both paths use it)

    from fallback.keyed_rows import KeyedRows
    from prescore import local_tables
    from prescore.datasets import Table
    from prescore.keys import KeyForm

    table = Table(path=path, key=("user_id",))
    rng = random.Random(7)
    wanted = [[f"u{rng.randrange(rows)}" for _ in range(n)] for n in (1, 20) for _ in range(reads)]
    base = _rss_mb()
    started = time.perf_counter()
    if mode == "keyed":
        keyed = KeyedRows(table, KeyForm())

        def find(keys: list[str]) -> int:
            return len(keyed.get(keys))
    else:  # the whole table in memory, indexed by key
        frame = local_tables.read(table)
        frame = frame.set_index(frame["user_id"].astype(str), drop=False)

        def find(keys: list[str]) -> int:
            return sum(1 for k in keys if k in frame.index)

    ready_s = time.perf_counter() - started
    times: dict[int, list[float]] = {1: [], 20: []}
    for keys in wanted:
        t0 = time.perf_counter()
        assert find(keys) == len(set(keys)), "every key is in the table"
        times[len(keys)].append(time.perf_counter() - t0)
    print(json.dumps({
        "mode": mode, "rows": rows, "ready_s": ready_s, "rss_mb": _rss_mb(), "base_mb": base,
        "one_ms": 1000 * statistics.median(times[1]),
        "twenty_ms": 1000 * statistics.median(times[20]),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "PATH", "ROWS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]), args.reads)
        return
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        for ordered in (False, True):
            path = _table(rows, ordered)
            print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB", flush=True)
            for mode in ("keyed", "whole") if not ordered else ("keyed",):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bench_entity_reads", "--reads",
                     str(args.reads), "--child", mode, str(path), str(rows)],
                    cwd=ROOT, capture_output=True, text=True, check=True,
                )  # fmt: skip
                got = json.loads(out.stdout.strip().splitlines()[-1])
                results.append({**got, "order": "by key" if ordered else "random"})
    print(f"\n{'rows':>11} {'order':>7} {'how':>6} {'ready s':>8} {'RSS MiB':>8} "
          f"{'(imports)':>9} {'1 key ms':>9} {'20 keys ms':>11}")  # fmt: skip
    for r in results:
        print(f"{r['rows']:>11,} {r['order']:>7} {r['mode']:>6} {r['ready_s']:>8.2f} "
              f"{r['rss_mb']:>8.0f} {r['base_mb']:>9.0f} {r['one_ms']:>9.1f} "
              f"{r['twenty_ms']:>11.1f}")  # fmt: skip
    for order in ("random", "by key"):
        keyed = [r for r in results if r["mode"] == "keyed" and r["order"] == order]
        if len(keyed) >= 2:
            ratio = keyed[-1]["rss_mb"] / max(keyed[0]["rss_mb"], 1e-9)
            print(f"keyed reads, {order}: RSS at {keyed[-1]['rows']:,} rows / at "
                  f"{keyed[0]['rows']:,}: {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
