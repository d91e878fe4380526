"""The lookup API against a real Redis: payloads, cutting, batches, metrics, OpenAPI."""

from __future__ import annotations

import json
import re

import pytest
from flask.testing import FlaskClient

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore import codec, keys
from prescore.settings import Settings
from tests.lookup_helpers import publish, publish_users, reco_payload, tags_payload

TAGS = [("sea_view", 6.38), ("balcony", 4.82), ("pool", 2.5), ("bed", 0.7)]


@pytest.fixture()
def lookup_settings(settings: Settings) -> LookupSettings:
    return LookupSettings(core=settings, max_batch_ids=20)


@pytest.fixture()
def api(lookup_settings: LookupSettings) -> FlaskClient:
    return create_app(lookup_settings).test_client()


@pytest.fixture()
def data(rclient, settings: Settings) -> dict[str, str]:
    reco = publish_users(rclient, settings, users=5, model_version="m1", n=12)
    context_rows = [("u1|weekend", reco_payload("u1", 3, "m1", context="weekend"))]
    rclient.set(keys.value_key("reco", reco, "u1|weekend"), context_rows[0][1])
    tags = publish(
        rclient,
        settings,
        "tags",
        [("img1", tags_payload("img1", TAGS, "t1")), ("img2", tags_payload("img2", [], "t1"))],
        "t1",
    )
    return {"reco": reco, "tags": tags}


def test_recommendations_hit_is_the_stored_payload_with_envelope(api, data):
    r = api.get("/v1/recommendations/u2?k=12")
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert body["source"] == "precomputed"
    assert body["dataset_version"] == data["reco"]
    assert body["model_version"] == "m1" and body["user_id"] == "u2"
    assert [i["hotel_id"] for i in body["items"]] == [f"h{j}" for j in range(12)]
    # served by splicing: the stored bytes follow the spliced fields unchanged
    assert r.data.endswith(reco_payload("u2", 12, "m1")[1:])


def test_k_defaults_and_truncates(api, data):
    assert len(api.get("/v1/recommendations/u0").get_json()["items"]) == 10  # default_k
    top3 = api.get("/v1/recommendations/u0?k=3").get_json()["items"]
    assert [i["hotel_id"] for i in top3] == ["h0", "h1", "h2"]
    assert len(api.get("/v1/recommendations/u0?k=100").get_json()["items"]) == 12


def test_context_prefers_the_contextual_entry_then_the_plain_one(api, data):
    ctx = api.get("/v1/recommendations/u1?context=weekend").get_json()
    assert ctx["context"] == "weekend" and len(ctx["items"]) == 3
    plain = api.get("/v1/recommendations/u2?context=weekend").get_json()
    assert "context" not in plain and len(plain["items"]) == 10


def test_image_tags_min_score_and_limit(api, data):
    full = api.get("/v1/image-tags/img1").get_json()
    assert full["dataset_version"] == data["tags"] and full["model_version"] == "t1"
    assert full["source"] == "precomputed"
    assert [t["tag"] for t in full["tags"]] == ["sea_view", "balcony", "pool", "bed"]
    above = api.get("/v1/image-tags/img1?min_score=2.5").get_json()["tags"]
    assert [t["tag"] for t in above] == ["sea_view", "balcony", "pool"]
    both = api.get("/v1/image-tags/img1?min_score=1&limit=1").get_json()["tags"]
    assert both == [{"tag": "sea_view", "score": 6.38}]
    assert api.get("/v1/image-tags/img1?min_score=-1e3").get_json()["tags"] == full["tags"]
    assert api.get("/v1/image-tags/img2").get_json()["tags"] == []


def test_single_miss_is_a_clear_404(api, data):
    r = api.get("/v1/recommendations/nobody")
    assert r.status_code == 404
    assert r.get_json() == {
        "error": "not_found",
        "message": "no recommendations for user_id 'nobody'",
        "dataset": "reco",
        "user_id": "nobody",
        "dataset_version": data["reco"],
        "model_version": "m1",
    }
    assert api.get("/v1/image-tags/nothing").get_json()["image_id"] == "nothing"


def test_no_published_version_is_404_no_version(api):
    r = api.get("/v1/image-tags/img1")
    assert r.status_code == 404 and r.get_json()["error"] == "no_version"


def test_batch_mixes_hits_and_misses_in_request_order(api, data):
    ids = ["u3", "ghost", "u0", "u3", "u4"]
    r = api.post("/v1/recommendations:batchGet", json={"user_ids": ids, "k": 2})
    assert r.status_code == 200
    body = r.get_json()
    assert body["dataset_version"] == data["reco"] and body["model_version"] == "m1"
    assert (body["found"], body["missing"]) == (4, 1)
    results = body["results"]
    assert [x["user_id"] for x in results] == ids
    assert results[1] == {
        "user_id": "ghost",
        "error": "not_found",
        "message": "no recommendations for user_id 'ghost'",
    }
    for hit in (results[0], results[2], results[3], results[4]):
        assert hit["dataset_version"] == data["reco"] and hit["source"] == "precomputed"
        assert [i["hotel_id"] for i in hit["items"]] == ["h0", "h1"]
    assert results[0] == results[3]  # a duplicate is answered at each position


