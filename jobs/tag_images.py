"""Bulk tagging: every hotel photo's tags, published to Redis as a new ``tags`` version.

    spark-submit jobs/tag_images.py --images 'var/images/*.jpg' [--model-version V]

Photos are read with Spark's binaryFile source (any path or glob Spark reads: file://,
hdfs://). **Image id rule:** the file name without its extension
(``.../images/img-000042.jpg`` -> ``img-000042``); a name that is not a valid id is a bad
file. Decoding, resizing and batched inference run inside the workers (mapInPandas) with
the model loaded once per worker; tags at or above their threshold are kept, best first.
Corrupt, empty, oversized or non-image files are counted and listed in the summary and
get no payload; they never fail the job. Only file names matching ``--pattern`` are read
(so ``labels.jsonl`` beside the photos is not a photo); files over ``--max-bytes`` are
reported from their listed length, without being read.
"""

from __future__ import annotations

import argparse
import math
import os
import posixpath
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from jobs.bulk import (
    STATS_SCHEMA,
    Summary,
    plain_settings,
    publish_version,
    settings_for,
    spark_session,
    worker_model,
    worker_redis,
    write_rows,
)
from jobs.flags import add_store_flags
from prescore import codec, keys
from prescore.errors import InvalidInput
from prescore.image_features import MAX_BYTES, PHOTO_EXTENSIONS, decode
from prescore.modelstore import ModelStore
from prescore.settings import Settings

MODEL_NAME = "tagger"
PATTERN = "*.{" + ",".join(PHOTO_EXTENSIONS) + "}"  # the image id rule: <id>.<ext>
FILE_SPLITS_PER_TASK = 64  # a split holds ~32 small files (openCostInBytes)
ARROW_BATCH_FILES = 512


def image_id(path: str) -> str:
    """The documented id rule: the file name without its extension."""
    return keys.check_id(posixpath.splitext(posixpath.basename(path))[0], what="image id")


