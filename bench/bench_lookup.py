"""Lookup throughput and latency: our lookup API beside a minimal Flask + one Redis GET.

``python -m bench.bench_lookup [--users N] [--workers W] [--rounds R] [--duration S]``

Starts its own redis-server, publishes N users' recommendation payloads and N photos' tag
payloads (the demo's ``reco`` and ``tags`` datasets, payloads built by
prescore.encoding.codec.encode_payload in the shapes examples/hotels/prescore.toml declares)
through the core (begin, write, publish), then starts, each with the same number of
worker processes:
  * ours: ``python -m lookup.serve`` with PRESCORE_CONFIG naming the demo's declarations
    (its production config: granian, 4 app threads a worker, keep-alive), and, with
    --alternatives, the same with 2 and 8 threads. Ours is measured on the demo's declared
    route ``/v1/recommendations/{user_id}``, on the generic ``/v1/datasets/reco/{key}``
    beside it (the same keys and payloads), and on ``/v1/image-tags/{image_id}``;
  * baseline: bench/baseline_app.py (Flask, one GET) under gunicorn's defaults (sync
    worker); with --alternatives also that app under granian, which shows how much of
    the gain is the server's, and its ``floor`` (no framework, just one GET) under
    granian, what any app that makes one Redis round trip a request can reach here.
With ``--before REV`` (e.g. the commit before a change), the lookup of that commit
(``git archive REV``, run from its own folder with this virtualenv) is measured beside
ours on the declared route, and ours once more with the miss log and single-flight off
(LOOKUP_MISS_LOG=0, LOOKUP_SINGLE_FLIGHT=0); both read the demo's declarations with a
``max_age_s`` added to reco, so every hit also computes its age and checks it (REV must
know ``max_age_s``: 8dcc8e0 or later). The payloads are published in both layouts, buckets
of compact payloads (ours) and a JSON key each (REV's, and the baseline's).
Each round runs every row in turn (interleaved, so drift hits all alike) at the same
concurrency over random keys, then batchGet with 100 ids a request (the declared
``/v1/recommendations:batchGet`` and the generic ``/v1/datasets/reco:batchGet``). The
table holds the median of the rounds; a ratio to the baseline is the median of the rounds'
ratios. The load generator is wrk when on PATH, else a Python one.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import hiredis
import numpy as np

from bench.loadgen import Result, Target, run_load
from bench.revisions import before_tree
from examples.hotels.imagegen import TAGS
from prescore.data.datasets import Dataset, load
from prescore.encoding import codec, keys
from prescore.encoding.codec import PayloadShape
from prescore.encoding.compact import Frame
from prescore.encoding.ranking_payloads import RankingPayloads
from prescore.settings import RedisSettings, StoreSettings
from prescore.store import values
from prescore.store.embedded_redis import RedisProcess, free_port
from prescore.store.redis_client import connect
from prescore.store.values import Placed
from prescore.store.versions import Versions, write_payloads

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "hotels" / "prescore.toml"
SCORED_AT = "2026-01-01T00:00:00Z"
MODEL_VERSION = "bench-model"
USER_PREFIX, IMAGE_PREFIX = "u", "img-"
HOTELS = 5000


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    cwd: Path = ROOT
    probe: str = "/v1/recommendations/u0"  # answered once the server is up

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> Server:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_")
        log = open(log_dir / f"{slug}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {log.name}")
            try:
                with urllib.request.urlopen(self.base + self.probe, timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def shape(dataset: Dataset) -> PayloadShape:
    """The payload field names of a declared dataset (as the bulk job writes them)."""
    return PayloadShape(dataset.key_field, dataset.list_field, dataset.entry_field)


Made = tuple[str, bytes, bytes]  # key, bytes as the bulk job stores them, the JSON served


def publish(
    url: str,
    dataset: Dataset,
    n: int,
    payload: Callable[[int], Made],
    frames: Mapping[int, Frame] | None = None,
) -> str:
    """Write ``payload(0) .. payload(n - 1)`` as a new version of ``dataset`` and publish
    it; returns the version. Each JSON payload is also written as a plain key of its own
    (the layout before buckets), which the baseline and ``--before`` lookups read; ours
    finds every key in its buckets and never reads those."""
    client = connect(RedisSettings(url=url))
    versions = Versions(client, dataset.name, StoreSettings())
    info = versions.begin(dataset.model, MODEL_VERSION, expected_keys=n)
    rows = [payload(i) for i in range(n)]
    values.write_frames(client, versions.placed(info.version), frames or {})
    written = write_payloads(client, dataset.name, info.version, [(k, s) for k, s, _ in rows])
    for start in range(0, n, 2000):
        client.mset(
            {
                keys.value_key(dataset.name, info.version, k): j
                for k, _, j in rows[start : start + 2000]
            }
        )
    versions.publish(info.version, written)
    return info.version


def reco_payload(dataset: Dataset, top_k: int) -> tuple[Callable[[int], Made], Frame]:
    """User ``u``'s key and top ``top_k`` hotels, best first, compact as the bulk job
    stores them (prescore.encoding.ranking_payloads), and the frame they are decoded with."""
    enc = RankingPayloads(
        shape(dataset),
        [f"h{i}" for i in range(HOTELS)],
        model=dataset.model,
        model_version=MODEL_VERSION,
        scored_at=SCORED_AT,
    )
    scores = np.array([[1.0 - j / (top_k + 1) for j in range(top_k)]])
    found = np.array([top_k])

    def make(u: int) -> Made:
        key = f"{USER_PREFIX}{u}"
        items = np.array([[(u * 7 + j) % HOTELS for j in range(top_k)]])
        stored = enc.encode_compact([key], items, scores, found)[0]
        return key, stored, enc.encode_grid([key], items, scores, found)[0]

    return make, enc.frame()


def tags_payload(dataset: Dataset) -> Callable[[int], Made]:
    """Photo ``i``'s key and 1-3 tags above threshold, best first."""

    def make(i: int) -> Made:
        key = f"{IMAGE_PREFIX}{i}"
        tags = [(TAGS[(i + j) % len(TAGS)], 0.9 - j / 10) for j in range(1 + i % 3)]
        payload = codec.encode_payload(
            shape(dataset),
            key,
            tags,
            model=dataset.model,
            model_version=MODEL_VERSION,
            scored_at=SCORED_AT,
        )
        return key, payload, payload

    return make


