"""A publish switching versions while requests flow never yields a mixed or partial answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.settings import Settings
from prescore.store.versions import Versions, write_payloads
from tests.lookup_helpers import publish, served_settings, shop_payload

USERS = 30


def _rows(n: int) -> list[tuple[str, bytes]]:
    """Version n: model m{n}, and every user has n + 2 items (so a mix would show)."""
    return [(f"c{i}", shop_payload(f"c{i}", n + 2, f"m{n}")) for i in range(USERS)]


@pytest.mark.parametrize("pointer_cache_s", [0.0, 1.0])
def test_readers_see_one_whole_version_while_versions_switch(
    settings: Settings, rclient, pointer_cache_s: float, tmp_path: Path
):
    settings = served_settings(settings, tmp_path / "var")
    expected: dict[str, int] = {}  # dataset_version -> n
    expected[publish(rclient, settings, "shop", _rows(1), "m1")] = 1
    app = create_app(LookupSettings(core=settings, pointer_cache_s=pointer_cache_s))
    stop = threading.Event()
    seen: list[tuple[str, int]] = []
    problems: list[str] = []

    def check(body: dict, version: str) -> None:
        n = expected.get(version)
        if n is None:
            problems.append(f"unknown version {version}")
        elif body["model_version"] != f"m{n}" or len(body["items"]) != n + 2:
            problems.append(f"{version}: {body['model_version']} with {len(body['items'])}")

    def reader(worker: int) -> None:
        client = app.test_client()
        i = worker
        while not stop.is_set():
            i += 1
            base = "/v1/picks" if i % 2 else "/v1/datasets/shop"  # both routes
            r = client.get(f"{base}/c{i % USERS}?k=100")
            if r.status_code != 200:
                problems.append(f"single {r.status_code} {r.data!r}")
                continue
            body = r.get_json()
            check(body, body["dataset_version"])
            seen.append((body["dataset_version"], 1))
            ids = [f"c{(i + j) % USERS}" for j in range(12)]
            b = client.post(f"{base}:batchGet", json={"keys": ids, "k": 100})
            batch = b.get_json()
            if b.status_code != 200 or batch["found"] != len(ids):
                problems.append(f"batch {b.status_code} {batch}")
                continue
            version = batch["dataset_version"]
            if expected.get(version) is None or batch["model_version"] != f"m{expected[version]}":
                problems.append(f"batch version {version} says {batch['model_version']}")
            for item in batch["results"]:
                if item["dataset_version"] != version:
                    problems.append(f"mixed batch: {item['dataset_version']} in {version}")
                check(item, version)
            seen.append((version, len(ids)))

    threads = [threading.Thread(target=reader, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(2, 8):
            time.sleep(0.15)
            _publish_recording(rclient, settings, _rows(n), n, expected)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not problems, problems[:5]
    versions = {v for v, _ in seen}
    assert len(seen) > 50
    assert len(versions) >= 3, versions


def _publish_recording(rclient, settings, rows, n, expected) -> str:
    """Like lookup_helpers.publish, but the expected map knows the version before the switch."""
    versions = Versions(rclient, "shop", settings.store)
    info = versions.begin("shop", f"m{n}")
    expected[info.version] = n
    versions.publish(info.version, write_payloads(rclient, "shop", info.version, rows))
    return info.version
