"""What every bulk Spark job shares: session, progress, per-worker caches, publish.

A job builds a DataFrame of per-partition stats (each partition scores its rows, writes
their payloads to Redis pipelined and yields one stats row); :func:`publish_version`
registers the version, runs that DataFrame, verifies the key count and switches the
pointer, or marks the version failed and re-raises so spark-submit exits non-zero. Once
the new version serves, versions beyond the newest N are retired; the summary times that
apart, so a run's rate is that of scoring up to the switch.

Executors receive one frozen, typed :class:`Run` (the dataset's declaration, the model
version, the worker's settings, the version and lease it writes): :func:`worker_model` and
:func:`worker_redis` build what a Python worker needs from it once and keep it in the
worker's one cache (jobs.worker_cache), as ``pyspark.ml.functions.predict_batch_udf`` does.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Self

import pandas as pd

from jobs.spark_tables import KEY_TEXT
from jobs.worker_cache import CACHE
from prescore import progress
from prescore.data.datasets import Dataset
from prescore.encoding.keys import KeyForm
from prescore.encoding.registry_entry import VersionInfo
from prescore.errors import InvalidInput
from prescore.models.inference import load_runner
from prescore.models.store import ModelStore
from prescore.publishing import gates
from prescore.publishing.lifecycle import Written, publish_new
from prescore.settings import ModelStoreSettings, RedisSettings, Settings, StoreSettings
from prescore.store import values
from prescore.store.redis_client import OUTAGES, Client, connect
from prescore.store.values import Placed
from prescore.store.versions import Versions

STATS_SCHEMA = (
    "rows long, scored long, bad long, bad_sample array<string>, keys array<string>, unmatched long"
)
# Keys a task reports per batch for the version's sample (prescore.publishing.gates)
# at least, besides its Run.sample_share of them: all there is when the run's size is not
# known (a run over image files), and a floor when it writes fewer keys than planned.
KEYS_PER_BATCH = 64


# What every job's SparkSession sets (spark-submit's --conf flags come on top). The
# benchmarks and tests build their local sessions with it too.
SESSION_CONF: dict[str, bool | float | int | str | None] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
    # A job repartitions only what it has just read from files, whose row order is the
    # same on every read, so the sort Spark does before a round-robin repartition (to keep
    # a retried task's rows in the same partitions) buys nothing: 3% of a scoring run
    # (interleaved runs). Without it Spark treats the round robin as order sensitive and
    # reruns the whole next stage if a retry could reorder the input.
    "spark.sql.execution.sortBeforeRepartition": "false",
}


def spark_session(app_name: str, scratch: str) -> Any:
    """The job's SparkSession (master and resources come from spark-submit).

    In local mode the scratch space (shuffle files, broadcasts) goes to a folder of this
    process under ``scratch``, and the folders of earlier jobs whose process is gone
    (killed: Spark removes its own only on a clean exit) are deleted first."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name).config(map=SESSION_CONF)
    if SparkConf().get("spark.master", "local").startswith("local"):
        builder = builder.config("spark.local.dir", str(local_dir(Path(scratch))))
    return builder.getOrCreate()


def stop_session(spark: Any, scratch: str) -> None:
    """Stop the job's SparkSession and remove this process's scratch folder (Spark removes
    what it put there, not the folder; a failed run left it behind)."""
    spark.stop()
    shutil.rmtree(Path(scratch) / str(os.getpid()), ignore_errors=True)


