"""Live inference benchmarks, one run, printed as Markdown tables.

    python -m bench.bench_fallback [--seconds 8] [--clients 32]

1. Runtimes: the recommender (jobs.train_reco on jobs.datagen data) and the photo tagger
   (jobs.train_tagger on jobs.imagegen photos)
   in TensorFlow (SavedModel), LiteRT float32 and LiteRT int8: single-row latency, batch
   throughput, AUC / mAP on held-out rows.
2. Micro-batching, the batcher alone: ``--clients`` threads submitting one decoded row
   each straight to fallback.batcher (bench/batcher_load.py), merged against batch size 1.
3. Micro-batching: the fallback server under ``--clients`` concurrent clients, each
   asking for one user's recommendations, with micro-batching against batch size 1.
4. Lookup: a hit (precomputed, in Redis) against a miss served live by the fallback
   (then written back), p50 / p99, through the real lookup and fallback servers.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from jobs.quantize import measure

from bench.batcher_load import batcher_table
from bench.loadgen import run_threads
from prescore.modelstore import ModelStore
from prescore.settings import ModelStoreSettings

JSON = "application/json"
WARM = 20


def requests_get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class Load:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Request = tuple[str, str, bytes | None, str]  # method, path, body, content type


def run_load(url: str, make: Callable[[int], Request], clients: int, seconds: float) -> Load:
    """``clients`` threads, each with one keep-alive connection, for ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    counter = itertools.count()
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.monotonic() < stop:
            method, path, body, content_type = make(next(counter))
            headers = {"Content-Type": content_type} if body else {}
            started = time.perf_counter()
            try:
                conn.request(method, path, body, headers)
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                ok = False
            lat[c].append((time.perf_counter() - started) * 1000)
            errors[c] += 0 if ok else 1

    took = run_threads(client, clients)
    flat = [x for per in lat for x in per]
    return Load(len(flat), sum(errors), took, flat)


def build_models(work: Path, users: int) -> tuple[Path, str, dict[str, tuple[np.ndarray, ...]]]:
    """Train reco and the tagger on generated data (jobs.datagen, jobs.imagegen); both are
    quantized by their training jobs, saved and promoted."""
    from jobs.datagen import Sizes, generate
    from jobs.train_reco import encode_events, load_tables, train
    from prescore.reco_features import Schema

    data = work / "data"
    generate(data, Sizes(users=users, hotels=500, impressions_per_user=20, days=30, test_days=6))
    root = (work / "models").as_uri()
    store = ModelStore(ModelStoreSettings(root=root))
    result = train(data, store, epochs=3, promote=True)
    print(f"reco v{result.version}: AUC {result.metrics}", flush=True)
    tables = load_tables(data)
    schema = Schema.from_dict(store.meta("reco", result.version)["schema"])
    test = tables["events_test"].sample(min(5000, len(tables["events_test"])), random_state=1)
    reco_eval = (encode_events(test, tables, schema), test["booked"].to_numpy())
    from jobs.imagegen import generate as generate_photos
    from jobs.train_tagger import load_images, split
    from jobs.train_tagger import train as train_tagger

    photos = work / "photos"
    generate_photos(photos, 800, seed=5)
    tagged = train_tagger(photos, store, epochs=6, promote=True)
    print(f"tagger v{tagged.version}: {tagged.metrics}", flush=True)
    xi, yi = load_images(photos)
    xi, yi = xi[split(len(xi), 7)[2]], yi[split(len(yi), 7)[2]]
    return data, root, {"reco": reco_eval, "tagger": (xi, yi)}


