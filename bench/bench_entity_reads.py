"""What live inference holds and reads for a key's entity row, at two table sizes, each
way in a fresh process: keyed reads with the on-disk key index (fallback.key_index, what
the fallback does for a large table once the index is built), keyed reads scanning the
table (before the index is built, or for a small table), and holding the whole table
(what the fallback once did: every entity in every pod's memory). Resident memory after
(and its peak, the index's build included), the time to be ready, the time to find the
rows of one key and of a batch of 20 keys (medians of --reads), and with the index, of a
key in a file added after it was built (an entity new to the table).

    python -m bench.bench_entity_reads [--sizes 1000000,10000000] [--reads 30]

Tables are generated under var/bench-entities (string keys, a few feature columns, row
groups of 1M rows, in random key order as a table appended to over time would be, and
sorted by key), each a folder holding one file.
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
    folder = WORK / f"users-{rows}{'-sorted' if ordered else ''}"
    path = folder / "part-0.parquet"
    if path.exists():
        return folder
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(rows)
    order = np.arange(rows) if ordered else rng.permutation(rows)
    if ordered:  # by key as text, the order a sort by the key column gives
        order = np.array(sorted(order.tolist(), key=lambda i: f"u{i}"))
    table = pa.table(
        {
            "user_id": pa.array([f"u{i}" for i in order.tolist()]),
            "segment": pa.array(rng.choice(["budget", "family", "premium"], rows)),
            "age": rng.integers(18, 90, rows),
            "score": rng.random(rows),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=1_000_000)
    return folder


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (VmHWM: its peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk_mb(folder: str) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def _child(mode: str, path: str, rows: int, reads: int) -> None:
    """One measurement, in this (fresh) process; prints a JSON line."""
    import pyarrow.dataset

    from fallback.keyed_rows import KeyedRows
    from prescore.data import local_tables
    from prescore.data.datasets import Table
    from prescore.encoding.keys import KeyForm

    table = Table(path=path, key=("user_id",))
    rng = random.Random(7)
    wanted = [[f"u{rng.randrange(rows)}" for _ in range(n)] for n in (1, 20) for _ in range(reads)]
    base = _rss_mb()
    started = time.perf_counter()
    index_mb = 0.0
    if mode in ("indexed", "scan"):
        keyed = KeyedRows(table, KeyForm())
        if mode == "indexed":
            assert keyed.maintain(), "a table this large is indexed"
            index_mb = _disk_mb(keyed._index._folder.name)  # type: ignore[union-attr]

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
    new_ms = float("nan")
    if mode == "indexed":  # an entity new to the table: a file added after the index
        import pyarrow as pa
        import pyarrow.parquet as pq

        added = Path(path) / "part-new.parquet"
        new_user = {"user_id": ["new-user"], "segment": ["budget"], "age": [30], "score": [0.5]}
        pq.write_table(pa.Table.from_pydict(new_user), added)
        try:
            took = []
            for _ in range(reads):
                t0 = time.perf_counter()
                assert find(["new-user"]) == 1
                took.append(time.perf_counter() - t0)
            new_ms = 1000 * statistics.median(took)
        finally:
            added.unlink()
    print(
        json.dumps(
            {
                "mode": mode,
                "rows": rows,
                "ready_s": ready_s,
                "rss_mb": _rss_mb(),
                "base_mb": base,
                "peak_mb": _rss_mb("VmHWM"),
                "index_mb": index_mb,
                "one_ms": 1000 * statistics.median(times[1]),
                "twenty_ms": 1000 * statistics.median(times[20]),
                "new_ms": new_ms,
            }
        )
    )


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
            print(f"{path.name}: {_disk_mb(str(path)):.0f} MiB", flush=True)
            for mode in ("indexed", "scan", "whole") if not ordered else ("indexed", "scan"):
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.bench_entity_reads",
                        "--reads",
                        str(args.reads),
                        "--child",
                        mode,
                        str(path),
                        str(rows),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                got = json.loads(out.stdout.strip().splitlines()[-1])
                results.append({**got, "order": "by key" if ordered else "random"})
    print(
        f"\n{'rows':>11} {'order':>7} {'how':>8} {'ready s':>8} {'RSS MiB':>8} "
        f"{'peak':>6} {'(imports)':>9} {'index MiB':>9} {'1 key ms':>9} {'20 keys ms':>11} "
        f"{'new key ms':>11}"
    )
    for r in results:
        print(
            f"{r['rows']:>11,} {r['order']:>7} {r['mode']:>8} {r['ready_s']:>8.2f} "
            f"{r['rss_mb']:>8.0f} {r['peak_mb']:>6.0f} {r['base_mb']:>9.0f} "
            f"{r['index_mb']:>9.0f} {r['one_ms']:>9.1f} {r['twenty_ms']:>11.1f} "
            f"{r['new_ms']:>11.1f}"
        )
    for mode in ("indexed", "scan"):
        for order in ("random", "by key"):
            found = [r for r in results if r["mode"] == mode and r["order"] == order]
            if len(found) >= 2:
                a, b = found[0], found[-1]
                print(
                    f"{mode}, {order}: at {b['rows']:,} rows / at {a['rows']:,}: RSS "
                    f"{b['rss_mb'] / a['rss_mb']:.2f}, peak {b['peak_mb'] / a['peak_mb']:.2f}"
                )


if __name__ == "__main__":
    main()
