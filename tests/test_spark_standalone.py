"""The scoring job's own file on a Spark standalone cluster (jobs.standalone: a master and
two one-core workers, separate executor JVMs): it publishes what local mode publishes,
and one executor SIGKILLed mid-write leaves every key written once or nothing published.
Real Spark processes, real Redis, the tests' own shop domain (tests.domains) and its real
model."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from jobs.bulk import Run, WorkerSettings, write_rows
from jobs.score import parse_args, run_job
from jobs.standalone import StandaloneCluster
from jobs.submit import local_args, spark_submit_bin
from prescore.data.datasets import Dataset
from prescore.errors import NotFound
from prescore.settings import ModelStoreSettings, RedisSettings, Settings, StoreSettings
from prescore.store import values
from prescore.store.embedded_redis import RedisProcess
from prescore.store.values import Placed
from prescore.store.versions import Versions, read_current
from tests import domains, python_env
from tests.frames import read_frame, write_frame
from tests.helpers import job_env, registered, with_catalog

COPIES = 5  # the shop's customers five times over: enough tasks that a kill lands mid-job
Answers = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A master and two one-core workers on loopback, stopped after the module."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, cores=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def many_customers(shop: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shop's tables whose customers are the shop's, COPIES times under new
    ids, declared in its prescore.toml."""
    tables = tmp_path_factory.mktemp("many-customers") / "tables"
    shutil.copytree(shop["tables"], tables)
    customers = read_frame(tables / "customers.parquet")
    ids = customers["customer_id"]
    copies = [customers.assign(customer_id=ids + f"-{i}") for i in range(COPIES)]
    write_frame(pd.concat(copies, ignore_index=True), tables / "customers.parquet", index=False)
    domains.shop_config(tables, tables / "prescore.toml")
    return tables


@pytest.fixture(scope="module")
def reference(
    spark: Any,
    shop: dict[str, Path],
    many_customers: Path,
    redis_proc: RedisProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Answers]:
    """The model store the cluster runs read, and every customer's answer from a local[2] run."""
    root = tmp_path_factory.mktemp("reference")
    settings = Settings(
        redis=RedisSettings(url=redis_proc.url),
        models=ModelStoreSettings(root=(root / "models").as_uri(), cache_dir=str(root / "cache")),
    )
    settings = with_catalog(settings, many_customers / "prescore.toml")
    registered(settings, "shop-model", shop["factored"])
    client = redis.Redis.from_url(redis_proc.url)
    client.flushall()
    try:
        summary = run_job(spark, parse_args(["--dataset", "shop"]), settings)
        answers = _answers(client, _customer_ids(many_customers))
        assert summary.rows == len(answers)
    finally:
        client.flushall()
        client.close()
    return settings.models.root, answers


def _customer_ids(tables: Path) -> list[str]:
    return read_frame(tables / "customers.parquet")["customer_id"].tolist()


def _answers(client: redis.Redis, ids: list[str]) -> Answers:
    """Every id's published payload, as JSON without its scoring time; all must be there."""
    _, values = read_current(client, "shop", ids)
    missing = [i for i, v in zip(ids, values, strict=True) if v is None]
    assert missing == [], f"{len(missing)} keys unpublished, e.g. {missing[:5]}"
    out = {}
    for key, raw in zip(ids, values, strict=True):
        doc = json.loads(raw)  # type: ignore[arg-type]
        doc.pop("scored_at")
        out[key] = doc
    return out


def _assert_as_local(client: redis.Redis, expected: Answers) -> None:
    """Every expected key is published with local mode's answer (scoring time aside)."""
    got = _answers(client, list(expected))
    differ = [k for k in expected if got[k] != expected[k]]
    assert differ == [], f"{len(differ)} answers differ from local mode's, e.g. {differ[:3]}"


def _submit(
    cluster: StandaloneCluster,
    redis_url: str,
    store: str,
    tables: Path,
    *flags: str,
    python_env: str = "",
) -> tuple[list[str], dict[str, str]]:
    """The spark-submit line (jobs.submit's) of a shop run on ``cluster``, and its env;
    ``python_env``: the packed virtualenv the executors' Python is shipped in."""
    argv = local_args(
        "score",
        master=cluster.master_url,
        driver_memory="1g",
        executor_memory="512m",
        python_env=python_env,
        dataset="shop",
        extra=flags,
    )
    env = cluster.env(job_env())
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": store,
        "PRESCORE_CONFIG": str(tables / "prescore.toml"),
    }
    return [spark_submit_bin(), *argv], env


