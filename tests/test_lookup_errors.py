"""Bad input never gets a 500: every refusal is 4xx JSON with a stable code. Store outages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.settings import Settings
from tests.lookup_helpers import colours_payload, publish, publish_customers, served_settings

LONG = "u" * 1025  # a key is at most 1024 bytes of UTF-8
MAX_K = LookupSettings.max_k  # the default bound of k and limit


@pytest.fixture()
def core(settings: Settings, tmp_path: Path) -> Settings:
    return served_settings(settings, tmp_path / "var")


@pytest.fixture()
def api(core: Settings, rclient) -> Flask:
    publish_customers(rclient, core, customers=3)
    publish(rclient, core, "colours", [("i1", colours_payload("i1", [("blue", 0.9)], "t1"))], "t1")
    return create_app(LookupSettings(core=core, max_batch_ids=20, max_body_bytes=4096))


@pytest.fixture()
def client(api) -> FlaskClient:
    return api.test_client()


def _error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = json.loads(response.data)
    assert body["error"] == code, body
    assert body["message"]


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/v1/picks/bad%0Aid", 400, "invalid_id"),  # a control character
        ("/v1/picks/u%7F", 400, "invalid_id"),
        ("/v1/picks/a/b%0A", 400, "invalid_id"),  # a key with a "/", through Flask
        ("/v1/picks/u%C2%85", 400, "invalid_id"),  # U+0085, a C1 control
        ("/v1/picks/u%5Cx", 400, "invalid_id"),  # shop has contexts: '\' escapes
        (f"/v1/picks/{LONG}", 400, "invalid_id"),
        (f"/v1/picks/{'%C3%A9' * 513}", 400, "invalid_id"),  # 1026 bytes
        ("/v1/image-colours/img%00", 400, "invalid_id"),
        ("/v1/picks/", 404, "no_route"),
        ("/v1/picks/c1%7Cweekend", 400, "invalid_id"),  # no context smuggled in
        ("/v1/picks/c1?k=0", 400, "invalid_k"),
        (f"/v1/picks/c1?k={MAX_K + 1}", 400, "invalid_k"),
        ("/v1/picks/c1?k=-1", 400, "invalid_k"),
        ("/v1/picks/c1?k=abc", 400, "invalid_k"),
        ("/v1/picks/c1?k=", 400, "invalid_k"),
        ("/v1/picks/c1?k=2.5", 400, "invalid_k"),
        ("/v1/picks/c1?k=99999999999999999999", 400, "invalid_k"),
        ("/v1/picks/c1?context=a%09b", 400, "invalid_id"),
        ("/v1/picks/c1?context=", 400, "invalid_id"),
        (f"/v1/picks/c1?context={LONG}", 400, "invalid_id"),
        ("/v1/picks/c1?limit=0", 400, "invalid_limit"),
        ("/v1/picks/c1?min_score=abc", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?context=weekend", 400, "invalid_id"),  # colours has no contexts
        ("/v1/image-colours/i1?k=0", 400, "invalid_k"),
        ("/v1/image-colours/i1?min_score=abc", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?min_score=nan", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?min_score=inf", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?min_score=1e400", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?min_score=", 400, "invalid_min_score"),
        ("/v1/image-colours/i1?limit=0", 400, "invalid_limit"),
        (f"/v1/image-colours/i1?limit={MAX_K + 1}", 400, "invalid_limit"),
        ("/v1/image-colours/i1?limit=x", 400, "invalid_limit"),
        ("/nowhere", 404, "no_route"),
        ("/v1/picks:batchGet", 405, "method_not_allowed"),
        ("/v1/image-colours:batchGet", 405, "method_not_allowed"),
        ("/v1/datasets/shop/bad%00id", 400, "invalid_id"),
        ("/v1/datasets/shop/c1?k=0", 400, "invalid_k"),
        ("/v1/datasets/colours/i1?min_score=nan", 400, "invalid_min_score"),
        ("/v1/datasets/colours/i1?context=x", 400, "invalid_id"),
        ("/v1/datasets/shop/", 404, "no_route"),
        ("/v1/datasets/nope", 404, "unknown_dataset"),  # /v1/datasets/shop describes it
        ("/v1/datasets/nope/c1", 404, "unknown_dataset"),
        ("/v1/datasets/shop:batchGet", 405, "method_not_allowed"),
        ("/v1/datasets/shop:predict", 404, "no_route"),  # no live inference configured
    ],
)
def test_bad_get(client, url, status, code):
    _error(client.get(url), status, code)


def test_wrong_methods(client):
    _error(client.post("/v1/picks/c1", json={}), 405, "method_not_allowed")
    _error(client.delete("/v1/image-colours/i1"), 405, "method_not_allowed")
    _error(client.put("/healthz"), 405, "method_not_allowed")
    _error(client.post("/nowhere", json={}), 404, "no_route")
    assert client.post("/nowhere").get_json()["message"] == "no route POST /nowhere"
    assert client.put("/healthz").get_json()["message"] == "PUT is not allowed on /healthz"
    _error(client.post("/v1/datasets/shop/c1", json={}), 405, "method_not_allowed")
    _error(client.put("/v1/datasets/shop:batchGet", json={}), 405, "method_not_allowed")
    _error(client.post("/v1/datasets/nope:batchGet", json={"keys": ["c1"]}), 404, "unknown_dataset")


BATCH = "/v1/picks:batchGet"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "malformed_json"),
        ("", 400, "malformed_json"),
        ('"c1"', 400, "invalid_body"),
        ('["c1"]', 400, "invalid_body"),
        ('{"customer_ids": ["c1"], "customerIds": []}', 400, "invalid_body"),
        ("{}", 400, "invalid_ids"),
        ('{"customer_ids": "c1"}', 400, "invalid_ids"),
        ('{"customer_ids": []}', 400, "invalid_ids"),
        ('{"customer_ids": {"c1": 1}}', 400, "invalid_ids"),
        ('{"customer_ids": [1.5]}', 400, "invalid_id"),  # an integer is a key; a float is not
        ('{"customer_ids": [true]}', 400, "invalid_id"),
        ('{"customer_ids": [null]}', 400, "invalid_id"),
        ('{"customer_ids": ["c1", ""]}', 400, "invalid_id"),
        ('{"customer_ids": ["bad\\nid"]}', 400, "invalid_id"),
        ('{"customer_ids": ["bad\\u0000id"]}', 400, "invalid_id"),
        ('{"customer_ids": ["\\ud800"]}', 400, "invalid_id"),  # a lone surrogate: no UTF-8
        (json.dumps({"customer_ids": [LONG]}), 400, "invalid_id"),
        (json.dumps({"customer_ids": [f"c{i}" for i in range(21)]}), 413, "too_many_ids"),
        ('{"customer_ids": ["c1"], "k": 0}', 400, "invalid_k"),
        ('{"customer_ids": ["c1"], "k": true}', 400, "invalid_k"),
        ('{"customer_ids": ["c1"], "k": 2.5}', 400, "invalid_k"),  # 2.0 is an integer (JSON Schema)
        ('{"customer_ids": ["c1"], "k": null}', 200, ""),
        (json.dumps({"customer_ids": ["c1"], "k": MAX_K + 1}), 400, "invalid_k"),
        ('{"customer_ids": ["c1"], "limit": 0}', 400, "invalid_limit"),
        ('{"customer_ids": ["c1"], "limit": 2}', 200, ""),
        ('{"customer_ids": ["c1"], "min_score": "x"}', 400, "invalid_min_score"),
        ('{"customer_ids": ["c1"], "min_score": 0.5}', 200, ""),
        ('{"customer_ids": ["c1"], "context": 5}', 400, "invalid_id"),
        ('{"customer_ids": ["c1"], "context": "no\\tway"}', 400, "invalid_id"),
        ('{"customer_ids": ["c1"], "context": "weekend"}', 200, ""),
        ('{"keys": ["c1"]}', 200, ""),
        ('{"keys": ["c1"], "customer_ids": ["c1"]}', 400, "invalid_ids"),
        ('{"keys": []}', 400, "invalid_ids"),
        ('{"keys": ["c1|weekend"]}', 400, "invalid_id"),
        ('{"image_ids": ["c1"]}', 400, "invalid_body"),
    ],
)
def test_bad_picks_batch(client, body, status, code):
    r = client.post(BATCH, data=body, content_type="application/json")
    if status == 200:
        assert r.status_code == 200
    else:
        _error(r, status, code)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"customer_ids": ["i1"]}, 400, "invalid_body"),
        ({"image_ids": ["i1"], "context": "weekend"}, 400, "invalid_body"),  # no contexts
        ({"image_ids": ["i1"], "k": 0}, 400, "invalid_k"),
        ({"keys": ["i1"], "image_ids": ["i1"]}, 400, "invalid_ids"),
        ({"image_ids": ["i1"], "min_score": "x"}, 400, "invalid_min_score"),
        ({"image_ids": ["i1"], "min_score": False}, 400, "invalid_min_score"),
        ({"image_ids": ["i1"], "limit": 0}, 400, "invalid_limit"),
        ({"image_ids": ["i1"], "limit": "many"}, 400, "invalid_limit"),
    ],
)
def test_bad_colours_batch(client, body, status, code):
    _error(client.post("/v1/image-colours:batchGet", json=body), status, code)
    _error(client.post("/v1/datasets/colours:batchGet", json=body), status, code)


def test_k_limit_and_min_score_are_taken_by_every_dataset(client):
    """What colours refused before (k) is now taken: every list is cut the same way."""
    for url, body in [
        ("/v1/image-colours:batchGet", {"image_ids": ["i1"], "k": 3}),
        ("/v1/image-colours:batchGet", {"keys": ["i1"], "limit": 3, "min_score": 0.5}),
        ("/v1/picks:batchGet", {"customer_ids": ["c1"], "limit": 3, "min_score": 0.5}),
    ]:
        r = client.post(url, json=body)
        assert r.status_code == 200 and r.get_json()["found"] == 1, (url, body, r.data)
    assert client.get("/v1/image-colours/i1?k=1").status_code == 200


def test_content_type_and_size(client):
    _error(client.post(BATCH, data='{"customer_ids":["c1"]}'), 415, "unsupported_media_type")
    _error(
        client.post(BATCH, data='{"customer_ids":["c1"]}', content_type="text/plain"),
        415,
        "unsupported_media_type",
    )
    big = json.dumps({"customer_ids": ["c1"], "pad": "x" * 5000})
    _error(client.post(BATCH, data=big, content_type="application/json"), 413, "too_large")
    _error(
        client.post("/v1/datasets/shop:batchGet", data=big, content_type="application/json"),
        413,
        "too_large",
    )
    _error(client.post("/v1/datasets/colours:batchGet", data="{}"), 415, "unsupported_media_type")


def test_store_down_is_a_fast_503_and_recovers(api, client, redis_proc, rclient, core, caplog):
    assert client.get("/v1/picks/c1").status_code == 200
    assert client.get("/readyz").get_json()["status"] == "ready"
    redis_proc.stop()
    try:
        started = time.monotonic()
        down = client.get("/v1/picks/c1")
        _error(down, 503, "store_unavailable")
        assert time.monotonic() - started < 2.0  # refused at once, not after retries
        # the caller is told the store is unavailable; the log says what the client met
        assert "Error" not in down.get_json()["message"], down.get_json()
        causes = [getattr(r, "cause", "") for r in caplog.records if r.msg == "request failed"]
        assert any(c.startswith("ConnectionError: ") for c in causes), causes
        # and the change is said once, however many requests fail
        said = [r for r in caplog.records if r.msg == "store unavailable"]
        assert len(said) == 1 and said[0].cause.startswith("ConnectionError: "), said
        _error(client.get("/v1/image-colours/i1"), 503, "store_unavailable")
        _error(client.get("/v1/datasets/shop/c1"), 503, "store_unavailable")
        _error(
            client.post("/v1/datasets/colours:batchGet", json={"keys": ["i1"]}),
            503,
            "store_unavailable",
        )
        _error(client.post(BATCH, json={"customer_ids": ["c1", "c2"]}), 503, "store_unavailable")
        # still ready (a blip must not empty the Service), and it says why
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"
        assert ready.get_json()["problems"]["store"] == "store_unavailable"
        assert client.get("/healthz").status_code == 200
        text = client.get("/metrics").get_data(as_text=True)
        errors = {
            line.split('action="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("prescore_lookup_store_errors_total{")
        }
        assert errors.get("pointer", 0) + errors.get("payloads", 0) >= 5, errors
        assert errors.get("ping", 0) >= 1, errors  # the /readyz above
    finally:
        redis_proc.start()
    # a restarted, empty Redis lost what was published: a 503 that says so, never a 404
    lost = client.get("/v1/picks/c1")
    _error(lost, 503, "dataset_lost")
    assert "republished" in lost.get_json()["message"]
    _error(client.post(BATCH, json={"customer_ids": ["c1"]}), 503, "dataset_lost")
    assert client.get("/readyz").get_json()["problems"]["shop"] == "dataset_lost"
    # it gets a new version; the same app serves it, no restart
    version = publish_customers(rclient, core, customers=2, model_version="m2")
    r = client.get("/v1/picks/c1")
    assert r.status_code == 200
    assert [r.msg for r in caplog.records].count("store available again") == 1
    assert r.get_json()["dataset_version"] == version and r.get_json()["model_version"] == "m2"
    batch = client.post(BATCH, json={"customer_ids": ["c0", "c1"]}).get_json()
    assert batch["dataset_version"] == version and batch["found"] == 2
    assert client.get("/readyz").status_code == 200


def test_readiness_stays_up_through_a_short_outage_then_goes(redis_proc, rclient, core):
    from lookup.routes import Readiness
    from lookup.store import StoreReader
    from prescore.store.redis_client import connect

    publish_customers(rclient, core, customers=1)
    now = [100.0]
    ready = Readiness(StoreReader(connect(core.redis), 0), ["shop", "colours"], 30, lambda: now[0])
    assert ready.check()[0] == 200
    redis_proc.stop()
    try:
        now[0] += 29
        status, body = ready.check()
        assert status == 200 and body["status"] == "degraded"
        now[0] += 2  # past the grace: out of the Service
        status, body = ready.check()
        assert status == 503 and body["error"] == "not_ready"
        assert "store: store_unavailable" in body["message"]
    finally:
        redis_proc.start()