def test_batch_with_context(api, data):
    body = api.post(
        "/v1/recommendations:batchGet", json={"user_ids": ["u1", "u2"], "context": "weekend"}
    ).get_json()
    assert body["results"][0]["context"] == "weekend"
    assert "context" not in body["results"][1]


def test_tags_batch(api, data):
    body = api.post(
        "/v1/image-tags:batchGet",
        json={"image_ids": ["img2", "img1", "nope"], "min_score": 3, "limit": 5},
    ).get_json()
    assert body["dataset_version"] == data["tags"] and body["model_version"] == "t1"
    assert [x["image_id"] for x in body["results"]] == ["img2", "img1", "nope"]
    assert body["results"][0]["tags"] == []
    assert [t["tag"] for t in body["results"][1]["tags"]] == ["sea_view", "balcony"]
    assert body["results"][2]["error"] == "not_found"


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_hits_misses_and_requests(api, data):
    api.get("/v1/recommendations/u0")
    api.get("/v1/recommendations/ghost")
    api.post("/v1/recommendations:batchGet", json={"user_ids": ["u1", "x1", "x2"]})
    api.get("/v1/image-tags/img1")
    api.get("/v1/recommendations/bad id")
    text = api.get("/metrics").get_data(as_text=True)
    assert _sample(text, "lookup_keys_total", dataset="reco", result="hit") == 2
    assert _sample(text, "lookup_keys_total", dataset="reco", result="miss") == 3
    assert _sample(text, "lookup_keys_total", dataset="tags", result="hit") == 1
    route = "/v1/recommendations/<user_id>"
    assert _sample(text, "lookup_requests_total", route=route, status="200") == 1
    assert _sample(text, "lookup_requests_total", route=route, status="404") == 1
    assert _sample(text, "lookup_requests_total", route=route, status="400") == 1
    assert _sample(text, "lookup_request_duration_seconds_count", route=route) == 3


def test_health_and_readiness(api, rclient, settings):
    assert api.get("/healthz").get_json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 503 and r.get_json()["error"] == "not_ready"
    version = publish_users(rclient, settings, users=1)
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ready", "datasets": {"reco": version, "tags": None}}


def test_openapi_names_every_route(api):
    r = api.get("/openapi.json")
    doc = json.loads(r.data)
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    served = {
        re.sub(r"<(\w+)>", r"{\1}", rule.rule)
        for rule in api.application.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert served == paths
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    for code in ("invalid_id", "invalid_k", "too_many_ids", "store_unavailable", "no_route"):
        assert code in codes
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path


def test_miss_seam_answers_single_and_batch_misses(lookup_settings, data):
    calls: list[list[str]] = []

    def live(misses, version):
        calls.append([m.entity_id for m in misses])
        assert all(m.dataset == "reco" and version.version == data["reco"] for m in misses)
        return [
            codec.encode_recommendations(
                m.entity_id,
                [(f"h{j}", 0.9 - j / 10) for j in range(5)],
                model="reco",
                model_version="live-1",
                scored_at="2026-11-24T12:00:00Z",
                source="live",
            )
            if m.entity_id.startswith("new")
            else None
            for m in misses
        ]

    api = create_app(lookup_settings, on_miss=live).test_client()
    body = api.get("/v1/recommendations/new1?k=2").get_json()
    assert body["source"] == "live" and body["dataset_version"] == data["reco"]
    assert [i["hotel_id"] for i in body["items"]] == ["h0", "h1"]
    assert api.get("/v1/recommendations/gone").status_code == 404
    batch = api.post(
        "/v1/recommendations:batchGet", json={"user_ids": ["u1", "new2", "gone", "new2"]}
    ).get_json()
    assert [r.get("source", r.get("error")) for r in batch["results"]] == [
        "precomputed",
        "live",
        "not_found",
        "live",
    ]
    assert (batch["found"], batch["missing"]) == (3, 1)
    assert calls == [["new1"], ["gone"], ["new2", "gone"]]  # one call per request, ids once


def test_pointer_cache_reads_a_newer_version_on_a_miss(settings, rclient):
    first = publish_users(rclient, settings, users=1, model_version="m1")
    api = create_app(LookupSettings(core=settings, pointer_cache_s=60)).test_client()
    assert api.get("/v1/recommendations/u0").get_json()["dataset_version"] == first
    second = publish_users(rclient, settings, users=2, model_version="m2")
    # u0 still comes from the cached version (whole and published: within the cache time)
    assert api.get("/v1/recommendations/u0").get_json()["dataset_version"] == first
    # u1 misses there, so the pointer is read afresh and u1 served from the new version
    assert api.get("/v1/recommendations/u1").get_json()["dataset_version"] == second
    assert api.get("/v1/recommendations/u0").get_json()["dataset_version"] == second