def runtime_table(root: str, evals: dict[str, tuple[np.ndarray, ...]]) -> list[str]:
    store = ModelStore(ModelStoreSettings(root=root))
    lines = [
        "| model | runtime | single-row latency (ms) | batch throughput (rows/s) | batch "
        "| quality |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, metric, batch in (("reco", "auc", 256), ("tagger", "map", 32)):
        x, y = evals[name]
        ref = store.resolve(name)
        found = measure(ref.path, x, y, metric, batch=batch, repeats=50)
        for runtime, r in found.items():
            lines.append(
                f"| {name} | {runtime} | {r['single_ms']:.3f} | {r['batch_rows_per_s']:,.0f} | "
                f"{r['batch']} | {metric.upper()} {r[metric]:.4f} |"
            )
        print(f"{name} runtimes measured", flush=True)
    return lines


def reco_request(users: int) -> Callable[[int], Request]:
    def make(i: int) -> Request:
        body = {"instances": [{"user_id": f"u{i % users}"}], "k": 10}
        return "POST", "/v1/predict/recommendations", json.dumps(body).encode(), JSON

    return make


def image_request(photos: Path) -> Callable[[int], Request]:
    jpegs = [p.read_bytes() for p in sorted(photos.glob("img-*.jpg"))[:64]]

    def make(i: int) -> Request:
        path = f"/v1/predict/image-tags?image_id=i{i}"
        return "POST", path, jpegs[i % len(jpegs)], "image/jpeg"

    return make


def requests_per_call(url: str, model: str) -> float:
    """Mean requests merged into one model call since the server started (its metrics)."""
    import urllib.request

    from tests.fallback_procs import metric_value

    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = metric_value(text, "prescore_fallback_batch_requests_sum", model=model)
    calls = metric_value(text, "prescore_fallback_batch_requests_count", model=model)
    return total / calls if calls else float("nan")


def batching_table(
    data: Path, root: str, users: int, args: argparse.Namespace, logs: Path
) -> list[str]:
    from tests.fallback_procs import Server

    lines = [
        "| model | runtime | batching | clients | requests/s | p50 (ms) | p99 (ms) | errors "
        "| requests per model call |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    cases = (
        ("reco", "tf", reco_request(users), "4096"),
        ("reco", "auto", reco_request(users), "4096"),
        ("tagger", "tf", image_request(data.parent / "photos"), "32"),
    )
    for model, runtime, make, max_batch in cases:
        loads = {}
        for label, batch in (("micro-batching", max_batch), ("batch size 1", "1")):
            prefix = f"FALLBACK_{model.upper()}"
            env = {
                "PRESCORE_MODEL_STORE": root,
                "FALLBACK_MODELS": model,
                "FALLBACK_DATA_DIR": str(data),
                f"{prefix}_RUNTIME": runtime,
                f"{prefix}_MAX_BATCH": batch,
                f"{prefix}_MAX_WAIT_MS": "2",
                f"{prefix}_MAX_QUEUE": "1024",
                "FALLBACK_THREADS": str(args.clients),
            }
            srv = Server("fallback.serve", env, logs / f"fb-{model}-{runtime}-{batch}.log").start()
            try:
                run_load(srv.url, make, args.clients, 1.0)  # warm up
                loads[label] = load = run_load(srv.url, make, args.clients, args.seconds)
                merged = requests_per_call(srv.url, model)
            finally:
                srv.stop()
            lines.append(
                f"| {model} | {runtime} | {label} | {args.clients} | {load.rps:,.0f} | "
                f"{load.pct(0.5):.1f} | {load.pct(0.99):.1f} | {load.errors} | {merged:.1f} |"
            )
            print(f"{model} {runtime} {label}: {load.rps:.0f} req/s", flush=True)
        ratio = loads["micro-batching"].rps / loads["batch size 1"].rps
        ratios.append(f"{model} ({runtime}) {ratio:.1f}x")
    return [*lines, "", "Throughput, micro-batching / batch size 1: " + ", ".join(ratios)]


def lookup_table(
    data: Path, root: str, users: int, args: argparse.Namespace, logs: Path
) -> list[str]:
    from prescore.embedded_redis import RedisProcess
    from prescore.redis_client import connect
    from prescore.settings import RedisSettings, Settings
    from tests.fallback_procs import Server
    from tests.lookup_helpers import publish_users

    published = users // 10  # u0..: precomputed hits; the rest exist only in the users table
    redis_proc = RedisProcess(logs / "redis").start()
    client = connect(RedisSettings(url=redis_proc.url))
    publish_users(client, Settings(redis=RedisSettings(url=redis_proc.url)), published)
    fb = Server(
        "fallback.serve",
        {"PRESCORE_MODEL_STORE": root, "FALLBACK_MODELS": "reco", "FALLBACK_DATA_DIR": str(data)},
        logs / "fallback-lookup.log",
    ).start()
    lk = Server(
        "lookup.serve",
        {
            "REDIS_URL": redis_proc.url,
            "PRESCORE_FALLBACK_URL": fb.url,
            "LOOKUP_WORKERS": "1",
            "LOOKUP_THREADS": "8",
        },
        logs / "lookup.log",
    ).start()
    clients = 8
    try:
        for i in range(WARM):  # connections and first calls, outside the measured runs
            requests_get(lk.url + f"/v1/recommendations/u{published + i}")
        hits = run_load(
            lk.url,
            lambda i: ("GET", f"/v1/recommendations/u{i % published}", None, JSON),
            clients,
            args.seconds,
        )
        misses = run_load(
            lk.url,
            lambda i: ("GET", f"/v1/recommendations/u{published + WARM + i}", None, JSON),
            clients,
            args.seconds,
        )
    finally:
        lk.stop()
        fb.stop()
        redis_proc.stop()
    lines = [
        "| lookup | clients | requests/s | p50 (ms) | p99 (ms) | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, load in (("hit (precomputed)", hits), ("miss served live", misses)):
        lines.append(
            f"| {label} | {clients} | {load.rps:,.0f} | {load.pct(0.5):.2f} | "
            f"{load.pct(0.99):.2f} | {load.errors} |"
        )
    if misses.requests > users - published:
        lines.append(f"\n(misses ran out of unscored users after {users - published})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fallback", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=20000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fallback-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        data, root, evals = build_models(work, args.users)
        tables = [
            ("Runtimes (in process, one thread calling)", runtime_table(root, evals)),
            ("Micro-batching, the batcher alone (in process, no HTTP)", []),
            ("Micro-batching (fallback server under granian)", []),
            ("Lookup hit against miss served live", []),
        ]
        tables[1] = (tables[1][0], batcher_table(root, evals, args.clients, args.seconds))
        tables[2] = (tables[2][0], batching_table(data, root, args.users, args, work))
        tables[3] = (tables[3][0], lookup_table(data, root, args.users, args, work))
        print(f"\nbench_fallback: {os.cpu_count()} CPUs, {time.monotonic() - started:.0f}s total")
        for title, lines in tables:
            print(f"\n### {title}\n")
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
