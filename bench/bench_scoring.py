"""Bulk scoring speed: the Spark job end to end beside raw batched TensorFlow, one run.

    python -m bench.bench_scoring [--users 200000] [--rounds 3]

Both sides score the same model on the same cores. *raw TF* is the SavedModel called on
pre-encoded feature matrices in batches (no Spark, no top-K, no Redis): the limit, twice:
one process with TensorFlow's own threads, and one single-threaded process per core
(summed; how the job's Spark tasks run it, and the higher of the two for a small MLP). *job*
is jobs.score_recommendations on a local[2] SparkSession, pairs built and encoded in the
workers, top-K, payload encoding and pipelined Redis writes included, verified and
published (a run's rate is up to the pointer switch; retiring the version beyond the
newest N after it is shown apart). The first job run (cold: Python workers start and load
the model) is shown apart from the warm runs. Also: Redis memory per published user and
the time of the count-verification SCAN.
"""

from __future__ import annotations

import argparse
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


def raw_rate(runner: TFRunner, x: np.ndarray, batch: int, rounds: int) -> float:
    runner(x[:batch])  # warm up
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(x), batch):
            runner(x[i : i + batch])
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def _raw_worker(saved_model: str, x: np.ndarray, batch: int, rounds: int, start: Any) -> float:
    """One process, one TF thread: as a Spark task runs the model (jobs.bulk.worker_model)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    runner = TFRunner(Path(saved_model))
    runner(x[:batch])
    start.wait()  # every process loaded: the cores are timed together
    return raw_rate(runner, x, batch, rounds)


def raw_rate_per_core(
    saved_model: Path, x: np.ndarray, batch: int, rounds: int, cores: int
) -> float:
    """Raw TF with one process per core, all at once: the sum of their rates."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(cores) as pool:
        start = manager.Barrier(cores)
        parts = np.array_split(x, cores)
        args = [(str(saved_model), part, batch, rounds, start) for part in parts]
        return float(sum(pool.starmap(_raw_worker, args)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200000)
    parser.add_argument("--hotels", type=int, default=1200)
    parser.add_argument("--raw-users", type=int, default=40000, help="users of the raw sample")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=32768)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pyspark.sql import SparkSession

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        generate(data, Sizes(users=args.users, hotels=args.hotels), seed=5)
        store = ModelStore(ModelStoreSettings(root=(tmp / "models").as_uri()))
        trained = train(data, store, epochs=2, seed=5, promote=True, int8=False)
        ref = store.resolve("reco")
        x = raw_matrix(data, Schema.from_dict(ref.meta["schema"]), args.raw_users)
        per_core = raw_rate_per_core(ref.saved_model, x, args.batch_rows, args.rounds, 2)
        raw = raw_rate(TFRunner(ref.saved_model), x, args.batch_rows, args.rounds)

        server = RedisProcess(tmp / "redis").start()
        client = redis.Redis.from_url(server.url)
        spark = (
            SparkSession.builder.master("local[2]")
            .appName("bench-scoring")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", "2g")
            .config(map=SESSION_CONF)  # as spark-submit runs the job
            .getOrCreate()
        )
        job_args = parse_args(
            [
                "--data",
                str(data),
                "--redis-url",
                server.url,
                "--model-store",
                store.settings.root,
                "--batch-rows",
                str(args.batch_rows),
            ]
        )
        settings = settings_for(job_args, {})
        try:
            before = int(client.info("memory")["used_memory"])
            cold = run_job(spark, job_args, settings)
            per_user = (int(client.info("memory")["used_memory"]) - before) / cold.rows
            warm = [run_job(spark, job_args, settings) for _ in range(args.rounds)]
            versions = Versions(client, "reco", StoreSettings())
            started = time.perf_counter()
            counted = versions.count_keys(warm[-1].version)
            scan_s = time.perf_counter() - started
        finally:
            spark.stop()
            server.stop()

    job_rate = statistics.median(s.scored / s.seconds for s in warm)
    cold_rate = cold.scored / cold.seconds
    print(
        f"\n{args.users} users, {args.hotels} hotels, {warm[-1].scored} pairs a job run "
        f"(raw TF on the pairs of {min(args.users, args.raw_users)} users), "
        f"model reco/{trained.version}, 2 cores, medians of {args.rounds} rounds\n"
    )
    print("| path | pairs/s | vs raw TF, one process | vs raw TF, a process per core |")
    print("|---|---:|---:|---:|")
    rows = (
        (f"raw batched TF, one process (TF's threads), batch {args.batch_rows}", raw),
        ("raw batched TF, one 1-thread process per core, summed", per_core),
        ("Spark job end to end, warm", job_rate),
        ("Spark job end to end, cold (first run)", cold_rate),
    )
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / raw:.2f} | {rate / per_core:.2f} |")
    print()
    print("| store | value |")
    print("|---|---:|")
    print(f"| Redis memory per published user (top 10) | {per_user:,.0f} bytes |")
    print(f"| count-verification SCAN of {counted} keys | {scan_s * 1000:,.0f} ms |")
    retires = [s.retire_seconds for s in warm if s.retired]
    if retires:  # after the switch, so not in the job's rate (jobs.bulk.publish_version)
        print(f"| retiring one old version after the switch | {max(retires) * 1000:,.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
