"""The bulk scoring job over a team's own declarations (the tests' shop domain: customers
x products, tests/domains.py), on a real local SparkSession, a real Redis and the team's
real model, registered as any team's would be."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from jobs.score import parse_args, run_job, score
from jobs.submit import local_args, spark_submit_bin
from prescore.errors import ConfigError
from prescore.settings import Settings, StoreSettings
from prescore.store.versions import Versions, read_current
from tests import domains
from tests.frames import read_frame, write_frame
from tests.helpers import job_env, registered, stored_payload, with_catalog


def _channels(folder: Path, score: list[str]) -> str:
    """The shop's contexts as a team declares them: a table of named contexts and their
    features (here the ``channel`` the model reads), ``score`` the ones a run scores."""
    contexts = pd.DataFrame({"context": ["on-web", "on-app"], "channel": ["web", "app"]})
    write_frame(contexts, folder / "contexts.parquet", index=False)
    return (
        f'[datasets.shop.contexts]\npath = "{folder}/contexts.parquet"\nkey = "context"\n'
        f"score = {json.dumps(score)}\n"
    )


@pytest.fixture()
def shop_settings(settings: Settings, shop: dict[str, Path], tmp_path: Path) -> Settings:
    """The shop's declarations over its tables, its model registered."""
    out = with_catalog(settings, domains.shop_config(shop["tables"], tmp_path / "prescore.toml"))
    registered(out, "shop-model", shop["plain"])
    return out


def _run(spark, s: Settings, *extra: str, keep: int | None = None):  # type: ignore[no-untyped-def]
    if keep is not None:
        s = dataclasses.replace(s, store=dataclasses.replace(s.store, keep_versions=keep))
    return run_job(spark, parse_args(["--dataset", "shop", *extra]), s)


