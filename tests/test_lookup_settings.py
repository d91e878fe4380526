"""Lookup settings from env and flags; the WSGI module builds its app from env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookup.settings import LookupSettings
from prescore.serving import WSGIServer

ROOT = Path(__file__).resolve().parent.parent


def test_from_env_and_flags():
    env = {
        "REDIS_URL": "redis://127.0.0.1:7000/1",
        "PRESCORE_REDIS_TIMEOUT_S": "0.2",
        "LOOKUP_DEFAULT_K": "5",
        "LOOKUP_MAX_K": "50",
        "LOOKUP_MAX_BATCH_IDS": "7",
        "LOOKUP_POINTER_CACHE_S": "0",
        "LOOKUP_WORKERS": "3",
        "LOOKUP_THREADS": "4",
        "PRESCORE_FALLBACK_URL": "http://127.0.0.1:8081",
    }
    s = LookupSettings.from_env(env)
    assert s.core.redis.url == env["REDIS_URL"] and s.core.redis.socket_timeout_s == 0.2
    assert (s.default_k, s.max_k, s.max_batch_ids, s.pointer_cache_s) == (5, 50, 7, 0.0)
    assert s.fallback_url == "http://127.0.0.1:8081"
    flagged = s.with_server(bind="127.0.0.1:9000", workers=None, threads=2)
    server = flagged.server.wsgi_server()
    assert (server.bind, server.workers, server.threads) == ("127.0.0.1:9000", 3, 2)
    assert server.address() == ("127.0.0.1", 9000) and server.name == "prescore-lookup"


@pytest.mark.parametrize(
    "env",
    [{"LOOKUP_DEFAULT_K": "0"}, {"LOOKUP_DEFAULT_K": "20", "LOOKUP_MAX_K": "10"},
     {"LOOKUP_MAX_BATCH_IDS": "0"}, {"LOOKUP_POINTER_CACHE_S": "-1"}],
)  # fmt: skip
def test_impossible_settings_are_refused_at_start(env):
    with pytest.raises(ValueError):
        LookupSettings.from_env(env)


def test_wsgi_module_builds_the_app_from_env(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url}
    code = "from lookup.wsgi import app; print(sorted(r.rule for r in app.url_map.iter_rules()))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "/v1/recommendations/<user_id>" in out and "/openapi.json" in out


@pytest.mark.parametrize(
    ("bind", "address"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), (":80", ("0.0.0.0", 80)),
     ("[::1]:9000", ("::1", 9000))],
)  # fmt: skip
def test_bind_is_split_into_host_and_port(bind, address):
    assert WSGIServer(bind, workers=1, threads=1, name="x").address() == address


@pytest.mark.parametrize("bind", ["localhost", "127.0.0.1:http", "127.0.0.1:"])
def test_a_bind_without_a_port_is_refused(bind):
    with pytest.raises(ValueError, match="host:port"):
        WSGIServer(bind, workers=1, threads=1, name="x").address()
