"""bench_fallback's micro-batching tables: the batcher alone, and the fallback server.

``batcher_table``: concurrent callers submitting one row each, no HTTP around it. The
server table pays, per request, for HTTP, JSON and building the feed as well as the
model; this one isolates what micro-batching itself buys: ``clients`` threads call
``MicroBatcher.submit`` with a one-row feed each (a held-out row, by model input name),
with merging against ``max_batch=1``, for each model in TensorFlow (its serving
signature), waiting up to 2 ms for company.

``batching_table``: a real ``python -m fallback.serve`` per runtime and batch size, over
the demo's declarations, ``clients`` concurrent clients each asking for one user's
recommendations (``POST /v1/datasets/reco:predict``) or one photo's tags (the raw JPEG
to ``/v1/datasets/tags:predict``), at the default max batch (FALLBACK_RANKING_MAX_BATCH,
FALLBACK_LABELS_MAX_BATCH) against 1; requests per model call from the server's
``prescore_fallback_batch_requests`` histogram, over the measured run only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.fallback_setup import (
    Eval,
    Feed,
    MakeRequest,
    Request,
    World,
    metrics_text,
    run_requests,
)
from bench.loadgen import Result, run_threads
from fallback.batcher import MicroBatcher
from prescore.encoding import codec
from prescore.models.inference import load_runner, pick_runtime

MAX_BATCH = {"reco": 256, "tags": 32}  # rows per model call when merging, batcher alone
NAMES = {"tf": "TensorFlow", "float32": "LiteRT float32", "int8": "LiteRT int8"}
JSON = "application/json"
PREDICT = "/v1/datasets/{}:predict"


def _row(feed: Feed, i: int) -> Feed:
    n = len(next(iter(feed.values())))
    return {k: v[i % n : i % n + 1] for k, v in feed.items()}


def _load(batcher: MicroBatcher, feed: Feed, clients: int, seconds: float) -> float:
    """Rows answered per second with ``clients`` threads submitting one row at a time."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        i = c
        while time.monotonic() < stop:
            batcher.submit(_row(feed, i))
            counts[c] += 1
            i += clients

    took = run_threads(client, clients)
    return sum(counts) / took


def _measure(
    batcher: MicroBatcher, feed: Feed, clients: int, seconds: float
) -> tuple[float, float]:
    """(rows/s, requests per model call) of one batcher, after a warm-up second."""
    try:
        _load(batcher, feed, clients, 1.0)
        requests, batches = batcher.stats.requests, batcher.stats.batches
        rate = _load(batcher, feed, clients, seconds)
        merged = (batcher.stats.requests - requests) / max(1, batcher.stats.batches - batches)
    finally:
        batcher.close()
    return rate, merged


