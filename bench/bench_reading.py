"""What listing and reading many image files costs Spark's JVM, apart from decoding.

    python -m bench.bench_reading [--count 8000] [--passes 3]

Generates the demo's small photos (examples.hotels.imagegen) and, in a local[2] session
per way, runs ``--passes`` passes over them with Python workers that only count the bytes
they get, the files read each of these ways:

- Spark reads each file (binaryFile path + content, Arrow to the workers), Spark's
  default packing (a split of 128 MB at most, 4 MB counted for opening a file);
- the same, files packed by their bytes (jobs.labels.FILE_PACKING);
- Spark lists, the workers open the files (binaryFile path only), default packing;
- the same, packed by bytes: what jobs.labels does for a local folder.

Prints each pass's wall seconds and the CPU seconds Spark's JVM spent in it (the first
pass of each way also starts the Python workers).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from bench.bench_tagging import cpu_seconds, session_jvm

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _count_content(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield pd.DataFrame({"n": [sum(len(c) for c in batch["content"])]})


def _count_paths(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    from jobs.labels import read_local

    for batch in batches:
        yield pd.DataFrame({"n": [sum(len(read_local(p, 1 << 30)) for p in batch["path"])]})


def passes(folder: Path, packed: bool, paths: bool, n: int) -> list[tuple[float, float]]:
    """(wall s, JVM CPU s) of ``n`` passes over ``folder`` read one way."""
    from pyspark.sql import SparkSession

    from jobs.bulk import SESSION_CONF
    from jobs.labels import ARROW_BATCH_FILES, FILE_PACKING, IMAGES_PER_TASK

    builder = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
    conf = {**SESSION_CONF, **(FILE_PACKING if packed else {})}
    spark = builder.config(map=conf).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_FILES))
    jvm = session_jvm()
    found = []
    try:
        for _ in range(n):
            cpu, started = cpu_seconds(jvm), time.perf_counter()
            files = (
                spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load(str(folder))
            )
            frame = files.select("path") if paths else files.select("path", "content")
            tasks = 2 * max(1, math.ceil(len(files.inputFiles()) / (IMAGES_PER_TASK * 2)))
            frame = frame.coalesce(min(frame.rdd.getNumPartitions(), tasks))
            body = _count_paths if paths else _count_content
            frame.mapInPandas(body, "n long").collect()
            found.append((time.perf_counter() - started, cpu_seconds(jvm) - cpu))
    finally:
        spark.stop()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8000)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)

    from examples.hotels.imagegen import generate

    ways = [
        ("Spark reads the files, default packing", False, False),
        ("Spark reads the files, packed by bytes", True, False),
        ("the workers open the files, default packing", False, True),
        ("the workers open the files, packed by bytes (the job)", True, True),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-reading-") as tmp:
        generate(Path(tmp), args.count, seed=5)
        found = [
            (name, passes(Path(tmp), packed, paths, args.passes)) for name, packed, paths in ways
        ]
    print(f"\n{args.count} files of the demo, local[2], {args.passes} passes a way\n")
    print("| files read | wall s (warm median) | JVM CPU s (warm median) | passes (wall/JVM) |")
    print("|---|---:|---:|---|")
    for name, runs in found:
        warm = runs[1:] or runs
        each = ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs)
        print(
            f"| {name} | {statistics.median(w for w, _ in warm):.2f} | "
            f"{statistics.median(c for _, c in warm):.2f} | {each} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
