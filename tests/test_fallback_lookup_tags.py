"""Lookup on a miss of an image's tags: the fallback reads the photo by id from its photo
folder and tags it with a real TensorFlow model; the lookup writes the answer back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import requests

from prescore import keys
from tests import fallback_models as fm
from tests.fallback_lookup_helpers import (
    current,
    fallback_calls,
    hits,
    outcomes,
)
from tests.fallback_procs import Server

# the fixtures store_root, photos, fallback and lookup
pytest_plugins = ["tests.fallback_lookup_fixtures"]


def test_tags_miss_is_tagged_live_from_the_photo_store_then_a_hit(
    lookup: Server, rclient: redis.Redis, store_root: str, photos: Path
) -> None:
    first = requests.get(lookup.url + "/v1/image-tags/p-sea-bed", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert (doc["source"], doc["image_id"]) == ("live", "p-sea-bed")
    assert doc["dataset_version"] == current(rclient, "tags")
    expected = fm.model_tags(store_root, (photos / "p-sea-bed.jpg").read_bytes())
    assert {t["tag"] for t in doc["tags"]} == set(expected) == {"sea_view", "bed"}
    for tag in doc["tags"]:
        assert tag["score"] == pytest.approx(expected[tag["tag"]], abs=1e-4)
    key = keys.value_key("tags", current(rclient, "tags"), "p-sea-bed")
    assert 0 < rclient.ttl(key) <= 86_400  # written back under the current tags version
    hits0 = hits(lookup, "tags")
    again = requests.get(lookup.url + "/v1/image-tags/p-sea-bed?limit=1", timeout=5).json()
    assert again["tags"] == doc["tags"][:1]
    assert hits(lookup, "tags") == hits0 + 1  # the second request was served from Redis


def test_tags_photo_not_in_the_store_is_404(lookup: Server, rclient: redis.Redis) -> None:
    for image_id in ("p-absent", "secret"):  # secret.jpg lies outside the photo folder
        reply = requests.get(lookup.url + f"/v1/image-tags/{image_id}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (404, "not_found")
        assert not rclient.exists(keys.value_key("tags", current(rclient, "tags"), image_id))


def test_tags_batch_mixes_hits_live_answers_and_misses_in_one_call(
    lookup: Server, fallback: Server, rclient: redis.Redis
) -> None:
    route = "/v1/predict/image-tags"
    before = fallback_calls(fallback, route)
    ids = ["img-hit", "p-pool", "p-absent", "p-sea-bed", "img-hit", "p-pool"]
    reply = requests.post(
        lookup.url + "/v1/image-tags:batchGet", json={"image_ids": ids}, timeout=5
    )
    doc = reply.json()
    assert reply.status_code == 200, reply.text
    assert outcomes(doc) == ["precomputed", "live", "not_found", "live", "precomputed", "live"]
    assert (doc["found"], doc["missing"]) == (5, 1)
    assert {t["tag"] for t in doc["results"][1]["tags"]} == {"pool"}
    assert fallback_calls(fallback, route) == before + 1  # every miss in ONE call
    version = current(rclient, "tags")
    for image_id in ("p-pool", "p-sea-bed"):
        assert 0 < rclient.ttl(keys.value_key("tags", version, image_id)) <= 86_400


def test_tags_ids_that_could_leave_the_photo_folder_are_refused(
    lookup: Server, fallback: Server
) -> None:
    route = "/v1/predict/image-tags"
    before = fallback_calls(fallback, route)
    for bad in (".secret", "..secret", "-x"):
        reply = requests.get(lookup.url + f"/v1/image-tags/{bad}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id"), bad
    body = {"image_ids": ["p-pool", "../secret"]}
    reply = requests.post(lookup.url + "/v1/image-tags:batchGet", json=body, timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id")
    assert fallback_calls(fallback, route) == before  # refused before the fallback is asked


def test_slow_fallback_batch_serves_hits_with_per_item_timeouts(
    lookup: Server, fallback: Server
) -> None:
    fallback.pause()
    try:
        started = time.monotonic()
        body = {"user_ids": ["u0", "slow1", "u1"]}
        reply = requests.post(lookup.url + "/v1/recommendations:batchGet", json=body, timeout=5)
        assert time.monotonic() - started < 2.0  # the deadline (0.5 s), not a hang
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        assert outcomes(doc) == ["precomputed", "fallback_timeout", "precomputed"]
        assert (doc["found"], doc["missing"]) == (2, 1)
        body = {"image_ids": ["p-pool", "img-hit"]}
        reply = requests.post(lookup.url + "/v1/image-tags:batchGet", json=body, timeout=5)
        assert outcomes(reply.json()) == ["fallback_timeout", "precomputed"]
        single = requests.get(lookup.url + "/v1/recommendations/slow2", timeout=5)
        assert (single.status_code, single.json()["error"]) == (504, "fallback_timeout")
    finally:
        fallback.resume()
