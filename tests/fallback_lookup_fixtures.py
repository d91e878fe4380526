"""Fixtures of the lookup-on-a-miss tests, loaded with ``pytest_plugins``: one dataset file
declaring the shop and the colours (tests.fallback_domains), a model store with their
models, a fallback serving them, and a lookup pointed at it over what the bulk jobs would
have published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from prescore.settings import Settings
from tests import fallback_domains as fd
from tests.fallback_lookup_helpers import fallback_server, lookup_server, publish_data
from tests.fallback_procs import Server


@pytest.fixture(scope="module")
def world(
    shop: dict[str, Path], colours: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The dataset file, the colours' image folder (with secret.jpg beside it) and a model
    store holding version 1 of both models, promoted."""
    root = tmp_path_factory.mktemp("lookup-fallback")
    images = fd.image_folder(root, colours)
    config = fd.write_config(root / "prescore.toml", tables=shop["tables"], images=images)
    s = fd.store_settings(Settings(), config, root)
    fd.register_models(s, shop, colours)
    return {"settings": s, "config": config, "images": images, "root": root}


@pytest.fixture(scope="module")
def fallback(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "fallback.log"
    srv = fallback_server(world, log, FALLBACK_ACCESS_LOG="1").start()
    yield srv
    srv.stop()


@pytest.fixture()
def lookup(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    fallback: Server,
    tmp_path: Path,
) -> Iterator[Server]:
    publish_data(rclient, settings)
    srv = lookup_server(world, redis_url, fallback.url, tmp_path / "lookup.log")
    yield srv
    srv.stop()
