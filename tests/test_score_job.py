"""The bulk scoring job on a real local SparkSession, a real Redis and a real model."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
import redis

from jobs.score_recommendations import parse_args, run_job, settings_for
from jobs.submit import local_args, spark_submit_bin
from prescore import keys
from prescore.errors import InvalidInput
from prescore.settings import StoreSettings
from prescore.versions import Versions, read_current

ENV_KEYS = ("PATH", "HOME", "JAVA_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


def _run(spark, data: Path, redis_url: str, store, *extra: str, env: dict | None = None):
    args = parse_args(
        [
            "--data",
            str(data),
            "--redis-url",
            redis_url,
            "--model-store",
            store.settings.root,
            *extra,
        ]
    )
    return run_job(spark, args, settings_for(args, env or {}))


def test_job_publishes_every_user(spark, reco_data, reco_store, redis_url, rclient):
    store, trained = reco_store
    summary = _run(spark, reco_data, redis_url, store, "--top-k", "5", "--contexts", "summer-sat")
    users = pd.read_parquet(reco_data / "users.parquet")
    assert summary.rows == 2 * len(users)  # plain keys and one context
    v = Versions(rclient, "reco", StoreSettings())
    assert v.current() == summary.version
    assert v.get(summary.version).rows == 2 * len(users)
    _, values = read_current(rclient, "reco", ["u7", keys.reco_key("u7", "summer-sat")])
    assert None not in values
    plain, summer = (json.loads(raw or b"") for raw in values)
    assert plain["user_id"] == "u7" and "context" not in plain
    assert summer["context"] == "summer-sat"
    assert plain["model_version"] == trained.version
    scores = [i["score"] for i in plain["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    hotels = pd.read_parquet(reco_data / "hotels.parquet").set_index("hotel_id")
    regions = set(users.set_index("user_id").loc["u7", "regions"])
    assert all(hotels.loc[i["hotel_id"], "region"] in regions for i in plain["items"])


def test_second_run_switches_atomically_under_readers(spark, reco_data, reco_store, redis_url):
    store, _ = reco_store
    first = _run(spark, reco_data, redis_url, store)
    sample = [f"u{i}" for i in range(0, 400, 37)]
    seen: set[str] = set()
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        client = redis.Redis.from_url(redis_url)
        while not stop.is_set():
            version, values = read_current(client, "reco", sample)
            if any(v is None for v in values):
                problems.append(f"partial answer from {version}")
            stamps = {json.loads(v)["scored_at"] for v in values if v is not None}
            if len(stamps) != 1:
                problems.append(f"mixed answer from {version}: {stamps}")
            seen.add(version)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        second = _run(spark, reco_data, redis_url, store)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert first.version in seen and second.version != first.version
    client = redis.Redis.from_url(redis_url)
    assert Versions(client, "reco", StoreSettings()).current() == second.version


def test_versions_beyond_the_newest_n_are_retired_after_the_switch(
    spark, reco_data, reco_store, redis_url, rclient, capsys
):
    store, _ = reco_store
    keep_one = {"PRESCORE_KEEP_VERSIONS": "1"}
    first = _run(spark, reco_data, redis_url, store, env=keep_one)
    second = _run(spark, reco_data, redis_url, store, env=keep_one)
    assert (first.retired, second.retired) == ([], [first.version])
    v = Versions(rclient, "reco", StoreSettings())
    assert v.current() == second.version and v.get(first.version).status == "retired"
    assert v.count_keys(first.version) == 0 and second.retire_seconds > 0
    assert f"retired 1 old version(s) in {second.retire_seconds:.1f}s" in capsys.readouterr().out


def test_bad_data_mid_write_leaves_the_old_version(
    spark,
    reco_data,
    reco_store,
    redis_url,
    rclient,
    tmp_path,
):
    store, _ = reco_store
    good = _run(spark, reco_data, redis_url, store)
    broken = tmp_path / "broken"
    shutil.copytree(reco_data, broken)
    users = pd.read_parquet(reco_data / "users.parquet")
    users.loc[len(users) - 1, "user_id"] = "not a valid id!"  # last partition fails
    users.to_parquet(broken / "users.parquet", index=False)
    with pytest.raises(Exception) as info:
        _run(spark, broken, redis_url, store, "--partitions", "4")
    assert "user_id may hold only" in str(info.value) or isinstance(info.value, InvalidInput)
    v = Versions(rclient, "reco", StoreSettings())
    assert v.current() == good.version
    failed = [i for i in v.all() if i.status == "failed"]
    assert len(failed) == 1 and v.count_keys(failed[0].version) == 0
    assert read_current(rclient, "reco", ["u1"])[1][0] is not None


def test_spark_submit_runs_the_job(reco_data, reco_store, redis_url, rclient):
    import os

    store, _ = reco_store
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": store.settings.root,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = local_args(
        "score_recommendations", master="local[2]", driver_memory="1g", data=str(reco_data)
    )
    ok = subprocess.run(
        [spark_submit_bin(), *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "reco: published version" in ok.stdout
    live = Versions(rclient, "reco", StoreSettings()).current()
    assert live is not None and live in ok.stdout

    bad = subprocess.run(
        [spark_submit_bin(), *argv, "--model-version", "99"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0
    assert Versions(rclient, "reco", StoreSettings()).current() == live
