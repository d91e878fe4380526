"""A Redis under memory pressure: an evicting policy is refused, a writer's lease is never
an eviction's victim, and a publish that does not fit fails in one line and leaves room
for the next one. Real redis-server processes with their own maxmemory and policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import redis

from prescore.encoding import keys
from prescore.errors import ConfigError, PublishError
from prescore.ports import free_port
from prescore.settings import StoreSettings
from prescore.store import values
from prescore.store.embedded_redis import RedisProcess
from prescore.store.versions import Versions
from tests.frames import write_frame
from tests.helpers import ROOT, SIMILAR_CONFIG


def _server(tmp_path: Path, name: str, maxmemory: str, policy: str) -> RedisProcess:
    return RedisProcess(
        tmp_path / name, maxmemory=maxmemory, extra_args=("--maxmemory-policy", policy)
    ).start()


def _cli(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PRESCORE_CONFIG": str(config), "REDIS_URL": url, "PATH": os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, "-m", "prescore.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "datasets.toml"
    path.write_text(SIMILAR_CONFIG)
    return path


def test_an_allkeys_policy_is_refused_by_writers_the_cli_and_the_lookup(
    tmp_path: Path, config: Path
) -> None:
    server = _server(tmp_path, "lru", "64mb", "allkeys-lru")
    try:
        client = redis.Redis.from_url(server.url)
        with pytest.raises(ConfigError, match="maxmemory-policy allkeys-lru"):
            Versions(client, "similar", StoreSettings()).begin("m", "1")
        assert client.hlen(keys.registry_key("similar")) == 0  # nothing was written
        listed = _cli(server.url, config, "versions", "similar")  # reading: warned only
        assert listed.returncode == 0 and "warning:" in listed.stderr, listed.stderr
        assert "allkeys-lru" in listed.stderr and "no versions" in listed.stdout
        gc = _cli(server.url, config, "gc", "similar")  # writing: refused
        assert gc.returncode != 0 and "allkeys-lru" in gc.stderr
        assert "Traceback" not in listed.stderr + gc.stderr
        env = {
            "PRESCORE_CONFIG": str(config),
            "REDIS_URL": server.url,
            "PATH": os.environ["PATH"],
            "LOOKUP_BIND": f"127.0.0.1:{free_port()}",
        }
        lookup = subprocess.run(
            [sys.executable, "-m", "lookup.serve"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert lookup.returncode == 2 and "maxmemory-policy allkeys-lru" in lookup.stderr
    finally:
        server.stop()


def test_under_a_volatile_policy_the_writers_lease_has_no_ttl_to_be_evicted_by(
    tmp_path: Path,
) -> None:
    server = _server(tmp_path, "volatile", "64mb", "volatile-ttl")
    try:
        client = redis.Redis.from_url(server.url)
        v = Versions(client, "similar", StoreSettings(writer_lease_s=30))
        info = v.begin("m", "1")
        assert client.ttl(keys.lease_key("similar", info.version)) == -1  # no TTL: not a victim
        assert v.renew(info.version)
        assert [i.status for i in v.all()] == ["writing"]
    finally:
        server.stop()


def test_a_publish_that_does_not_fit_fails_in_one_line_and_the_next_one_fits(
    tmp_path: Path, config: Path
) -> None:
    server = _server(tmp_path, "full", "4mb", "noeviction")
    try:
        client = redis.Redis.from_url(server.url)
        small = tmp_path / "small.parquet"
        write_frame(
            pd.DataFrame({"sku": ["a", "b"], "similar": [[{"sku": "b", "score": 0.5}], []]}),
            small,
            index=False,
        )
        assert _cli(server.url, config, "publish", "similar", str(small)).returncode == 0
        live = Versions(client, "similar", StoreSettings()).current()
        big = tmp_path / "big.parquet"
        entries = [
            [{"sku": f"s{i}-{j}", "score": 0.5, "pad": "x" * 40} for j in range(3)]
            for i in range(60_000)
        ]
        write_frame(
            pd.DataFrame({"sku": [f"s{i}" for i in range(60_000)], "similar": entries}),
            big,
            index=False,
        )
        full = _cli(server.url, config, "publish", "similar", str(big))
        assert full.returncode == 1, full.stdout + full.stderr
        assert "Traceback" not in full.stderr + full.stdout
        assert "Redis is full" in full.stdout and "maxmemory 4.00M" in full.stdout, full.stdout
        v = Versions(client, "similar", StoreSettings())
        failed = [i for i in v.all() if i.status == "failed"]
        assert len(failed) == 1 and v.count_keys(failed[0].version) == 0
        assert v.current() == live
        gc = _cli(server.url, config, "gc", "similar")
        assert gc.returncode == 0, gc.stderr
        again = _cli(server.url, config, "publish", "similar", str(small))
        assert again.returncode == 0, again.stdout + again.stderr
        assert v.current() not in (None, live) and v.count_keys(v.current() or "") == 2
    finally:
        server.stop()


def test_a_version_the_size_of_the_live_one_that_cannot_fit_is_refused_before_writing(
    tmp_path: Path,
) -> None:
    """The headroom check: at the live version's bytes a key, the next version would not
    fit in what maxmemory leaves, so nothing of it is written; with room, it is."""
    server = _server(tmp_path, "room", "64mb", "noeviction")
    try:
        client = redis.Redis.from_url(server.url)
        v = Versions(client, "similar", StoreSettings())
        info = v.begin("m", "1", expected_keys=20_000)
        rows = ((f"s{i}", b'{"pad":"' + b"x" * 200 + b'"}') for i in range(20_000))
        v.publish(info.version, values.write(client, v.placed(info.version), rows))
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 1_000_000)  # a version needs several MB more
        with pytest.raises(PublishError) as refused:
            v.begin("m", "2")
        assert refused.value.code == "store_full"
        assert "no room for a new version of similar" in refused.value.message
        assert "nothing was written" in refused.value.message
        assert [i.version for i in v.all()] == [info.version]  # no entry, no lease
        assert client.hlen(keys.owned_key("similar")) == 1
        client.config_set("maxmemory", used * 3)
        assert v.begin("m", "2").status == "writing"
    finally:
        server.stop()
