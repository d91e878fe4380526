"""Lookup latency beside its floors: one client at a time, and open-loop fixed rates.

``python -m bench.bench_latency [--users N] [--workers W] [--rounds R] [--requests N]``

Starts its own redis-server, publishes N users' top-10 recommendations as the bulk job
writes them (bench_lookup's publish), then starts, each with W granian workers:
  * ours: ``python -m lookup.serve`` on the demo's declarations, every feature on;
  * floor: a bare WSGI function making the same one Redis GET a request
    (bench/baseline_app.py ``floor``), what any app with one round trip can reach;
  * constant: a bare WSGI function answering a constant (``constant``): the server alone.
For each, in rounds taking turns:
  * c=1: one client on one kept-alive connection, a request after the last answer;
    p50, p99 and p99.9 of ``--requests`` single hits, and the server's CPU time per
    request (user + system of its processes, read from /proc, over those requests);
  * open loop at each ``--rates`` req/s: requests sent on a fixed schedule whatever the
    answers do (a pool of kept-alive connections), each latency counted from the moment
    the schedule said to send it, so a stall delays every request behind it (no
    coordinated omission); p50 and p99.
Beside them, a raw Redis GET round trip (redis-py, c=1). Tables hold the medians of the
rounds. The load generator is Python, on the same cores: its own cost is in every row,
which the constant row shows.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from bench.bench_lookup import CONFIG, Server, publish, reco_payload
from prescore.data.datasets import load
from prescore.encoding import keys
from prescore.store.embedded_redis import RedisProcess, free_port

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def servers(workers: int, redis_url: str, version: str, var: Path) -> list[Server]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(Path.cwd())}
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PRESCORE_FALLBACK_URL", "LOOKUP_WORKERS"):
        env.pop(name, None)
    ours_env = {**env, "PRESCORE_CONFIG": str(CONFIG), "PRESCORE_VAR": str(var)}
    ours_port = free_port()
    ours = [sys.executable, "-m", "lookup.serve", "--workers", str(workers)]
    found = [Server("ours", [*ours, "--bind", f"127.0.0.1:{ours_port}"], ours_env, ours_port)]
    bare_env = {**env, "BASELINE_PREFIX": keys.version_prefix("reco", version)}
    for name, target in (
        ("floor: one GET", "bench.baseline_app:floor"),
        ("constant", "bench.baseline_app:constant"),
    ):
        port = free_port()
        cmd = [sys.executable, "-m", "granian", "--interface", "wsgi", "--http", "1"]
        cmd += ["--no-ws", "--workers", str(workers), "--blocking-threads", "4"]
        found.append(Server(name, [*cmd, "--port", str(port), target], bare_env, port))
    return found


def cpu_s(group: int) -> float:
    """User + system CPU seconds of every live process of process group ``group``."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total * TICK_S


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return statistics.median(ordered), at(0.99), at(0.999)