def test_job_publishes_every_customer_and_each_context_scored(  # type: ignore[no-untyped-def]
    spark, shop, settings, rclient, tmp_path, capsys
):
    """The plain key and the ``on-app`` context (a row of the contexts table whose
    ``channel``, an input of the model, is ``app``) for every customer; in the app the
    model turns the customers' taste in price round. The factored signatures (the context
    encoded once by ``encode_context``) score what serving_default does on each pair."""
    config = domains.shop_config(
        shop["tables"], tmp_path / "prescore.toml", extra=_channels(tmp_path, ["on-app"])
    )
    s = with_catalog(settings, config)
    model = domains.train_shop(shop["tables"], tmp_path / "m", channel=True, factored=True)
    registered(s, "shop-model", model)
    summary = _run(spark, s)
    assert "(factored signatures), top 5, contexts ['(plain)', 'on-app']" in capsys.readouterr().out
    customers = read_frame(shop["tables"] / "customers.parquet").set_index("customer_id")
    assert summary.rows == 2 * len(customers)  # plain keys and one context
    v = Versions(rclient, "shop", StoreSettings())
    assert v.current() == summary.version
    assert v.get(summary.version).rows == 2 * len(customers)
    plain_raw, app_raw = (
        stored_payload(rclient, "shop", summary.version, k) for k in ("c7", "c7|on-app")
    )
    assert plain_raw is not None and app_raw is not None
    assert plain_raw.startswith(b'{"customer_id":"c7","items":[{"product_id":"p')  # its bytes
    plain, app = json.loads(plain_raw), json.loads(app_raw)
    assert plain["customer_id"] == "c7" and "context" not in plain
    assert app["context"] == "on-app" and app["items"] != plain["items"]
    assert plain["model_version"] == "1"
    scores = [i["score"] for i in plain["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    products = read_frame(shop["tables"] / "products.parquet").set_index("product_id")
    mine = set(customers.loc["c7", "categories"])
    assert all(products.loc[i["product_id"], "category"] in mine for i in plain["items"])
    # a dry run counts what that run did, puts its rate on it, and changes nothing
    planned = score(spark, "shop", settings=s, dry_run=True)
    assert planned.version == "" and planned.plan is not None
    assert (planned.plan["keys"], planned.plan["work"]) == (summary.rows, summary.scored)
    assert planned.plan["unit"] == "pairs" and planned.plan["contexts"] == 2
    assert planned.plan["rate"] > 0 and planned.plan["estimate_s"] > 0
    assert v.current() == summary.version and [i.version for i in v.all()] == [summary.version]
    # serving_default on each pair, the context's features fed raw: the same lists
    capsys.readouterr()
    per_pair = _run(spark, s, "--per-pair")
    assert "(serving_default on each pair)" in capsys.readouterr().out
    for key in [f"c{i}{ctx}" for i in range(0, 300, 11) for ctx in ("", "|on-app")]:
        a = json.loads(stored_payload(rclient, "shop", summary.version, key) or b"")["items"]
        b = json.loads(stored_payload(rclient, "shop", per_pair.version, key) or b"")["items"]
        assert [x["product_id"] for x in a] == [x["product_id"] for x in b], key
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=2e-4), key


def test_a_context_to_score_that_its_table_lacks_is_refused_before_anything_is_written(  # type: ignore[no-untyped-def]
    spark, shop, settings, rclient, tmp_path
):
    config = domains.shop_config(
        shop["tables"], tmp_path / "prescore.toml", extra=_channels(tmp_path, ["on-tv"])
    )
    s = with_catalog(settings, config)
    registered(s, "shop-model", domains.train_shop(shop["tables"], tmp_path / "m", channel=True))
    with pytest.raises(ConfigError, match=r"contexts not in the table: \['on-tv'\]"):
        _run(spark, s)
    assert Versions(rclient, "shop", StoreSettings()).all() == []


def test_a_ranking_run_in_litert_is_refused_in_one_line(spark, shop_settings, rclient):  # type: ignore[no-untyped-def]
    for runtime in ("float32", "int8"):
        with pytest.raises(ConfigError, match=rf"^--runtime {runtime}: a ranking dataset is"):
            _run(spark, shop_settings, "--runtime", runtime)
    assert Versions(rclient, "shop", StoreSettings()).all() == []


def test_second_run_switches_atomically_under_readers(spark, shop_settings, redis_url):  # type: ignore[no-untyped-def]
    first = _run(spark, shop_settings)
    sample = [f"c{i}" for i in range(0, 300, 29)]
    seen: set[str] = set()
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            version, values = read_current(client, "shop", sample)
            if any(v is None for v in values):
                problems.append(f"partial answer from {version}")
            stamps = {json.loads(v)["scored_at"] for v in values if v is not None}
            if len(stamps) != 1:
                problems.append(f"mixed answer from {version}: {stamps}")
            seen.add(version)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        second = _run(spark, shop_settings)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert first.version in seen and second.version != first.version
    client = redis.Redis.from_url(redis_url)
    assert Versions(client, "shop", StoreSettings()).current() == second.version


def test_versions_beyond_the_newest_n_are_retired_after_the_switch(  # type: ignore[no-untyped-def]
    spark, shop_settings, rclient, capsys
):
    first = _run(spark, shop_settings, keep=1)
    second = _run(spark, shop_settings, keep=1)
    assert (first.retired, second.retired) == ([], [first.version])
    v = Versions(rclient, "shop", StoreSettings())
    assert v.current() == second.version and v.get(first.version).status == "retired"
    assert v.count_keys(first.version) == 0 and second.retire_seconds > 0
    assert f"retired 1 old version(s) in {second.retire_seconds:.1f}s" in capsys.readouterr().out


def test_rows_without_a_valid_key_are_skipped_and_reported(  # type: ignore[no-untyped-def]
    spark, shop, shop_settings, rclient, tmp_path
):
    """A key the store cannot take (a control character, a null) is reported with the
    bad inputs and skipped; the rest of the run publishes (a run that fails part-way
    leaves nothing: tests/test_faults.py, tests/test_version_races.py)."""
    broken = tmp_path / "broken"
    shutil.copytree(shop["tables"], broken)
    customers = read_frame(shop["tables"] / "customers.parquet")
    customers.loc[len(customers) - 1, "customer_id"] = "bad\x00id"  # in the last partition
    customers.loc[len(customers) - 2, "customer_id"] = None
    write_frame(customers, broken / "customers.parquet", index=False)
    s = with_catalog(shop_settings, domains.shop_config(broken, tmp_path / "broken.toml"))
    summary = _run(spark, s, "--partitions", "4")
    assert summary.bad == 2
    assert sorted(summary.bad_sample) == [
        "row key 'None': invalid_id",
        "row key 'bad\\x00id': invalid_id",
    ]
    v = Versions(rclient, "shop", StoreSettings())
    assert v.current() == summary.version
    assert v.count_keys(summary.version) == summary.rows == len(customers) - 2
    assert read_current(rclient, "shop", ["c1"])[1][0] is not None


def test_tables_a_run_cannot_publish_are_refused_before_a_version_is_begun(  # type: ignore[no-untyped-def]
    spark, shop, shop_settings, rclient, tmp_path
):
    """A key that repeats (its item twice in a list; its entity counted twice), an empty
    table, and a match rule whose columns never hold equal values: one line each, before
    anything is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    customers = pq.read_table(shop["tables"] / "customers.parquet")
    products = pq.read_table(shop["tables"] / "products.parquet")
    tiered = products.append_column("tier", pa.array([1] * products.num_rows))
    cases = {
        "entities": (pa.concat_tables([customers, customers.slice(7, 1)]), products, "category"),
        "items": (customers, pa.concat_tables([products, *[products.slice(3, 1)] * 2]), "category"),
        "empty": (customers.slice(0, 0), products, "category"),  # its types kept
        "match": (customers, tiered, "tier"),
    }
    said = {
        "entities": "dataset shop: entities: 1 key(s) repeat ('c7', ...); each key is one row",
        "items": "dataset shop: items: 1 key(s) repeat ('p3', ...); each item is one row",
        "empty": "dataset shop: entities: no rows to score (the table is empty",
        "match": "dataset shop: candidates: match compares entities.categories (string) with "
        "items.tier (int): values of these never match",
    }
    for case, (entities, items, column) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        pq.write_table(entities, folder / "customers.parquet")
        pq.write_table(items, folder / "products.parquet")
        config = domains.shop_config(folder, folder / "prescore.toml")
        config.write_text(config.read_text().replace('"category"', f'"{column}"'))
        s = with_catalog(shop_settings, config)  # the model registered over the whole tables
        with pytest.raises(ConfigError) as refused:
            _run(spark, s)
        assert refused.value.message.startswith(said[case]), refused.value.message
    assert Versions(rclient, "shop", StoreSettings()).all() == []


def test_spark_submit_runs_the_job(shop, shop_settings, redis_url, rclient, tmp_path):  # type: ignore[no-untyped-def]
    env = job_env()
    scratch = tmp_path / "scratch"
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": shop_settings.models.root,
        "PRESCORE_CONFIG": str(domains.shop_config(shop["tables"], tmp_path / "submit.toml")),
        "PRESCORE_SPARK_SCRATCH": str(scratch),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = local_args("score", master="local[2]", driver_memory="1g", dataset="shop")
    ok = subprocess.run(
        [spark_submit_bin(), *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "shop: published version" in ok.stdout
    live = Versions(rclient, "shop", StoreSettings()).current()
    assert live is not None and live in ok.stdout

    bad = subprocess.run(
        [spark_submit_bin(), *argv, "--model-version", "99"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0
    assert Versions(rclient, "shop", StoreSettings()).current() == live

    # a table that is not there: one line naming it, exit 2; no run leaves its scratch
    moved = tmp_path / "moved.toml"
    moved.write_text(Path(env["PRESCORE_CONFIG"]).read_text().replace(str(shop["tables"]), "gone"))
    missing = subprocess.run(
        [spark_submit_bin(), *argv],
        env={**env, "PRESCORE_CONFIG": str(moved)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = [line for line in missing.stdout.splitlines() if line.startswith("score:")]
    assert missing.returncode == 2 and len(said) == 1, missing.stdout + missing.stderr[-3000:]
    assert f"the table file://{Path.cwd()}/gone/" in said[0], said  # as resolved on loading
    assert "cannot be read as parquet: [PATH_NOT_FOUND]" in said[0], said
    assert "Traceback" not in missing.stdout + missing.stderr
    assert "\tat org.apache." not in missing.stderr  # nor a Java trace before the line
    assert list(scratch.iterdir()) == []


def test_progress_says_the_keys_written_so_far_while_tasks_run(  # type: ignore[no-untyped-def]
    spark, capsys
):
    """With few tasks, all finish together at the end: the keys the tasks have reported
    to the version are what moves, of those expected when the job knows how many."""
    import time

    from jobs.bulk import Progress

    def slow(rows):  # type: ignore[no-untyped-def]
        time.sleep(1.5)
        yield from rows

    for expected in (0, 100_000):
        written = iter((n, 0) for n in range(1000, 100_000, 1000))
        with Progress(spark, lambda w=written: next(w), every_s=0.2, expected=expected):
            spark.sparkContext.parallelize(range(4), 2).mapPartitions(slow).count()
        out = capsys.readouterr().out.splitlines()
        lines = [line for line in out if "progress:" in line]
        assert lines and lines[0].endswith(", 0/2 tasks done"), lines
        if expected:  # a rate, and the time left at that rate
            assert lines[0].startswith("  progress: 1,000 of 100,000 keys (1%), "), lines
            assert " keys/s, about " in lines[0] and " left, " in lines[0], lines
        else:
            assert lines[0].startswith("  progress: 1,000 keys, "), lines
            assert lines[0].endswith(" keys/s, 0/2 tasks done"), lines
    # the units the model scored for those keys, where they are not the keys themselves
    scored = iter((n, 50 * n) for n in range(1000, 100_000, 1000))
    with Progress(spark, lambda w=scored: next(w), every_s=0.2, unit="pairs"):
        spark.sparkContext.parallelize(range(4), 2).mapPartitions(slow).count()
    lines = [line for line in capsys.readouterr().out.splitlines() if "progress:" in line]
    assert lines and lines[0].startswith("  progress: 1,000 keys, "), lines
    assert lines[0].endswith(" keys/s, 50,000 pairs scored, 0/2 tasks done"), lines


def test_write_rows_bounds_the_rows_a_task_holds_before_it_writes(  # type: ignore[no-untyped-def]
    spark, shop_settings, rclient
):
    """A task writes once --write-rows rows are scored (and at the end of each input
    batch): the smaller it is, the more fenced writes reach Redis, the same payloads."""

    def run(*flags: str):  # type: ignore[no-untyped-def]
        before = rclient.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)
        summary = _run(spark, shop_settings, "--partitions", "1", *flags)
        calls = rclient.info("commandstats")["cmdstat_eval"]["calls"] - before
        return summary, calls

    whole, whole_calls = run()
    small, small_calls = run("--entities-per-chunk", "4", "--write-rows", "4")
    assert whole.rows == small.rows > 40
    assert small_calls - whole_calls >= small.rows // 4 - 2  # a write every 4 rows
    for key in ("c1", "c7", "c42"):
        a = json.loads(stored_payload(rclient, "shop", whole.version, key) or b"")
        b = json.loads(stored_payload(rclient, "shop", small.version, key) or b"")
        assert a["items"] == b["items"]


def test_a_dry_run_counts_the_pairs_each_candidate_rule_makes(spark) -> None:  # type: ignore[no-untyped-def]
    """As a run scores them: a match rule's union of the entity's values' items, every
    item under all, a candidate table's listed items that exist, each once."""
    from types import SimpleNamespace as NS

    from jobs.candidates import CANDIDATES, ranking_pairs
    from jobs.spark_tables import KEY_TEXT

    items = {"item_id": ["a", "b", "c"], "kind": ["x", "y", "x"]}
    rows = [
        ("e1", ["x"], ["a", "b", "gone"]),
        ("e2", ["x", "y"], ["a", "a"]),
        ("e3", ["z"], None),
        ("e4", ["x"], []),
    ]
    frame = spark.createDataFrame(
        rows, f"{KEY_TEXT} string, kinds array<string>, {CANDIDATES} array<string>"
    )

    def counted(rule: str) -> tuple[int, int]:
        candidates = NS(rule=rule, entity_column="kinds", item_column="kind")
        dataset = NS(candidates=candidates, items=NS(key=("item_id",)))
        return ranking_pairs(frame, dataset, items)  # type: ignore[arg-type]

    assert counted("match") == (4, 2 + 3 + 0 + 2)
    assert counted("all") == (4, 12)
    assert counted("table") == (4, 2 + 1 + 0 + 0)
