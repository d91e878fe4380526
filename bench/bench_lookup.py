"""Lookup throughput and latency: our lookup API beside a minimal Flask + one Redis GET.

``python -m bench.bench_lookup [--users N] [--workers W] [--rounds R] [--duration S]``

Starts its own redis-server, loads N users' payloads through the core (begin, write,
publish), then starts, each with the same number of worker processes:
  * ours: ``python -m lookup.serve`` (its production config: granian, 4 app threads a
    worker, keep-alive), and, with --alternatives, the same with 2 and 8 threads;
  * baseline: bench/baseline_app.py (Flask, one GET) under gunicorn's defaults (sync
    worker); with --alternatives also that app under granian, which shows how much of
    the gain is the server's, and its ``floor`` (no framework, just one GET) under
    granian, what any app that makes one Redis round trip a request can reach here.
Each round runs every server in turn (interleaved, so drift hits all alike) at the same
concurrency over random user ids, then batchGet with 100 ids a request. The table holds
the median of the rounds. The load generator is wrk when on PATH, else a Python one.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import Result, run_load
from prescore import codec, keys
from prescore.embedded_redis import RedisProcess, free_port
from prescore.redis_client import connect
from prescore.settings import RedisSettings, StoreSettings
from prescore.versions import Versions, write_payloads

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> Server:
        log = open(log_dir / f"{self.name.replace(' ', '_')}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {log.name}")
            try:
                with urllib.request.urlopen(self.base + "/v1/recommendations/u0", timeout=1):
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


def load_users(url: str, users: int, top_k: int) -> str:
    """Publish ``users`` recommendation payloads as a new version; returns the version."""
    client = connect(RedisSettings(url=url))
    versions = Versions(client, "reco", StoreSettings())
    info = versions.begin("reco", "bench-model")
    scored_at = "2026-01-01T00:00:00Z"
    rows = (
        (
            f"u{u}",
            codec.encode_recommendations(
                f"u{u}",
                [(f"h{(u * 7 + j) % 5000}", 1.0 - j / (top_k + 1)) for j in range(top_k)],
                model="reco",
                model_version="bench-model",
                scored_at=scored_at,
            ),
        )
        for u in range(users)
    )
    written = write_payloads(client, "reco", info.version, rows, batch=2000)
    versions.publish(info.version, written)
    return info.version


def servers(args: argparse.Namespace, redis_url: str, version: str) -> list[Server]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ours_cmd = [sys.executable, "-m", "lookup.serve", "--workers", str(args.workers)]
    found = [
        Server("ours", [*ours_cmd, "--bind", f"127.0.0.1:{(p := free_port())}"], env, p),
        Server(
            "baseline",
            [sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", str(args.workers), "-b",
             f"127.0.0.1:{(b := free_port())}", "bench.baseline_app:app"],
            {**env, "BASELINE_PREFIX": keys.version_prefix("reco", version)},
            b,
        ),
    ]  # fmt: skip
    if args.alternatives:
        for threads in (2, 8):
            port = free_port()
            cmd = [*ours_cmd, "--threads", str(threads), "--bind", f"127.0.0.1:{port}"]
            found.append(Server(f"ours, {threads} threads a worker", cmd, env, port))
        for label, target in (
            ("baseline app under granian", "bench.baseline_app:app"),
            ("floor: bare WSGI + one GET, granian", "bench.baseline_app:floor"),
        ):
            port = free_port()
            cmd = [
                sys.executable, "-m", "granian", "--interface", "wsgi", "--http", "1", "--no-ws",
                "--workers", str(args.workers), "--blocking-threads", "4",
                "--port", str(port), target,
            ]  # fmt: skip
            found.append(Server(label, cmd, found[1].env, port))
    return found


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
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--alternatives", action="store_true", help="also other worker configs")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-lookup-"))
    redis_proc = RedisProcess(work / "redis").start()
    started: list[Server] = []
    try:
        t0 = time.perf_counter()
        version = load_users(redis_proc.url, args.users, args.top_k)
        print(f"loaded {args.users} users as reco {version} in {time.perf_counter() - t0:.1f}s")
        for server in servers(args, redis_proc.url, version):
            started.append(server.start(work))
        print("servers: " + ", ".join(f"{s.name} :{s.port}" for s in started), flush=True)
        single: dict[str, list[Result]] = {s.name: [] for s in started}
        batch: list[Result] = []
        ours = started[0]
        for r in range(args.rounds):
            for server in started:
                res = run_load(
                    server.base, "single", args.users, args.connections, args.duration,
                    args.generator, work,
                )  # fmt: skip
                single[server.name].append(res)
                print(f"round {r + 1} {server.name}: {res.line()}", flush=True)
            res = run_load(
                ours.base, "batch", args.users, args.connections, args.duration,
                args.generator, work, batch_size=args.batch_size,
            )  # fmt: skip
            batch.append(res)
            print(f"round {r + 1} ours batchGet: {res.line()}", flush=True)
        print_table(args, {k: median_result(v) for k, v in single.items()}, median_result(batch))
    finally:
        for server in started:
            server.stop()
        redis_proc.stop()
    return 0


def print_table(args: argparse.Namespace, single: dict[str, Result], batch: Result) -> None:
    base = single["baseline"]
    print()
    print(
        f"Lookup, {args.users} users, {args.workers} worker processes each, "
        f"{args.connections} connections, {args.duration:g}s x {args.rounds} rounds "
        f"(medians), load generator: {base.generator}, {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| server | requests/s | p50 ms | p99 ms | errors "
        "| throughput vs baseline | p99 vs baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, res in single.items():
        print(
            f"| {name} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} | {res.errors} "
            f"| {res.rps / base.rps:.2f}x | {res.p99_ms / base.p99_ms:.2f}x |"
        )
    print()
    print("| batchGet | requests/s | keys/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| ours, {args.batch_size} ids a request | {batch.rps:,.0f} | "
        f"{batch.rps * args.batch_size:,.0f} | {batch.p50_ms:.2f} | {batch.p99_ms:.2f} | "
        f"{batch.errors} |"
    )


if __name__ == "__main__":
    sys.exit(main())
