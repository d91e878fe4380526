"""Lookup on a miss: real lookup and fallback servers, real Redis, real TensorFlow, and a
real photo folder for image tags."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from prescore import keys
from prescore.settings import Settings
from tests import fallback_models as fm
from tests.fallback_procs import Server, metric_value
from tests.lookup_helpers import publish, publish_users, tags_payload

# The deadline in these tests is above the 100 ms default: the test machine is shared and
# small, and a test must not fail on a slow moment. The bench measures real latencies.
DEADLINE_S = "0.5"
PREDICT = "fallback_requests"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("lookup-fallback-store")
    root = (tmp / "models").as_uri()
    fm.save_models(root, tmp, quantize=False)
    return root


PHOTOS = {"p-pool": {"pool"}, "p-sea-bed": {"sea_view", "bed"}}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fallback's photo folder, and beside it a photo that is not in it."""
    root = tmp_path_factory.mktemp("photo-store")
    folder = root / "photos"
    folder.mkdir()
    for image_id, tags in PHOTOS.items():
        (folder / f"{image_id}.jpg").write_bytes(fm.jpeg(tags))
    (root / "secret.jpg").write_bytes(fm.jpeg({"pool"}))
    return folder


def _fallback(store_root: str, photos: Path, log: Path) -> Server:
    env = {
        "PRESCORE_MODEL_STORE": store_root,
        "FALLBACK_RECO_RUNTIME": "tf",
        "FALLBACK_TAGGER_RUNTIME": "tf",
        "FALLBACK_MODELS": "reco,tagger",
        "FALLBACK_PHOTOS": photos.as_uri(),
    }
    return Server("fallback.serve", env, log)


