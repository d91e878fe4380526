"""Bulk scoring speed: the generic Spark job end to end beside raw batched TensorFlow, one run.

    python -m bench.bench_scoring [--users 200000] [--rounds 5] [--warmup 3]

The demo's dataset as declared (examples/hotels/prescore.toml) and the demo's model, with
its preprocessing inside the graph and the factored signatures, registered as any team's
model is. Both sides score the same model on the same cores:

- *raw TF, pre-encoded*: the model's ``score_pairs`` signature called on pairs whose
  entity, item and context rows were encoded beforehand (numpy matrices in batches; no
  Spark, no top-K, no Redis): the limit, measured twice: one process with TensorFlow's
  own threads, and one single-threaded process per core, summed (how the job's Spark
  tasks run it).
- *raw TF, raw features*: ``serving_default`` on every pair's raw columns (strings,
  lists), its vocabulary lookups and one-hots run once per pair: what preprocessing
  inside the graph costs when nothing is factored.
- *job*: ``jobs/score.py --dataset reco`` on a local[2] SparkSession (factored: each user,
  hotel and context encoded once, pairs gathered in one tf.function), top-K, payloads and
  pipelined Redis writes included, verified and published; and the same job with
  ``--per-pair`` (serving_default on raw pair features).

The first job run (cold) is shown apart; then ``--warmup`` runs let the JVM's JIT settle.
Each round measures the raw figures and job runs back to back, so that a slow spell on a
shared machine hits both sides; a ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import redis

from examples.hotels.datagen import Sizes, generate
from examples.hotels.train_reco import train
from jobs.bulk import SESSION_CONF
from jobs.score import parse_args, run_job
from prescore.data.datasets import Catalog, load
from prescore.models import feeds
from prescore.models.registration import register
from prescore.models.signature import Signatures
from prescore.models.store import ModelStore
from prescore.settings import ModelStoreSettings, RedisSettings, Settings, StoreSettings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.versions import Versions

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "hotels" / "prescore.toml"


TRAIN_USERS = 5_000  # the model is fitted on this many users' events, whatever is scored


def demo_model(var: Path, users: int, hotels: int) -> tuple[Catalog, ModelStore]:
    """The demo's data under ``var``/data, its model trained and registered as ``reco`` in
    a store under ``var``/models; the demo's declarations over that data. The model is
    fitted on the events of at most TRAIN_USERS users of their own: Keras fits about 4,000
    events a second here, so the 10M events of 200,000 users took longer than the bench.
    What a bench measures is scoring, which takes the model as it is."""
    generate(var / "data", Sizes(users=users, hotels=hotels), seed=5)
    fit_on = var / "data"
    if users > TRAIN_USERS:
        fit_on = var / "train-data"
        generate(fit_on, Sizes(users=TRAIN_USERS, hotels=hotels), seed=5)
    train(fit_on, var / "train", epochs=2, seed=5)
    catalog = load(CONFIG, {"PRESCORE_VAR": str(var)})
    store = ModelStore(ModelStoreSettings(root=(var / "models").as_uri()))
    register(
        store, catalog, "reco", str(var / "train"), promote=True, int8=False, say=lambda _: None
    )
    return catalog, store


def pairs(data: Path, max_users: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Users, hotels and the (user, candidate hotel) pairs of the first ``max_users``
    users, as the job makes them (the hotels of the user's regions)."""
    users = pq.read_table(data / "users.parquet").to_pandas().head(max_users)
    hotels = pq.read_table(data / "hotels.parquet").to_pandas()
    by_region = hotels.groupby("region").indices
    cands = [
        np.unique(np.concatenate([by_region[r] for r in rs if r in by_region]))
        for rs in users["regions"]
    ]
    owner = np.repeat(np.arange(len(users)), [len(c) for c in cands])
    return users, hotels, owner, np.concatenate(cands)


def encoded_pairs(model: Any, data: Path, max_users: int) -> dict[str, np.ndarray]:
    """score_pairs' feed for the sample: encoded rows gathered per pair (the raw limit's)."""
    users, hotels, owner, idx = pairs(data, max_users)
    sigs = model.signatures.by_name
    e = model.encode("encode_entity", feeds.feeds(users, sigs["encode_entity"].inputs))
    i = model.encode("encode_item", feeds.feeds(hotels, sigs["encode_item"].inputs))
    c = model.encode("encode_context", feeds.blank(sigs["encode_context"].inputs))
    return {"entity": e[owner], "item": i[idx], "context": np.repeat(c, len(owner), axis=0)}


