"""Live inference benchmarks, one run, printed as Markdown tables.

    python -m bench.bench_fallback [--seconds 8] [--clients 32] [--users 20000]
    python -m bench.bench_fallback --users 2000 --seconds 1 --clients 8   # a smoke run

The models are the hotel demo's, made as the demo makes them (bench/fallback_setup.py):
the booking model (examples.hotels.train_reco on examples.hotels.datagen data, dataset
``reco``) and the photo tagger (examples.hotels.train_tagger on examples.hotels.imagegen
photos, dataset ``tags``), registered against examples/hotels/prescore.toml, which
builds their LiteRT variants where the model converts.

1. Runtimes: each model's serving signature in TensorFlow (SavedModel), LiteRT float32
   and LiteRT int8, where the variant was built (prescore.models.quantize.measure): single-row
   latency, batch throughput, AUC / mAP on held-out rows (reco's declared held-out table,
   the tagger's test split).
2. Micro-batching, the batcher alone: ``--clients`` threads submitting one row each
   straight to fallback.batcher (bench/batcher_load.py), merged against batch size 1.
3. Micro-batching: the fallback server (``python -m fallback.serve``) under ``--clients``
   concurrent clients, each request one user's recommendations (``POST
   /v1/datasets/reco:predict``) or one photo's tags (the raw JPEG to
   ``/v1/datasets/tags:predict``), at the default max batch against batch size 1, per
   runtime (TensorFlow, and the one ``auto`` serves where that differs).
4. Lookup: a hit (precomputed, in Redis) against a miss served live by the fallback
   (then written back), through real lookup and fallback servers on the declared route
   ``/v1/recommendations/{user_id}``; every miss is a user no bulk run scored.
The load generator is Python threads on keep-alive connections, on the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.batcher_load import NAMES, batcher_table, batching_table
from bench.fallback_setup import (
    Eval,
    Request,
    World,
    build_world,
    describe_quantization,
    eval_feed,
    get_status,
    measure_tf,
    metrics_text,
    publish_reco,
    run_requests,
)
from bench.loadgen import Result
from bench.machine import describe as machine
from prescore.models import feeds
from prescore.models.inference import TFLITE_FILES, pick_runtime

JSON = "application/json"
PREDICT_ROUTE = "/v1/datasets/<name>:predict"  # the fallback's route label in its metrics
WARM = 20  # requests before a measured run, outside it
LOOKUP_CLIENTS = 8
DATASETS = ("reco", "tags")
METRICS = {"auc": "AUC", "map": "mAP"}


def runtime_table(world: World, evals: dict[str, Eval], repeats: int) -> list[str]:
    from prescore.models.quantize import measure

    lines = [
        "| dataset (model) | runtime | single-row latency (ms) | batch throughput (rows/s) "
        "| batch (rows) | max abs score diff vs TF | quality (held-out rows) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    notes = []
    for dataset in DATASETS:
        ref, ev = world.ref(dataset), evals[dataset]
        why = describe_quantization(ref.meta)
        built = (ref.meta.get("quantization") or {}).get("runtimes") or {}
        lite = tuple(r for r in TFLITE_FILES if r in built)
        found = (
            measure_tf(ref, ev, repeats)
            if why
            else measure(ref.path, ref.meta, ev.feed, ev.truth, ev.metric, ev.batch, repeats, lite)
        )
        label = f"{dataset} ({ref.name})"
        for runtime, r in found.items():
            lines.append(
                f"| {label} | {NAMES[runtime]} | {r['single_ms']:.3f} | "
                f"{r['batch_rows_per_s']:,.0f} | {r['batch']:.0f} | {r['max_abs_diff_vs_tf']:.4f} "
                f"| {METRICS[ev.metric]} {r[ev.metric]:.4f} ({feeds.rows(ev.feed)} rows) |"
            )
        lines += [
            f"| {label} | {NAMES[r]} | not built | | | | |" for r in TFLITE_FILES if r not in found
        ]
        auto = pick_runtime(ref.meta, ref.path, "auto")
        notes.append(
            f"{dataset}: the fallback's `auto` serves {NAMES[auto]}"
            + (f"; its LiteRT variants were not built at registration: {why}" if why else "")
            + "".join(
                f"; its {r} variant was not built: {reason}"
                for r, reason in (
                    (ref.meta.get("quantization") or {}).get("not_built") or {}
                ).items()
                if not why
            )
        )
        print(f"{dataset} runtimes measured", flush=True)
    return [*lines, "", *notes]


def _live(lookup_url: str, fallback_url: str) -> tuple[float, float]:
    """(misses the lookup answered live, predict calls the fallback answered) so far."""
    from tests.fallback_procs import metric_value

    live = metric_value(
        metrics_text(lookup_url), "prescore_lookup_live_answers_total", dataset="reco"
    )
    calls = metric_value(
        metrics_text(fallback_url),
        "prescore_fallback_requests_total",
        route=PREDICT_ROUTE,
        status="200",
    )
    return live, calls


def _hits_and_misses(
    lookup: str, fallback: str, published: int, users: int, seconds: float
) -> list[tuple[str, Result, int, tuple[float, float]]]:
    """Hits on u0 .. u{published - 1}, then misses on users no bulk run scored, each
    asked once (a second ask would be a hit on its written-back answer)."""
    for i in range(WARM):  # connections and first calls, outside the measured runs
        get_status(f"{lookup}/v1/recommendations/u{i % published}")
        get_status(f"{lookup}/v1/recommendations/u{published + i}")
    first = published + WARM

    def hit(i: int) -> Request:
        return "GET", f"/v1/recommendations/u{i % published}", None, JSON

    def miss(i: int) -> Request | None:
        return (
            None if first + i >= users else ("GET", f"/v1/recommendations/u{first + i}", None, JSON)
        )

    found = []
    for label, make in (("hit (precomputed)", hit), ("miss served live", miss)):
        before = _live(lookup, fallback)
        result, sent = run_requests(lookup, make, LOOKUP_CLIENTS, seconds)
        after = _live(lookup, fallback)
        found.append((label, result, sent, (after[0] - before[0], after[1] - before[1])))
        print(f"lookup {label}: {result.line()}", flush=True)
    return found


def lookup_table(world: World, args: argparse.Namespace, logs: Path) -> list[str]:
    from prescore.store.embedded_redis import RedisProcess
    from tests.fallback_procs import Server

    published = args.users // 10  # u0..: precomputed hits; the rest are in the users table only
    redis_proc = RedisProcess(logs / "redis").start()
    servers: list[Server] = []
    try:
        publish_reco(redis_proc.url, world, published, world.ref("reco").version)
        env = {"REDIS_URL": redis_proc.url, "FALLBACK_DATASETS": "reco"}
        servers.append(Server("fallback.serve", world.env(**env), logs / "fallback-lookup.log"))
        servers[0].start()
        env = {
            "REDIS_URL": redis_proc.url,
            "PRESCORE_FALLBACK_URL": servers[0].url,
            "PRESCORE_FALLBACK_TIMEOUT_S": str(args.live_deadline_s),
            "LOOKUP_WORKERS": "1",
            "LOOKUP_THREADS": str(LOOKUP_CLIENTS),
        }
        servers.append(Server("lookup.serve", world.env(**env), logs / "lookup.log"))
        servers[1].start()
        runs = _hits_and_misses(servers[1].url, servers[0].url, published, args.users, args.seconds)
    finally:
        for server in reversed(servers):
            server.stop()
        redis_proc.stop()
    lines = [
        "| lookup | clients | requests/s | p50 (ms) | p99 (ms) | errors "
        "| answered live (lookup) | fallback predict calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, res, _, (live, calls) in runs:
        lines.append(
            f"| {label} | {LOOKUP_CLIENTS} | {res.rps:,.0f} | {res.p50_ms:.2f} | "
            f"{res.p99_ms:.2f} | {res.errors} | {live:.0f} | {calls:.0f} |"
        )
    unscored = args.users - published - WARM
    if runs[1][2] >= unscored:
        lines.append(
            f"\n(the miss run ran out of unscored users after {unscored}; more --users "
            "make it last --seconds)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_fallback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (2 and 3)")
    parser.add_argument("--users", type=int, default=20000, help="demo users generated")
    parser.add_argument("--hotels", type=int, default=500, help="demo hotels generated")
    parser.add_argument("--images", type=int, default=800, help="demo photos generated")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per runtime (1)")
    parser.add_argument(
        "--live-deadline-s",
        type=float,
        default=1.0,
        help="the lookup's deadline of a live call (4); production: 0.1",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-fallback-"))
    try:
        started = time.monotonic()
        world = build_world(work, args.users, args.hotels, args.images)
        evals = {d: eval_feed(world, d) for d in DATASETS}
        s = f"{args.seconds:g}s a run"
        tables = [
            (
                "Runtimes (in process, one thread calling)",
                runtime_table(world, evals, args.repeats),
            ),
            (
                f"Micro-batching, the batcher alone (in process, no HTTP; waits up to 2 ms; {s})",
                batcher_table(world, evals, args.clients, args.seconds),
            ),
            (
                f"Micro-batching (fallback server under granian, {args.clients} threads; {s})",
                batching_table(world, args, work),
            ),
            (
                f"Lookup hit against miss served live (1 lookup worker, live deadline "
                f"{args.live_deadline_s:g}s; {s})",
                lookup_table(world, args, work),
            ),
        ]
        print(
            f"\nbench_fallback: {machine()}, {args.users} users, {args.images} "
            f"photos, {time.monotonic() - started:.0f}s total; load generator: Python "
            "threads on the same machine"
        )
        for title, lines in tables:
            print(f"\n### {title}\n")
            print("\n".join(lines))
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
