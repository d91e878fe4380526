"""Where the time of bulk tagging goes, measured in one run.

    python -m bench.bench_tagging [--count 16000] [--cores 2]
    python -m bench.bench_tagging --size 1024x768 --count 400 [--before 8dcc8e0]

Generates demo photos (examples.hotels.imagegen), trains the demo's tagger briefly
(examples.hotels.train_tagger; speed does not depend on its quality) and registers it as
any team's model is (prescore.models.registration.register). With ``--size WxH`` the photos are
photo-like JPEGs of that size (150-300 KiB each) and the model MobileNetV3Small at 224x224
with random weights (bench.tagging_setup), registered the same way. The demo's ``tags``
dataset as
declared (examples/hotels/prescore.toml, its paths under a temporary PRESCORE_VAR); starts
its own redis-server, then measures on the same cores:

- the bulk job end to end (``jobs/score.py --dataset tags``: listing, read, decode,
  inference, pipelined Redis writes, verify and publish), cold (first run: Python workers
  start, import TensorFlow and load the model) and warm (the same session again: workers
  and models reused);
- raw batched TensorFlow on already-decoded tensors (the registered SavedModel's serving
  signature, prescore.models.tf_model.TFModel, as the job calls it); with ``--runtime
  float32|int8|auto`` the job scores in that LiteRT variant (registered with its variants)
  and the raw rate is that variant's, one single-threaded interpreter per core in a
  process of its own, as the job's workers run it;
- decoding alone (prescore.models.image_features.decode to the model's input size, one process
  per core, bytes in memory), at reduced scale (as the job decodes) and at full scale;
- with ``--before REV``: the job of that git revision (its files extracted apart, run in
  a process of its own with the same photos, model, Redis and cores), before ours.

TensorFlow runs where it places itself: the CPU on a machine without a GPU (each job
worker prints its device). Prints a markdown table and the ratio of the job to the slower
of inference and decode,
beside the bound of a job that does both on the same cores with no other work
(1 / (1/TF + 1/decode)): each photo is decoded, then inferred, by the same core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.revisions import before_tree

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "hotels" / "prescore.toml"


@dataclass(frozen=True)
class Run:
    """One job run: images scored, seconds, CPU seconds of Spark's JVM."""

    scored: int
    seconds: float
    jvm_cpu: float

    @property
    def rate(self) -> float:
        return self.scored / self.seconds


def _decode_chunk(raws: list[bytes], size: tuple[int, int], channels: int, reduced: bool) -> float:
    """Seconds this process takes to decode ``raws`` (timed here: their trip to it is not)."""
    from prescore.models.image_features import decode

    started = time.perf_counter()
    for raw in raws:
        decode(raw, size, channels=channels, reduced=reduced)
    return time.perf_counter() - started


def decode_rate(
    raws: list[bytes],
    size: tuple[int, int],
    channels: int,
    cores: int,
    repeats: int,
    reduced: bool = True,
) -> float:
    """Images/s of decode + resize alone (as jobs.labels decodes), ``cores`` processes each
    decoding its share; the bytes' pickling to them is left out of the time, as a job's
    worker reads its files itself."""
    chunks = [raws[i::cores] for i in range(cores)]
    sizes, chans, how = [size] * cores, [channels] * cores, [reduced] * cores
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode_chunk, [c[:20] for c in chunks], sizes, chans, how))  # imports
        rates = []
        for _ in range(repeats):
            took = list(pool.map(_decode_chunk, chunks, sizes, chans, how))
            rates.append(len(raws) / max(took))
    return statistics.median(rates)


def tf_rate(model: Any, x: np.ndarray, batch: int, repeats: int) -> float:
    """Images/s of the model's serving signature on already-decoded tensors, ``batch`` per
    call, fed as jobs.labels feeds it (prescore.models.image_features.model_input)."""
    from prescore.models.image_features import model_input
    from prescore.models.signature import image_input

    name, tensor = image_input(model.signatures.serving, "model")
    model({name: model_input(x[:batch], tensor.dtype)})  # the first call builds the graph
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(x), batch):
            model({name: model_input(x[i : i + batch], tensor.dtype)})
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def _lite_chunk(model_dir: str, meta: dict, runtime: str, x: np.ndarray, batch: int) -> float:
    """Seconds one single-threaded interpreter takes over ``x``, ``batch`` per call."""
    from prescore.models.image_features import model_input
    from prescore.models.inference import load_runner
    from prescore.models.signature import image_input

    model = load_runner(Path(model_dir), meta, runtime, threads=1)
    name, tensor = image_input(model.signatures.serving, "model")
    model({name: model_input(x[:batch], tensor.dtype)})  # interpreters made, warm
    started = time.perf_counter()
    for i in range(0, len(x), batch):
        model({name: model_input(x[i : i + batch], tensor.dtype)})
    return time.perf_counter() - started


