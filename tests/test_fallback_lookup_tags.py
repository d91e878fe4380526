"""Lookup on a miss of an image's labels (the colours): the fallback reads the image by key
from the dataset's folder and labels it with a real TensorFlow model; the lookup writes
the answer back. And a slow (hung) fallback, for images and rankings alike."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import redis
import requests

from tests import fallback_domains as fd
from tests.fallback_lookup_helpers import current, fallback_calls, hits, outcomes, stored
from tests.fallback_procs import Server

# the fixtures world, fallback and lookup
pytest_plugins = ["tests.fallback_lookup_fixtures"]


def _expected(colours: dict[str, Any], world: dict[str, Any], key: str) -> dict[str, float]:
    raw = (world["images"] / f"{key}.jpg").read_bytes()
    return {c: s for c, s in fd.colour_scores(colours["model"], raw).items() if s >= 0.5}


def test_a_miss_is_labelled_live_from_the_image_folder_then_a_hit(
    lookup: Server, rclient: redis.Redis, colours: dict[str, Any], world: dict[str, Any]
) -> None:
    first = requests.get(lookup.url + "/v1/datasets/colours/img-1", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert (doc["source"], doc["key"], doc["model_version"]) == ("live", "img-1", "1")
    assert doc["dataset_version"] == current(rclient, "colours")
    expected = _expected(colours, world, "img-1")
    assert {c["colour"] for c in doc["colours"]} == set(expected) == set(colours["truth"]["img-1"])
    for entry in doc["colours"]:
        assert entry["score"] == pytest.approx(expected[entry["colour"]], abs=1e-4)
    key = f"ps:colours:{current(rclient, 'colours')}:img-1"
    assert 0 < rclient.ttl(key) <= 86_400  # written back under the current colours version
    hits0 = hits(lookup, "colours", "written_back")
    again = requests.get(lookup.url + "/v1/datasets/colours/img-1?limit=1", timeout=5).json()
    assert again["source"] == "written_back" and again["colours"] == doc["colours"][:1]
    assert (
        hits(lookup, "colours", "written_back") == hits0 + 1
    )  # the second request was served from Redis


def test_an_image_the_folder_lacks_is_404_and_one_it_cannot_decode_422(
    lookup: Server, fallback: Server, rclient: redis.Redis
) -> None:
    # secret.jpg lies outside the image folder; p-junk.jpg is in it but is no image
    for key in ("img-absent", "secret"):
        reply = requests.get(lookup.url + f"/v1/datasets/colours/{key}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (404, "not_found"), key
        assert stored(rclient, "colours", key) is None
    # the key exists: not a 404, but why its input cannot be scored
    junk = requests.get(lookup.url + "/v1/datasets/colours/p-junk", timeout=5)
    assert (junk.status_code, junk.json()["error"]) == (422, "unscorable_input")
    assert "bad_image" in junk.json()["message"]
    asked = fallback_calls(fallback)  # remembered as long as a miss is: not asked again
    again = requests.get(lookup.url + "/v1/datasets/colours/p-junk", timeout=5)
    assert (again.status_code, again.json()["error"]) == (422, "unscorable_input")
    assert fallback_calls(fallback) == asked
    body = {"keys": ["img-absent", "p-junk"]}
    batch = requests.post(lookup.url + "/v1/datasets/colours:batchGet", json=body, timeout=5)
    assert batch.status_code == 200
    assert [r["error"] for r in batch.json()["results"]] == ["not_found", "unscorable_input"]
    assert stored(rclient, "colours", "p-junk") is None


def test_a_batch_mixes_hits_live_answers_and_misses_in_one_call(
    lookup: Server, fallback: Server, rclient: redis.Redis
) -> None:
    before = fallback_calls(fallback)
    ids = ["img-hit", "img-0", "img-absent", "img-2", "img-hit", "img-0"]
    reply = requests.post(
        lookup.url + "/v1/datasets/colours:batchGet", json={"keys": ids}, timeout=5
    )
    doc = reply.json()
    assert reply.status_code == 200, reply.text
    assert outcomes(doc) == ["precomputed", "live", "not_found", "live", "precomputed", "live"]
    assert (doc["found"], doc["missing"]) == (5, 1)
    assert [r["key"] for r in doc["results"]] == ids
    assert doc["results"][0]["colours"] == [{"colour": "red", "score": 0.9}]
    assert fallback_calls(fallback) == before + 1  # every miss in ONE call
    for key in ("img-0", "img-2"):
        assert json.loads(stored(rclient, "colours", key) or b"{}")["key"] == key
        ttl = rclient.ttl(f"ps:colours:{current(rclient, 'colours')}:{key}")
        assert 0 < ttl <= 86_400


def test_keys_that_could_leave_the_image_folder_are_refused(
    lookup: Server, fallback: Server
) -> None:
    before = fallback_calls(fallback)
    for bad in (".secret", "..secret", "a%2Fb", "x" * 241):
        reply = requests.get(lookup.url + f"/v1/datasets/colours/{bad}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id"), bad
    body = {"keys": ["img-0", "../secret"]}
    reply = requests.post(lookup.url + "/v1/datasets/colours:batchGet", json=body, timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id")
    assert fallback_calls(fallback) == before  # refused before the fallback is asked


def test_features_sent_for_an_image_are_refused_not_ignored(
    lookup: Server, rclient: redis.Redis
) -> None:
    body = {"key": "img-3", "features": {"red": 1}}
    reply = requests.post(lookup.url + "/v1/datasets/colours:predict", json=body, timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_features"), reply.text
    assert stored(rclient, "colours", "img-3") is None


def test_an_image_posted_to_predict_is_labelled_live_and_never_written_back(
    lookup: Server, rclient: redis.Redis, colours: dict[str, Any], world: dict[str, Any]
) -> None:
    raw = (world["images"] / "img-5.jpg").read_bytes()
    body = {"key": "posted-5", "b64": base64.b64encode(raw).decode()}
    reply = requests.post(lookup.url + "/v1/datasets/colours:predict", json=body, timeout=5)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["source"], doc["key"]) == ("live", "posted-5")
    expected = _expected(colours, world, "img-5")
    assert {c["colour"] for c in doc["colours"]} == set(expected)
    assert stored(rclient, "colours", "posted-5") is None  # what a client sent: never stored
    for bad in ({"key": "x", "b64": "not base64!"}, {"key": "x", "b64": ""}, {"key": "x"}):
        reply = requests.post(lookup.url + "/v1/datasets/colours:predict", json=bad, timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (400, "bad_image"), reply.text


def test_a_slow_fallback_batch_serves_hits_with_per_item_timeouts(
    lookup: Server, fallback: Server
) -> None:
    fallback.pause()
    try:
        started = time.monotonic()
        body = {"keys": ["c0", "c20", "c1"]}
        reply = requests.post(lookup.url + "/v1/picks:batchGet", json=body, timeout=5)
        assert time.monotonic() - started < 2.0  # the deadline (0.5 s), not a hang
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        assert outcomes(doc) == ["precomputed", "fallback_timeout", "precomputed"]
        assert (doc["found"], doc["missing"]) == (2, 1)
        body = {"keys": ["img-4", "img-hit"]}
        reply = requests.post(lookup.url + "/v1/datasets/colours:batchGet", json=body, timeout=5)
        assert outcomes(reply.json()) == ["fallback_timeout", "precomputed"]
        single = requests.get(lookup.url + "/v1/picks/c21", timeout=5)
        assert (single.status_code, single.json()["error"]) == (504, "fallback_timeout")
        hit = requests.get(lookup.url + "/v1/datasets/colours/img-hit", timeout=5)
        assert hit.status_code == 200 and hit.json()["source"] == "precomputed"
    finally:
        fallback.resume()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # answered again once the fallback is back
        reply = requests.get(lookup.url + "/v1/datasets/colours/img-5", timeout=5)
        if reply.status_code == 200:
            break
        time.sleep(0.3)
    assert reply.status_code == 200 and reply.json()["source"] == "live"
