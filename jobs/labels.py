"""Bulk scoring of a ``labels`` dataset: each image's (or row's) labels above threshold.

**Images** are listed with Spark's binaryFile source (any path or glob Spark reads). The
key rule: the file name without its extension (``.../images/img-42.jpg`` -> ``img-42``);
a name that is not a valid id is a bad file. A local or mounted folder's files are
opened by the Python workers themselves (Spark hands them paths: no file's bytes cross
the JVM and Arrow); any other store's (``hdfs://``) are read by Spark. Decoding and
resizing to the model's input size run inside the workers (mapInPandas), with the model
loaded once per worker.
Corrupt, empty, oversized or non-image files are counted and listed in the summary and
get no payload; they never fail the job. Only files with one of the declared extensions
are read; files over the declared size are reported from their listed length, unread.

**Rows** of a feature table are fed to the model's named inputs by column name.

Labels at or above their threshold are kept, best first (prescore.encoding.label_payloads).
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from jobs.bulk import (
    STATS_SCHEMA,
    Run,
    keyed,
    stats_row,
    task_tally,
    worker_model,
    worker_redis,
    write_rows,
)
from jobs.spark_tables import (
    KEY_TEXT,
    WHOLE,
    Selection,
    Subset,
    columns,
    read,
    require,
    rows_to_score,
)
from prescore.data.datasets import Dataset
from prescore.data.images import check_image_key, image_extensions, image_folder
from prescore.encoding import keys, label_payloads
from prescore.encoding.codec import PayloadShape
from prescore.errors import ConfigError, InvalidInput
from prescore.models import feeds
from prescore.models.image_features import decode, model_input
from prescore.models.signature import Signatures, check_labels, image_dims, image_input
from prescore.models.store import ModelRef
from prescore.store.values import Placed

IMAGES_PER_TASK = 2048
ARROW_BATCH_FILES = 512
# Files packed into splits by their bytes: Spark's default counts 4 MB for each file
# opened, which for photos of a few KB to a few hundred means one small split per few
# dozen files and a JVM busy planning and opening them.
FILE_PACKING = {
    "spark.sql.files.maxPartitionBytes": "16m",
    "spark.sql.files.openCostInBytes": "64k",
    # a file removed between the listing and its read is skipped, not the whole run's
    # failure: the listing's count then finds it unread (unread_stats)
    "spark.sql.files.ignoreMissingFiles": "true",
}


def _payloads(run: Run, ids: Sequence[str], scores: np.ndarray, meta: Any) -> list:
    ds = run.dataset
    shape = PayloadShape(ds.key_field, ds.list_field, ds.entry_field)
    return label_payloads.encode(
        shape,
        ids,
        scores,
        meta,
        model=ds.model,
        model_version=run.model_version,
        scored_at=run.scored_at,
        floor=ds.min_score,
    )


def image_key(path: str) -> str:
    """The documented key rule: the file name without its extension."""
    return check_image_key(posixpath.splitext(posixpath.basename(path))[0])


def decode_all(
    frame: pd.DataFrame, size: tuple[int, int], channels: int, max_bytes: int
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Keys and pixels of the good images in ``frame``, and ``path: reason`` of bad ones.

    ``frame`` holds each file's bytes (``content``, read by Spark) or only its ``path``,
    a local file this worker opens itself."""
    ids, pixels, bad = [], [], []
    contents = frame.get("content")
    for i, path in enumerate(frame["path"]):
        try:
            key = image_key(path)
            raw = contents.iat[i] if contents is not None else read_local(path, max_bytes)
            pixels.append(decode(bytes(raw or b""), size, max_bytes, channels=channels))
        except InvalidInput as exc:
            bad.append(f"{path}: {exc.code}")
            continue
        except OSError:  # gone or unreadable since it was listed
            bad.append(f"{path}: unreadable")
            continue
        ids.append(key)
    return ids, pixels, bad


def read_local(path: str, max_bytes: int) -> bytes:
    """A listed local file's bytes, at most ``max_bytes + 1`` (the decoder refuses more)."""
    with open(_local(path), "rb") as f:
        return f.read(max_bytes + 1)


def _local(path: str) -> str:
    """A local file's path as Spark's path column gives it (``file:/a b.jpg``)."""
    return path[len("file:") :] if path.startswith("file:") else path


