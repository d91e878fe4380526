"""Freshness and shadow checks over real processes: a lookup server and a fallback over one
dataset file, real Redis, real TensorFlow. A stale answer is marked and refreshed live in
the background (or answered live, when declared so); a fresh one is left alone. Sampled
hits are answered live too and compared: agreement metrics move when the live model is
swapped for a different one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from prescore.encoding import codec
from prescore.settings import Settings
from tests import domains
from tests import fallback_domains as fd
from tests.fallback_lookup_helpers import DEADLINE_S, fallback_calls
from tests.fallback_procs import Server, metric_value
from tests.helpers import registered
from tests.lookup_helpers import publish

FRESHNESS = 'max_age_s = 3600\nstale = "refresh"\n'


def _world(root: Path, shop: dict[str, Path], colours: dict[str, Any], extra: str) -> dict:
    images = fd.image_folder(root, colours)
    config = fd.write_config(root / "prescore.toml", tables=shop["tables"], images=images)
    text = config.read_text().replace('route = "picks"\n', f'route = "picks"\n{extra}', 1)
    config.write_text(text)
    s = fd.store_settings(Settings(), config, root)
    fd.register_models(s, shop, colours)
    return {"settings": s, "config": config, "root": root}


def _servers(world: dict, redis_url: str, log_dir: Path, **lookup_env: str) -> list[Server]:
    fb_env = fd.process_env(world["settings"], world["config"], FALLBACK_RUNTIME="tf")
    fb = Server("fallback.serve", fb_env, log_dir / "fb.log").start()
    env = {
        **fd.process_env(world["settings"], world["config"]),
        "REDIS_URL": redis_url,
        "PRESCORE_FALLBACK_URL": fb.url,
        "PRESCORE_FALLBACK_TIMEOUT_S": DEADLINE_S,
        "LOOKUP_WORKERS": "1",
        "LOOKUP_POINTER_CACHE_S": "0",
        **lookup_env,
    }
    try:
        return [fb, Server("lookup.serve", env, log_dir / "lookup.log").start("/healthz")]
    except Exception:
        fb.stop()
        raise


def _scored_now(payload: bytes) -> bytes:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return payload.replace(fd.SCORED_AT.encode(), now.encode())


@pytest.fixture()
def fresh_world(
    shop: dict[str, Path], colours: dict[str, Any], tmp_path: Path, redis_url: str
) -> Iterator[list[Server]]:
    world = _world(tmp_path, shop, colours, FRESHNESS)
    servers = _servers(world, redis_url, tmp_path)
    yield servers
    for s in servers:
        s.stop()


def test_a_stale_answer_is_marked_and_refreshed_a_fresh_one_is_not(
    fresh_world: list[Server], rclient: redis.Redis, settings: Settings, shop: dict[str, Path]
) -> None:
    fb, lk = fresh_world
    old = fd.shop_payload("c3", 5, "1")  # scored days ago
    rows = [("c3", old), ("c4", _scored_now(fd.shop_payload("c4", 5, "1")))]
    publish(rclient, settings, "shop", rows, "1", model="shop-model")
    before = fallback_calls(fb)
    fresh = requests.get(lk.url + "/v1/picks/c4", timeout=5).json()
    assert fresh["source"] == "precomputed" and "stale" not in fresh
    assert 0 <= fresh["age_s"] < 60
    stale = requests.get(lk.url + "/v1/picks/c3", timeout=5).json()
    assert stale["source"] == "precomputed" and stale["stale"] is True  # served as it is
    assert stale["age_s"] > 3600
    assert [i["product_id"] for i in stale["items"]] == [f"p{j}" for j in range(5)]
    deadline = time.monotonic() + 20  # refreshed off the request's path
    while time.monotonic() < deadline:
        doc = requests.get(lk.url + "/v1/picks/c3", timeout=5).json()
        if doc["source"] == "written_back":
            break
        time.sleep(0.1)
    assert doc["source"] == "written_back" and "stale" not in doc and doc["age_s"] < 60
    assert [i["product_id"] for i in doc["items"]] == fd.top_products(shop, "c3", 5)
    assert fallback_calls(fb) - before == 1  # the fresh key was never asked for
    text = requests.get(lk.url + "/metrics", timeout=5).text
    assert metric_value(text, "prescore_lookup_stale_answers_total", dataset="shop") >= 1


def test_declared_live_answers_a_stale_key_within_the_request(
    shop: dict[str, Path],
    colours: dict[str, Any],
    tmp_path: Path,
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
) -> None:
    world = _world(tmp_path, shop, colours, 'max_age_s = 3600\nstale = "live"\n')
    fb, lk = _servers(world, redis_url, tmp_path)
    try:
        publish(
            rclient,
            settings,
            "shop",
            [("c5", fd.shop_payload("c5", 5, "1"))],
            "1",
            model="shop-model",
        )
        doc = requests.get(lk.url + "/v1/picks/c5", timeout=5).json()
        assert doc["source"] == "live" and doc["age_s"] == 0 and "stale" not in doc
        assert [i["product_id"] for i in doc["items"]] == fd.top_products(shop, "c5", 5)
        fb.kill()  # live inference down: the stale answer is served, marked
        doc = requests.get(lk.url + "/v1/picks/c6", timeout=5).json()
        assert doc["error"] == "fallback_unavailable"  # c6 was never published
        publish(
            rclient,
            settings,
            "shop",
            [("c6", fd.shop_payload("c6", 5, "1"))],
            "1",
            model="shop-model",
        )
        doc = requests.get(lk.url + "/v1/picks/c6", timeout=5).json()
        assert doc["source"] == "precomputed" and doc["stale"] is True
    finally:
        lk.stop()
        fb.stop()


def _shadow(lk: Server) -> dict[str, float]:
    """The shadow histograms' counts and sums so far."""
    text = requests.get(lk.url + "/metrics", timeout=5).text
    return {
        f"{m}_{part}": metric_value(text, f"prescore_lookup_shadow_{m}_{part}", dataset="shop")
        for m in ("overlap", "score_diff")
        for part in ("count", "sum")
    }