def raw_pairs(model: Any, data: Path, max_users: int) -> dict[str, np.ndarray]:
    """serving_default's feed for the sample: every pair's raw columns."""
    users, hotels, owner, idx = pairs(data, max_users)
    inputs = model.signatures.serving.inputs
    user_in = {k: t for k, t in inputs.items() if k in users.columns}
    hotel_in = {k: t for k, t in inputs.items() if k in hotels.columns}
    ctx_in = {k: t for k, t in inputs.items() if k not in user_in and k not in hotel_in}
    out = {
        **feeds.take(feeds.feeds(users, user_in), owner),
        **feeds.take(feeds.feeds(hotels, hotel_in), idx),
    }
    out.update({k: np.repeat(v, len(owner), axis=0) for k, v in feeds.blank(ctx_in).items()})
    return out


def rate(model: Any, signature: str, feed: dict[str, np.ndarray], batch: int) -> float:
    """Pairs/s of ``signature`` called on ``feed`` in batches."""
    n = feeds.rows(feed)
    model.call(signature, {k: v[:batch] for k, v in feed.items()})  # warm up
    started = time.perf_counter()
    for i in range(0, n, batch):
        model.call(signature, {k: v[i : i + batch] for k, v in feed.items()})
    return n / (time.perf_counter() - started)


_PART: dict[str, Any] = {}  # a per-core process's model and share of the pairs


def _load(ref_dir: str, meta: dict[str, Any]) -> Any:
    from prescore.models.tf_model import TFModel

    return TFModel(Path(ref_dir) / "saved_model", meta)


def _raw_round(
    source: tuple[str, dict[str, Any], str, int], part: int, cores: int, batch: int, start: Any
) -> float:
    """One process, one TF thread: as a Spark task runs the model (jobs.bulk.worker_model)."""
    import tensorflow as tf

    ref_dir, meta, data, max_users = source
    if not _PART:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        _PART["model"] = _load(ref_dir, meta)
    if _PART.get("part") != part:
        feed = encoded_pairs(_PART["model"], Path(data), max_users)
        _PART["feed"] = {k: np.array_split(v, cores)[part].copy() for k, v in feed.items()}
        _PART["part"] = part
    start.wait()  # every process loaded: the cores are timed together
    return rate(_PART["model"], "score_pairs", _PART["feed"], batch)


class PerCoreRaw:
    """Raw TF as one single-threaded process per core, all at once; kept for every round."""

    def __init__(self, source: tuple[str, dict[str, Any], str, int], batch: int, cores: int):
        self.source, self.batch, self.cores = source, batch, cores
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._pool = ctx.Pool(cores)
        self._start = self._manager.Barrier(cores)

    def rate(self) -> float:
        args = [(self.source, i, self.cores, self.batch, self._start) for i in range(self.cores)]
        return float(sum(self._pool.starmap(_raw_round, args, chunksize=1)))

    def close(self) -> None:
        self._pool.terminate()
        self._manager.shutdown()


