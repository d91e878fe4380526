"""The soak: minutes of mixed traffic through real processes while the store changes under
it; every answer must be one the API promises for its request, and none a 5xx or a
dropped connection.

    python -m bench.soak [--minutes 5] [--clients 16] [--workers 2]

Setup as bench.bench_misses: the hotel demo's data (400 users) and booking model, an
embedded redis-server, one ``fallback.serve`` and one ``lookup.serve`` (``--workers``
granian processes) pointed at it; ``reco`` published for users u11.. so that u0..u10 are
misses the fallback answers live (never written back: they stay misses). ``--clients``
threads, each on a keep-alive connection, loop over a mix: hits, misses, batches of both,
keys the dataset lacks, requests the API must refuse (bad keys, bad bodies, a body over
the bound, an unknown dataset), and ``:predict`` with features. Meanwhile, every
``--every`` seconds, a new version is published, rolled back or removed by gc, as
operators and jobs do. Printed: the answers by kind and status, p50/p99 per kind, and
the unexpected ones; exit status 1 if there was any.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests

from bench.bench_misses import build, lookup_server, publish_scored, reco_payload
from prescore.errors import PrescoreError
from prescore.settings import RedisSettings, Settings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.redis_client import connect
from prescore.store.versions import Versions
from tests.fallback_procs import Server
from tests.lookup_helpers import publish

MISSING = 11  # u0..u10 are not published: the fallback answers them
BATCH = "/v1/recommendations:batchGet"

# kind -> (method, path or body maker, the statuses it may get)
Mix = dict[str, tuple[str, object, set[int]]]


def _mix(users: int) -> Mix:
    def key(lo: int = MISSING) -> str:
        return f"u{random.randrange(lo, users)}"

    live = {200, 503, 504}  # a miss: live answer, or the fallback busy or slow (deadline)
    return {
        "hit": ("GET", lambda: f"/v1/recommendations/{key()}?k=5", {200}),
        "miss": ("GET", lambda: f"/v1/recommendations/u{random.randrange(MISSING)}", live),
        "absent": (
            "GET",
            lambda: f"/v1/recommendations/nobody-{random.randrange(10**6)}",
            {404, 503, 504},
        ),
        "batch": ("POST", lambda: {"user_ids": [key(0) for _ in range(20)], "k": 3}, {200}),
        "bad key": ("GET", lambda: "/v1/recommendations/bad%0Akey", {400}),
        "bad body": ("POST", lambda: {"user_ids": "u1"}, {400}),
        "too large": ("POST", lambda: {"user_ids": ["u" * 70_000]}, {413}),
        "no dataset": ("GET", lambda: "/v1/datasets/nope/u1", {404}),
        "predict": (
            "POST",
            lambda: (
                "/v1/recommendations:predict",
                {
                    "key": f"new-{random.randrange(10**6)}",
                    "features": {
                        "country": "nl",
                        "language": "nl",
                        "device": "mobile",
                        "regions": ["r1"],
                    },
                },
            ),
            live | {400},
        ),
    }


def _client(
    url: str,
    mix: Mix,
    stop: threading.Event,
    seen: Counter[tuple[str, int]],
    times: dict[str, list[float]],
    unexpected: list[str],
    lock: threading.Lock,
) -> None:
    kinds = list(mix)
    with requests.Session() as session:
        while not stop.is_set():
            kind = random.choice(kinds)
            method, make, allowed = mix[kind]
            made = make()  # type: ignore[operator]
            started = time.perf_counter()
            try:
                if method == "GET":
                    reply = session.get(url + made, timeout=10)
                else:
                    path, body = made if isinstance(made, tuple) else (BATCH, made)
                    reply = session.post(url + path, json=body, timeout=10)
                status = reply.status_code
                ok = status in allowed and reply.headers.get("Content-Type") == "application/json"
                if ok and status >= 400:
                    ok = isinstance(reply.json().get("error"), str)  # a stable code
                what = "" if ok else f"{kind}: {status} {reply.text[:200]}"
            except requests.RequestException as exc:
                status, what = -1, f"{kind}: {type(exc).__name__}: {exc}"[:300]
            took = time.perf_counter() - started
            with lock:
                seen[(kind, status)] += 1
                times[kind].append(took)
                if what:
                    unexpected.append(what)


def _operator(
    redis_url: str, users: int, every_s: float, stop: threading.Event, log: list[str]
) -> None:
    """Publish a new version, roll back, gc: in turn, every ``every_s`` seconds."""
    settings = Settings(redis=RedisSettings(url=redis_url))
    client = connect(settings.redis)
    versions = Versions(client, "reco", settings.store)
    step = 0
    while not stop.wait(every_s):
        step += 1
        if step % 3 == 1:
            rows = [(f"u{i}", reco_payload(f"u{i}", 10, str(step))) for i in range(MISSING, users)]
            log.append(f"published {publish(client, settings, 'reco', rows, str(step))}")
        elif step % 3 == 2:
            try:
                log.append(f"rolled back to {versions.rollback().version}")
            except PrescoreError as exc:  # none to roll back to: refused, as it should be
                log.append(f"rollback refused: {exc.code}")
        else:
            log.append(f"gc removed {len(versions.retire_old())} version(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between changes")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        env = build(work, argparse.Namespace(users=args.users, epochs=args.epochs))
        redis_proc = RedisProcess(work / "redis").start()
        servers: list[Server] = []
        try:
            publish_scored(redis_proc.url, MISSING - 1, args.users)
            env |= {
                "REDIS_URL": redis_proc.url,
                "PROMETHEUS_MULTIPROC_DIR": "",
                "FALLBACK_METRICS_BIND": "",
            }
            fb = Server(
                "fallback.serve", {**env, "FALLBACK_DATASETS": "reco"}, work / "fallback.log"
            ).start()
            servers.append(fb)
            lk = lookup_server(
                {**env, "LOOKUP_WORKERS": str(args.workers)},
                fb,
                work / "lookup.log",
            )
            servers.append(lk)
            seen: Counter[tuple[str, int]] = Counter()
            times: dict[str, list[float]] = defaultdict(list)
            unexpected: list[str] = []
            changes: list[str] = []
            lock, stop = threading.Lock(), threading.Event()
            threads = [
                threading.Thread(
                    target=_client,
                    args=(lk.url, _mix(args.users), stop, seen, times, unexpected, lock),
                )
                for _ in range(args.clients)
            ] + [
                threading.Thread(
                    target=_operator, args=(redis_proc.url, args.users, args.every, stop, changes)
                )
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            stop.wait(args.minutes * 60)
            stop.set()
            for t in threads:
                t.join()
            took = time.monotonic() - started
        finally:
            for server in reversed(servers):
                server.stop()
            redis_proc.stop()
    total = sum(seen.values())
    print(
        f"\nsoak: {took / 60:.1f} min, {args.clients} clients, {total:,} requests "
        f"({total / took:,.0f}/s), {len(changes)} store changes "
        f"({', '.join(sorted({c.split()[0] for c in changes}))})"
    )
    print("\n| kind | answers (status: count) | p50 ms | p99 ms |\n|---|---|---:|---:|")
    for kind in sorted(times):
        counts = ", ".join(f"{s}: {n:,}" for (k, s), n in sorted(seen.items()) if k == kind)
        lat = sorted(times[kind])
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
        print(f"| {kind} | {counts} | {statistics.median(lat) * 1000:.2f} | {p99:.2f} |")
    print(f"\nunexpected answers: {len(unexpected)}")
    for line in Counter(unexpected).most_common(10):
        print(f"  {line[1]} x {line[0]}")
    print(json.dumps({"requests": total, "unexpected": len(unexpected)}))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
