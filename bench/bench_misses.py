"""Misses under load, through real processes: what single-flight saves, and what a
one-second fallback stall costs. One run, printed as Markdown tables.

    python -m bench.bench_misses [--clients 32] [--keys 10] [--seconds 10] [--workers 2]

Setup: the hotel demo's data (examples.hotels.datagen, ``--users`` users, 100 hotels) and
booking model (examples.hotels.train_reco, ``--epochs``), registered with ``prescore models
register reco --promote --no-int8``; an embedded redis-server; the demo's ``reco`` dataset
(examples/hotels/prescore.toml) published through the core (no Spark) for users u{keys+1}..
with model version 1, so u0..u{keys-1} are in the users table but not in the store: misses
the fallback can score. One ``python -m fallback.serve``; per measurement a fresh
``python -m lookup.serve`` with ``--workers`` granian processes (so single-flight's Redis
lease works across processes) pointed at it, the fallback deadline ``--deadline-s``
(default: production's). /metrics of both is read on their API port.

Keeping misses missing: live write-back is bounded per version by PRESCORE_LIVE_MAX_KEYS;
the lookup runs with 0, so no live answer is stored and every request is a miss (checked:
its hit counters must not move; log level ``error``, as each refused write-back warns).
Single-flight still keeps a flight's outcome in Redis a few deadlines after the answer, and
a miss in that window takes it without a call: that is part of what is measured.

1. Miss storm: ``--clients`` threads (bench.loadgen's Python generator, one keep-alive
   connection each) GET ``/v1/recommendations/{key}`` over the ``--keys`` missing keys for
   ``--seconds``, single-flight on and off (LOOKUP_SINGLE_FLIGHT). Answered: the lookup's
   200s on that route; live inferences: the fallback's 200s on its predict route (a GET
   asks one key: one instance each); saved: prescore_lookup_singleflight_saved_total; all
   differences over the storm. Latency is the client's; errors are non-200 answers and
   socket errors (the lookup's 504s and 503s beside them). The fallback's first calls are
   slow: before the storms, one uncounted storm of twice ``--warm-s`` warms it, and each
   storm is preceded by ``--warm-s`` of its own load (not counted). Everything shares this
   machine's CPUs. With single-flight, a 504 is a leader's timeout (every waiter gets it)
   or a waiter whose own deadline passed just before its leader's answer; leaders'
   timeouts can open the breaker (503s).
2. Stall (unless ``--no-stall``): 4 clients asking missing keys one after another,
   single-flight off (the breaker alone), the fallback stopped (SIGSTOP) for 1 s after 1 s
   of load, then resumed (SIGCONT) for 3 s; requests that failed begun during the stall
   (plus 0.6 s, calls stuck in it ending) and after, with the default breaker and the old
   rule of tests/test_fallback_stall.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.loadgen import Result, Target, run_load, run_threads
from examples.hotels.datagen import Sizes, generate
from lookup.routes import KEY_RULE
from prescore.encoding.codec import PayloadShape, encode_payload
from prescore.settings import RedisSettings, Settings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.redis_client import connect
from tests.fallback_procs import Server, metric_value
from tests.lookup_helpers import publish

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "hotels" / "prescore.toml"
ROUTE = "/v1/recommendations/"
PREDICT = "/v1/datasets/<name>:predict"  # the fallback's route label in its metrics
STALL_CLIENTS = 4
# The rule before the window breaker, as tests/test_fallback_stall.py spells it (OLD_RULE)
OLD_RULE = {
    "PRESCORE_FALLBACK_BREAKER_MIN_CALLS": "3",
    "PRESCORE_FALLBACK_BREAKER_RATIO": "1.0",
    "PRESCORE_FALLBACK_BREAKER_WINDOW_S": "0.4",
    "PRESCORE_FALLBACK_BREAKER_RESET_S": "5",
}


@dataclass
class Storm:
    mode: str
    counts: dict[str, float]  # the lookup's 200 / 503 / 504 answers, saved, hits; live
    load: Result


def build(work: Path, args: argparse.Namespace) -> dict[str, str]:
    """Demo data, a trained and registered reco model; the env every process shares."""
    sizes = Sizes(users=args.users, hotels=100, regions=10, impressions_per_user=10)
    generate(work / "data", sizes)
    env = {
        "PRESCORE_CONFIG": str(CONFIG),
        "PRESCORE_VAR": str(work),
        "PRESCORE_MODEL_STORE": (work / "models").as_uri(),
        "PRESCORE_MODEL_CACHE": str(work / "cache"),
    }
    run_env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    py = sys.executable
    train = [
        py,
        "-m",
        "examples.hotels.train_reco",
        "--data",
        str(work / "data"),
        "--out",
        str(work / "train"),
        "--epochs",
        str(args.epochs),
    ]
    register = [
        py,
        "-m",
        "prescore.cli",
        "models",
        "register",
        "reco",
        str(work / "train"),
        "--promote",
        "--no-int8",
    ]
    for cmd in (train, register):
        subprocess.run(cmd, env=run_env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return env


RECO = PayloadShape("user_id", "items", "hotel_id")  # the demo's reco (prescore.toml)


def reco_payload(user_id: str, n: int, model_version: str) -> bytes:
    """A demo user's ``n`` hotels h0, h1, ... scored 1.0, 0.99, ... (best first)."""
    items = [(f"h{j}", round(1.0 - j / 100, 4)) for j in range(n)]
    return encode_payload(
        RECO,
        user_id,
        items,
        model="reco",
        model_version=model_version,
        scored_at="2026-11-24T10:00:00Z",
    )