def lite_rate(ref: Any, runtime: str, x: np.ndarray, batch: int, cores: int, repeats: int) -> float:
    """Images/s of a LiteRT variant on already-decoded tensors: ``cores`` processes, each
    one interpreter thread over the whole of ``x`` (as each job worker runs it)."""
    with ProcessPoolExecutor(cores) as pool:
        rates = []
        for _ in range(repeats):
            args = [(str(ref.path), ref.meta, runtime, x, batch)] * cores
            took = list(pool.map(_lite_chunk, *zip(*args, strict=True)))
            rates.append(len(x) * cores / max(took))
    return statistics.median(rates)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_jvm() -> int:
    """The pid of the JVM a local SparkSession of this process runs in: the java process
    among its descendants (spark-submit's launcher starts it)."""
    from jobs.standalone import descendants

    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/exe").resolve().name == "java":
                return pid
    raise RuntimeError("no JVM under this process: start the SparkSession first")


def job_rates(settings: Any, cores: int, runs: int, batch: int, runtime: str = "tf") -> list[Run]:
    """``runs`` bulk jobs of the ``tags`` dataset in one local SparkSession, each with the
    CPU seconds its JVM (listing, reading the files, Arrow) spent."""
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
    runtime_args = ["--runtime", runtime] if runtime != "tf" else []  # an older tree lacks it
    args = parse_args(["--dataset", "tags", "--batch-rows", str(batch), *runtime_args])
    jvm = session_jvm()
    out = []
    try:
        for _ in range(runs):
            before = cpu_seconds(jvm)
            summary = run_job(spark, args, settings)
            out.append(Run(summary.scored, summary.seconds, cpu_seconds(jvm) - before))
        return out
    finally:
        spark.stop()


def settings_of(work: Path, redis_url: str) -> Any:
    """The demo's declarations over ``work`` (PRESCORE_VAR), its model store and Redis."""
    from prescore.data.datasets import load
    from prescore.settings import ModelStoreSettings, RedisSettings, Settings

    models = ModelStoreSettings(root=(work / "models").as_uri())
    catalog = load(CONFIG, {"PRESCORE_VAR": str(work)})
    return Settings(redis=RedisSettings(url=redis_url), models=models, catalog=catalog)


def job_only(work: Path, redis_url: str, cores: int, runs: int, batch: int) -> int:
    """Run the job of the code on sys.path and print its runs as JSON (--before's child)."""
    found = job_rates(settings_of(work, redis_url), cores, runs, batch)
    print("RUNS " + json.dumps([[r.scored, r.seconds, r.jvm_cpu] for r in found]))
    return 0


