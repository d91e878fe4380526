"""Lookup on a miss of a recommendation: real lookup and fallback servers, real Redis,
real TensorFlow; and a fallback down (killed) or hung (stopped)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import requests

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore import keys
from prescore.settings import Settings
from tests import fallback_models as fm
from tests.fallback_lookup_helpers import (
    DEADLINE_S,
    current,
    fallback_calls,
    fallback_server,
    lookup_server,
    outcomes,
    publish_data,
)
from tests.fallback_procs import Server, metric_value

# the fixtures store_root, photos, fallback and lookup
pytest_plugins = ["tests.fallback_lookup_fixtures"]


def test_miss_is_answered_live_written_back_and_then_a_hit(
    lookup: Server, rclient: redis.Redis
) -> None:
    first = requests.get(lookup.url + "/v1/recommendations/u_known?k=3", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["source"] == "live" and doc["dataset_version"] == current(rclient)
    assert len(doc["items"]) == 3
    key = keys.value_key("reco", current(rclient), "u_known")
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


def test_new_user_with_features_is_scored_but_never_stored(
    lookup: Server, rclient: redis.Redis
) -> None:
    body = {"user_id": "newbie", "features": {"vec": [0.2] * fm.DENSE_FEATURES}, "k": 4}
    reply = requests.post(lookup.url + "/v1/recommendations:predict", json=body, timeout=5)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["source"] == "live" and len(doc["items"]) == 4
    # made from what the caller sent: nothing is written where other clients read
    assert rclient.get(keys.value_key("reco", current(rclient), "newbie")) is None
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


def test_a_client_cannot_change_what_another_client_reads(
    lookup: Server, rclient: redis.Redis
) -> None:
    """The attack: post chosen features (or candidates) under a victim's id, then see
    what the victim is served. The victim's own answer must not change."""
    victim = requests.get(lookup.url + "/v1/recommendations/u_known?k=3", timeout=5).json()
    assert victim["source"] == "live"
    stored = rclient.get(keys.value_key("reco", current(rclient), "u_known"))
    attack = {"user_id": "u_known", "features": {"vec": [9.0] * fm.DENSE_FEATURES}, "k": 3}
    requests.post(lookup.url + "/v1/recommendations:predict", json=attack, timeout=5)
    with_candidates = {**attack, "user_id": "victim-2", "candidates": ["h1"]}
    refused = requests.post(
        lookup.url + "/v1/recommendations:predict", json=with_candidates, timeout=5
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_body")
    again = requests.get(lookup.url + "/v1/recommendations/u_known?k=3", timeout=5).json()
    assert again["items"] == victim["items"]
    assert rclient.get(keys.value_key("reco", current(rclient), "u_known")) == stored
    assert rclient.get(keys.value_key("reco", current(rclient), "victim-2")) is None


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


def test_more_misses_than_the_fallback_takes_go_in_several_calls(
    redis_url: str, rclient: redis.Redis, settings: Settings, fallback: Server, tmp_path: Path
) -> None:
    publish_data(rclient, settings)
    small = lookup_server(
        redis_url, fallback.url, tmp_path / "lookup.log", PRESCORE_FALLBACK_MAX_INSTANCES="1"
    )
    try:
        before = fallback_calls(fallback, "/v1/predict/recommendations")
        body = {"user_ids": ["u_known", "u0", "stranger"], "k": 2}
        reply = requests.post(small.url + "/v1/recommendations:batchGet", json=body, timeout=5)
        doc = reply.json()
        assert reply.status_code == 200 and (doc["found"], doc["missing"]) == (2, 1)
        assert doc["results"][0]["source"] == "live"
        assert doc["results"][2]["error"] == "not_found"
        assert fallback_calls(fallback, "/v1/predict/recommendations") == before + 2
    finally:
        small.stop()


def test_a_later_call_failing_keeps_the_answers_of_the_earlier_ones(
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    store_root: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish_data(rclient, settings)
    fb = fallback_server(store_root, photos, tmp_path / "fb.log").start()
    env = {
        "REDIS_URL": redis_url,
        "PRESCORE_FALLBACK_URL": fb.url,
        "PRESCORE_FALLBACK_TIMEOUT_S": DEADLINE_S,
        "PRESCORE_FALLBACK_MAX_INSTANCES": "1",
    }
    app = create_app(LookupSettings.from_env(env))
    client = app.extensions["lookup"].on_miss
    real_post, calls = client._post, []

    def post(path: str, body: bytes, deadline: float) -> dict:
        calls.append(path)
        if len(calls) == 2:
            fb.kill()  # the fallback goes away between two calls of one batch
        return real_post(path, body, deadline)

    monkeypatch.setattr(client, "_post", post)
    try:
        body = {"user_ids": ["u0", "u_known", "stranger", "other"], "k": 2}
        reply = app.test_client().post("/v1/recommendations:batchGet", json=body)
        doc = reply.get_json()
        assert reply.status_code == 200, doc
        unavailable = "fallback_unavailable"
        assert outcomes(doc) == ["precomputed", "live", unavailable, unavailable]
        assert (doc["found"], doc["missing"]) == (2, 2) and len(calls) == 2  # none after it
        live_key = keys.value_key("reco", current(rclient), "u_known")
        assert rclient.get(live_key) is not None  # the earlier answer was written back too
    finally:
        fb.stop()


def test_fallback_killed_gives_fast_errors_breaker_opens_then_recovers(
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    store_root: str,
    photos: Path,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    fb = fallback_server(store_root, photos, tmp_path / "fb.log").start()
    lk = lookup_server(
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
        assert outcomes(doc) == ["precomputed", unavailable, "precomputed", unavailable]
        assert (doc["found"], doc["missing"]) == (2, 2)
        assert len(doc["results"][0]["items"]) == 2 and doc["results"][1]["user_id"] == "gone1"
        body = {"image_ids": ["p-pool", "img-hit"]}
        reply = requests.post(lk.url + "/v1/image-tags:batchGet", json=body, timeout=5)
        assert reply.status_code == 200, reply.text
        assert outcomes(reply.json()) == ["fallback_unavailable", "precomputed"]
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
        assert outcomes(doc) == ["precomputed", "fallback_unavailable"]
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


def test_live_write_backs_are_bounded_per_version(
    redis_url: str, rclient: redis.Redis, settings: Settings, fallback: Server, tmp_path: Path
) -> None:
    publish_data(rclient, settings)
    lk = lookup_server(redis_url, fallback.url, tmp_path / "lookup.log", PRESCORE_LIVE_MAX_KEYS="1")
    try:
        first = requests.get(lk.url + "/v1/image-tags/p-pool", timeout=5)
        second = requests.get(lk.url + "/v1/image-tags/p-sea-bed", timeout=5)
        assert [first.json()["source"], second.json()["source"]] == ["live", "live"]
        version = current(rclient, "tags")
        assert rclient.get(keys.value_key("tags", version, "p-pool")) is not None
        assert rclient.get(keys.value_key("tags", version, "p-sea-bed")) is None  # over bound
        assert rclient.get(keys.value_key("tags", version, "img-hit")) is not None
    finally:
        lk.stop()


def test_error_bodies_carry_no_internals(
    redis_url: str, rclient: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    publish_data(rclient, settings)
    lk = lookup_server(redis_url, "http://127.0.0.1:1", tmp_path / "lookup.log")  # nothing there
    try:
        reply = requests.get(lk.url + "/v1/recommendations/nobody", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (503, "fallback_unavailable")
        assert "Errno" not in reply.text and "refused" not in reply.text.lower()
    finally:
        lk.stop()