def score_images(frame: pd.DataFrame, run: Run, model: Any) -> tuple[list, list]:
    """(key, payload) rows of the good images in ``frame``, and ``path: reason`` of bad ones."""
    name, tensor = image_input(model.signatures.serving, "model")
    h, w, c = image_dims(tensor)
    ids, pixels, bad = decode_all(frame, (h, w), c, run.dataset.max_image_bytes)
    if not pixels:
        return [], bad
    scores = model({name: model_input(np.stack(pixels), tensor.dtype)})
    return list(zip(ids, _payloads(run, ids, scores, model.meta), strict=True)), bad


def score_rows(frame: pd.DataFrame, run: Run, model: Any) -> tuple[list, list]:
    """(key, payload) rows of a batch of feature rows; rows with a bad key are reported."""
    assert run.dataset.rows is not None
    rows, ids, bad = keyed(frame, keys.KeyForm(len(run.dataset.rows.key)))
    if not ids:
        return [], bad
    scores = model(feeds.feeds(rows, model.signatures.serving.inputs))
    return list(zip(ids, _payloads(run, ids, scores, model.meta), strict=True)), bad


def score_partition(batches: Iterator[pd.DataFrame], run: Run) -> Iterator[Any]:
    """mapInPandas body: score, write, yield one stats row per batch."""
    client = worker_redis(run)
    model = worker_model(run)
    score = score_images if run.dataset.images else score_rows
    step = run.batch_rows
    tally = task_tally()
    for batch in batches:
        written, bad, keys_ = 0, [], []
        for start in range(0, len(batch), step):
            rows, skipped = score(batch.iloc[start : start + step], run, model)
            written += write_rows(client, run, rows, tally)
            bad += skipped
            keys_ += [k for k, _ in rows]
        yield stats_row(run, written, written, bad, written=keys_)


# -- driver: images ------------------------------------------------------------------------


def extension_pattern(dataset: Dataset) -> str:
    """The file names an images dataset reads (prescore.data.images.image_extensions)."""
    return "*.{" + ",".join(image_extensions(dataset)) + "}"


def _plain(uri: str) -> str:
    plain = unquote(uri)
    return "file:/" + plain[len("file:///") :] if plain.startswith("file:///") else plain


@dataclass(frozen=True)
class Listing:
    """An images dataset's files as Spark listed them (``files``: the binaryFile frame),
    how many (``DataFrame.inputFiles()`` copies their paths over py4j one by one, a
    second or more for 10,000s of files: asked once a run), and the rows a worker
    decodes (``images``)."""

    files: Any
    count: int
    images: Any


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
    sample = [f"{r['path']}: {_unread(r['path'], r['reason'])}" for r in bad[:20]]
    return spark.createDataFrame([(0, 0, len(bad), sample, [], 0)], STATS_SCHEMA)


def _unread(path: str, reason: str) -> str:
    """A listed file no worker saw: removed since it was listed, or as ``reason`` says."""
    return "unreadable" if is_local(path) and not os.path.exists(_local(path)) else reason


def check_file_names(spark: Any) -> None:
    """Refuse to run where Java cannot spell file names outside ASCII: under a C/POSIX
    locale it lists such a file under a name that is not its own, or not at all, so its
    key would silently be wrong or missing. (Asked with SQL's ``reflect``: the JVM that
    runs a task, which in local mode is the driver's too.)"""
    query = "SELECT reflect('java.lang.System', 'getProperty', 'sun.jnu.encoding') AS e"
    encoding = str(spark.sql(query).first()["e"] or "")
    if encoding.upper().replace("-", "") != "UTF8":
        raise ConfigError(
            f"LANG: Spark's JVM spells file names in {encoding or 'an unknown encoding'}, "
            "so image files named outside ASCII would be lost; run the job with "
            "LANG=C.UTF-8 (or another UTF-8 locale)"
        )