def local_dir(root: Path) -> Path:
    """This process's Spark scratch folder, under ``root``; folders of processes that no
    longer run are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass(frozen=True)
class WorkerSettings:
    """What an executor needs to reach Redis and the model store. Its Redis timeouts are
    longer than a service's: a task's pipelined write is worth waiting for."""

    redis: RedisSettings
    models: ModelStoreSettings

    @classmethod
    def of(cls, settings: Settings) -> WorkerSettings:
        r = settings.redis
        redis = replace(
            r,
            socket_timeout_s=max(r.socket_timeout_s, 5.0),
            connect_timeout_s=max(r.connect_timeout_s, 2.0),
            retries=3,
        )
        return cls(redis, settings.models)


@dataclass(frozen=True, kw_only=True)
class Run:
    """What every task of one run is sent: the dataset and model version it scores, with
    what, and (once registered) the version it writes and the driver's lease token."""

    dataset: Dataset
    model_version: str
    scored_at: str
    worker: WorkerSettings
    batch_rows: int
    partitions: int = 0  # 0: as read, or Spark's parallelism
    version: str = ""
    token: str = ""
    buckets: int = 0  # the version's (its tasks need not read its registry entry)
    runtime: str = "tf"  # the SavedModel in TensorFlow, or a LiteRT variant (labels)
    sample_share: float = 0.0  # of its keys, a task reports these (gates.sample_share)

    def writing(self, where: Placed, token: str, share: float) -> Self:
        """This run as it writes the version ``where`` under the lease ``token``, its
        tasks reporting the ``share`` of their keys that the gates' sample is drawn from."""
        return replace(
            self, version=where.version, buckets=where.buckets, token=token, sample_share=share
        )

    def placed(self) -> Placed:
        """Where the keys of the version it writes live."""
        return Placed(self.dataset.name, self.version, self.buckets)

    def base(self) -> dict[str, Any]:
        """This run's own fields, for a kind's run built on it (``RankingRun(**run.base(),
        ...)``)."""
        return {f.name: getattr(self, f.name) for f in fields(Run)}


def settings_for(args: Any, env: Mapping[str, str]) -> Settings:
    """Settings from the environment, with a job's ``--redis-url`` / ``--model-store`` /
    ``--config`` on top."""
    return Settings.from_env(env).with_overrides(
        getattr(args, "redis_url", None),
        getattr(args, "model_store", None),
        getattr(args, "config", None),
        env,
    )


def worker_redis(run: Run) -> Client:
    """One Redis client per Python worker and Redis."""
    redis = run.worker.redis
    return CACHE.get(("redis", redis), lambda: connect(redis))


