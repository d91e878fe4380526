"""Lookup settings from env and flags; the WSGI module builds its app from env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookup.settings import LookupSettings
from prescore.errors import ConfigError
from prescore.service.serving import WSGIServer
from tests.helpers import SERVED_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def test_from_env_and_flags():
    env = {
        "REDIS_URL": "redis://127.0.0.1:7000/1",
        "PRESCORE_REDIS_TIMEOUT_S": "0.2",
        "LOOKUP_MAX_K": "50",
        "LOOKUP_MAX_BATCH_IDS": "7",
        "LOOKUP_MAX_BODY_BYTES": "2048",
        "LOOKUP_POINTER_CACHE_S": "0",
        "LOOKUP_WORKERS": "3",
        "LOOKUP_THREADS": "4",
        "PRESCORE_FALLBACK_URL": "http://127.0.0.1:8081",
        "PRESCORE_FALLBACK_MAX_INSTANCES": "9",
        "PRESCORE_CONFIG": str(SERVED_CONFIG),
        "PRESCORE_VAR": "/data/var",
    }
    s = LookupSettings.from_env(env)
    assert s.core.redis.url == env["REDIS_URL"] and s.core.redis.socket_timeout_s == 0.2
    assert (s.max_k, s.max_batch_ids, s.max_body_bytes, s.pointer_cache_s) == (50, 7, 2048, 0.0)
    assert s.fallback_url == "http://127.0.0.1:8081" and s.fallback_max_instances == 9
    # the datasets served are the ones PRESCORE_CONFIG declares, its ${...} from env
    assert s.core.catalog.names() == ["colours", "shop"]
    shop = s.core.catalog.get("shop")
    assert (shop.route, shop.batch_field, shop.key_field) == (
        "picks",
        "customer_ids",
        "customer_id",
    )
    assert shop.entities is not None and shop.entities.path == "file:///data/var/customers.parquet"
    flagged = s.with_server(bind="127.0.0.1:9000", workers=None, threads=2)
    server = flagged.server.wsgi_server()
    assert (server.bind, server.workers, server.threads) == ("127.0.0.1:9000", 3, 2)
    assert server.address() == ("127.0.0.1", 9000) and server.name == "prescore-lookup"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOKUP_MAX_K": "0"}, "LOOKUP_MAX_K='0': must be an integer of at least 1"),
        ({"LOOKUP_MAX_K": "-5"}, "LOOKUP_MAX_K='-5': must be an integer of at least 1"),
        ({"LOOKUP_MAX_K": "many"}, "LOOKUP_MAX_K='many': must be an integer of at least 1"),
        ({"LOOKUP_MAX_BATCH_IDS": "0"}, "LOOKUP_MAX_BATCH_IDS='0'"),
        (
            {"LOOKUP_MAX_BODY_BYTES": "10"},
            "LOOKUP_MAX_BODY_BYTES='10': must be an integer of at least 64",
        ),
        (
            {"LOOKUP_POINTER_CACHE_S": "-1"},
            "LOOKUP_POINTER_CACHE_S='-1': must be a number of at least 0",
        ),
        ({"PRESCORE_FALLBACK_MAX_INSTANCES": "0"}, "PRESCORE_FALLBACK_MAX_INSTANCES='0'"),
        ({"LOOKUP_THREADS": "four"}, "LOOKUP_THREADS='four': must be an integer of at least 1"),
        (
            {"LOOKUP_HEADER_TIMEOUT_S": "0"},
            "LOOKUP_HEADER_TIMEOUT_S='0': must be a number from 0.1 to 3600",
        ),
        (
            {"PRESCORE_REDIS_TIMEOUT_S": "fast"},
            "PRESCORE_REDIS_TIMEOUT_S='fast': must be a number from 0.001 to 60",
        ),
        ({"PRESCORE_REDIS_TIMEOUT_S": "nan"}, "PRESCORE_REDIS_TIMEOUT_S='nan': must be a number"),
        (
            {"REDIS_URL": "http://cache:6379"},
            "REDIS_URL='http://cache:6379': must be a URL of redis://, rediss://, unix://",
        ),
        ({"REDIS_URL": "http://:hunter2@cache"}, "REDIS_URL='http://:***@cache'"),
        (
            {"PRESCORE_REDIS_CLUSTER": "maybe"},
            "PRESCORE_REDIS_CLUSTER='maybe': must be one of 1, true",
        ),
        (
            {"PRESCORE_FALLBACK_URL": "fallback:8081"},
            "PRESCORE_FALLBACK_URL='fallback:8081': must be http://host:port",
        ),
        (
            {"PRESCORE_MODEL_STORE": "az://bucket/models"},
            "PRESCORE_MODEL_STORE='az://bucket/models': must be a URL of file://, hdfs://, "
            "s3://, gs://, a path",
        ),
    ],
)
def test_impossible_settings_are_one_line_naming_the_variable(env, message):
    with pytest.raises(ConfigError) as info:
        LookupSettings.from_env(env)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text and "hunter2" not in text


def test_the_model_store_and_its_cache_follow_prescore_var(tmp_path):
    from prescore.settings import Settings

    var = tmp_path / "var"
    moved = Settings.from_env({"PRESCORE_VAR": str(var)})
    assert (moved.var_dir, moved.models.root) == (str(var), (var / "models").as_uri())
    assert moved.models.cache_dir == str(var / "model-cache")
    own = Settings.from_env({"PRESCORE_VAR": str(var), "PRESCORE_MODEL_STORE": "s3://b/m"})
    assert (own.models.root, own.models.cache_dir) == ("s3://b/m", str(var / "model-cache"))
    empty = {"PRESCORE_VAR": str(var), "PRESCORE_MODEL_STORE": "", "PRESCORE_MODEL_CACHE": ""}
    unset = Settings.from_env(empty)  # an empty variable is an unset one, as everywhere
    assert (unset.models.root, unset.models.cache_dir) == (
        moved.models.root,
        str(var / "model-cache"),
    )


def test_without_a_dataset_file_nothing_is_declared():
    assert LookupSettings.from_env({}).core.catalog.names() == []


def test_a_bad_dataset_file_is_refused_at_start_naming_the_field(tmp_path):
    bad = tmp_path / "prescore.toml"
    bad.write_text('[datasets.shop]\nkind = "ranking"\nmodel = "shop"\nroute = "datasets"\n')
    with pytest.raises(ConfigError, match=r"datasets\.shop\.route: 'datasets' is reserved"):
        LookupSettings.from_env({"PRESCORE_CONFIG": str(bad)})
    with pytest.raises(ConfigError, match="cannot read"):
        LookupSettings.from_env({"PRESCORE_CONFIG": str(tmp_path / "missing.toml")})


def test_wsgi_module_builds_the_app_from_env(redis_url, tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PRESCORE_CONFIG": str(SERVED_CONFIG),
        "PRESCORE_VAR": str(tmp_path),
    }
    code = "from lookup.wsgi import app; print(sorted(r.rule for r in app.url_map.iter_rules()))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for rule in (
        "/v1/picks/<text:key>",
        "/v1/picks:batchGet",
        "/v1/image-colours/<text:key>",
        "/v1/image-colours:batchGet",
        "/v1/datasets/<name>/<text:key>",
        "/v1/datasets/<name>:batchGet",
        "/openapi.json",
        "/readyz",
        "/metrics",
    ):
        assert f"'{rule}'" in out, (rule, out)


@pytest.mark.parametrize(
    ("bind", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":80", ("0.0.0.0", 80)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_bind_is_split_into_host_and_port(bind, address):
    assert WSGIServer(bind, workers=1, threads=1, name="x").address() == address


@pytest.mark.parametrize("bind", ["localhost", "127.0.0.1:http", "127.0.0.1:"])
def test_a_bind_without_a_port_is_refused(bind):
    with pytest.raises(ValueError, match="host:port"):
        WSGIServer(bind, workers=1, threads=1, name="x").address()