@dataclass
class Row:
    """One line of a table: a server under one kind of load on one route."""

    name: str
    server: Server
    target: Target
    kind: str = "single"


def targets(reco: Dataset, tags: Dataset, users: int, images: int) -> dict[str, Target]:
    """The routes measured: the demo's declared ones and the generic one beside them."""
    return {
        "declared": Target(
            users,
            f"/v1/{reco.route}/",
            f"/v1/{reco.route}:batchGet",
            reco.batch_field,
            USER_PREFIX,
        ),
        "generic": Target(
            users,
            f"/v1/datasets/{reco.name}/",
            f"/v1/datasets/{reco.name}:batchGet",
            "keys",
            USER_PREFIX,
        ),
        "tags": Target(
            images,
            f"/v1/{tags.route}/",
            f"/v1/{tags.route}:batchGet",
            tags.batch_field,
            IMAGE_PREFIX,
        ),
    }


def with_max_age(work: Path) -> Path:
    """The demo's declarations with a max age on reco (long: the answers are not stale)."""
    text = CONFIG.read_text().replace(
        'route = "recommendations"', 'route = "recommendations"\nmax_age_s = 63072000', 1
    )
    path = work / "prescore.toml"
    path.write_text(text)
    return path


def servers(args: argparse.Namespace, redis_url: str, version: str, var: Path) -> list[Server]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    for name in (
        "PROMETHEUS_MULTIPROC_DIR",
        "PRESCORE_FALLBACK_URL",
        "LOOKUP_THREADS",
        "LOOKUP_WORKERS",
        "LOOKUP_MISS_LOG",
        "LOOKUP_SINGLE_FLIGHT",
    ):
        env.pop(name, None)  # ours runs its defaults, and a miss is a plain 404
    config = with_max_age(var) if args.before else CONFIG
    ours_env = {**env, "PRESCORE_CONFIG": str(config), "PRESCORE_VAR": str(var)}
    ours_cmd = [sys.executable, "-m", "lookup.serve", "--workers", str(args.workers)]
    base_env = {**env, "BASELINE_PREFIX": keys.version_prefix("reco", version)}
    found = [
        Server("ours", [*ours_cmd, "--bind", f"127.0.0.1:{(p := free_port())}"], ours_env, p),
        Server(
            "baseline",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--no-control-socket",
                "-w",
                str(args.workers),
                "-b",
                f"127.0.0.1:{(b := free_port())}",
                "bench.baseline_app:app",
            ],
            base_env,
            b,
        ),
    ]
    if args.before:
        tree = before_tree(args.before, var)
        old_env = {
            **env,
            "PYTHONPATH": str(tree),
            "PRESCORE_CONFIG": str(config),
            "PRESCORE_VAR": str(var),
        }
        port = free_port()
        old_cmd = [*ours_cmd, "--bind", f"127.0.0.1:{port}"]
        found.append(
            Server(f"before: the lookup of {args.before}", old_cmd, old_env, port, cwd=tree)
        )
        port = free_port()
        off_env = {**ours_env, "LOOKUP_MISS_LOG": "0", "LOOKUP_SINGLE_FLIGHT": "0"}
        off_cmd = [*ours_cmd, "--bind", f"127.0.0.1:{port}"]
        found.append(Server("ours, miss log and single-flight off", off_cmd, off_env, port))
    if args.rsgi:
        port = free_port()
        timed_env = {**ours_env, "LOOKUP_BODY_TIMEOUT_S": "1"}
        label = "ours, bodies timed over RSGI (LOOKUP_BODY_TIMEOUT_S=1)"
        found.append(Server(label, [*ours_cmd, "--bind", f"127.0.0.1:{port}"], timed_env, port))
    if args.alternatives:
        for threads in (2, 8):
            port = free_port()
            cmd = [*ours_cmd, "--threads", str(threads), "--bind", f"127.0.0.1:{port}"]
            found.append(Server(f"ours, {threads} threads a worker", cmd, ours_env, port))
        for label, target in (
            ("the baseline's Flask app under granian", "bench.baseline_app:app"),
            ("floor: bare WSGI + one GET, granian", "bench.baseline_app:floor"),
        ):
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "wsgi",
                "--http",
                "1",
                "--no-ws",
                "--workers",
                str(args.workers),
                "--blocking-threads",
                "4",
                "--port",
                str(port),
                target,
            ]
            found.append(Server(label, cmd, base_env, port))
    return found