def before_runs(tree: Path, work: Path, redis_url: str, args: argparse.Namespace) -> list[Run]:
    """The job of the revision in ``tree`` on the same photos, model and Redis, in a
    process whose imports come from that revision's files."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--job-only",
        str(work),
        "--redis-url",
        redis_url,
        "--cores",
        str(args.cores),
        "--runs",
        str(args.runs),
        "--batch",
        str(args.batch),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = [line for line in out.stdout.splitlines() if line.startswith("RUNS ")]
    if out.returncode or not found:
        raise RuntimeError(f"the job of {args.before} failed:\n{out.stderr[-3000:]}")
    return [Run(*r) for r in json.loads(found[-1][5:])]


def warm_rate(runs: list[Run], per_round: int) -> float:
    """The median rate of the warm runs (all but the first of each round)."""
    warm = [r.rate for i, r in enumerate(runs) if i % per_round]
    return statistics.median(warm or [runs[0].rate])


def cold_rate(runs: list[Run], per_round: int) -> float:
    return statistics.median(r.rate for r in runs[::per_round])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=16000)
    parser.add_argument("--size", help="WxH photos, e.g. 1024x768")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="job runs a round; the first cold")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (--before: each first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--before", help="also the job of this git revision, run first")
    parser.add_argument(
        "--runtime",
        default="tf",
        choices=("tf", "float32", "int8", "auto"),
        help="the job's --runtime (ours only)",
    )
    parser.add_argument("--job-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job_only:
        return job_only(args.job_only, args.redis_url, args.cores, args.runs, args.batch)
    from examples.hotels.imagegen import parse_size  # not in --job-only: an older tree's

    args.size = parse_size(args.size) if args.size else None

    from bench.tagging_setup import prepare
    from jobs.runtimes import chosen_runtime
    from prescore.models.signature import image_dims, image_input
    from prescore.models.store import ModelStore
    from prescore.models.tf_model import TFModel
    from prescore.store.embedded_redis import RedisProcess

    with tempfile.TemporaryDirectory(prefix="bench-tagging-") as tmp:
        work = Path(tmp)
        photos, model_name = prepare(CONFIG, work, args.count, args.size, args.runtime != "tf")
        redis = RedisProcess(work / "redis").start()
        settings = settings_of(work, redis.url)
        tree = before_tree(args.before, work) if args.before else None
        ours: list[Run] = []
        before: list[Run] = []
        try:
            for _ in range(args.rounds):  # side by side: the machine's load moves
                if tree is not None:
                    before += before_runs(tree, work, redis.url, args)
                ours += job_rates(settings, args.cores, args.runs, args.batch, args.runtime)
        finally:
            redis.stop()
        ref = ModelStore(settings.models).resolve("tagger")
        model = TFModel(ref.saved_model, ref.meta)
        _, tensor = image_input(model.signatures.serving, "tagger")
        h, w, c = image_dims(tensor)
        raws = [p.read_bytes() for p in sorted((work / "images").glob("*.jpg"))]
        sample = raws[: 512 if args.size else 4096]  # seconds of TF, in memory
        x = np.stack([decode_one(r, (h, w), c) for r in sample])
        runtime = chosen_runtime("labels", ref, args.runtime)
        if runtime == "tf":
            tf = tf_rate(model, x, args.batch, args.repeats)
        else:
            tf = lite_rate(ref, runtime, x, args.batch, args.cores, args.repeats)
        dec = decode_rate(raws, (h, w), c, args.cores, args.repeats)
        full = decode_rate(raws, (h, w), c, args.cores, args.repeats, reduced=False)
    kib = statistics.median(len(r) for r in raws) / 1024
    print(
        f"\n{len(raws)} photos ({photos} -> {h}x{w}, median {kib:.0f} KiB), {model_name}, "
        f"{args.cores} cores (local[{args.cores}]), batch {args.batch}, runtime {runtime}\n"
    )
    report(ours, before, args, tf, dec, full, runtime)
    return 0


def decode_one(raw: bytes, size: tuple[int, int], channels: int) -> np.ndarray:
    from prescore.models.image_features import decode

    return decode(raw, size, channels=channels)


def report(
    ours: list[Run],
    before: list[Run],
    args: argparse.Namespace,
    tf: float,
    dec: float,
    full: float,
    runtime: str = "tf",
) -> None:
    """The markdown table and the JVM's share of the cores."""
    floor, cores = min(tf, dec), args.cores
    rows = [
        ("job end to end, warm", warm_rate(ours, args.runs)),
        ("job end to end, cold (first run of a session)", cold_rate(ours, args.runs)),
    ]
    if before:
        rows += [
            (f"job of {args.before}, warm", warm_rate(before, args.runs)),
            (f"job of {args.before}, cold", cold_rate(before, args.runs)),
        ]
    bound = 1 / (1 / tf + 1 / dec)
    rows += [
        (
            "raw batched TensorFlow, decoded tensors"
            if runtime == "tf"
            else f"raw batched LiteRT {runtime}, decoded tensors, one thread a core",
            tf,
        ),
        ("decode + resize alone (reduced scale, as the job decodes)", dec),
        ("decode + resize alone, full-scale decode", full),
        ("bound: decode then inference on the same cores, nothing else", bound),
    ]
    print("| step | images/s | per core | vs slower of inference and decode |")
    print("|---|---:|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.1f} | {rate / cores:,.1f} | {rate / floor:.0%} |")
    if before:
        gain = warm_rate(ours, args.runs) / warm_rate(before, args.runs)
        print(f"\nwarm job, ours against {args.before}: {gain:.2f}x (medians)")
    for who, runs in (("ours", ours), (args.before, before)):
        if runs:
            share = ", ".join(
                f"{r.jvm_cpu:.1f} s ({r.jvm_cpu / (r.seconds * cores):.0%})" for r in runs
            )
            rates = ", ".join(f"{r.rate:,.1f}" for r in runs)
            print(f"{who}: runs {rates} images/s; Spark's JVM used {share} of the cores")


if __name__ == "__main__":
    sys.exit(main())
