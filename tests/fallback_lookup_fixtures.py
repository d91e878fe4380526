"""Fixtures of the lookup-on-a-miss tests, loaded with ``pytest_plugins``: a fallback
serving small real models (tests.fallback_models) and a real photo folder, and a lookup
pointed at it over what the bulk jobs would have published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prescore.settings import Settings
from tests import fallback_models as fm
from tests.fallback_lookup_helpers import PHOTOS, fallback_server, lookup_server, publish_data
from tests.fallback_procs import Server


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fm.saved_store(tmp_path_factory.mktemp("lookup-fallback-store"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fallback's photo folder, and beside it a photo that is not in it."""
    return fm.photo_folder(tmp_path_factory.mktemp("photo-store"), PHOTOS)


@pytest.fixture(scope="module")
def fallback(
    store_root: str, photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "fallback.log"
    srv = fallback_server(store_root, photos, log).start()
    yield srv
    srv.stop()


@pytest.fixture()
def lookup(
    redis_url: str, rclient: redis.Redis, settings: Settings, fallback: Server, tmp_path: Path
) -> Iterator[Server]:
    publish_data(rclient, settings)
    srv = lookup_server(redis_url, fallback.url, tmp_path / "lookup.log")
    yield srv
    srv.stop()