def rows_of(started: list[Server], routes: dict[str, Target]) -> tuple[list[Row], list[Row]]:
    """The single-GET rows (ours on each route, the baseline, the alternatives) and the
    batchGet rows."""
    ours, baseline, *others = started
    declared = routes["declared"].single + "{user_id}"
    single = [
        Row(
            f"ours (granian, the default config), declared route {declared}",
            ours,
            routes["declared"],
        ),
        Row("ours, generic route /v1/datasets/reco/{key}", ours, routes["generic"]),
        Row(
            f"ours, declared route {routes['tags'].single}{{image_id}} (tags)", ours, routes["tags"]
        ),
        Row(
            f"baseline: minimal Flask + one GET, gunicorn sync, {declared}",
            baseline,
            routes["declared"],
        ),
        *(Row(f"{s.name}, {declared}", s, routes["declared"]) for s in others),
    ]
    batch = [
        Row(f"ours, {routes['declared'].batch}", ours, routes["declared"], "batch"),
        Row(f"ours, {routes['generic'].batch}", ours, routes["generic"], "batch"),
        *(
            Row(f"{s.name}, {routes['declared'].batch}", s, routes["declared"], "batch")
            for s in others
            if s.name.startswith(("before", "ours, "))
        ),
    ]
    return single, batch


def median_result(results: list[Result]) -> Result:
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        generator=results[0].generator,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--images", type=int, default=20_000, help="photos with tags")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--alternatives", action="store_true", help="also other worker configs")
    parser.add_argument("--before", help="also the lookup of this git revision, side by side")
    parser.add_argument("--rsgi", action="store_true", help="also ours over RSGI (timed bodies)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-lookup-"))
    catalog = load(CONFIG, {"PRESCORE_VAR": str(work)})  # the demo's, as the lookup reads it
    reco, tags = catalog.get("reco"), catalog.get("tags")
    redis_proc = RedisProcess(work / "redis").start()
    started: list[Server] = []
    try:
        t0 = time.perf_counter()
        (make_reco, frame), make_tags = reco_payload(reco, args.top_k), tags_payload(tags)
        version = publish(redis_proc.url, reco, args.users, make_reco, {0: frame})
        tags_version = publish(redis_proc.url, tags, args.images, make_tags)
        sizes = len(make_reco(0)[2]), len(make_tags(1)[2])
        print(
            f"published {args.users} users as reco {version} and {args.images} photos as tags "
            f"{tags_version} in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        for server in servers(args, redis_proc.url, version, work):
            started.append(server.start(work))
        print("servers: " + ", ".join(f"{s.name} :{s.port}" for s in started), flush=True)
        single_rows, batch_rows = rows_of(started, targets(reco, tags, args.users, args.images))
        single: dict[str, list[Result]] = {r.name: [] for r in single_rows}
        batch: dict[str, list[Result]] = {r.name: [] for r in batch_rows}
        limits = {
            "Redis alone: pipelined GET of plain keys (redis-py)": (
                _pipelined,
                Placed("reco", version, 0),
            ),
            "Redis alone: GETs packed by hiredis on a bare socket": (
                _bare,
                Placed("reco", version, 0),
            ),
            "Redis alone: pipelined HGET of our buckets (redis-py)": (
                _pipelined,
                Placed(
                    "reco",
                    version,
                    Versions(connect(RedisSettings(url=redis_proc.url)), "reco", StoreSettings())
                    .get(version)
                    .buckets,
                ),
            ),
        }
        redis_limit: dict[str, list[float]] = {name: [] for name in limits}
        every = [*single_rows, *batch_rows]
        for n in range(args.rounds):  # each round starts at another row: none is always first
            for row in every[n % len(every) :] + every[: n % len(every)]:
                res = run_load(
                    row.server.base,
                    row.target,
                    row.kind,
                    args.connections,
                    args.duration,
                    args.generator,
                    work,
                    batch_size=args.batch_size,
                )
                (single if row.kind == "single" else batch)[row.name].append(res)
                print(f"round {n + 1} {row.name}: {res.line()}", flush=True)
            for name, (reader, where) in limits.items():
                rate = pipelined_rate(reader, redis_proc.url, where, args)
                redis_limit[name].append(rate)
                print(f"round {n + 1} {name}: {rate:,.0f} keys/s", flush=True)
        print_table(args, single, batch, sizes, redis_limit)
    finally:
        for server in started:
            server.stop()
        redis_proc.stop()
    return 0


def _bare(url: str, where: Placed, users: int, size: int, seconds: float) -> int:
    """As :func:`_pipelined`, with no client library: GETs packed by hiredis, written to a
    socket, the replies parsed by hiredis' reader (the least a Python client can cost)."""
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)))
    reader = hiredis.Reader()
    rng = random.Random(os.getpid())
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        commands = where.reads([f"{USER_PREFIX}{rng.randrange(users)}" for _ in range(size)])
        sock.sendall(b"".join([hiredis.pack_command(c) for c in commands]))  # type: ignore[arg-type]
        got = 0
        while got < size:
            reply = reader.gets()
            if reply is False:
                reader.feed(sock.recv(1 << 16))
                continue
            assert reply is not None
            got += 1
        done += size
    sock.close()
    return done