def batcher_table(world: World, evals: dict[str, Eval], clients: int, seconds: float) -> list[str]:
    """One row per dataset: micro-batching against batch size 1, rows/s."""
    lines = [
        "| dataset (model) | runtime | clients | micro-batching (rows/s) | batch size 1 (rows/s) "
        "| ratio | max batch (rows) | requests per model call |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, max_batch in MAX_BATCH.items():
        ref = world.ref(dataset)
        runner = load_runner(ref.path, ref.meta, "tf")
        feed = evals[dataset].feed
        found = []
        for size in (max_batch, 1):
            batcher = MicroBatcher(runner, max_batch=size, max_wait_s=0.002, name=dataset).start()
            found.append(_measure(batcher, feed, clients, seconds))
        (merged_rate, merged), (single_rate, _) = found
        lines.append(
            f"| {dataset} ({ref.name}) | {NAMES['tf']} | {clients} | {merged_rate:,.0f} "
            f"| {single_rate:,.0f} | {merged_rate / single_rate:.1f}x | {max_batch} "
            f"| {merged:.1f} |"
        )
        print(f"{dataset} batcher measured", flush=True)
    return lines


def reco_request(users: int) -> MakeRequest:
    def make(i: int) -> Request:
        body = codec.dumps({"instances": [{"key": f"u{i % users}"}], "k": 10})
        return "POST", PREDICT.format("reco"), body, JSON

    return make


def image_request(images: Path) -> MakeRequest:
    jpegs = [p.read_bytes() for p in sorted(images.glob("img-*.jpg"))[:64]]

    def make(i: int) -> Request:
        return "POST", PREDICT.format("tags") + f"?key=img-{i}", jpegs[i % len(jpegs)], "image/jpeg"

    return make


def _merged(text: str, dataset: str) -> tuple[float, float]:
    """(requests, model calls) of ``dataset``'s batcher, from the fallback's metrics."""
    from tests.fallback_procs import metric_value

    name = "prescore_fallback_batch_requests"
    return (
        metric_value(text, f"{name}_sum", dataset=dataset),
        metric_value(text, f"{name}_count", dataset=dataset),
    )


def _serve_and_load(
    world: World,
    env: dict[str, str],
    make: MakeRequest,
    args: argparse.Namespace,
    log: Path,
    dataset: str,
) -> tuple[Result, float]:
    """Start a fallback with ``env``, warm it, load it; (result, requests per model call)."""
    from tests.fallback_procs import Server

    srv = Server("fallback.serve", world.env(**env), log).start()
    try:
        run_requests(srv.url, make, args.clients, 1.0)
        before = _merged(metrics_text(srv.url), dataset)
        result, _ = run_requests(srv.url, make, args.clients, args.seconds)
        after = _merged(metrics_text(srv.url), dataset)
    finally:
        srv.stop()
    calls = after[1] - before[1]
    return result, ((after[0] - before[0]) / calls if calls else float("nan"))


def _server_rows(
    world: World, dataset: str, runtime: str, args: argparse.Namespace, logs: Path
) -> tuple[list[str], float]:
    """The two rows of one dataset and runtime (the default max batch, then batch size 1)
    and the throughput ratio of the two."""
    from fallback.settings import FallbackSettings

    ref, kind = world.ref(dataset), world.catalog.get(dataset).kind
    prefix = "FALLBACK_RANKING" if kind == "ranking" else "FALLBACK_LABELS"
    default = FallbackSettings().batch_for(kind).max_batch
    auto = pick_runtime(ref.meta, ref.path, "auto")
    name = NAMES[runtime] + (" (auto)" if runtime == auto else "")
    make = reco_request(args.users) if kind == "ranking" else image_request(world.var / "images")
    lines, rps = [], []
    for label, size in ((f"max batch {default} rows", default), ("batch size 1", 1)):
        env = {
            "FALLBACK_DATASETS": dataset,
            "FALLBACK_RUNTIMES": f"{dataset}={runtime}",
            "FALLBACK_THREADS": str(args.clients),
            f"{prefix}_MAX_BATCH": str(size),
        }
        log = logs / f"fallback-{dataset}-{runtime}-{size}.log"
        res, merged = _serve_and_load(world, env, make, args, log, dataset)
        rps.append(res.rps)
        lines.append(
            f"| {dataset} ({ref.name}) | {name} | {label} | {args.clients} | {res.rps:,.0f} "
            f"| {res.p50_ms:.1f} | {res.p99_ms:.1f} | {res.errors} | {merged:.1f} |"
        )
        print(f"{dataset} {runtime} {label}: {res.line()}", flush=True)
    return lines, rps[0] / rps[1]


def batching_table(world: World, args: argparse.Namespace, logs: Path) -> list[str]:
    """Per dataset, TensorFlow and the runtime ``auto`` serves (where that differs)."""
    lines = [
        "| dataset (model) | runtime | batching | clients | requests/s | p50 (ms) | p99 (ms) "
        "| errors | requests per model call |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for dataset in ("reco", "tags"):
        ref = world.ref(dataset)
        for runtime in dict.fromkeys(["tf", pick_runtime(ref.meta, ref.path, "auto")]):
            rows, ratio = _server_rows(world, dataset, runtime, args, logs)
            lines += rows
            ratios.append(f"{dataset} ({NAMES[runtime]}) {ratio:.1f}x")
    return [*lines, "", "Throughput, micro-batching / batch size 1: " + ", ".join(ratios)]
