"""The miss log: a real lookup process records the keys it missed, ``prescore misses``
lists them, and the next bulk run (a real SparkSession) scores those its table holds
besides the rows the table's filter selects, so they are then served precomputed. On
the tests' own shop domain (tests.domains): customers scored with their top products."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from jobs.score import parse_args, run_job
from prescore.cli.main import main as cli_main
from prescore.encoding import keys
from prescore.errors import ConfigError
from prescore.settings import Settings
from prescore.store.misslog import MissLog
from prescore.store.versions import Versions
from tests import domains
from tests.fallback_procs import Server
from tests.helpers import registered, stored_payload, with_catalog

EVEN_CUSTOMERS = "cast(substring(customer_id, 2) as int) % 2 = 0"


def _config(shop: dict[str, Path], tmp_path: Path, condition: str) -> Path:
    """The shop's declarations, its customers table scored only where ``condition`` holds."""
    path = domains.shop_config(shop["tables"], tmp_path / "prescore.toml")
    key = 'key = "customer_id"\n'
    text = path.read_text().replace(key, f"{key}filter = {json.dumps(condition)}\n", 1)
    assert "filter =" in text
    path.write_text(text)
    return path


def _filtered(
    settings: Settings, shop: dict[str, Path], tmp_path: Path, condition: str
) -> Settings:
    out = with_catalog(settings, _config(shop, tmp_path, condition))
    registered(out, "shop-model", shop["plain"])
    return out


@pytest.fixture()
def filtered(settings: Settings, shop: dict[str, Path], tmp_path: Path) -> Settings:
    return _filtered(settings, shop, tmp_path, EVEN_CUSTOMERS)


@pytest.fixture()
def lookup(filtered: Settings, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    env = {
        "REDIS_URL": redis_url,
        "PRESCORE_CONFIG": str(tmp_path / "prescore.toml"),
        "LOOKUP_WORKERS": "1",
        "LOOKUP_POINTER_CACHE_S": "0",
    }
    server = Server("lookup.serve", env, tmp_path / "lookup.log").start("/healthz")
    yield server
    server.stop()


def _misses(capsys: pytest.CaptureFixture[str], redis_url: str, config: Path) -> dict:
    argv = ["--redis-url", redis_url, "--config", str(config), "misses", "shop", "-o", "json"]
    capsys.readouterr()  # what the job printed before
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_missed_key_is_scored_by_the_next_run_and_then_served_precomputed(
    spark, filtered, lookup, rclient, redis_url, tmp_path, capsys
):  # type: ignore[no-untyped-def]
    first = run_job(spark, parse_args(["--dataset", "shop"]), filtered)
    versions = Versions(rclient, "shop", filtered.store)
    assert versions.get(first.version).extra["from_miss_log"] == 0
    assert stored_payload(rclient, "shop", first.version, "c8") is not None
    assert stored_payload(rclient, "shop", first.version, "c7") is None  # filtered out
    for key in ("c7", "c9", "c9", "nobody"):
        assert requests.get(f"{lookup.url}/v1/picks/{key}", timeout=5).status_code == 404
    body = {"keys": ["c8", "c11", "c9"]}
    reply = requests.post(f"{lookup.url}/v1/picks:batchGet", json=body, timeout=5)
    assert reply.json()["found"] == 1
    assert requests.get(f"{lookup.url}/v1/picks/c8", timeout=5).status_code == 200

    listed = _misses(capsys, redis_url, tmp_path / "prescore.toml")
    counts = {m["key"]: m["count"] for m in listed["top"]}
    assert counts == {"c9": 3, "c7": 1, "c11": 1, "nobody": 1} and listed["keys"] == 4
    assert listed["top"][0]["key"] == "c9" and listed["top"][0]["last_seen"] > 0

    second = run_job(spark, parse_args(["--dataset", "shop"]), filtered)
    figures = versions.get(second.version).extra
    assert (figures["miss_log_keys"], figures["from_miss_log"]) == (4, 3)
    assert figures["miss_log_added"] == 3  # none of them even: the filter alone had none
    assert second.rows == first.rows + 3
    for key in ("c7", "c9", "c11"):
        doc = requests.get(f"{lookup.url}/v1/picks/{key}", timeout=5).json()
        assert doc["source"] == "precomputed" and doc["dataset_version"] == second.version
        assert doc["model"] == "shop-model" and len(doc["items"]) == 5
    # what was scored left the log; a key the table does not hold stays, still missed
    assert MissLog(rclient).all_keys("shop") == ["nobody"]
    metrics = requests.get(f"{lookup.url}/metrics", timeout=5).text
    assert 'prescore_dataset_misses_scored{dataset="shop"} 3.0' in metrics
    assert 'prescore_dataset_miss_log_keys{dataset="shop"} 1.0' in metrics
    # the job's compact payloads keep every sampled bucket a listpack
    assert 'prescore_dataset_bucket_hashtable_ratio{dataset="shop"} 0.0' in metrics


def test_no_miss_log_scores_the_filter_only(spark, filtered, rclient):  # type: ignore[no-untyped-def]
    MissLog(rclient).record("shop", ["c7", "c9"])
    done = run_job(spark, parse_args(["--dataset", "shop", "--no-miss-log"]), filtered)
    assert stored_payload(rclient, "shop", done.version, "c7") is None
    assert "from_miss_log" not in Versions(rclient, "shop", filtered.store).get(done.version).extra
    assert sorted(MissLog(rclient).all_keys("shop")) == ["c7", "c9"]  # kept for a later run


def test_a_bad_filter_is_one_line_naming_it_and_writes_nothing(
    spark, settings, shop, rclient: redis.Redis, tmp_path
):  # type: ignore[no-untyped-def]
    bad = _filtered(settings, shop, tmp_path, "no_such_column > 3")
    with pytest.raises(ConfigError) as raised:
        run_job(spark, parse_args(["--dataset", "shop"]), bad)
    message = raised.value.message
    assert message.startswith("dataset shop: entities.filter: 'no_such_column > 3' is not")
    assert "\n" not in message
    assert Versions(rclient, "shop", bad.store).all() == []


def test_the_log_keeps_the_keys_missed_most_in_both_of_its_sets(rclient) -> None:  # type: ignore[no-untyped-def]
    log = MissLog(rclient, cap=3, trim_every=1)
    for n, key in enumerate(["a", "b", "c", "d", "e"]):
        log.record("shop", [key] * (n + 1))  # e missed most, a least
    assert [m.key for m in log.top("shop", 10)] == ["e", "d", "c"]
    assert all(m.last_seen is not None for m in log.top("shop", 10))
    assert sorted(rclient.zrange(keys.miss_seen_key("shop"), 0, -1)) == [b"c", b"d", b"e"]
