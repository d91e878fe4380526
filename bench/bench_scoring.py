"""Bulk scoring speed: the Spark job end to end beside raw batched TensorFlow, one run.

    python -m bench.bench_scoring [--users 200000] [--rounds 5] [--warmup 3]

Both sides score the same model on the same cores. *raw TF* is the SavedModel called on
pre-encoded feature matrices in batches (no Spark, no top-K, no Redis): the limit, twice:
one process with TensorFlow's own threads, and one single-threaded process per core
(summed; how the job's Spark tasks run it, and the higher of the two for a small MLP). *job*
is jobs.score_recommendations on a local[2] SparkSession, pairs built and encoded in the
workers, top-K, payload encoding and pipelined Redis writes included, verified and
published (a run's rate is up to the pointer switch; retiring the version beyond the
newest N after it is shown apart).

The first job run (cold: Python workers start and load the model, the JVM is new) is
shown apart; then ``--warmup`` runs let the JVM's JIT settle. Each of ``--rounds`` rounds
then measures both raw figures and one job run back to back, so that a slow spell on a
shared machine hits both sides; a ratio is the median of the rounds' ratios. Also: Redis
memory per published user and the time of the count-verification SCAN."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

from jobs.bulk import SESSION_CONF
from jobs.datagen import Sizes, generate
from jobs.score_recommendations import parse_args, run_job, settings_for
from jobs.train_reco import train
from prescore.embedded_redis import RedisProcess
from prescore.inference import TFRunner
from prescore.modelstore import ModelStore
from prescore.reco_features import Schema, assemble, context_block, hotel_block, user_block
from prescore.settings import ModelStoreSettings, StoreSettings
from prescore.versions import Versions


def raw_matrix(data: Path, schema: Schema, max_users: int) -> np.ndarray:
    """The (user, candidate hotel) pairs of the first ``max_users`` users, encoded as the
    job encodes them (a sample: a rate does not depend on how many pairs make it)."""
    users = pd.read_parquet(data / "users.parquet").head(max_users)
    hotels = pd.read_parquet(data / "hotels.parquet")
    by_region = hotels.groupby("region").indices
    cands = [
        np.unique(np.concatenate([by_region[r] for r in rs if r in by_region]))
        for rs in users["regions"]
    ]
    owner = np.repeat(np.arange(len(users)), [len(c) for c in cands])
    hotel_idx = np.concatenate(cands)
    ctx = np.repeat(context_block([None], schema), len(owner), axis=0)
    return assemble(
        user_block(users, schema)[owner],
        hotel_block(hotels, schema)[hotel_idx],
        ctx,
        np.ones((len(owner), 1), np.float32),
    )


def raw_rate(runner: TFRunner, x: np.ndarray, batch: int, rounds: int = 1) -> float:
    """Pairs/s of the model called on ``x`` in batches (median of ``rounds`` passes)."""
    runner(x[:batch])  # warm up
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(x), batch):
            runner(x[i : i + batch])
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


_PART: dict[str, Any] = {}  # a per-core process's runner and share of the pairs


def _raw_part(source: tuple[str, str, dict[str, Any], int], part: int, cores: int) -> None:
    """One process, one TF thread: as a Spark task runs the model (jobs.bulk.worker_model)."""
    import tensorflow as tf

    saved_model, data, schema, max_users = source
    if not _PART:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        _PART["runner"] = TFRunner(Path(saved_model))
    if _PART.get("part") != part:
        x = raw_matrix(Path(data), Schema.from_dict(schema), max_users)
        _PART["x"], _PART["part"] = np.array_split(x, cores)[part].copy(), part


def _raw_round(
    source: tuple[str, str, dict[str, Any], int], part: int, cores: int, batch: int, start: Any
) -> float:
    _raw_part(source, part, cores)
    start.wait()  # every process loaded: the cores are timed together
    return raw_rate(_PART["runner"], _PART["x"], batch)


class PerCoreRaw:
    """Raw TF as one single-threaded process per core, all at once; kept for every round."""

    def __init__(self, source: tuple[str, str, dict[str, Any], int], batch: int, cores: int):
        self.source, self.batch, self.cores = source, batch, cores
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._pool = ctx.Pool(cores)
        self._start = self._manager.Barrier(cores)

    def rate(self) -> float:
        """The summed pairs/s of one pass on every core."""
        args = [(self.source, i, self.cores, self.batch, self._start) for i in range(self.cores)]
        return float(sum(self._pool.starmap(_raw_round, args, chunksize=1)))

    def close(self) -> None:
        self._pool.terminate()
        self._manager.shutdown()


@dataclass
class Round:
    """One round: both raw figures, then a job run, back to back."""

    raw: float
    per_core: float
    job: float


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

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        generate(data, Sizes(users=args.users, hotels=args.hotels), seed=5)
        store = ModelStore(ModelStoreSettings(root=(tmp / "models").as_uri()))
        trained = train(data, store, epochs=2, seed=5, promote=True, int8=False)
        ref = store.resolve("reco")
        source = (str(ref.saved_model), str(data), ref.meta["schema"], args.raw_users)
        x = raw_matrix(data, Schema.from_dict(ref.meta["schema"]), args.raw_users)
        per_core = PerCoreRaw(source, args.batch_rows, cores=2)
        per_core.rate()  # each process loads the model and its share of the pairs
        server = RedisProcess(tmp / "redis").start()
        client = redis.Redis.from_url(server.url)
        spark = _local_spark()
        job_args = parse_args(
            [
                *("--data", str(data), "--redis-url", server.url),
                *("--model-store", store.settings.root, "--batch-rows", str(args.batch_rows)),
            ]
        )
        settings = settings_for(job_args, {})
        try:
            before = int(client.info("memory")["used_memory"])
            cold = run_job(spark, job_args, settings)
            per_user = (int(client.info("memory")["used_memory"]) - before) / cold.rows
            # Spark's JVM compiles its hot code over the first few runs (JIT): a warm rate
            # is one measured after that has settled.
            settling = [run_job(spark, job_args, settings) for _ in range(args.warmup)]
            runner = TFRunner(ref.saved_model)
            rounds, last = [], cold
            for _ in range(args.rounds):  # side by side: a slow spell hits both sides
                raw = raw_rate(runner, x, args.batch_rows)
                cores = per_core.rate()
                last = run_job(spark, job_args, settings)
                rounds.append(Round(raw, cores, last.scored / last.seconds))
            started = time.perf_counter()
            counted = Versions(client, "reco", StoreSettings()).count_keys(last.version)
            scan_s = time.perf_counter() - started
        finally:
            spark.stop()
            server.stop()
            per_core.close()

    print(
        f"\n{args.users} users, {args.hotels} hotels, {last.scored} pairs a job run "
        f"(raw TF on the pairs of {min(args.users, args.raw_users)} users), "
        f"model reco/{trained.version}, 2 cores, {args.rounds} rounds\n"
    )
    _print_rates(rounds, cold.scored / cold.seconds)
    print(
        "\njob runs before the rounds (pairs/s): cold "
        + ", ".join(f"{s.scored / s.seconds / 1e6:.2f}M" for s in [cold, *settling])
    )
    print(
        "per round, job / raw per core: "
        + ", ".join(f"{r.job / r.per_core:.2f}" for r in rounds)
        + "; job / raw one process: "
        + ", ".join(f"{r.job / r.raw:.2f}" for r in rounds)
    )
    print()
    print("| store | value |")
    print("|---|---:|")
    print(f"| Redis memory per published user (top 10) | {per_user:,.0f} bytes |")
    print(f"| count-verification SCAN of {counted} keys | {scan_s * 1000:,.0f} ms |")
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
    print("| path | pairs/s | vs raw TF, one process | vs raw TF, a process per core |")
    print("|---|---:|---:|---:|")
    paths = {
        "raw batched TF, one process (TF's threads)": [r.raw for r in rounds],
        "raw batched TF, one 1-thread process per core, summed": [r.per_core for r in rounds],
        "Spark job end to end, warm": [r.job for r in rounds],
    }
    for name, rates in paths.items():
        vs_raw = med(v / r.raw for v, r in zip(rates, rounds, strict=True))
        vs_cores = med(v / r.per_core for v, r in zip(rates, rounds, strict=True))
        print(f"| {name} | {med(rates):,.0f} | {vs_raw:.2f} | {vs_cores:.2f} |")
    raw, cores = med(r.raw for r in rounds), med(r.per_core for r in rounds)
    name = "Spark job end to end, cold (first run)"
    print(f"| {name} | {cold:,.0f} | {cold / raw:.2f} | {cold / cores:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