def decode_all(
    frame: pd.DataFrame, size: tuple[int, int], max_bytes: int
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Ids and pixels of the good photos in ``frame``, and ``path: reason`` of the bad ones."""
    ids, pixels, bad = [], [], []
    for path, content in zip(frame["path"], frame["content"], strict=True):
        try:
            entity = image_id(path)
            pixels.append(decode(bytes(content or b""), size, max_bytes=max_bytes))
        except InvalidInput as exc:
            bad.append(f"{path}: {exc.code}")
            continue
        ids.append(entity)
    return ids, pixels, bad


def tag_batch(
    frame: pd.DataFrame, conf: Mapping[str, Any]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Payloads of the good photos in ``frame`` and ``path: reason`` of the bad ones."""
    runner, meta = worker_model(conf, MODEL_NAME, conf["model_version"])
    size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    tags = [str(t) for t in meta["tags"]]
    floor = np.array([float(meta["thresholds"][t]) for t in tags], np.float32)
    ids, pixels, bad = decode_all(frame, size, conf["max_bytes"])
    if not pixels:
        return [], bad
    scores = runner(np.stack(pixels))
    rows = []
    for entity, row in zip(ids, scores, strict=True):
        best = [j for j in np.argsort(-row, kind="stable") if row[j] >= floor[j]]
        payload = codec.encode_tags(
            entity,
            [(tags[j], float(row[j])) for j in best],
            model=MODEL_NAME,
            model_version=conf["model_version"],
            scored_at=conf["scored_at"],
        )
        rows.append((entity, payload))
    return rows, bad


def tag_partition(
    batches: Iterator[pd.DataFrame], conf: Mapping[str, Any]
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: tag, write pipelined, yield one stats row per batch."""
    client = worker_redis(conf)
    step = conf["batch_images"]
    for batch in batches:
        written, bad = 0, []
        for start in range(0, len(batch), step):
            rows, skipped = tag_batch(batch.iloc[start : start + step], conf)
            written += write_rows(client, "tags", conf["version"], rows)
            bad += skipped
        yield pd.DataFrame(
            {"rows": [written], "scored": [written], "bad": [len(bad)], "bad_sample": [bad[:20]]}
        )


def split_glob(images: str, pattern: str) -> tuple[str, str]:
    """``dir/*.jpg`` -> (``dir``, ``*.jpg``): Spark lists one folder, not one root per match.

    A last part of ``*`` keeps ``pattern``, so ``dir/*`` skips labels.jsonl and the like.
    """
    head, _, last = images.rstrip("/").rpartition("/")
    if head and any(c in last for c in "*?[{") and not any(c in head for c in "*?[{"):
        return head, pattern if last == "*" else last
    return images, pattern


def _plain(uri: str) -> str:
    plain = unquote(uri)
    return "file:/" + plain[len("file:///") :] if plain.startswith("file:///") else plain


def listed_count(files: Any) -> int:
    """How many files the listing of ``files`` holds.

    ``DataFrame.inputFiles()`` copies the paths over py4j one by one (seconds for 10,000s
    of files); the count alone is one call on the JVM's array.
    """
    return len(files._jdf.inputFiles())


def unread_stats(spark: Any, files: Any, max_bytes: int) -> Any:
    """One stats row for listed files no worker sees: empty or over ``max_bytes``.

    The binaryFile scan drops empty files, and the length filter is pushed into the
    listing, so an oversized file is never read; both are found from the listing alone.
    """
    from pyspark.sql import functions as F

    # inputFiles() gives URIs ("file:///a%20b.jpg"); the path column the plain form.
    listed = [(_plain(p),) for p in files.inputFiles()]
    listed = spark.createDataFrame(listed, "path string")
    scanned = files.select("path", "length").coalesce(spark.sparkContext.defaultParallelism)
    empty = listed.join(scanned, "path", "left_anti").select(
        "path", F.lit("empty_image").alias("reason")
    )
    big = scanned.where(scanned.length > max_bytes).select(
        "path", F.lit("image_too_large").alias("reason")
    )
    bad = empty.unionByName(big).collect()  # a few rows: bad files are the exception
    sample = [f"{r['path']}: {r['reason']}" for r in bad[:20]]
    return spark.createDataFrame([(0, 0, len(bad), sample)], STATS_SCHEMA)


def read_photos(spark: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """The listed files, and their (path, content) rows a worker decodes, in few partitions."""
    root, pattern = split_glob(args.images, args.pattern)
    files = spark.read.format("binaryFile").option("pathGlobFilter", pattern).load(root)
    photos = files.where(files.length <= args.max_bytes).select("path", "content")
    parallelism = spark.sparkContext.defaultParallelism
    if args.partitions:
        return files, photos.repartition(args.partitions)
    # Each Python task costs ~0.1 s to start here, as long as tagging 200-300 photos:
    # merge the file splits (no shuffle) into a few large tasks per core.
    splits = photos.rdd.getNumPartitions()
    rounds = max(1, math.ceil(splits / (FILE_SPLITS_PER_TASK * parallelism)))
    return files, photos.coalesce(min(splits, rounds * parallelism))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder, path or glob of photo files")
    parser.add_argument("--model-version", help="default: the promoted version")
    parser.add_argument("--batch-images", type=int, default=128, help="images per model call")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="larger files are bad")
    parser.add_argument("--pattern", default=PATTERN, help="file names to read (a glob)")
    parser.add_argument("--partitions", type=int, default=0, help="default: a few per core")
    add_store_flags(parser)
    return parser.parse_args(argv)


def run_job(spark: Any, args: argparse.Namespace, settings: Settings) -> Summary:
    """Tag every photo of ``args.images`` and publish a new ``tags`` version."""
    model_version = args.model_version or ModelStore(settings.models).resolve(MODEL_NAME).version
    files, photos = read_photos(spark, args)
    conf = {
        **plain_settings(settings),
        "model_version": model_version,
        "batch_images": args.batch_images,
        "max_bytes": args.max_bytes,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    def run(version: str) -> Any:
        body = {**conf, "version": version}
        tagged = photos.mapInPandas(lambda it: tag_partition(it, body), schema=STATS_SCHEMA)
        stats = tagged.collect()
        # Every listed file the workers saw was tagged or reported; only when some were
        # not (empty or oversized) is the listing searched for them, a costlier query.
        if sum(r["scored"] + r["bad"] for r in stats) < listed_count(files):
            stats += unread_stats(spark, files, args.max_bytes).collect()
        return spark.createDataFrame(stats, STATS_SCHEMA)

    print(f"tagging photos of {args.images} with tagger/{model_version}", flush=True)
    return publish_version(spark, settings, "tags", (MODEL_NAME, model_version), run, "images")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = spark_session("prescore-tag-images")
    # Arrow batches carry whole files: bound them in rows so real photos (MBs each) fit.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_FILES))
    try:
        run_job(spark, args, settings_for(args, os.environ))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