def read_images(spark: Any, dataset: Dataset, partitions: int) -> Listing:
    """The listed files, and the rows a worker decodes, in few partitions: (path) of
    local files, which the worker opens, else (path, content) read by Spark."""
    pattern = extension_pattern(dataset)
    root = image_folder(dataset.images)
    check_file_names(spark)
    given = spark.sparkContext.getConf()
    for key, value in FILE_PACKING.items():
        if not given.contains(key):  # a --conf of spark-submit wins
            spark.conf.set(key, value)
    files = spark.read.format("binaryFile").option("pathGlobFilter", pattern).load(root)
    wanted = ("path",) if is_local(root) else ("path", "content")
    images = files.where(files.length <= dataset.max_image_bytes).select(*wanted)
    listed = files.inputFiles()
    _refuse_shared_keys(dataset.images, listed)
    count = len(listed)
    if partitions:
        return Listing(files, count, images.repartition(partitions))
    # Each Python task has a start-up cost comparable to scoring a few hundred images:
    # merge the file splits (no shuffle) into a few large tasks per core.
    parallelism = spark.sparkContext.defaultParallelism
    rounds = max(1, math.ceil(count / (IMAGES_PER_TASK * parallelism)))
    tasks = min(images.rdd.getNumPartitions(), rounds * parallelism)
    return Listing(files, count, images.coalesce(tasks))


def is_local(root: str) -> bool:
    """Whether ``root`` is a local (or mounted) folder a Python worker can open."""
    return urlparse(root).scheme in ("", "file")


def _refuse_shared_keys(images: str, listed: Sequence[str]) -> None:
    """ConfigError naming files whose names without their extensions are one key (a.jpg
    and a.png): both would be written under it and the count check fail after the run."""
    by_key: dict[str, list[str]] = {}
    for uri in listed:
        try:
            plain = _plain(uri)
            by_key.setdefault(image_key(plain), []).append(posixpath.basename(plain))
        except InvalidInput:  # listed as bad by the run
            continue
    shared = {k: sorted(v) for k, v in by_key.items() if len(v) > 1}
    if shared:
        named = "; ".join(f"{k!r}: {', '.join(v)}" for k, v in sorted(shared.items())[:3])
        raise ConfigError(
            f"{images}: {len(shared)} key(s) name more than one file ({named}); a file's "
            "name without its extension is its key: rename or remove all but one"
        )


def count_images(spark: Any, dataset: Dataset) -> int:
    """How many image files a run of ``dataset`` would read (its listing, not the files)."""
    return read_images(spark, dataset, 0).count


def runner(
    spark: Any,
    ref: ModelRef,
    body: Run,
    missed: Sequence[str] = (),
    subset: Subset = WHOLE,
) -> tuple[Any, Selection | None]:
    """Check the model against the run's dataset; ``run(where, token)``: the stats of one run,
    and the rows chosen (a rows dataset: its filter and the ``missed`` keys it holds, or
    the ``subset`` of an incremental run)."""
    dataset = body.dataset
    sigs = Signatures.from_json(ref.meta["signature"])
    if subset and dataset.images:
        raise ConfigError(
            f"dataset {dataset.name} scores image files: --keys, --where and --from-miss-log "
            "choose rows of an entity or rows table"
        )
    if not dataset.images:
        assert dataset.rows is not None
        frame = read(spark, dataset.rows)
        check_labels(dataset, sigs, ref.meta, columns(frame))
        require(frame, dataset.rows.key, f"dataset {dataset.name}: rows")
        chosen = rows_to_score(
            frame, dataset.rows, dataset.key_form, f"dataset {dataset.name}: rows", missed, subset
        )
        frame = chosen.frame.select(
            KEY_TEXT, *dataset.rows.key, *sorted(set(sigs.serving.inputs) - set(dataset.rows.key))
        )
        if body.partitions:
            frame = frame.repartition(body.partitions)

        def run_rows(where: Placed, token: str, share: float) -> Any:
            mine = body.writing(where, token, share)
            return frame.mapInPandas(lambda it: score_partition(it, mine), STATS_SCHEMA)

        return run_rows, chosen
    check_labels(dataset, sigs, ref.meta, None)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_FILES))
    listing = read_images(spark, dataset, body.partitions)

    def run(where: Placed, token: str, share: float) -> Any:
        mine = body.writing(where, token, share)
        batches = listing.images.mapInPandas(lambda it: score_partition(it, mine), STATS_SCHEMA)
        stats = batches.collect()
        # Every listed file the workers saw was scored or reported; only when some were
        # not (empty or oversized) is the listing searched for them, a costlier query.
        if sum(r["scored"] + r["bad"] for r in stats) < listing.count:
            stats += unread_stats(spark, listing.files, dataset.max_image_bytes).collect()
        return spark.createDataFrame(stats, STATS_SCHEMA)

    return run, None
