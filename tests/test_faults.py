"""Faults from outside, against real processes: a bulk job SIGKILLed while it writes (the
tests' own shop domain, tests.domains), Redis SIGKILLed under a lookup."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

from jobs.bulk import _alive
from jobs.submit import local_args, spark_submit_bin
from prescore.encoding import keys
from prescore.settings import Settings
from prescore.store.versions import Versions
from tests import domains
from tests.helpers import (
    ROOT,
    SIMILAR_CONFIG,
    job_env,
    publish_similar,
    registered,
    with_catalog,
)

LEASE_S = 3.0


def _env(settings: Settings, config: Path, redis_url: str) -> dict[str, str]:
    env = job_env()
    return env | {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": settings.models.root,
        "PRESCORE_CONFIG": str(config),
        "PRESCORE_WRITER_LEASE_S": str(LEASE_S),
        "PRESCORE_SPARK_SCRATCH": str(Path(settings.var_dir) / "spark-scratch"),  # this test's own
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def test_a_sigkilled_job_is_found_dead_in_seconds_and_removed_by_the_next_run(
    settings: Settings, shop: dict[str, Path], redis_url: str, rclient, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    config = domains.shop_config(shop["tables"], tmp_path / "prescore.toml")
    s = with_catalog(settings, config)
    registered(s, "shop-model", shop["plain"])
    env = _env(s, config, redis_url)
    # small chunks and writes in many tasks: the job writes for a while, a few rows at a time
    argv = local_args(
        "score",
        master="local[2]",
        driver_memory="1g",
        dataset="shop",
        partitions="16",
        entities_per_chunk="8",
        write_rows="8",
    )
    v = Versions(rclient, "shop", s.store)
    proc = subprocess.Popen(
        [spark_submit_bin(), *argv],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        writing = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = [i for i in v.all() if i.status == "writing" and i.rows > 0]
            if found:
                writing = found[0]
                break
            time.sleep(0.05)
        assert writing is not None, "the job never wrote"
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert v.current() is None  # the pointer never moved
    while {i.version: i.status for i in v.all()}[writing.version] != "dead":
        assert time.monotonic() - killed_at < LEASE_S + 2, "not found dead within its lease"
        time.sleep(0.1)
    dead = {i.version: i for i in v.all()}[writing.version]
    assert (
        dead.rows >= writing.rows > 0 and v.count_keys(writing.version) > 0
    )  # listed with its keys
    scratch = Path(env["PRESCORE_SPARK_SCRATCH"])
    left = {p.name for p in scratch.iterdir()} if scratch.exists() else set()
    done = subprocess.run(
        [
            spark_submit_bin(),
            *local_args("score", master="local[2]", driver_memory="1g", dataset="shop"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert v.get(writing.version).status == "failed" and v.count_keys(writing.version) == 0
    assert rclient.exists(keys.lease_key("shop", writing.version)) == 0
    assert v.current() is not None and v.current() != writing.version
    gone = {n for n in left if n.isdigit() and not _alive(int(n))}  # the killed job's
    assert gone, "a killed local job leaves its scratch folder"
    still = {p.name for p in scratch.iterdir()}
    assert not gone & still, "the next run did not remove the killed job's Spark scratch"


def test_with_aof_a_killed_redis_comes_back_with_its_data(
    settings: Settings, tmp_path: Path
) -> None:
    """Redis SIGKILLed and restarted with its append-only file: the lookup answers 503s
    while it is down or loading, then the same data again, by itself."""
    import redis

    from lookup.app import create_app
    from lookup.settings import LookupSettings
    from prescore.settings import RedisSettings
    from prescore.store.embedded_redis import RedisProcess

    config = tmp_path / "prescore.toml"
    config.write_text(SIMILAR_CONFIG)
    server = RedisProcess(tmp_path / "aof", appendonly=True).start()
    try:
        s = with_catalog(dataclasses.replace(settings, redis=RedisSettings(url=server.url)), config)
        client = redis.Redis.from_url(server.url)
        version = publish_similar(s, client, tmp_path, [f"s{i}" for i in range(50)], "x").version
        client.execute_command("CONFIG", "SET", "appendfsync", "always")
        api = create_app(LookupSettings(core=s, pointer_cache_s=0)).test_client()
        assert api.get("/v1/similar/s7").status_code == 200
        assert server.proc is not None
        server.proc.kill()  # no shutdown, no save: only the AOF is left
        server.proc.wait()
        server.proc = None
        down = api.get("/v1/similar/s7")
        assert (down.status_code, down.get_json()["error"]) == (503, "store_unavailable")
        restarted = time.monotonic()
        server.start()
        while (answer := api.get("/v1/similar/s7")).status_code != 200:
            assert answer.status_code == 503 and time.monotonic() - restarted < 10
        assert answer.get_json()["dataset_version"] == version  # the same data, not lost
    finally:
        server.stop()