def test_the_job_on_a_standalone_cluster_publishes_what_local_mode_does(
    standalone: StandaloneCluster,
    reference: tuple[str, Answers],
    many_customers: Path,
    redis_url: str,
    rclient: redis.Redis,
) -> None:
    store, expected = reference
    cmd, env = _submit(standalone, redis_url, store, many_customers)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = Versions(rclient, "shop", StoreSettings()).all()[0]
    assert info.status == "published" and info.rows == len(expected)
    assert info.version in done.stdout
    _assert_as_local(rclient, expected)


@pytest.mark.skipif(
    os.environ.get("PRESCORE_SPARK_ENV_TEST") != "1",
    reason="packs a 2 GB virtualenv: make test-spark-env (.ci/run runs it)",
)
def test_the_job_runs_on_executors_given_its_python_environment_by_archives(
    standalone: StandaloneCluster,
    reference: tuple[str, Answers],
    many_customers: Path,
    redis_url: str,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    """The executors' Python is the packed virtualenv spark-submit ships with
    ``--archives`` (venv-pack's, prescore installed in it as a package), not one at a
    path every worker shares: the Python the workers would otherwise run does not exist."""
    store, expected = reference
    archive = python_env.pack(tmp_path / "packed")
    cmd, env = _submit(standalone, redis_url, store, many_customers, python_env=str(archive))
    env["PYSPARK_PYTHON"] = str(tmp_path / "no-such-python")  # the workers' own: none
    earlier = set(standalone.root.rglob("stderr"))  # executors' logs of the module's other runs
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"--archives {archive}#environment" in " ".join(cmd)
    _assert_as_local(rclient, expected)
    ran = _worker_environments(set(standalone.root.rglob("stderr")) - earlier)
    assert ran, "no executor log names the Python environment its worker ran"
    for prefix in ran:  # each an archive unpacked into an executor's own work folder
        assert prefix.name == "environment" and prefix.is_relative_to(standalone.root), ran
        assert prefix.resolve() != Path(sys.prefix).resolve()


def _worker_environments(logs: set[Path]) -> set[Path]:
    """The Python environments the job's workers ran in, as its executors' logs say."""
    found = set()
    for log in logs:
        text = log.read_text(errors="replace")
        found |= {Path(p) for p in re.findall(r"\(Python environment (\S+)\)", text)}
    return found


def test_an_executor_killed_mid_write_leaves_every_key_once_or_nothing(
    standalone: StandaloneCluster,
    reference: tuple[str, Answers],
    many_customers: Path,
    redis_url: str,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    store, expected = reference
    # many small tasks, each writing several times
    flags = ("--partitions", "16", "--entities-per-chunk", "25", "--write-rows", "25")
    cmd, env = _submit(standalone, redis_url, store, many_customers, *flags)
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        version, rows_at_kill = _kill_an_executor_once_writing(standalone, rclient, proc)
        peak = _peak_written_until_done(rclient, version, proc)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert 0 < rows_at_kill < len(expected), "the kill landed after the job had written"
    assert "Lost executor" in output or "ExecutorLostFailure" in output, output[-3000:]
    print(f"written at kill {rows_at_kill}, counter peak {peak}, keys {len(expected)}")
    v = Versions(rclient, "shop", StoreSettings())
    info = next(i for i in v.all() if i.version == version)
    if proc.returncode == 0:  # Spark retried the lost tasks on the other executor
        assert (v.current(), info.status, info.rows) == (version, "published", len(expected))
        _assert_as_local(rclient, expected)
    else:  # or the run failed: nothing published, the version marked failed
        assert (v.current(), info.status) == (None, "failed"), output[-3000:]
        with pytest.raises(NotFound):
            read_current(rclient, "shop", list(expected)[:10])


def _writing(client: redis.Redis) -> tuple[str, int] | None:
    """The version being written and its registry rows (keys written so far), if any."""
    for info in Versions(client, "shop", StoreSettings()).all():
        if info.status == "writing":
            return info.version, info.rows
    return None


def _kill_an_executor_once_writing(
    cluster: StandaloneCluster, client: redis.Redis, proc: subprocess.Popen[str]
) -> tuple[str, int]:
    """SIGKILL an executor JVM that has written, as soon as the job has written keys
    (its task then is most likely mid-partition); the version and its rows then."""
    port = int(client.connection_pool.connection_kwargs["port"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        now = _writing(client)
        writers = cluster.executors(connected_to=port) if now and now[1] > 0 else []
        if now is not None and writers:
            assert len(cluster.executors()) == 2, "both executors ran when one was killed"
            os.kill(writers[0], signal.SIGKILL)
            return now
        time.sleep(0.02)
    raise AssertionError(f"the job never started writing (exit {proc.poll()})")


def _peak_written_until_done(client: redis.Redis, version: str, proc: subprocess.Popen[str]) -> int:
    """The highest rows the registry showed for ``version`` while it was being written."""
    peak = 0
    while proc.poll() is None:
        now = _writing(client)
        if now is not None and now[0] == version:
            peak = max(peak, now[1])
        time.sleep(0.02)
    return peak


def _writing_run(settings: Settings, where: Placed, token: str) -> Run:
    """What a task of a run writing the version ``where`` of shop under ``token`` is sent
    (the writes read only the dataset's name)."""
    shop = Dataset(name="shop", kind="ranking", model="shop-model")
    worker = WorkerSettings.of(settings)
    run = Run(dataset=shop, model_version="1", scored_at="", worker=worker, batch_rows=1)
    return run.writing(where, token, 0.0)


def test_a_retried_tasks_rewrites_are_one_key_each_in_the_count_check(
    settings: Settings, rclient: redis.Redis
) -> None:
    """What a task attempt lost with its executor and its retry both write: the same keys
    and bytes. The count check counts keys present, so the version publishes with its
    rows, each key once."""
    v = Versions(rclient, "shop", settings.store)
    info = v.begin("shop-model", "1")
    run = _writing_run(settings, Placed.of("shop", info), v.token(info.version))
    rows = [
        (f"c{i}", json.dumps({"customer_id": f"c{i}", "items": []}).encode()) for i in range(50)
    ]
    write_rows(rclient, run, rows[:30])  # the lost attempt got this far
    write_rows(rclient, run, rows)  # its retry writes the whole partition
    done = v.publish(info.version, len(rows))
    assert (done.status, done.rows) == ("published", 50)
    _, values = read_current(rclient, "shop", [k for k, _ in rows])
    assert values == [p for _, p in rows]


def test_a_writing_versions_rows_count_a_retried_tasks_keys_once(
    settings: Settings, rclient: redis.Redis
) -> None:
    v = Versions(rclient, "shop", settings.store)
    info = v.begin("shop-model", "1")
    run = _writing_run(settings, Placed.of("shop", info), v.token(info.version))
    rows = [(f"c{i}", b'{"customer_id":"c%d"}' % i) for i in range(50)]
    write_rows(rclient, run, rows[:30], values.Tally("p0", units=900))  # lost attempt
    write_rows(rclient, run, rows[:20], values.Tally("p0", units=600))  # its retry ...
    (writing,) = v.all()
    assert (writing.status, writing.rows) == ("writing", 20)  # replaces, never adds
    write_rows(rclient, run, rows, values.Tally("p0", units=1500))  # ... to the end
    write_rows(rclient, run, rows[:5], values.Tally("p1", units=150))  # another task
    (writing,) = v.all()
    assert writing.rows == 55 and v.count_keys(info.version) == 50  # keys present: 50
    # the pairs the tasks scored, beside their keys (the job's progress), never as keys
    assert values.progress(rclient, v.placed(info.version)) == (55, 1650)


def test_submit_sizes_the_executors_of_a_standalone_master_only() -> None:
    argv = local_args("score", master="spark://127.0.0.1:1", executor_memory="512m", dataset="x")
    assert "spark.executor.cores=1" in argv and "spark.executor.memory=512m" in argv
    assert not any(a.startswith("spark.executor.") for a in local_args("score", dataset="x"))