def publish_scored(redis_url: str, keys: int, users: int) -> None:
    """Users u{keys+1}.. as the bulk job would have published them (model version 1)."""
    settings = Settings(redis=RedisSettings(url=redis_url))
    rows = [(f"u{i}", reco_payload(f"u{i}", 10, "1")) for i in range(keys + 1, users)]
    publish(connect(settings.redis), settings, "reco", rows, "1")


def counts(lookup: Server, fallback: Server) -> dict[str, float]:
    """The counters a storm moves: the lookup's (summed over its workers), the fallback's."""
    text = requests.get(lookup.url + "/metrics", timeout=5).text
    found = {
        code: metric_value(
            text, "prescore_lookup_requests_total", route=ROUTE + KEY_RULE, status=code
        )
        for code in ("200", "503", "504")
    }
    found["saved"] = metric_value(text, "prescore_lookup_singleflight_saved_total", dataset="reco")
    found["hits"] = sum(
        metric_value(text, "prescore_lookup_keys_total", dataset="reco", result=r)
        for r in ("hit", "written_back")
    )
    text = requests.get(fallback.url + "/metrics", timeout=5).text
    found["live"] = metric_value(
        text, "prescore_fallback_requests_total", route=PREDICT, status="200"
    )
    return found


def lookup_server(env: dict[str, str], fallback: Server, log: Path, **extra: str) -> Server:
    lookup_env = {
        **env,
        **extra,
        "PRESCORE_FALLBACK_URL": fallback.url,
        "PRESCORE_LIVE_MAX_KEYS": "0",
        "PRESCORE_LOG_LEVEL": "error",
        "PROMETHEUS_MULTIPROC_DIR": "",
        "LOOKUP_METRICS_BIND": "",
    }
    return Server("lookup.serve", lookup_env, log).start()


def storm(
    mode: str, env: dict[str, str], fallback: Server, args: argparse.Namespace, work: Path
) -> Storm:
    """One miss storm through a fresh lookup with ``env`` (its mode's settings)."""
    lk = lookup_server(env, fallback, work / f"lookup-{mode.split()[-1]}.log")
    target = Target(args.keys, single=ROUTE, key_prefix="u")
    try:  # warm: connections, each worker's and the fallback's first calls of this pattern
        run_load(lk.url, target, "single", args.clients, args.warm_s, "python", work)
        time.sleep(3 * args.deadline_s + 0.2)  # the warm-up's flight outcomes expired
        before = counts(lk, fallback)
        load = run_load(lk.url, target, "single", args.clients, args.seconds, "python", work)
        after = counts(lk, fallback)
    finally:
        lk.stop()
    return Storm(mode, {k: after[k] - before[k] for k in after}, load)


