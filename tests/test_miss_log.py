"""The miss log: a real lookup process records the keys it missed, ``prescore misses``
lists them, and the next bulk run (a real SparkSession) scores those its table holds
besides the rows the table's filter selects, so they are then served precomputed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from jobs.score import parse_args, run_job
from prescore.cli.main import main as cli_main
from prescore.data.datasets import load
from prescore.encoding import keys
from prescore.errors import ConfigError
from prescore.settings import Settings
from prescore.store.misslog import MissLog
from prescore.store.versions import Versions
from tests.fallback_procs import Server
from tests.helpers import DEMO_CONFIG, registered, stored_payload

EVEN_USERS = "cast(substring(user_id, 2) as int) % 2 = 0"


def _config(tmp_path: Path, condition: str) -> Path:
    """The demo's declarations, its users table scored only where ``condition`` holds."""
    text = DEMO_CONFIG.read_text().replace(
        'path = "${PRESCORE_VAR:-var}/data/users.parquet"\nkey = "user_id"\n',
        f'path = "${{PRESCORE_VAR:-var}}/data/users.parquet"\nkey = "user_id"\n'
        f"filter = {json.dumps(condition)}\n",
    )
    assert "filter =" in text
    path = tmp_path / "prescore.toml"
    path.write_text(text)
    return path


@pytest.fixture()
def filtered(settings: Settings, demo: dict[str, Path], tmp_path: Path) -> Settings:
    config = _config(tmp_path, EVEN_USERS)
    out = dataclasses.replace(settings, catalog=load(config, {"PRESCORE_VAR": str(demo["var"])}))
    registered(out, "reco", demo["model"])
    return out


@pytest.fixture()
def lookup(
    filtered: Settings, demo: dict[str, Path], redis_url: str, tmp_path: Path
) -> Iterator[Server]:
    env = {
        "REDIS_URL": redis_url,
        "PRESCORE_CONFIG": str(tmp_path / "prescore.toml"),
        "PRESCORE_VAR": str(demo["var"]),
        "LOOKUP_WORKERS": "1",
        "LOOKUP_POINTER_CACHE_S": "0",
    }
    server = Server("lookup.serve", env, tmp_path / "lookup.log").start("/healthz")
    yield server
    server.stop()


def _misses(capsys: pytest.CaptureFixture[str], redis_url: str, config: Path) -> dict:
    argv = ["--redis-url", redis_url, "--config", str(config), "misses", "reco", "-o", "json"]
    capsys.readouterr()  # what the job printed before
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_missed_key_is_scored_by_the_next_run_and_then_served_precomputed(
    spark, filtered, lookup, rclient, redis_url, tmp_path, capsys
):  # type: ignore[no-untyped-def]
    first = run_job(spark, parse_args(["--dataset", "reco"]), filtered)
    versions = Versions(rclient, "reco", filtered.store)
    assert versions.get(first.version).extra["from_miss_log"] == 0
    assert stored_payload(rclient, "reco", first.version, "u8") is not None
    assert stored_payload(rclient, "reco", first.version, "u7") is None  # filtered out
    for key in ("u7", "u9", "u9", "nobody"):
        assert requests.get(f"{lookup.url}/v1/recommendations/{key}", timeout=5).status_code == 404
    body = {"user_ids": ["u8", "u11", "u9"]}
    reply = requests.post(f"{lookup.url}/v1/recommendations:batchGet", json=body, timeout=5)
    assert reply.json()["found"] == 1
    assert requests.get(f"{lookup.url}/v1/recommendations/u8", timeout=5).status_code == 200

    listed = _misses(capsys, redis_url, tmp_path / "prescore.toml")
    counts = {m["key"]: m["count"] for m in listed["top"]}
    assert counts == {"u9": 3, "u7": 1, "u11": 1, "nobody": 1} and listed["keys"] == 4
    assert listed["top"][0]["key"] == "u9" and listed["top"][0]["last_seen"] > 0

    second = run_job(spark, parse_args(["--dataset", "reco"]), filtered)
    figures = versions.get(second.version).extra
    assert (figures["miss_log_keys"], figures["from_miss_log"]) == (4, 3)
    assert figures["miss_log_added"] == 3  # none of them even: the filter alone had none
    assert second.rows == first.rows + 3
    for key in ("u7", "u9", "u11"):
        doc = requests.get(f"{lookup.url}/v1/recommendations/{key}", timeout=5).json()
        assert doc["source"] == "precomputed" and doc["dataset_version"] == second.version
        assert doc["model"] == "reco" and len(doc["items"]) == 10
    # what was scored left the log; a key the table does not hold stays, still missed
    assert MissLog(rclient).all_keys("reco") == ["nobody"]
    metrics = requests.get(f"{lookup.url}/metrics", timeout=5).text
    assert 'prescore_dataset_misses_scored{dataset="reco"} 3.0' in metrics
    assert 'prescore_dataset_miss_log_keys{dataset="reco"} 1.0' in metrics
    # the job's compact payloads keep every sampled bucket a listpack
    assert 'prescore_dataset_bucket_hashtable_ratio{dataset="reco"} 0.0' in metrics


def test_no_miss_log_scores_the_filter_only(spark, filtered, rclient):  # type: ignore[no-untyped-def]
    MissLog(rclient).record("reco", ["u7", "u9"])
    done = run_job(spark, parse_args(["--dataset", "reco", "--no-miss-log"]), filtered)
    assert stored_payload(rclient, "reco", done.version, "u7") is None
    assert "from_miss_log" not in Versions(rclient, "reco", filtered.store).get(done.version).extra
    assert sorted(MissLog(rclient).all_keys("reco")) == ["u7", "u9"]  # kept for a later run


def test_a_bad_filter_is_one_line_naming_it_and_writes_nothing(
    spark, settings, demo, rclient: redis.Redis, tmp_path
):  # type: ignore[no-untyped-def]
    config = _config(tmp_path, "no_such_column > 3")
    bad = dataclasses.replace(settings, catalog=load(config, {"PRESCORE_VAR": str(demo["var"])}))
    registered(bad, "reco", demo["model"])
    with pytest.raises(ConfigError) as raised:
        run_job(spark, parse_args(["--dataset", "reco"]), bad)
    message = raised.value.message
    assert message.startswith("dataset reco: entities.filter: 'no_such_column > 3' is not")
    assert "\n" not in message
    assert Versions(rclient, "reco", bad.store).all() == []


def test_the_log_keeps_the_keys_missed_most_in_both_of_its_sets(rclient) -> None:  # type: ignore[no-untyped-def]
    log = MissLog(rclient, cap=3, trim_every=1)
    for n, key in enumerate(["a", "b", "c", "d", "e"]):
        log.record("reco", [key] * (n + 1))  # e missed most, a least
    assert [m.key for m in log.top("reco", 10)] == ["e", "d", "c"]
    assert all(m.last_seen is not None for m in log.top("reco", 10))
    assert sorted(rclient.zrange(keys.miss_seen_key("reco"), 0, -1)) == [b"c", b"d", b"e"]
