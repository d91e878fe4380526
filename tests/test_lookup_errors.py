"""Bad input never gets a 500: every refusal is 4xx JSON with a stable code. Store outages."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.settings import Settings
from tests.lookup_helpers import publish_users

LONG = "u" * 129


@pytest.fixture()
def api(settings: Settings, rclient) -> Flask:
    publish_users(rclient, settings, users=3)
    return create_app(LookupSettings(core=settings, max_batch_ids=20, max_body_bytes=4096))


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
        ("/v1/recommendations/bad%20id", 400, "invalid_id"),
        ("/v1/recommendations/-u1", 400, "invalid_id"),
        ("/v1/recommendations/u*", 400, "invalid_id"),
        ("/v1/recommendations/u%7Bx%7D", 400, "invalid_id"),
        ("/v1/recommendations/%C3%A9t%C3%A9", 400, "invalid_id"),
        (f"/v1/recommendations/{LONG}", 400, "invalid_id"),
        ("/v1/image-tags/img%00", 400, "invalid_id"),
        ("/v1/recommendations/", 404, "no_route"),
        ("/v1/recommendations/u1/more", 404, "no_route"),
        ("/v1/recommendations/u1?k=0", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=101", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=-1", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=abc", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=2.5", 400, "invalid_k"),
        ("/v1/recommendations/u1?k=99999999999999999999", 400, "invalid_k"),
        ("/v1/recommendations/u1?context=a%7Cb", 400, "invalid_id"),
        ("/v1/recommendations/u1?context=", 400, "invalid_id"),
        ("/v1/image-tags/i1?min_score=abc", 400, "invalid_min_score"),
        ("/v1/image-tags/i1?min_score=nan", 400, "invalid_min_score"),
        ("/v1/image-tags/i1?min_score=inf", 400, "invalid_min_score"),
        ("/v1/image-tags/i1?min_score=1e400", 400, "invalid_min_score"),
        ("/v1/image-tags/i1?min_score=", 400, "invalid_min_score"),
        ("/v1/image-tags/i1?limit=0", 400, "invalid_limit"),
        ("/v1/image-tags/i1?limit=1000", 400, "invalid_limit"),
        ("/v1/image-tags/i1?limit=x", 400, "invalid_limit"),
        ("/nowhere", 404, "no_route"),
        ("/v1/recommendations:batchGet", 405, "method_not_allowed"),
        ("/v1/image-tags:batchGet", 405, "method_not_allowed"),
    ],
)
def test_bad_get(client, url, status, code):
    _error(client.get(url), status, code)


def test_wrong_methods(client):
    _error(client.post("/v1/recommendations/u1", json={}), 405, "method_not_allowed")
    _error(client.delete("/v1/image-tags/i1"), 405, "method_not_allowed")
    _error(client.put("/healthz"), 405, "method_not_allowed")
    _error(client.post("/nowhere", json={}), 404, "no_route")


BATCH = "/v1/recommendations:batchGet"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "malformed_json"),
        ("", 400, "malformed_json"),
        ('"u1"', 400, "invalid_body"),
        ('["u1"]', 400, "invalid_body"),
        ('{"user_ids": ["u1"], "userIds": []}', 400, "invalid_body"),
        ("{}", 400, "invalid_ids"),
        ('{"user_ids": "u1"}', 400, "invalid_ids"),
        ('{"user_ids": []}', 400, "invalid_ids"),
        ('{"user_ids": {"u1": 1}}', 400, "invalid_ids"),
        ('{"user_ids": [1]}', 400, "invalid_id"),
        ('{"user_ids": [null]}', 400, "invalid_id"),
        ('{"user_ids": ["u1", ""]}', 400, "invalid_id"),
        ('{"user_ids": ["bad id"]}', 400, "invalid_id"),
        (json.dumps({"user_ids": [LONG]}), 400, "invalid_id"),
        (json.dumps({"user_ids": [f"u{i}" for i in range(21)]}), 413, "too_many_ids"),
        ('{"user_ids": ["u1"], "k": 0}', 400, "invalid_k"),
        ('{"user_ids": ["u1"], "k": true}', 400, "invalid_k"),
        ('{"user_ids": ["u1"], "k": 2.0}', 400, "invalid_k"),
        ('{"user_ids": ["u1"], "k": null}', 200, ""),
        ('{"user_ids": ["u1"], "context": 5}', 400, "invalid_id"),
        ('{"user_ids": ["u1"], "context": "no way"}', 400, "invalid_id"),
    ],
)
def test_bad_recommendations_batch(client, body, status, code):
    r = client.post(BATCH, data=body, content_type="application/json")
    if status == 200:
        assert r.status_code == 200
    else:
        _error(r, status, code)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user_ids": ["i1"]}, 400, "invalid_body"),
        ({"image_ids": ["i1"], "k": 3}, 400, "invalid_body"),
        ({"image_ids": ["i1"], "min_score": "x"}, 400, "invalid_min_score"),
        ({"image_ids": ["i1"], "min_score": False}, 400, "invalid_min_score"),
        ({"image_ids": ["i1"], "limit": 0}, 400, "invalid_limit"),
        ({"image_ids": ["i1"], "limit": "many"}, 400, "invalid_limit"),
    ],
)
def test_bad_tags_batch(client, body, status, code):
    _error(client.post("/v1/image-tags:batchGet", json=body), status, code)


def test_content_type_and_size(client):
    _error(client.post(BATCH, data='{"user_ids":["u1"]}'), 415, "unsupported_media_type")
    _error(
        client.post(BATCH, data='{"user_ids":["u1"]}', content_type="text/plain"),
        415,
        "unsupported_media_type",
    )
    big = json.dumps({"user_ids": ["u1"], "pad": "x" * 5000})
    _error(client.post(BATCH, data=big, content_type="application/json"), 413, "too_large")


def test_store_down_is_a_fast_503_and_recovers(api, client, redis_proc, rclient, settings):
    assert client.get("/v1/recommendations/u1").status_code == 200
    redis_proc.stop()
    try:
        _error(client.get("/v1/recommendations/u1"), 503, "store_unavailable")
        _error(client.get("/v1/image-tags/i1"), 503, "store_unavailable")
        _error(client.post(BATCH, json={"user_ids": ["u1", "u2"]}), 503, "store_unavailable")
        _error(client.get("/readyz"), 503, "store_unavailable")
        assert client.get("/healthz").status_code == 200
    finally:
        redis_proc.start()
    # a restarted (empty) Redis gets a new version; the same app serves it, no restart
    version = publish_users(rclient, settings, users=2, model_version="m2")
    r = client.get("/v1/recommendations/u1")
    assert r.status_code == 200
    assert r.get_json()["dataset_version"] == version and r.get_json()["model_version"] == "m2"
    batch = client.post(BATCH, json={"user_ids": ["u0", "u1"]}).get_json()
    assert batch["dataset_version"] == version and batch["found"] == 2
    assert client.get("/readyz").status_code == 200