def _pipelined(url: str, where: Placed, users: int, size: int, seconds: float) -> int:
    """Keys read by one process in ``seconds``: ``size`` random keys a pipeline."""
    client = connect(RedisSettings(url=url))
    rng = random.Random(os.getpid())
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        pipe = client.pipeline(transaction=False)
        for command in where.reads([f"{USER_PREFIX}{rng.randrange(users)}" for _ in range(size)]):
            pipe.execute_command(*command)
        assert all(v is not None for v in pipe.execute())
        done += size
    return done


def pipelined_rate(
    reader: Callable[[str, Placed, int, int, float], int],
    url: str,
    where: Placed,
    args: argparse.Namespace,
) -> float:
    """Keys/s of pipelined reads from Redis by as many processes as the lookup has workers,
    each ``--batch-size`` keys a round trip: the store's own limit for a batchGet."""
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [
            pool.submit(reader, url, where, args.users, args.batch_size, args.duration)
            for _ in range(args.workers)
        ]
        return sum(j.result() for j in jobs) / args.duration


def print_table(
    args: argparse.Namespace,
    single: dict[str, list[Result]],
    batch: dict[str, list[Result]],
    sizes: tuple[int, int],
    redis_limit: dict[str, list[float]],
) -> None:
    """Medians of the rounds; a ratio to the baseline is the median of the rounds' ratios."""
    med = statistics.median
    base_name = next(name for name in single if name.startswith("baseline"))
    base = single[base_name]
    print()
    print(
        f"Lookup, {args.users} users (payload {sizes[0]} bytes, top {args.top_k}) and "
        f"{args.images} photos (tags payload ~{sizes[1]} bytes), {args.workers} worker "
        f"processes each, {args.connections} connections, {args.duration:g}s x {args.rounds} "
        f"rounds (medians), load generator: {base[0].generator}, {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| server, route | requests/s | p50 ms | p99 ms | errors "
        "| throughput vs baseline | p99 vs baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, results in single.items():
        res = median_result(results)
        rps = med(r.rps / b.rps for r, b in zip(results, base, strict=True))
        p99 = med(r.p99_ms / b.p99_ms for r, b in zip(results, base, strict=True))
        print(
            f"| {name} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} | {res.errors} "
            f"| {rps:.2f}x | {p99:.2f}x |"
        )
    print()
    print(
        f"| batchGet, {args.batch_size} ids a request | requests/s | keys/s | p50 ms | p99 ms "
        "| errors |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, results in batch.items():
        res = median_result(results)
        print(
            f"| {name} | {res.rps:,.0f} | {res.rps * args.batch_size:,.0f} | "
            f"{res.p50_ms:.2f} | {res.p99_ms:.2f} | {res.errors} |"
        )
    for name, rates in redis_limit.items():
        print(f"| {name}, {args.batch_size} a round trip | | {med(rates):,.0f} | | | |")
    print()
    for name, results in batch.items():
        for limit, rates in list(redis_limit.items())[:2]:
            ratio = med(r.rps * args.batch_size / g for r, g in zip(results, rates, strict=True))
            print(f"{name}: {ratio:.2f} of {limit} (median of the rounds' ratios)")


if __name__ == "__main__":
    sys.exit(main())