def keyed(
    frame: pd.DataFrame, form: KeyForm, what: str = "key"
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows of ``frame`` whose key text (jobs.spark_tables.KEY_TEXT, made by Spark)
    is a key of ``form``, their keys, and ``row key: reason`` of the others (a null part,
    a control character, too long): those are skipped and reported, as bad inputs are."""
    texts = frame[KEY_TEXT].tolist()
    if form.all_valid(texts):  # the usual batch: one check of them all
        return frame, texts, []
    ids: list[str] = []
    good: list[int] = []
    bad: list[str] = []
    for i, text in enumerate(texts):
        try:
            if not isinstance(text, str):
                raise InvalidInput(f"{what} has a null part", code="invalid_id")
            ids.append(form.check(text, what=what))
            good.append(i)
        except InvalidInput as exc:
            bad.append(f"row key {str(text)[:80]!r}: {exc.code}")
    return (frame if len(good) == len(frame) else frame.iloc[good]), ids, bad


def stats_row(
    run: Run,
    rows: int,
    scored: int,
    bad: list[str] | None = None,
    written: Sequence[str] = (),
    unmatched: int = 0,
) -> pd.DataFrame:
    """The one stats row a task yields per batch (STATS_SCHEMA): counts, the first bad
    inputs, its part of the version's sample of the keys written (``run``'s share), and
    the entities a ranking found no candidate items for (no key written)."""
    bad = bad or []
    keys_ = gates.sampled(written, run.sample_share, KEYS_PER_BATCH)
    return pd.DataFrame(
        {
            "rows": [rows],
            "scored": [scored],
            "bad": [len(bad)],
            "bad_sample": [bad[:20]],
            "keys": [keys_],
            "unmatched": [unmatched],
        }
    )


def write_rows(
    client: Client,
    run: Run,
    rows: list[tuple[str, bytes]],
    tally: values.Tally | None = None,
) -> int:
    """Write a batch of payloads into the run's version, each round trip only while the
    version is 'writing' under the run's lease (a failed job's, or a writer's whose lease
    lapsed, stop with PublishError ``lease_lost``); ``tally``: the task's
    (:func:`task_tally`)."""
    versions = Versions(client, run.dataset.name, StoreSettings())
    fence = versions.fence(run.version, run.token)
    return values.write(client, run.placed(), rows, tally=tally, fence=fence)


def task_tally() -> values.Tally:
    """The progress count of the Spark task running this (its partition's field)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return values.Tally(f"p{ctx.partitionId()}" if ctx is not None else "-")


def worker_model(run: Run) -> Any:
    """The run's model version (a prescore.models.inference.Runner: the SavedModel in
    TensorFlow, or the LiteRT variant ``run.runtime`` names), loaded once per Python
    worker (downloaded first from an hdfs://, s3:// or gs:// store)."""
    key = ("model", run.worker.models.root, run.dataset.model, run.model_version, run.runtime)
    return CACHE.get(key, lambda: _load(run))


def _load(run: Run) -> Any:
    store = ModelStore(run.worker.models)
    ref = store.resolve(run.dataset.model, run.model_version)
    if run.runtime == "tf":
        from prescore.models.tf_model import TFModel

        _one_thread_per_task()
        model: Any = TFModel(ref.saved_model, ref.meta)
        where = _device()
    else:  # one interpreter thread: Spark already runs one task per core
        model = load_runner(ref.path, ref.meta, run.runtime, threads=1, min_rows=run.batch_rows)
        where = f"the CPU in LiteRT ({run.runtime})"
    print(
        f"prescore worker {os.getpid()} (Python environment {sys.prefix}): "
        f"{ref.name}/{ref.version} runs on {where}",
        file=sys.stderr,
        flush=True,
    )
    # TensorFlow and a loaded model are ~300k tracked objects that live as long as the
    # worker (fewer in LiteRT, frozen alike): frozen, the collector stops walking them on
    # every full collection (a sixth of a scoring task's time otherwise).
    gc.collect()
    gc.freeze()
    return model


def _device() -> str:
    """Where TensorFlow places the model's ops: its first GPU when one is visible (a GPU
    build places them there by itself; nothing here pins the CPU), else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "the CPU (no GPU visible)"


def _one_thread_per_task() -> None:
    """Spark already runs one task per core; TF's own thread pools would oversubscribe."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process (e.g. a local driver)
        pass


class Progress:
    """Prints the job's progress every few seconds while Spark works: the keys its tasks
    have written so far (``written()``: what they report to the version as they go, with
    the ``unit``s their model scored for them; a job's tasks finish together at the end
    when there are few) of the ``expected`` ones (0: not known), their rate and the time
    left at that rate, the units scored where they are not the keys, and its tasks done."""

    def __init__(
        self,
        spark: Any,
        written: Callable[[], tuple[int, int]] | None = None,
        every_s: float = 5.0,
        expected: int = 0,
        unit: str = "rows",
    ) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.written = written
        self.unit = unit
        self.every_s = every_s
        self.keys = progress.Progress("progress", expected, print, unit="keys")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            done = total = 0
            for stage_id in self.tracker.getActiveStageIds():
                info = self.tracker.getStageInfo(stage_id)
                if info is not None:
                    done += info.numCompletedTasks
                    total += info.numTasks
            if not total:
                continue
            line = "  progress:"
            if self.written is not None:
                with suppress(*OUTAGES):  # an outage is said by the writes themselves
                    self.keys.done, units = self.written()
                    line = self.keys.line() + ","
                    if units:
                        line += f" {units:,} {self.unit} scored,"
            print(f"{line} {done}/{total} tasks done", flush=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def _drain(spark: Any, timeout_s: float = 60.0) -> None:
    """Cancel the job's remaining tasks and wait until none runs."""
    spark.sparkContext.cancelAllJobs()
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + timeout_s
    while tracker.getActiveStageIds() and time.monotonic() < deadline:
        time.sleep(0.2)


@dataclass
class Summary:
    dataset: str
    version: str = ""
    rows: int = 0
    scored: int = 0
    bad: int = 0
    bad_sample: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from registering the version to the pointer switch
    retired: list[str] = field(default_factory=list)
    retire_seconds: float = 0.0
    plan: dict[str, Any] | None = None  # a dry run's (jobs.score_plan), which wrote nothing
    delta_of: str = ""  # an incremental run's: the live version its delta was added to
    staged: bool = False  # kept beside the live version for a canary, not switched to
    unmatched: int = 0  # entities with no candidate items: no key written for them

    def lines(self, unit: str) -> list[str]:
        rate = self.scored / self.seconds if self.seconds else 0.0
        what = f"published version {self.version}"
        if self.delta_of:
            what = f"published delta {self.version} of {self.delta_of}"
        elif self.staged:
            what = f"staged version {self.version} (prescore canary {self.dataset} serves it)"
        out = [
            f"{self.dataset}: {what}",
            f"  keys written {self.rows}, {unit} scored {self.scored} "
            f"({rate:,.0f} {unit}/s), {self.seconds:.1f}s",
        ]
        if self.unmatched:
            out.append(
                f"  {self.unmatched} entities had no candidate items: no key written for them "
                "(their lookups miss)"
            )
        if self.bad:
            out.append(f"  skipped {self.bad} bad input(s):")
            out += [f"    {line}" for line in self.bad_sample]
        if self.retired:
            out.append(
                f"  retired {len(self.retired)} old version(s) in {self.retire_seconds:.1f}s: "
                + ", ".join(self.retired)
            )
        return out


def publish_version(
    spark: Any,
    versions: Versions,
    dataset: Dataset,
    model: tuple[str, str],
    run: Callable[[Placed, str, float], Any],
    unit: str = "rows",
    force: bool = False,
    figures: Mapping[str, Any] | None = None,
    expected_keys: int = 0,
    incremental: bool = False,
    stage: bool = False,
) -> Summary:
    """Publish a new version (prescore.publishing.lifecycle) written by the stats DataFrame
    ``run(where, token, share)`` (where: the version's Placed; share: of their keys, what
    tasks report for the gates' sample), its tasks' writes fenced by the driver's lease;
    ``force``: even over a newer live version; ``figures`` are recorded with it. A
    version that fails its gates is kept ``gated``. ``expected_keys`` sizes the version's
    buckets and its sample's share.
    ``incremental``: a delta of the live version instead (prescore.store.deltas);
    ``stage``: kept ``staged`` beside the live one (prescore.store.canaries)."""
    summary = Summary(dataset.name)

    def write(versions: Versions, info: VersionInfo) -> Written:
        summary.version = info.version
        where = Placed.of(dataset.name, info)
        counted = partial(values.progress, versions.client, where)
        with Progress(spark, counted, expected=expected_keys, unit=unit):
            share = gates.sample_share(dataset.gates.sample, expected_keys)
            stats = run(where, versions.token(info.version), share).collect()
        written: list[str] = []
        for row in stats:
            summary.rows += row["rows"]
            summary.scored += row["scored"]
            summary.bad += row["bad"]
            summary.unmatched += row["unmatched"]
            summary.bad_sample += list(row["bad_sample"] or [])[: 20 - len(summary.bad_sample)]
            written += list(row["keys"] or [])
        sample = gates.sample_keys(written, dataset.gates.sample)
        recorded = {**(figures or {}), "scored": summary.scored, "unit": unit, "bad": summary.bad}
        if summary.unmatched:
            recorded["unmatched"] = summary.unmatched
        return Written(summary.rows, sample, recorded)

    done = publish_new(
        versions,
        dataset,
        model,
        write,
        expected_keys=expected_keys,
        force=force,
        incremental=incremental,
        stage=stage,
        # tasks of a failed job may still be writing: let them stop first
        on_failure=lambda: _drain(spark),
        say=lambda line: print(line, flush=True),
    )
    summary.seconds, summary.retired = done.seconds, done.retired
    summary.delta_of = str(done.info.extra.get("delta_of", ""))
    summary.staged = stage
    summary.retire_seconds = done.retire_seconds
    for line in summary.lines(unit):
        print(line, flush=True)
    return summary
