"""Real parts: a redis-server process on a free port and one local SparkSession."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.submit import utf8_locale
from prescore.settings import ModelStoreSettings, RedisSettings, Settings, StoreSettings
from prescore.store.embedded_redis import RedisProcess

# Spark's Python workers must run the interpreter that runs the tests.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# and a UTF-8 locale, as jobs.submit gives the jobs: the JVMs spell file names in it
os.environ.update(utf8_locale(os.environ))


# What `make test-fast` leaves out (pytest -m "not slow"): the tests that need Spark, train
# a TensorFlow model or start a cluster, known by the fixtures they use; a test that starts
# such a thing by itself carries the mark where it is written.
SLOW_FIXTURES = frozenset({"spark", "shop", "colours", "demo_var", "cluster_url", "standalone"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow: dict[Path, int] = {}  # slow tests per file
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow"):
            slow[item.path] = slow.get(item.path, 0) + 1

    # `make test` hands whole files to its processes in this order, so the long ones go
    # first (each file's tests keep their own order): those known to take over a minute,
    # then the files with the most slow tests. Only the run's length depends on it.
    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        first = LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)
        return first, -slow.get(item.path, 0)

    items.sort(key=rank)


LONG_FILES = (
    "test_retrain.py",
    "test_spark_standalone.py",
    "test_faults.py",
    "test_labels_job.py",
    "test_score_job.py",
    "test_demo_tagger.py",
)


@pytest.fixture(scope="session", autouse=True)
def _spark_scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The local jobs this run starts keep their Spark scratch in a folder of its own, so
    no test reads or cleans what another run on the machine keeps there."""
    before = os.environ.get("PRESCORE_SPARK_SCRATCH")
    os.environ["PRESCORE_SPARK_SCRATCH"] = str(tmp_path_factory.mktemp("spark-scratch"))
    yield
    if before is None:
        del os.environ["PRESCORE_SPARK_SCRATCH"]
    else:
        os.environ["PRESCORE_SPARK_SCRATCH"] = before


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A real redis-server process for the whole session (tests may stop and restart it)."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture()
def redis_url(redis_proc: RedisProcess) -> Iterator[str]:
    """The server's URL, emptied before each test; restarted if a test stopped it."""
    if redis_proc.proc is None:
        redis_proc.start()
    client = redis.Redis.from_url(redis_proc.url)
    client.flushall()
    client.close()
    yield redis_proc.url
    if redis_proc.proc is None:
        redis_proc.start()


@pytest.fixture()
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test Redis and a fresh model store under tmp_path."""
    return Settings(
        redis=RedisSettings(url=redis_url),
        store=StoreSettings(keep_versions=2),
        models=ModelStoreSettings(
            root=(tmp_path / "models").as_uri(), cache_dir=str(tmp_path / "cache")
        ),
        var_dir=str(tmp_path / "var"),
    )


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    """One local[2] SparkSession for the whole run."""
    from pyspark.sql import SparkSession

    from jobs.bulk import SESSION_CONF

    session = (
        SparkSession.builder.master("local[2]")
        .appName("prescore-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config(map=SESSION_CONF)  # as the jobs' own sessions
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shop domain (tests.domains): its tables, and its model trained twice, exported
    with the factored signatures and without them (trained once a run)."""
    from tests import domains

    root = tmp_path_factory.mktemp("shop")
    tables = domains.shop_tables(root / "tables")
    return {
        "tables": tables,
        "plain": domains.train_shop(tables, root / "model-plain"),
        "factored": domains.train_shop(tables, root / "model-factored", factored=True),
    }


@pytest.fixture(scope="session")
def colours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The colours domain: JPEGs of its own, their colours, a small CNN trained on them."""
    from tests import domains

    root = tmp_path_factory.mktemp("colours")
    truth = domains.colour_images(root / "images")
    return {
        "images": root / "images",
        "truth": truth,
        "model": domains.train_colours(root / "images", truth, root / "model"),
    }