def one_client(port: int, path: Callable[[int], str], n: int) -> list[float]:
    """Latencies (ms) of ``n`` requests, each sent when the last was answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    out = []
    for i in range(n):
        start = time.perf_counter()
        conn.request("GET", path(i))
        reply = conn.getresponse()
        reply.read()
        out.append((time.perf_counter() - start) * 1000)
        assert reply.status == 200, reply.status
    conn.close()
    return out


def open_loop(
    port: int, path: Callable[[int], str], rate: float, seconds: float, senders: int = 16
) -> list[float]:
    """Latencies (ms) of requests scheduled every 1/``rate`` s for ``seconds``, each
    counted from its scheduled time; ``senders`` threads take the slots in turn."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    lock, taken, out = threading.Lock(), [0], []

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while True:
            with lock:
                slot = taken[0]
                taken[0] += 1
            if slot >= total:
                break
            due = start + slot / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            conn.request("GET", path(slot))
            reply = conn.getresponse()
            reply.read()
            done = (time.perf_counter() - due) * 1000
            with lock:
                out.append(done)
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def redis_round_trips(url: str, version: str, n: int) -> list[float]:
    client = redis.Redis.from_url(url)
    prefix = keys.version_prefix("reco", version)
    out = []
    for i in range(n):
        start = time.perf_counter()
        client.get(f"{prefix}u{i % 1000}")
        out.append((time.perf_counter() - start) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=5000, help="c=1 requests a round")
    parser.add_argument("--rates", default="200,600", help="open-loop req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per open-loop rate")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]

    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    reco = load(CONFIG, {"PRESCORE_VAR": str(work)}).get("reco")
    redis_proc = RedisProcess(work / "redis").start()
    started: list[Server] = []
    try:
        make, frame = reco_payload(reco, 10)
        version = publish(redis_proc.url, reco, args.users, make, {0: frame})
        for server in servers(args.workers, redis_proc.url, version, work):
            started.append(server.start(work))
        users = args.users

        def path(i: int) -> str:
            return f"/v1/recommendations/u{(i * 7919) % users}"

        c1: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in started}
        cpu: dict[str, list[float]] = {s.name: [] for s in started}
        opened: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
        rtt: list[tuple[float, float, float]] = []
        for n in range(args.rounds):
            for server in started[n % len(started) :] + started[: n % len(started)]:
                assert server.proc is not None
                one_client(server.port, path, 200)  # warm: connections, caches
                before = cpu_s(server.proc.pid)
                got = one_client(server.port, path, args.requests)
                cpu[server.name].append((cpu_s(server.proc.pid) - before) / args.requests)
                c1[server.name].append(percentiles(got))
                for rate in rates:
                    lat = open_loop(server.port, path, rate, args.seconds)
                    opened.setdefault((server.name, rate), []).append(percentiles(lat))
                print(f"round {n + 1} {server.name}: c=1 p50 {c1[server.name][-1][0]:.3f} ms")
            rtt.append(percentiles(redis_round_trips(redis_proc.url, version, args.requests)))
        print_tables(args, rates, c1, cpu, opened, rtt)
    finally:
        for server in started:
            server.stop()
        redis_proc.stop()
    return 0


def _med(rows: list[tuple[float, float, float]], i: int) -> float:
    return statistics.median(r[i] for r in rows)


def print_tables(
    args: argparse.Namespace,
    rates: list[float],
    c1: dict[str, list[tuple[float, float, float]]],
    cpu: dict[str, list[float]],
    opened: dict[tuple[str, float], list[tuple[float, float, float]]],
    rtt: list[tuple[float, float, float]],
) -> None:
    print(
        f"\nsingle hits, {args.workers} workers each, {args.users} users, medians of "
        f"{args.rounds} rounds ({args.requests} requests c=1, {args.seconds:g}s a rate)\n"
    )
    head = "| server | c=1 p50 / p99 / p99.9 ms | CPU µs a request | "
    head += " | ".join(f"{r:g} req/s p50 / p99 ms" for r in rates) + " |"
    print(head)
    print("|" + " --- |" * (3 + len(rates)))
    constant = statistics.median(cpu["constant"])
    for name in c1:
        line = f"| {name} | " + " / ".join(f"{_med(c1[name], i):.3f}" for i in range(3))
        mine = statistics.median(cpu[name])
        line += f" | {mine * 1e6:.0f} ({mine / constant:.1f}x constant) | "
        line += " | ".join(
            f"{_med(opened[(name, r)], 0):.3f} / {_med(opened[(name, r)], 1):.3f}" for r in rates
        )
        print(line + " |")
    print(
        "| Redis GET round trip alone (redis-py) | "
        + " / ".join(f"{_med(rtt, i):.3f}" for i in range(3))
        + " | | "
        + " | ".join("" for _ in rates)
        + " |"
    )


if __name__ == "__main__":
    sys.exit(main())
