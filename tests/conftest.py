"""Real parts: a redis-server process on a free port and one local SparkSession."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prescore.embedded_redis import RedisProcess
from prescore.settings import ModelStoreSettings, RedisSettings, Settings, StoreSettings

# Spark's Python workers must run the interpreter that runs the tests.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
def reco_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo data set (users, hotels, contexts, events)."""
    from jobs.datagen import Sizes, generate

    out = tmp_path_factory.mktemp("reco-data")
    generate(out, Sizes(users=400, hotels=150, regions=6, impressions_per_user=60), seed=3)
    return out


@pytest.fixture(scope="session")
def reco_store(reco_data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A model store holding one trained, promoted ``reco`` model (trained once a run)."""
    from jobs.train_reco import train
    from prescore.modelstore import ModelStore

    root = tmp_path_factory.mktemp("reco-models")
    store = ModelStore(ModelStoreSettings(root=root.as_uri(), cache_dir=str(root / ".cache")))
    result = train(reco_data, store, epochs=3, seed=3, promote=True, int8=False)
    return store, result