def storm_table(storms: list[Storm], args: argparse.Namespace) -> list[str]:
    lines = [
        f"{args.clients} clients, {args.keys} missing keys of `reco`, {args.seconds:g} s "
        f"each, lookup {args.workers} workers x {args.threads} threads, fallback deadline "
        f"{args.deadline_s * 1000:g} ms, {os.cpu_count()} CPUs",
        "",
        "| mode | answered requests | live inferences | saved (lookup) | live per answered "
        "| requests/s | p50 ms | p99 ms | errors (504 / 503) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in storms:
        c, lo = s.counts, s.load
        per = c["live"] / c["200"] if c["200"] else float("nan")
        lines.append(
            f"| {s.mode} | {c['200']:,.0f} | {c['live']:,.0f} | {c['saved']:,.0f} | {per:.3f} "
            f"| {lo.rps:,.0f} | {lo.p50_ms:.1f} | {lo.p99_ms:.1f} "
            f"| {lo.errors} ({c['504']:.0f} / {c['503']:.0f}) |"
        )
    held = sum(s.counts["hits"] for s in storms)
    if held:
        lines.append(f"\nWARNING: {held:.0f} keys were hits: misses did not stay missing")
    return lines


def _asking(
    url: str, stop: threading.Event, out: list[tuple[float, int, str]], n: int, keys: int
) -> None:
    """Ask missing keys one after another: (when begun, status, message) of each."""
    host, port = url.removeprefix("http://").split(":")
    conn, i = http.client.HTTPConnection(host, int(port), timeout=5), 0
    while not stop.is_set():
        began, i = time.monotonic(), i + 1
        try:
            conn.request("GET", f"{ROUTE}u{(n + i) % keys}")
            reply = conn.getresponse()
            body = reply.read()
            status = reply.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status, body = 0, b"{}"
        message = "" if status == 200 else str(json.loads(body or b"{}").get("message", ""))
        out.append((began, status, message))


def stall(
    rule: str, slug: str, env: dict[str, str], fallback: Server, keys: int, work: Path, **extra: str
) -> str:
    """A table row: the fallback stopped for 1 s under 4 clients, one breaker rule."""
    lk = lookup_server(
        env, fallback, work / f"lookup-stall-{slug}.log", LOOKUP_SINGLE_FLIGHT="0", **extra
    )
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()
    try:
        requests.get(f"{lk.url}{ROUTE}u{keys}", timeout=5)
        marks: dict[str, float] = {}
        pacer = threading.Thread(target=_pace, args=(fallback, stop, marks))
        pacer.start()
        run_threads(lambda n: _asking(lk.url, stop, seen, n, keys), STALL_CLIENTS)
        pacer.join()
    finally:
        stop.set()
        fallback.resume()  # harmless when running; never leave it stopped
        lk.stop()
    paused, resumed = marks["paused"], marks["resumed"] + 0.6
    during = [st for w, st, _ in seen if paused <= w <= resumed]
    after = [st for w, st, _ in seen if w > resumed]
    opened = sum(1 for *_, m in seen if "circuit open" in m)
    return (
        f"| {rule} | {len(seen)} | {sum(st != 200 for st in during)} of {len(during)} "
        f"| {sum(st != 200 for st in after)} of {len(after)} | {opened} |"
    )


def _pace(fallback: Server, stop: threading.Event, marks: dict[str, float]) -> None:
    """1 s of load, the fallback stopped for 1 s, 3 s more; then the clients stop."""
    try:
        time.sleep(1.0)
        fallback.pause()
        marks["paused"] = time.monotonic()
        time.sleep(1.0)
        fallback.resume()
        marks["resumed"] = time.monotonic()
        time.sleep(3.0)
    finally:
        stop.set()


def stall_table(env: dict[str, str], fallback: Server, keys: int, work: Path) -> list[str]:
    rules: tuple[tuple[str, str, dict[str, str]], ...] = (
        ("default breaker", "default", {}),
        ("old rule (3 failures in a row, 5 s open)", "old", OLD_RULE),
    )
    return [
        f"{STALL_CLIENTS} clients over {keys} missing keys, single-flight off, fallback "
        "stopped 1 s after 1 s of load, 3 s of load after it resumed",
        "",
        "| breaker | requests | failed during the stall (+0.6 s) | failed after "
        "| circuit open answers |",
        "|---|---:|---:|---:|---:|",
        *(stall(rule, slug, env, fallback, keys, work, **extra) for rule, slug, extra in rules),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_misses", description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--keys", type=int, default=10, help="missing keys all clients ask")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each storm")
    parser.add_argument("--workers", type=int, default=2, help="lookup processes")
    parser.add_argument("--threads", type=int, default=4, help="app threads per lookup process")
    parser.add_argument("--warm-s", type=float, default=1.0, help="load before each storm")
    parser.add_argument("--deadline-s", type=float, default=0.1, help="fallback deadline")
    parser.add_argument("--users", type=int, default=400, help="users in the demo data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--no-stall", dest="stall", action="store_false")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-misses-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        env = build(work, args)
        redis_proc = RedisProcess(work / "redis").start()
        fb: Server | None = None
        try:
            publish_scored(redis_proc.url, args.keys, args.users)
            env |= {
                "REDIS_URL": redis_proc.url,
                "PROMETHEUS_MULTIPROC_DIR": "",
                "FALLBACK_METRICS_BIND": "",
            }
            fb_env = {**env, "FALLBACK_DATASETS": "reco"}  # the demo's tagger is not trained
            fb = Server("fallback.serve", fb_env, work / "fallback.log").start()
            print(f"set up in {time.monotonic() - started:.0f}s", flush=True)
            lookup = {
                **env,
                "LOOKUP_WORKERS": str(args.workers),
                "LOOKUP_THREADS": str(args.threads),
                "PRESCORE_FALLBACK_TIMEOUT_S": str(args.deadline_s),
            }
            warm = argparse.Namespace(**{**vars(args), "seconds": 2 * args.warm_s})
            storm("warm-up", {**lookup, "LOOKUP_SINGLE_FLIGHT": "0"}, fb, warm, work)
            storms = [
                storm("single-flight on", {**lookup, "LOOKUP_SINGLE_FLIGHT": "1"}, fb, args, work),
                storm("single-flight off", {**lookup, "LOOKUP_SINGLE_FLIGHT": "0"}, fb, args, work),
            ]
            tables = [("Miss storm", storm_table(storms, args))]
            if args.stall:
                tables.append(
                    ("Breaker under a 1 s fallback stall", stall_table(lookup, fb, args.keys, work))
                )
        finally:
            if fb is not None:
                fb.stop()
            redis_proc.stop()
        print(f"\nbench_misses: {time.monotonic() - started:.0f}s in all")
        for title, lines in tables:
            print(f"\n### {title}\n")
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
