"""Where the time of bulk tagging goes, measured in one run.

    python -m bench.bench_tagging [--count 16000] [--cores 2]

Generates demo photos, trains a tagger briefly (speed does not depend on its quality),
starts its own redis-server, then measures on the same cores:

- the tagging job end to end (listing, read, decode, inference, pipelined Redis writes,
  verify and publish), cold (first run: Python workers start, import TensorFlow and load
  the model) and warm (the same session again: workers and models reused);
- raw batched TensorFlow on already-decoded tensors (the model's SavedModel);
- decoding alone (prescore.image_features.decode, one process per core, bytes in memory).

Prints a markdown table and the ratio of the job to the slower of inference and decode,
beside the bound of a job that does both on the same cores with no other work
(1 / (1/TF + 1/decode)): each photo is decoded, then inferred, by the same core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _decode_chunk(raws: list[bytes]) -> int:
    from prescore.image_features import decode

    for raw in raws:
        decode(raw, (64, 64))
    return len(raws)


def decode_rate(raws: list[bytes], cores: int, repeats: int) -> float:
    """Images/s of decode + resize alone, ``cores`` processes."""
    chunks = [raws[i::cores] for i in range(cores)]
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode_chunk, [c[:50] for c in chunks]))  # start and import first
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            done = sum(pool.map(_decode_chunk, chunks))
            rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def tf_rate(saved_model: Path, x: np.ndarray, batch: int, repeats: int) -> float:
    """Images/s of the SavedModel on already-decoded tensors, ``batch`` per call."""
    from prescore.inference import TFRunner

    runner = TFRunner(saved_model)
    runner(x[:batch])  # first call builds the graph
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(x), batch):
            runner(x[i : i + batch])
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_rates(
    images: Path, redis_url: str, store_root: str, cores: int, runs: int
) -> tuple[list[Any], list[float]]:
    """Summaries of ``runs`` tagging jobs in one local SparkSession, and the CPU seconds
    its JVM (listing, reading the files, Arrow) spent in each."""
    from pyspark.sql import SparkSession

    from jobs.bulk import SESSION_CONF, settings_for
    from jobs.tag_images import parse_args, run_job

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("bench-tagging")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config(map=SESSION_CONF)  # as spark-submit runs the job
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    args = parse_args(
        ["--images", f"{images}/*.jpg", "--redis-url", redis_url, "--model-store", store_root]
    )
    jvm = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
    summaries, jvm_cpu = [], []
    try:
        for _ in range(runs):
            before = _cpu_seconds(jvm)
            summaries.append(run_job(spark, args, settings_for(args, {})))
            jvm_cpu.append(_cpu_seconds(jvm) - before)
        return summaries, jvm_cpu
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=16000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="job runs; the first is cold")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)

    from jobs.imagegen import generate
    from jobs.train_tagger import load_images, train
    from prescore.embedded_redis import RedisProcess
    from prescore.modelstore import ModelStore
    from prescore.settings import ModelStoreSettings

    with tempfile.TemporaryDirectory(prefix="bench-tagging-") as tmp:
        work = Path(tmp)
        images = work / "images"
        generate(images, args.count, seed=5)
        store = ModelStore(ModelStoreSettings(root=(work / "models").as_uri()))
        trained = train(images, store, epochs=2, seed=5, promote=True, int8=False)
        saved_model = store.resolve("tagger").saved_model
        raws = [p.read_bytes() for p in sorted(images.glob("*.jpg"))]
        x, _ = load_images(images)

        redis = RedisProcess(work / "redis").start()
        try:
            summaries, jvm_cpu = job_rates(
                images, redis.url, store.settings.root, args.cores, args.runs
            )
        finally:
            redis.stop()
        tf = tf_rate(saved_model, x, args.batch, args.repeats)
        dec = decode_rate(raws, args.cores, args.repeats)

    rates = [s.scored / s.seconds for s in summaries]
    warm = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
    floor = min(tf, dec)
    print(
        f"\n{args.count} photos (96-160 px JPEG -> 64x64), tagger v{trained.version}, "
        f"{args.cores} cores (local[{args.cores}]), batch {args.batch}\n"
    )
    print("| step | images/s | vs slower of TF and decode |")
    print("|---|---:|---:|")
    print(f"| job end to end, warm (median of {len(rates) - 1} runs) | {warm:,.0f} "
          f"| {warm / floor:.0%} |")  # fmt: skip
    print(f"| job end to end, cold (first run) | {rates[0]:,.0f} | {rates[0] / floor:.0%} |")
    print(f"| raw batched TensorFlow, decoded tensors | {tf:,.0f} | {tf / floor:.0%} |")
    print(f"| decode + resize alone | {dec:,.0f} | {dec / floor:.0%} |")
    bound = 1 / (1 / tf + 1 / dec)
    print(f"| bound: decode then TF on the same cores, nothing else | {bound:,.0f} "
          f"| {bound / floor:.0%} |")  # fmt: skip
    print(f"\njob runs: {', '.join(f'{r:,.0f}' for r in rates)} images/s; target: warm >= 50%")
    share = [cpu / (s.seconds * args.cores) for cpu, s in zip(jvm_cpu, summaries, strict=True)]
    used = ", ".join(f"{c:.1f} s ({x:.0%})" for c, x in zip(jvm_cpu, share, strict=True))
    print(
        f"Spark's JVM (listing, reading each file, Arrow) used {used} of the cores' CPU in "
        "those runs: time the workers' decode and TF do not get."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