@dataclasses.dataclass
class Round:
    raw: float  # score_pairs, pre-encoded, one process
    per_core: float  # the same, one 1-thread process per core, summed
    serving: float  # serving_default on raw pair features, one process
    job: float  # the job, factored
    job_per_pair: float  # the job with --per-pair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200000)
    parser.add_argument("--hotels", type=int, default=1200)
    parser.add_argument("--raw-users", type=int, default=40000, help="users of the raw sample")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="job runs after the cold one")
    parser.add_argument("--batch-rows", type=int, default=32768)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from prescore.models.tf_model import TFModel

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalog, store = demo_model(tmp, args.users, args.hotels)
        ref = store.resolve("reco")
        assert Signatures.from_json(ref.meta["signature"]).factored
        model = TFModel(ref.saved_model, ref.meta)
        encoded = encoded_pairs(model, tmp / "data", args.raw_users)
        raw = raw_pairs(model, tmp / "data", args.raw_users)
        per_core = PerCoreRaw(
            (str(ref.path), ref.meta, str(tmp / "data"), args.raw_users), args.batch_rows, 2
        )
        per_core.rate()  # each process loads the model and its share of the pairs
        server = RedisProcess(tmp / "redis").start()
        client = redis.Redis.from_url(server.url)
        spark = _local_spark()
        settings = Settings(
            redis=RedisSettings(url=server.url), models=store.settings, catalog=catalog
        )
        job = parse_args(["--dataset", "reco", "--batch-rows", str(args.batch_rows)])
        per_pair = parse_args(
            ["--dataset", "reco", "--batch-rows", str(args.batch_rows), "--per-pair"]
        )
        try:
            before = int(client.info("memory")["used_memory"])
            cold = run_job(spark, job, settings)
            per_user = (int(client.info("memory")["used_memory"]) - before) / cold.rows
            # Spark's JVM compiles its hot code over the first few runs (JIT): a warm rate
            # is one measured after that has settled.
            settling = [run_job(spark, job, settings) for _ in range(args.warmup)]
            rounds, last = [], cold
            for _ in range(args.rounds):  # side by side: a slow spell hits both sides
                r_raw = rate(model, "score_pairs", encoded, args.batch_rows)
                r_cores = per_core.rate()
                r_serving = rate(model, "serving_default", raw, args.batch_rows)
                last = run_job(spark, job, settings)
                slow = run_job(spark, per_pair, settings)
                rounds.append(
                    Round(
                        r_raw,
                        r_cores,
                        r_serving,
                        last.scored / last.seconds,
                        slow.scored / slow.seconds,
                    )
                )
            started = time.perf_counter()
            counted = Versions(client, "reco", StoreSettings()).count_keys(last.version)
            scan_s = time.perf_counter() - started
        finally:
            spark.stop()
            server.stop()
            per_core.close()

    print(
        f"\n{args.users} users, {args.hotels} hotels, {last.scored} pairs a job run "
        f"(raw TF on the pairs of {min(args.users, args.raw_users)} users), 2 cores, "
        f"{args.rounds} rounds\n"
    )
    _print_rates(rounds, cold.scored / cold.seconds)
    print(
        "\njob runs before the rounds (pairs/s): cold "
        + ", ".join(f"{s.scored / s.seconds / 1e6:.2f}M" for s in [cold, *settling])
    )
    print(
        "per round, job / raw per core: " + ", ".join(f"{r.job / r.per_core:.2f}" for r in rounds)
    )
    print()
    print("| store | value |")
    print("|---|---:|")
    print(f"| Redis memory per published user (top 10) | {per_user:,.0f} bytes |")
    print(f"| count verification (HLEN of its buckets), {counted} keys | {scan_s * 1000:,.0f} ms |")
    retires = [s.retire_seconds for s in settling if s.retired]
    if retires:  # after the switch, so not in the job's rate (jobs.bulk.publish_version)
        print(f"| retiring one old version after the switch | {max(retires) * 1000:,.0f} ms |")
    return 0


def _local_spark() -> Any:
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("bench-scoring")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config(map=SESSION_CONF)  # as spark-submit runs the job
        .getOrCreate()
    )


def _print_rates(rounds: list[Round], cold: float) -> None:
    """The table: medians of the rounds; a ratio is the median of the rounds' ratios."""
    med = statistics.median
    print(
        "| path | pairs/s | vs raw TF pre-encoded, one process "
        "| vs raw TF pre-encoded, a process per core |"
    )
    print("|---|---:|---:|---:|")
    paths = {
        "raw TF, pre-encoded (score_pairs), one process (TF's threads)": [r.raw for r in rounds],
        "raw TF, pre-encoded (score_pairs), one 1-thread process per core, summed": [
            r.per_core for r in rounds
        ],
        "raw TF, raw features (serving_default, preprocessing per pair), one process": [
            r.serving for r in rounds
        ],
        "Spark job end to end, factored signatures, warm": [r.job for r in rounds],
        "Spark job end to end, --per-pair (serving_default), warm": [
            r.job_per_pair for r in rounds
        ],
    }
    for name, rates in paths.items():
        vs_raw = med(v / r.raw for v, r in zip(rates, rounds, strict=True))
        vs_cores = med(v / r.per_core for v, r in zip(rates, rounds, strict=True))
        print(f"| {name} | {med(rates):,.0f} | {vs_raw:.2f} | {vs_cores:.2f} |")
    raw, cores = med(r.raw for r in rounds), med(r.per_core for r in rounds)
    name = "Spark job end to end, factored, cold (first run)"
    print(f"| {name} | {cold:,.0f} | {cold / raw:.2f} | {cold / cores:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
