"""Bulk scoring of any declared dataset, published to Redis as a new version.

    spark-submit jobs/score.py --dataset NAME [--config prescore.toml] [--model-version V]

One entry point for every kind: a ``ranking`` dataset scores each entity against its
candidates and keeps the top k (jobs.ranking); a ``labels`` dataset scores each image or
row (jobs.labels). The model is the dataset's, at its promoted version unless
``--model-version`` names one; its signature is checked against the dataset's columns
before anything is written. Payloads are written beside the live version; the driver
verifies the count and switches the pointer atomically, or marks the version failed and
exits non-zero (jobs.bulk). Progress and a summary are printed.

Besides the rows its table's ``filter`` selects, a run scores the keys of the dataset's
miss log (prescore.store.misslog) that its table holds, reports how many, and once published
removes them from the log (``--no-miss-log`` or the dataset's ``miss_log = false``: not).

An incremental run scores only some rows and publishes them as a delta of the live
version (prescore.store.deltas): ``--keys TABLE`` (a parquet holding the table's key
columns), ``--where CONDITION`` (Spark SQL over the table) or ``--from-miss-log`` (the
keys lookups missed: run hourly, yesterday's misses are today's hits), any of them
together.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from datetime import datetime, timezone
from typing import Any

from jobs import candidates, labels, ranking, score_plan
from jobs.bulk import (
    Run,
    Summary,
    WorkerSettings,
    publish_version,
    settings_for,
    spark_session,
    stop_session,
)
from jobs.flags import add_store_flags
from jobs.runtimes import CHOICES, chosen_runtime
from jobs.score_plan import Plan
from jobs.spark_tables import Selection, Subset, counted_keys
from prescore.env import at_least_one
from prescore.errors import ConfigError, PrescoreError, PublishError
from prescore.models.store import ModelStore
from prescore.settings import Settings
from prescore.store.misslog import MissLog
from prescore.store.redis_client import connect
from prescore.store.versions import Versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a dataset declared in the config")
    parser.add_argument("--model-version", help="default: the promoted version")
    parser.add_argument("--partitions", type=int, default=0, help="default: Spark's parallelism")
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=0,
        help="rows per model call (ranking: pairs, default 32768; labels: 128)",
    )
    parser.add_argument(
        "--entities-per-chunk",
        type=at_least_one,
        default=1024,
        help="ranking: entities encoded and scored together",
    )
    parser.add_argument(
        "--write-rows",
        type=at_least_one,
        default=10_000,
        help="ranking: rows a task holds, scored, before it writes them in one go (and at "
        "the end of each input batch); more share each bucket's write, and take memory",
    )
    parser.add_argument(
        "--per-pair",
        action="store_true",
        help="ranking: score every pair's raw features with serving_default, even when the "
        "model has the factored signatures (to compare the two)",
    )
    parser.add_argument(
        "--runtime",
        choices=CHOICES,
        default="tf",
        help="labels: the SavedModel in TensorFlow (tf, the default), its LiteRT float32 or "
        "int8 variant (one interpreter thread a task), or auto: the faster of tf and "
        "float32 as registration measured them (jobs/runtimes.py)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="publish even if a newer version went live meanwhile (recorded in the registry)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read and check everything, count the keys and pairs (or rows) and estimate "
        "the time from the last run's rate; score and write nothing",
    )
    parser.add_argument(
        "--no-miss-log",
        dest="miss_log",
        action="store_false",
        help="score the table's filter only, not the keys lookups missed",
    )
    parser.add_argument(
        "--keys", default="", metavar="TABLE", help="incremental: score the rows of these keys"
    )
    parser.add_argument(
        "--where", default="", metavar="CONDITION", help="incremental: score the rows it selects"
    )
    parser.add_argument(
        "--from-miss-log", action="store_true", help="incremental: score the keys lookups missed"
    )
    parser.add_argument(
        "--stage",
        action="store_true",
        help="gate the new version, then keep it beside the live one for a canary "
        "(prescore canary), instead of switching to it",
    )
    add_store_flags(parser)
    return parser.parse_args(argv)


def run_job(spark: Any, args: argparse.Namespace, settings: Settings) -> Summary:
    """Score every key of ``args.dataset`` and publish a new version; raises on failure."""
    dataset = settings.catalog.get(args.dataset)
    if dataset.kind == "external":
        raise ConfigError(
            f"dataset {dataset.name} is external: its scores are published with "
            "`prescore publish`, not scored here"
        )
    subset = Subset(args.keys, args.where, args.from_miss_log)
    if subset and args.stage:
        raise ConfigError(
            "--stage: an incremental run adds a delta to the live version; only a full "
            "version is staged for a canary"
        )
    # one client for the run's own reads and writes (its tasks have theirs: jobs.bulk)
    versions = Versions(connect(settings.redis), dataset.name, settings.store)
    live_model = _live_model(versions, dataset.model) if subset else None  # none: refused
    ref = ModelStore(settings.models).resolve(dataset.model, args.model_version or live_model)
    named = f"{dataset.model}/{ref.version}"
    runtime = chosen_runtime(dataset.kind, ref, args.runtime)
    base = Run(
        dataset=dataset,
        model_version=ref.version,
        scored_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        worker=WorkerSettings.of(settings),
        batch_rows=args.batch_rows or (32768 if dataset.kind == "ranking" else 128),
        partitions=args.partitions,
        runtime=runtime,
    )
    log = MissLog(versions.client)
    log_on = (args.miss_log and dataset.miss_log) or args.from_miss_log
    uses_log = log_on and not dataset.images  # a run over image files scores every file
    missed = log.all_keys(dataset.name) if uses_log else []
    if dataset.kind == "ranking":
        planned = ranking.plan(spark, dataset, ref, args.per_pair, missed, subset)
        chosen: Selection | None = planned.selection
        n_items = planned.n_items
        how = "factored signatures" if planned.factored else "serving_default on each pair"
        contexts = [c or "(plain)" for c in planned.scored]
        print(
            f"{dataset.name}: scoring entities against {n_items} items with "
            f"{named} ({how}), top {dataset.k}, contexts {contexts}",
            flush=True,
        )
        entities = _chosen_rows(planned.entities, f"dataset {dataset.name}: entities", subset)
        if args.dry_run:
            n, pairs = candidates.ranking_pairs(planned.entities, dataset, planned.items)
            c = len(contexts)
            plan = Plan(dataset.name, named, n * c, pairs * c, "pairs", n_items, c)
            return _dry_run(versions, plan)
        expected = entities * len(contexts)  # sizes the version's buckets
        run = ranking.runner(spark, planned, base, args.entities_per_chunk, args.write_rows)
        unit = "pairs"
    else:
        run, chosen = labels.runner(spark, ref, base, missed, subset)
        where = f"dataset {dataset.name}: rows"  # images: 0, sized as the live version
        expected = _chosen_rows(chosen.frame, where, subset) if chosen is not None else 0
        unit = "images" if dataset.images else "rows"
        if args.dry_run:
            n = expected if chosen is not None else labels.count_images(spark, dataset)
            return _dry_run(versions, Plan(dataset.name, named, n, n, unit))
        source = dataset.images or (dataset.rows.path if dataset.rows else "")
        litert = f" in LiteRT ({runtime})" if runtime != "tf" else ""
        print(f"{dataset.name}: scoring {source} with {named}{litert}", flush=True)
    figures: dict[str, Any] = {"runtime": runtime} if runtime != "tf" else {}  # in the registry
    if chosen is not None and uses_log:
        figures |= {
            "miss_log_keys": len(missed),
            "from_miss_log": len(chosen.logged),
            "miss_log_added": chosen.added,
        }
        beyond = "" if subset else f" ({chosen.added} beyond its filter)"
        print(
            f"{dataset.name}: the miss log holds {len(missed)} key(s); {len(chosen.logged)} "
            f"of them are among the rows this run scores{beyond}",
            flush=True,
        )
    if subset and not expected:
        print(f"{dataset.name}: no rows chosen ({_chosen(subset)}); nothing to publish", flush=True)
        return Summary(dataset.name)
    model = (dataset.model, ref.version)
    summary = publish_version(
        spark,
        versions,
        dataset,
        model,
        run,
        unit,
        force=args.force,
        figures={**figures, **({"chosen": _chosen(subset)} if subset else {})},
        expected_keys=expected,
        incremental=bool(subset),
        stage=args.stage,
    )
    if chosen is not None and chosen.logged:
        log.forget(dataset.name, chosen.logged)  # now precomputed
    elif log_on and dataset.images:
        _forget_scored_files(log, versions, summary.version)
    return summary


def score(
    spark: Any,
    dataset: str,
    *,
    settings: Settings | None = None,
    model_version: str | None = None,
    partitions: int = 0,
    force: bool = False,
    miss_log: bool = True,
    dry_run: bool = False,
    keys: str = "",
    where: str = "",
    from_miss_log: bool = False,
    stage: bool = False,
    runtime: str = "tf",
) -> Summary:
    """This job on a SparkSession the caller has (a notebook's): score ``dataset`` with
    its model (the promoted version unless ``model_version``) and publish a new version
    (with ``keys``, ``where`` or ``from_miss_log``: only those rows, as a delta of the
    live version; ``stage``: kept beside the live one for a canary; ``runtime``: as
    ``--runtime``, jobs.runtimes). The summary names
    the version and its figures; on failure a prescore error is raised and nothing is
    published. ``settings``: default, from the environment."""
    argv = ["--dataset", dataset, "--partitions", str(partitions)]
    argv += ["--keys", keys] if keys else []
    argv += ["--where", where] if where else []
    argv += ["--from-miss-log"] if from_miss_log else []
    argv += ["--model-version", model_version] if model_version else []
    argv += ["--force"] if force else []
    argv += [] if miss_log else ["--no-miss-log"]
    argv += ["--dry-run"] if dry_run else []
    argv += ["--stage"] if stage else []
    argv += ["--runtime", runtime]
    args = parse_args(argv)
    return run_job(spark, args, settings or settings_for(args, os.environ))


def _dry_run(versions: Versions, plan: Plan) -> Summary:
    """Say what a run would do (jobs.score_plan), with the last run's rate; the summary
    carries the plan and names no version."""
    past = versions.entries()  # the published ones' rates
    plan = dataclasses.replace(plan, rate=score_plan.last_rate(past, plan.unit))
    for line in plan.lines():
        print(line, flush=True)
    return Summary(plan.dataset, plan=plan.as_dict())


def _forget_scored_files(log: MissLog, versions: Versions, version: str) -> None:
    """Forget the logged misses that a run over every image file turned into hits."""
    dataset = versions.dataset
    logged = log.all_keys(dataset)
    if not logged:
        return
    where = versions.placed(version)
    held = log.held_by(where, logged)
    log.forget(dataset, held)
    print(f"{dataset}: {len(held)} of the {len(logged)} missed key(s) logged are now precomputed")


def _live_model(versions: Versions, model: str) -> str | None:
    """The model version of the live version, which an incremental run scores with (a
    delta holds its version's model's answers); PublishError when none is live."""
    live = versions.current()
    if live is None:
        raise PublishError(
            f"{versions.dataset} has no live version to add a delta to: run a full score first",
            code="no_version",
        )
    info = versions.get(live)
    return info.model_version if info.model == model else None


def _chosen_rows(frame: Any, where: str, subset: Subset) -> int:
    """The rows a run scores, each key once (jobs.spark_tables.counted_keys); a full run
    of none is refused before a version is begun (an incremental one publishes nothing)."""
    n = counted_keys(frame, where)
    if not n and not subset:
        raise ConfigError(
            f"{where}: no rows to score (the table is empty, or its filter and the miss "
            "log choose none)"
        )
    return n


def _chosen(subset: Subset) -> str:
    """What an incremental run chose its rows by, in one line."""
    parts = [f"--keys {subset.keys}"] if subset.keys else []
    parts += [f"--where {subset.where!r}"] if subset.where else []
    return ", ".join(parts + (["--from-miss-log"] if subset.missed else []))


def main(argv: list[str] | None = None) -> int:
    """Exit 0 published; 2 bad configuration; 1 the run failed (told in one line when
    prescore knows why, with the traceback otherwise); nothing is published unless 0."""
    args = parse_args(argv)
    try:
        settings = settings_for(args, os.environ)
        spark = spark_session(f"prescore-score-{args.dataset}", settings.spark_scratch)
        try:
            run_job(spark, args, settings)
        finally:
            stop_session(spark, settings.spark_scratch)
    except ConfigError as exc:
        print(f"score: {exc.message}", file=sys.stderr)
        return 2
    except PrescoreError as exc:
        print(f"score: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
