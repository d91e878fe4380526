"""Where the time of bulk tagging goes, measured in one run.

    python -m bench.bench_tagging [--count 16000] [--cores 2]

Generates demo photos (examples.hotels.imagegen), trains the demo's tagger briefly
(examples.hotels.train_tagger; speed does not depend on its quality) and registers it as
any team's model is (prescore.model_import.register), with the demo's ``tags`` dataset as
declared (examples/hotels/prescore.toml, its paths under a temporary PRESCORE_VAR); starts
its own redis-server, then measures on the same cores:

- the bulk job end to end (``jobs/score.py --dataset tags``: listing, read, decode,
  inference, pipelined Redis writes, verify and publish), cold (first run: Python workers
  start, import TensorFlow and load the model) and warm (the same session again: workers
  and models reused);
- raw batched TensorFlow on already-decoded tensors (the registered SavedModel's serving
  signature, prescore.tf_model.TFModel, as the job calls it);
- decoding alone (prescore.image_features.decode to the model's input size, one process
  per core, bytes in memory).

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

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "hotels" / "prescore.toml"


def _decode_chunk(raws: list[bytes], size: tuple[int, int], channels: int) -> int:
    from prescore.image_features import decode

    for raw in raws:
        decode(raw, size, channels=channels)
    return len(raws)


def decode_rate(
    raws: list[bytes], size: tuple[int, int], channels: int, cores: int, repeats: int
) -> float:
    """Images/s of decode + resize alone (as jobs.labels decodes), ``cores`` processes."""
    chunks = [raws[i::cores] for i in range(cores)]
    sizes, chans = [size] * cores, [channels] * cores
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode_chunk, [c[:50] for c in chunks], sizes, chans))  # import first
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            done = sum(pool.map(_decode_chunk, chunks, sizes, chans))
            rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def tf_rate(model: Any, x: np.ndarray, batch: int, repeats: int) -> float:
    """Images/s of the model's serving signature on already-decoded tensors, ``batch`` per
    call, fed as jobs.labels feeds it (prescore.image_features.model_input)."""
    from prescore.image_features import model_input
    from prescore.signature import image_input

    name, tensor = image_input(model.signatures.serving, "model")
    model({name: model_input(x[:batch], tensor.dtype)})  # the first call builds the graph
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(x), batch):
            model({name: model_input(x[i : i + batch], tensor.dtype)})
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_rates(settings: Any, cores: int, runs: int, batch: int) -> tuple[list[Any], list[float]]:
    """Summaries of ``runs`` bulk jobs of the ``tags`` dataset in one local SparkSession,
    and the CPU seconds its JVM (listing, reading the files, Arrow) spent in each."""
    from pyspark.sql import SparkSession

    from jobs.bulk import SESSION_CONF
    from jobs.score import parse_args, run_job

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("bench-tagging")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config(map=SESSION_CONF)  # as spark-submit runs the job
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    args = parse_args(["--dataset", "tags", "--batch-rows", str(batch)])
    gateway: Any = spark.sparkContext._jvm
    jvm = int(gateway.ProcessHandle.current().pid())
    summaries, jvm_cpu = [], []
    try:
        for _ in range(runs):
            before = _cpu_seconds(jvm)
            summaries.append(run_job(spark, args, settings))
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

    from examples.hotels.imagegen import generate
    from examples.hotels.train_tagger import load_images, train
    from prescore.datasets import load
    from prescore.embedded_redis import RedisProcess
    from prescore.model_import import register
    from prescore.modelstore import ModelStore
    from prescore.settings import ModelStoreSettings, RedisSettings, Settings
    from prescore.signature import image_input
    from prescore.tf_model import TFModel

    with tempfile.TemporaryDirectory(prefix="bench-tagging-") as tmp:
        work = Path(tmp)
        images = work / "images"  # where the demo's declaration reads: $PRESCORE_VAR/images
        generate(images, args.count, seed=5)
        train(images, work / "train", epochs=2, seed=5)
        catalog = load(CONFIG, {"PRESCORE_VAR": str(work)})
        store = ModelStore(ModelStoreSettings(root=(work / "models").as_uri()))
        done = register(
            store, catalog, "tagger", str(work / "train"), promote=True, int8=False,
            say=lambda _: None,
        )  # fmt: skip
        ref = store.resolve("tagger")
        model = TFModel(ref.saved_model, ref.meta)
        _, tensor = image_input(model.signatures.serving, "tagger")
        height, width, channels = (int(d or 0) for d in tensor.shape[1:])  # fixed: checked
        size = (height, width)
        raws = [p.read_bytes() for p in sorted(images.glob("*.jpg"))]
        x, _ = load_images(images, size)

        redis = RedisProcess(work / "redis").start()
        settings = Settings(
            redis=RedisSettings(url=redis.url), models=store.settings, catalog=catalog
        )
        try:
            summaries, jvm_cpu = job_rates(settings, args.cores, args.runs, args.batch)
        finally:
            redis.stop()
        tf = tf_rate(model, x, args.batch, args.repeats)
        dec = decode_rate(raws, size, channels, args.cores, args.repeats)

    rates = [s.scored / s.seconds for s in summaries]
    warm = statistics.median(rates[1:]) if len(rates) > 1 else rates[0]
    floor = min(tf, dec)
    print(
        f"\n{args.count} photos (96-160 px JPEG -> {size[0]}x{size[1]}), tagger v{done.version}, "
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