@pytest.fixture(scope="module")
def fallback(
    store_root: str, photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "fallback.log"
    srv = _fallback(store_root, photos, log).start()
    yield srv
    srv.stop()


def _lookup(redis_url: str, fallback_url: str, log: Path, **extra: str) -> Server:
    env = {
        "REDIS_URL": redis_url,
        "PRESCORE_FALLBACK_URL": fallback_url,
        "PRESCORE_FALLBACK_TIMEOUT_S": DEADLINE_S,
        "LOOKUP_WORKERS": "1",
        "LOOKUP_THREADS": "4",
        "LOOKUP_POINTER_CACHE_S": "0",
        **extra,
    }
    return Server("lookup.serve", env, log).start()


@pytest.fixture()
def lookup(
    redis_url: str, rclient: redis.Redis, settings: Settings, fallback: Server, tmp_path: Path
) -> Iterator[Server]:
    _publish(rclient, settings)
    srv = _lookup(redis_url, fallback.url, tmp_path / "lookup.log")
    yield srv
    srv.stop()


def _publish(rclient: redis.Redis, settings: Settings) -> None:
    """Users u0..u2 and the tags of photo img-hit, as the bulk jobs would publish them."""
    publish_users(rclient, settings, 3)
    rows = [("img-hit", tags_payload("img-hit", [("pool", 0.9)], "t1"))]
    publish(rclient, settings, "tags", rows, "t1")


def _current(rclient: redis.Redis, dataset: str = "reco") -> str:
    return rclient.get(keys.pointer_key(dataset)).decode()  # type: ignore[union-attr]


def _hits(lookup: Server, dataset: str) -> float:
    text = requests.get(lookup.url + "/metrics", timeout=5).text
    return metric_value(text, "lookup_keys_total", dataset=dataset, result="hit")


def _fallback_calls(fallback: Server, route: str) -> float:
    text = requests.get(fallback.url + "/metrics", timeout=5).text
    return metric_value(text, "fallback_requests_total", route=route)


def _outcomes(doc: dict[str, Any]) -> list[str]:
    return [r.get("source", r.get("error")) for r in doc["results"]]


def test_miss_is_answered_live_written_back_and_then_a_hit(
    lookup: Server, rclient: redis.Redis
) -> None:
    first = requests.get(lookup.url + "/v1/recommendations/u_known?k=3", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["source"] == "live" and doc["dataset_version"] == _current(rclient)
    assert len(doc["items"]) == 3
    key = keys.value_key("reco", _current(rclient), "u_known")
    assert 0 < rclient.ttl(key) <= 86_400  # written back under the current version, with TTL
    hits0 = metric_value(
        requests.get(lookup.url + "/metrics", timeout=5).text,
        "lookup_keys_total",
        dataset="reco",
        result="hit",
    )
    again = requests.get(lookup.url + "/v1/recommendations/u_known?k=3", timeout=5)
    assert again.json()["items"] == doc["items"]
    hits = metric_value(
        requests.get(lookup.url + "/metrics", timeout=5).text,
        "lookup_keys_total",
        dataset="reco",
        result="hit",
    )
    assert hits == hits0 + 1  # the second request was served from Redis


def test_openapi_documents_predict(lookup: Server) -> None:
    spec = requests.get(lookup.url + "/openapi.json", timeout=5).json()
    post = spec["paths"]["/v1/recommendations:predict"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "user_id",
        "features",
    ]
    assert {"fallback_timeout", "fallback_unavailable"} <= set(
        spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    )


def test_unknown_user_without_features_is_404(lookup: Server) -> None:
    reply = requests.get(lookup.url + "/v1/recommendations/stranger", timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (404, "not_found")


def test_new_user_with_features_is_scored_and_stored(lookup: Server, rclient: redis.Redis) -> None:
    body = {"user_id": "newbie", "features": {"vec": [0.2] * fm.DENSE_FEATURES}, "k": 4}
    reply = requests.post(lookup.url + "/v1/recommendations:predict", json=body, timeout=5)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["source"] == "live" and len(doc["items"]) == 4
    stored = requests.get(lookup.url + "/v1/recommendations/newbie?k=4", timeout=5).json()
    assert stored["items"] == doc["items"]
    known = requests.post(
        lookup.url + "/v1/recommendations:predict",
        json={"user_id": "u0", "features": {"vec": [1.0] * 12}},
        timeout=5,
    ).json()
    assert known["source"] == "precomputed"  # a known user is a hit, not rescored
    bad = requests.post(
        lookup.url + "/v1/recommendations:predict", json={"user_id": "x"}, timeout=5
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_features")
    unknown_hotel = requests.post(
        lookup.url + "/v1/recommendations:predict",
        json={"user_id": "y", "features": {"vec": [1.0] * 12}, "candidates": ["no such!"]},
        timeout=5,
    )  # refused by the fallback: the caller's 400, passed through
    assert (unknown_hotel.status_code, unknown_hotel.json()["error"]) == (400, "invalid_id")


def test_batch_sends_all_misses_in_one_call(lookup: Server, fallback: Server) -> None:
    def calls() -> float:
        text = requests.get(fallback.url + "/metrics", timeout=5).text
        return metric_value(text, "fallback_requests_total", route="/v1/predict/recommendations")

    before = calls()
    body = {"user_ids": ["u0", "u_known", "stranger", "u1"], "k": 2}
    reply = requests.post(lookup.url + "/v1/recommendations:batchGet", json=body, timeout=5)
    doc = reply.json()
    assert reply.status_code == 200 and (doc["found"], doc["missing"]) == (3, 1)
    assert doc["results"][1]["source"] == "live"
    assert doc["results"][2]["error"] == "not_found"
    assert calls() == before + 1


def test_fallback_killed_gives_fast_errors_breaker_opens_then_recovers(
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    store_root: str,
    photos: Path,
    tmp_path: Path,
) -> None:
    _publish(rclient, settings)
    fb = _fallback(store_root, photos, tmp_path / "fb.log").start()
    lk = _lookup(
        redis_url,
        fb.url,
        tmp_path / "lookup.log",
        PRESCORE_FALLBACK_BREAKER_FAILS="3",
        PRESCORE_FALLBACK_BREAKER_RESET_S="1",
    )
    try:
        assert requests.get(lk.url + "/v1/recommendations/m0", timeout=5).status_code == 404
        fb.kill()
        # a batch serves its hits; each miss says live inference is unavailable
        body = {"user_ids": ["u0", "gone1", "u1", "gone1"], "k": 2}
        reply = requests.post(lk.url + "/v1/recommendations:batchGet", json=body, timeout=5)
        doc = reply.json()
        assert reply.status_code == 200, reply.text
        unavailable = "fallback_unavailable"
        assert _outcomes(doc) == ["precomputed", unavailable, "precomputed", unavailable]
        assert (doc["found"], doc["missing"]) == (2, 2)
        assert len(doc["results"][0]["items"]) == 2 and doc["results"][1]["user_id"] == "gone1"
        body = {"image_ids": ["p-pool", "img-hit"]}
        reply = requests.post(lk.url + "/v1/image-tags:batchGet", json=body, timeout=5)
        assert reply.status_code == 200, reply.text
        assert _outcomes(reply.json()) == ["fallback_unavailable", "precomputed"]
        single = requests.get(lk.url + "/v1/image-tags/p-pool", timeout=5)
        assert (single.status_code, single.json()["error"]) == (503, "fallback_unavailable")
        codes, messages = [], []
        for i in range(8):
            started = time.monotonic()
            reply = requests.get(lk.url + f"/v1/recommendations/miss{i}", timeout=5)
            assert time.monotonic() - started < 1.0  # well within a second, never hanging
            codes.append((reply.status_code, reply.json()["error"]))
            messages.append(reply.json()["message"])
            hit = requests.get(lk.url + "/v1/recommendations/u0", timeout=5)
            assert hit.status_code == 200  # hits never depend on the fallback
        assert set(codes) == {(503, "fallback_unavailable")}
        assert "circuit open" in messages[-1]  # the breaker opened
        body = {"user_ids": ["u2", "gone2"]}
        doc = requests.post(lk.url + "/v1/recommendations:batchGet", json=body, timeout=5).json()
        assert _outcomes(doc) == ["precomputed", "fallback_unavailable"]
        assert "circuit open" in doc["results"][1]["message"]
        fb.start()
        time.sleep(1.2)  # the breaker's reset timeout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = requests.get(lk.url + "/v1/recommendations/u_known", timeout=5)
            if reply.status_code == 200:
                break
            time.sleep(0.3)
        assert reply.status_code == 200 and reply.json()["source"] == "live"
    finally:
        lk.stop()
        fb.stop()


# --- image tags: a miss is tagged live from the fallback's photo store ---------------------


def test_tags_miss_is_tagged_live_from_the_photo_store_then_a_hit(
    lookup: Server, rclient: redis.Redis, store_root: str, photos: Path
) -> None:
    first = requests.get(lookup.url + "/v1/image-tags/p-sea-bed", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert (doc["source"], doc["image_id"]) == ("live", "p-sea-bed")
    assert doc["dataset_version"] == _current(rclient, "tags")
    expected = fm.model_tags(store_root, (photos / "p-sea-bed.jpg").read_bytes())
    assert {t["tag"] for t in doc["tags"]} == set(expected) == {"sea_view", "bed"}
    for tag in doc["tags"]:
        assert tag["score"] == pytest.approx(expected[tag["tag"]], abs=1e-4)
    key = keys.value_key("tags", _current(rclient, "tags"), "p-sea-bed")
    assert 0 < rclient.ttl(key) <= 86_400  # written back under the current tags version
    hits0 = _hits(lookup, "tags")
    again = requests.get(lookup.url + "/v1/image-tags/p-sea-bed?limit=1", timeout=5).json()
    assert again["tags"] == doc["tags"][:1]
    assert _hits(lookup, "tags") == hits0 + 1  # the second request was served from Redis


def test_tags_photo_not_in_the_store_is_404(lookup: Server, rclient: redis.Redis) -> None:
    for image_id in ("p-absent", "secret"):  # secret.jpg lies outside the photo folder
        reply = requests.get(lookup.url + f"/v1/image-tags/{image_id}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (404, "not_found")
        assert not rclient.exists(keys.value_key("tags", _current(rclient, "tags"), image_id))


def test_tags_batch_mixes_hits_live_answers_and_misses_in_one_call(
    lookup: Server, fallback: Server, rclient: redis.Redis
) -> None:
    route = "/v1/predict/image-tags"
    before = _fallback_calls(fallback, route)
    ids = ["img-hit", "p-pool", "p-absent", "p-sea-bed", "img-hit", "p-pool"]
    reply = requests.post(
        lookup.url + "/v1/image-tags:batchGet", json={"image_ids": ids}, timeout=5
    )
    doc = reply.json()
    assert reply.status_code == 200, reply.text
    assert _outcomes(doc) == ["precomputed", "live", "not_found", "live", "precomputed", "live"]
    assert (doc["found"], doc["missing"]) == (5, 1)
    assert {t["tag"] for t in doc["results"][1]["tags"]} == {"pool"}
    assert _fallback_calls(fallback, route) == before + 1  # every miss in ONE call
    version = _current(rclient, "tags")
    for image_id in ("p-pool", "p-sea-bed"):
        assert 0 < rclient.ttl(keys.value_key("tags", version, image_id)) <= 86_400


def test_tags_ids_that_could_leave_the_photo_folder_are_refused(
    lookup: Server, fallback: Server
) -> None:
    route = "/v1/predict/image-tags"
    before = _fallback_calls(fallback, route)
    for bad in (".secret", "..secret", "-x"):
        reply = requests.get(lookup.url + f"/v1/image-tags/{bad}", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id"), bad
    body = {"image_ids": ["p-pool", "../secret"]}
    reply = requests.post(lookup.url + "/v1/image-tags:batchGet", json=body, timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id")
    assert _fallback_calls(fallback, route) == before  # refused before the fallback is asked


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
        assert _outcomes(doc) == ["precomputed", "fallback_timeout", "precomputed"]
        assert (doc["found"], doc["missing"]) == (2, 1)
        body = {"image_ids": ["p-pool", "img-hit"]}
        reply = requests.post(lookup.url + "/v1/image-tags:batchGet", json=body, timeout=5)
        assert _outcomes(reply.json()) == ["fallback_timeout", "precomputed"]
        single = requests.get(lookup.url + "/v1/recommendations/slow2", timeout=5)
        assert (single.status_code, single.json()["error"]) == (504, "fallback_timeout")
    finally:
        fallback.resume()