def _checked(lk: Server, keys: list[str], rounds: int, had: float) -> dict[str, float]:
    """Ask ``keys`` ``rounds`` times over; the histograms once each hit was checked."""
    for _ in range(rounds):
        for key in keys:
            assert requests.get(lk.url + f"/v1/picks/{key}", timeout=5).status_code == 200
    deadline, want = time.monotonic() + 30, had + rounds * len(keys)
    while time.monotonic() < deadline:
        found = _shadow(lk)
        if found["overlap_count"] >= want:
            return found
        time.sleep(0.2)
    raise AssertionError(f"shadow checks: {found['overlap_count']} of {want}")


def _means(now: dict[str, float], before: dict[str, float]) -> tuple[float, float]:
    """Mean overlap and mean score difference of the checks between ``before`` and ``now``."""
    d = {k: now[k] - before.get(k, 0.0) for k in now}
    common = d["score_diff_count"]  # checks with entries in common
    return d["overlap_sum"] / d["overlap_count"], (
        d["score_diff_sum"] / common if common else float("inf")
    )


def test_shadow_agreement_moves_when_the_live_model_is_swapped(
    shop: dict[str, Path],
    colours: dict[str, Any],
    tmp_path: Path,
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
) -> None:
    world = _world(tmp_path, shop, colours, "")
    fb, lk = _servers(world, redis_url, tmp_path, LOOKUP_SHADOW_RATE="1.0")
    try:
        customers = [f"c{i}" for i in range(3, 9)]
        body = {"instances": [{"key": c} for c in customers]}
        reply = requests.post(fb.url + "/v1/datasets/shop:predict", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        # what the bulk job would have published: the same model's answers, not live ones
        answers = [
            {k: v for k, v in p.items() if k != "source"} for p in reply.json()["predictions"]
        ]
        rows = [(c, codec.dumps(p)) for c, p in zip(customers, answers, strict=True)]
        publish(rclient, settings, "shop", rows, "1", model="shop-model")
        first = _checked(lk, customers, 2, 0)
        overlap1, diff1 = _means(first, {})
        assert overlap1 == pytest.approx(1.0) and diff1 < 1e-4
        # the live model swapped for another one under the same name and version
        other = fd.store_settings(Settings(), world["config"], tmp_path / "other")
        worse = domains.train_shop(shop["tables"], tmp_path / "worse", good=False, seed=9)
        registered(other, "shop-model", worse)
        registered(other, "colour-tagger", colours["model"])
        fb.stop()
        fb.env["PRESCORE_MODEL_STORE"] = other.models.root
        fb.env["PRESCORE_MODEL_CACHE"] = other.models.cache_dir
        fb.start()
        time.sleep(1.2)  # the lookup's breaker, if the restart opened it
        second = _checked(lk, customers, 2, first["overlap_count"])
        overlap2, diff2 = _means(second, first)
        assert overlap2 < 1.0 and diff2 > 0.01, (overlap2, diff2)
        text = requests.get(lk.url + "/metrics", timeout=5).text
        assert metric_value(text, "prescore_dataset_shadow_min_overlap", dataset="shop") == 0.9
    finally:
        lk.stop()
        fb.stop()
