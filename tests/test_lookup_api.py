"""The lookup API against a real Redis: payloads, cutting, batches, metrics, OpenAPI.

The lookup tests' datasets (shop and colours, from tests/served.toml) under their
declared routes and under /v1/datasets/{name}; then datasets a test declares itself."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
from flask.testing import FlaskClient

from lookup.app import create_app
from lookup.params import MAX_ABS_SCORE
from lookup.settings import LookupSettings
from prescore.data.datasets import load
from prescore.encoding import codec, keys, registry_entry
from prescore.encoding.codec import PayloadShape
from prescore.settings import Settings
from prescore.store.versions import write_payloads
from tests.lookup_helpers import (
    SCORED_AT,
    colours_payload,
    publish,
    publish_customers,
    served_settings,
    shop_payload,
)

COLOURS = [("red", 6.38), ("green", 4.82), ("blue", 2.5), ("grey", 0.7)]


@pytest.fixture()
def core(settings: Settings, tmp_path: Path) -> Settings:
    """The test settings serving tests/served.toml's declarations."""
    return served_settings(settings, tmp_path / "var")


@pytest.fixture()
def lookup_settings(core: Settings) -> LookupSettings:
    return LookupSettings(core=core, max_batch_ids=20)


@pytest.fixture()
def api(lookup_settings: LookupSettings) -> FlaskClient:
    return create_app(lookup_settings).test_client()


@pytest.fixture()
def data(rclient, core: Settings) -> dict[str, str]:
    shop = publish_customers(rclient, core, customers=5, model_version="m1", n=12)
    payload = shop_payload("c1", 3, "m1", context="weekend")
    write_payloads(rclient, "shop", shop, [("c1|weekend", payload)])
    colours = publish(
        rclient,
        core,
        "colours",
        [
            ("img1", colours_payload("img1", COLOURS, "t1")),
            ("img2", colours_payload("img2", [], "t1")),
        ],
        "t1",
    )
    return {"shop": shop, "colours": colours}


def test_picks_hit_is_the_stored_payload_with_envelope(api, data):
    r = api.get("/v1/picks/c2?k=12")
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert body["source"] == "precomputed"
    assert body["dataset_version"] == data["shop"]
    assert body["model_version"] == "m1" and body["customer_id"] == "c2"
    assert body["model"] == "shop" and body["scored_at"] == SCORED_AT
    assert [i["product_id"] for i in body["items"]] == [f"p{j}" for j in range(12)]
    assert "context_fallback" not in body
    # served by splicing: the stored bytes follow the spliced fields unchanged
    assert r.data.endswith(shop_payload("c2", 12, "m1")[1:])
    # the generic route answers the same bytes
    assert api.get("/v1/datasets/shop/c2?k=12").data == r.data


def test_k_defaults_to_the_whole_payload_and_truncates(api, data):
    # without k the stored list is served whole (the bulk job stored the dataset's k)
    assert len(api.get("/v1/picks/c0").get_json()["items"]) == 12
    top3 = api.get("/v1/picks/c0?k=3").get_json()["items"]
    assert [i["product_id"] for i in top3] == ["p0", "p1", "p2"]
    assert api.get("/v1/picks/c0?limit=3").get_json()["items"] == top3  # a synonym
    assert len(api.get("/v1/picks/c0?k=100").get_json()["items"]) == 12
    assert len(api.get("/v1/datasets/shop/c0?k=5").get_json()["items"]) == 5


def test_min_score_cuts_a_ranking_too(api, data):
    items = api.get("/v1/picks/c0?min_score=0.985").get_json()["items"]
    assert items == [{"product_id": "p0", "score": 1.0}, {"product_id": "p1", "score": 0.99}]
    both = api.get("/v1/picks/c0?min_score=0.95&k=2").get_json()["items"]
    assert [i["product_id"] for i in both] == ["p0", "p1"]
    assert api.get("/v1/picks/c0?min_score=2").get_json()["items"] == []


def test_k_and_limit_together_the_smaller_bounds_the_answer(api, data):
    for url in ("/v1/picks/c0?k=2&limit=3", "/v1/picks/c0?limit=2&k=5"):
        assert len(api.get(url).get_json()["items"]) == 2, url
    r = api.post("/v1/picks:batchGet", json={"customer_ids": ["c0"], "k": 4, "limit": 1})
    assert len(r.get_json()["results"][0]["items"]) == 1
    bad = api.get("/v1/picks/c0?k=2&limit=0")
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_limit"


def test_context_prefers_the_contextual_entry_then_the_plain_one(api, data):
    ctx = api.get("/v1/picks/c1?context=weekend").get_json()
    assert ctx["context"] == "weekend" and len(ctx["items"]) == 3
    assert "context_fallback" not in ctx
    plain = api.get("/v1/picks/c2?context=weekend").get_json()
    assert "context" not in plain and len(plain["items"]) == 12
    assert plain["context_fallback"] is True and plain["customer_id"] == "c2"
    # no context asked: the plain entry, never the contextual one, and no fallback flag
    assert "context_fallback" not in api.get("/v1/picks/c1").get_json()
    miss = api.get("/v1/picks/ghost?context=weekend")
    assert miss.status_code == 404
    assert (
        miss.get_json()["message"]
        == "no entry of shop for customer_id 'ghost' in context 'weekend'"
    )


def test_a_written_back_live_answer_reads_as_written_back(api, data, rclient):
    stored = shop_payload("c9", 4, "m1", source="live")  # what a live write-back stores
    rclient.set(keys.value_key("shop", data["shop"], "c9"), stored)  # c9 was not precomputed
    r = api.get("/v1/picks/c9")
    body = r.get_json()
    assert body["source"] == "written_back" and body["dataset_version"] == data["shop"]
    assert r.data.count(b'"source"') == 1  # said once, in front
    assert [i["product_id"] for i in body["items"]] == ["p0", "p1", "p2", "p3"]
    batch = api.post("/v1/picks:batchGet", json={"customer_ids": ["c9", "c4"], "k": 2})
    assert [x["source"] for x in batch.get_json()["results"]] == ["written_back", "precomputed"]
    cut = api.get("/v1/picks/c9?k=1")  # cut (decoded and re-encoded): still marked
    assert cut.get_json()["source"] == "written_back" and cut.data.count(b'"source"') == 1
    rclient.set(keys.value_key("shop", data["shop"], "c3"), stored)  # never over a bucket's
    assert api.get("/v1/picks/c3").get_json()["source"] == "precomputed"


def test_image_colours_min_score_and_limit(api, data):
    full = api.get("/v1/image-colours/img1").get_json()
    assert full["dataset_version"] == data["colours"] and full["model_version"] == "t1"
    assert full["source"] == "precomputed" and full["image_id"] == "img1"
    assert [t["colour"] for t in full["colours"]] == ["red", "green", "blue", "grey"]
    above = api.get("/v1/image-colours/img1?min_score=2.5").get_json()["colours"]
    assert [t["colour"] for t in above] == ["red", "green", "blue"]
    both = api.get("/v1/image-colours/img1?min_score=1&limit=1").get_json()["colours"]
    assert both == [{"colour": "red", "score": 6.38}]
    assert api.get("/v1/image-colours/img1?min_score=1&k=1").get_json()["colours"] == both
    assert api.get("/v1/image-colours/img1?min_score=-1e3").get_json()["colours"] == full["colours"]
    assert api.get("/v1/image-colours/img2").get_json()["colours"] == []
    assert api.get("/v1/datasets/colours/img1?k=2").get_json()["colours"] == full["colours"][:2]


def test_single_miss_is_a_clear_404(api, data):
    r = api.get("/v1/picks/nobody")
    assert r.status_code == 404
    assert r.get_json() == {
        "error": "not_found",
        "message": "no entry of shop for customer_id 'nobody'",
        "dataset": "shop",
        "customer_id": "nobody",
        "dataset_version": data["shop"],
        "model_version": "m1",
    }
    assert api.get("/v1/datasets/shop/nobody").get_json() == r.get_json()
    colours = api.get("/v1/image-colours/nothing").get_json()
    assert colours["image_id"] == "nothing" and colours["dataset"] == "colours"
    assert colours["model_version"] == "t1"


def test_a_declared_dataset_never_published_is_503_not_published_never_a_404(api):
    for url in ("/v1/image-colours/img1", "/v1/datasets/shop/c1"):
        r = api.get(url)
        assert r.status_code == 503 and r.get_json()["error"] == "not_published", url
    r = api.post("/v1/image-colours:batchGet", json={"image_ids": ["img1"]})
    assert r.status_code == 503 and r.get_json()["error"] == "not_published"


def test_an_unknown_dataset_is_404_unknown_dataset(api, data):
    for r in (
        api.get("/v1/datasets/gardens/c1"),
        api.get("/v1/datasets/Shop/c1"),
        api.post("/v1/datasets/gardens:batchGet", json={"keys": ["c1"]}),
    ):
        assert r.status_code == 404 and r.get_json()["error"] == "unknown_dataset"
        assert r.get_json()["message"]


def test_batch_mixes_hits_and_misses_in_request_order(api, data):
    ids = ["c3", "ghost", "c0", "c3", "c4"]
    r = api.post("/v1/picks:batchGet", json={"customer_ids": ids, "k": 2})
    assert r.status_code == 200
    body = r.get_json()
    assert body["dataset"] == "shop"
    assert body["dataset_version"] == data["shop"] and body["model_version"] == "m1"
    assert (body["found"], body["missing"]) == (4, 1)
    results = body["results"]
    assert [x["customer_id"] for x in results] == ids
    assert results[1] == {
        "customer_id": "ghost",
        "error": "not_found",
        "message": "no entry of shop for customer_id 'ghost'",
    }
    for hit in (results[0], results[2], results[3], results[4]):
        assert hit["dataset_version"] == data["shop"] and hit["source"] == "precomputed"
        assert [i["product_id"] for i in hit["items"]] == ["p0", "p1"]
    assert results[0] == results[3]  # a duplicate is answered at each position


def test_batch_takes_keys_or_the_declared_field_on_either_route(api, data):
    want = api.post("/v1/picks:batchGet", json={"customer_ids": ["c1", "x"], "k": 1}).data
    for url, field in [
        ("/v1/picks:batchGet", "keys"),
        ("/v1/datasets/shop:batchGet", "keys"),
        ("/v1/datasets/shop:batchGet", "customer_ids"),
    ]:
        r = api.post(url, json={field: ["c1", "x"], "k": 1})
        assert r.status_code == 200 and r.data == want, (url, field)
    r = api.post("/v1/datasets/shop:batchGet", json={"keys": ["c1"], "customer_ids": ["c1"]})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_ids"


def test_batch_keys_may_be_json_integers(api, rclient, core):
    payloads = [(k, shop_payload(k, 2, "m1")) for k in ("7", "8")]
    publish(rclient, core, "shop", payloads, "m1")
    r = api.post("/v1/picks:batchGet", json={"customer_ids": [7, "8", 9]})
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["results"]
    assert [x["customer_id"] for x in results] == ["7", "8", "9"]
    assert results[0]["source"] == "precomputed" and results[2]["error"] == "not_found"
    for bad in (True, 1.5, None):  # a bool, a float, null: no key
        r = api.post("/v1/picks:batchGet", json={"customer_ids": ["7", bad]})
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_id", bad
        assert "customer_ids[1] must be a string or an integer" in r.get_json()["message"]


def test_batch_with_context(api, data):
    body = api.post(
        "/v1/picks:batchGet", json={"customer_ids": ["c1", "c2"], "context": "weekend"}
    ).get_json()
    assert body["results"][0]["context"] == "weekend"
    assert "context_fallback" not in body["results"][0]
    assert "context" not in body["results"][1]
    assert body["results"][1]["context_fallback"] is True


def test_colours_batch(api, data):
    body = api.post(
        "/v1/image-colours:batchGet",
        json={"image_ids": ["img2", "img1", "nope"], "min_score": 3, "limit": 5},
    ).get_json()
    assert body["dataset_version"] == data["colours"] and body["model_version"] == "t1"
    assert [x["image_id"] for x in body["results"]] == ["img2", "img1", "nope"]
    assert body["results"][0]["colours"] == []
    assert [t["colour"] for t in body["results"][1]["colours"]] == ["red", "green"]
    assert body["results"][2]["error"] == "not_found"
    assert (body["found"], body["missing"]) == (2, 1)
    k = api.post("/v1/datasets/colours:batchGet", json={"keys": ["img1"], "k": 1}).get_json()
    assert [t["colour"] for t in k["results"][0]["colours"]] == ["red"]


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_hits_misses_and_requests(api, data):
    api.get("/v1/picks/c0")
    api.get("/v1/picks/ghost")
    api.post("/v1/picks:batchGet", json={"customer_ids": ["c1", "x1", "x2"]})
    api.get("/v1/image-colours/img1")
    api.get("/v1/picks/bad%0Aid")
    api.get("/v1/datasets/shop/c2")
    api.get("/v1/datasets/colours/img9")
    api.get("/v1/datasets/shop/bad%00id")
    text = api.get("/metrics").get_data(as_text=True)
    assert _sample(text, "prescore_lookup_keys_total", dataset="shop", result="hit") == 3
    assert _sample(text, "prescore_lookup_keys_total", dataset="shop", result="miss") == 3
    assert _sample(text, "prescore_lookup_keys_total", dataset="colours", result="hit") == 1
    assert _sample(text, "prescore_lookup_keys_total", dataset="colours", result="miss") == 1
    # a route counts its answers under one name, whether the fast path or Flask answered
    route = "/v1/picks/<text:key>"
    assert _sample(text, "prescore_lookup_requests_total", route=route, status="200") == 1
    assert _sample(text, "prescore_lookup_requests_total", route=route, status="404") == 1
    assert _sample(text, "prescore_lookup_requests_total", route=route, status="400") == 1
    assert _sample(text, "prescore_lookup_request_duration_seconds_count", route=route) == 3
    generic = "/v1/datasets/<name>/<text:key>"
    assert _sample(text, "prescore_lookup_requests_total", route=generic, status="200") == 1
    assert _sample(text, "prescore_lookup_requests_total", route=generic, status="404") == 1
    assert _sample(text, "prescore_lookup_requests_total", route=generic, status="400") == 1
    assert _sample(text, "prescore_lookup_request_duration_seconds_count", route=generic) == 3
    batch = "/v1/picks:batchGet"
    assert (
        _sample(text, "prescore_lookup_requests_total", route=batch, method="POST", status="200")
        == 1
    )


def test_made_up_methods_share_one_series(api):
    for i in range(5):
        assert api.open("/healthz", method=f"M{i}").status_code == 405
    text = api.get("/metrics").get_data(as_text=True)
    assert _sample(text, "prescore_lookup_requests_total", method="other", status="405") == 5
    assert 'method="M' not in text


def test_health_and_readiness(api, rclient, core):
    assert api.get("/healthz").get_json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 503 and r.get_json()["error"] == "not_ready"
    assert r.get_json()["datasets"] == {"shop": None, "colours": None}
    version = publish_customers(rclient, core, customers=1)
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ready", "datasets": {"shop": version, "colours": None}}


def _served_paths(api: FlaskClient, names: list[str]) -> set[str]:
    """Every route the app serves, the generic /v1/datasets/<name> ones once per dataset,
    written as OpenAPI paths."""
    out = set()
    for rule in api.application.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        expanded = (
            [rule.rule.replace("<name>", n) for n in names]
            if "<name>" in rule.rule
            else [rule.rule]
        )
        out |= {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r) for r in expanded}
    return out


def test_openapi_names_every_route(api):
    r = api.get("/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.data)
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == _served_paths(api, ["shop", "colours"])
    assert "/v1/picks/{key}" in doc["paths"]
    assert "/v1/datasets/colours:batchGet" in doc["paths"]
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    for code in (
        "invalid_id",
        "invalid_k",
        "invalid_limit",
        "invalid_min_score",
        "too_many_ids",
        "store_unavailable",
        "no_route",
        "unknown_dataset",
        "not_published",
        "dataset_lost",
    ):
        assert code in codes
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path
    schemas = doc["components"]["schemas"]
    shop = schemas["shop.Payload"]["properties"]
    assert {"customer_id", "items", "context", "context_fallback"} <= set(shop)
    assert "product_id" in shop["items"]["items"]["properties"]
    colours = schemas["colours.Payload"]["properties"]
    assert {"image_id", "colours"} <= set(colours) and "context" not in colours
    assert set(schemas["shop.BatchRequest"]["properties"]) == {
        "keys",
        "customer_ids",
        "k",
        "limit",
        "min_score",
        "context",
    }
    assert set(schemas["colours.BatchRequest"]["properties"]) == {
        "keys",
        "image_ids",
        "k",
        "limit",
        "min_score",
    }


def test_answers_match_the_openapi_schemas(api, data):
    doc = api.get("/openapi.json").get_json()
    check = _validator(doc)
    check("shop.Payload", api.get("/v1/picks/c1?k=2").get_json())
    check("shop.Payload", api.get("/v1/picks/c2?context=weekend").get_json())
    check("colours.Payload", api.get("/v1/image-colours/img1").get_json())
    check("NotFound", api.get("/v1/picks/ghost").get_json())
    batch = api.post("/v1/picks:batchGet", json={"customer_ids": ["c1", "ghost"]})
    check("shop.Batch", batch.get_json())
    check("shop.BatchRequest", {"customer_ids": ["c1", "ghost"]})
    with pytest.raises(jsonschema.ValidationError):  # a colours payload has no customer_id
        check("shop.Payload", api.get("/v1/image-colours/img1").get_json())


def test_a_context_the_bulk_run_scores_is_never_answered_by_the_plain_key(lookup_settings, data):
    """A key missing in a scored context is a miss of its own (answered live, or 404),
    not its plain answer: that one, precomputed or written back, was scored without the
    context. An unscored context still falls back to the plain key."""
    import dataclasses

    shop = lookup_settings.core.catalog.get("shop")
    assert shop.contexts is not None
    scored = dataclasses.replace(shop, contexts=dataclasses.replace(shop.contexts, score=("app",)))
    catalog = dataclasses.replace(
        lookup_settings.core.catalog,
        datasets={**lookup_settings.core.catalog.datasets, "shop": scored},
    )
    core = dataclasses.replace(lookup_settings.core, catalog=catalog)
    asked: list[tuple[str, str | None]] = []

    def live(misses, version):
        asked.extend((m.key, m.context) for m in misses)
        shape = PayloadShape("customer_id", "items", "product_id")
        return [
            codec.encode_payload(
                shape,
                m.key,
                [("p9", 0.5)],
                model="shop",
                model_version="live-1",
                scored_at=SCORED_AT,
                source="live",
                context=m.context,
            )
            for m in misses
        ]

    api = create_app(dataclasses.replace(lookup_settings, core=core), on_miss=live).test_client()
    in_app = api.get("/v1/picks/c2?context=app").get_json()
    assert (in_app["source"], in_app["context"]) == ("live", "app") and asked == [("c2", "app")]
    assert "context_fallback" not in in_app
    batch = api.post("/v1/picks:batchGet", json={"customer_ids": ["c1", "c3"], "context": "app"})
    assert [r["source"] for r in batch.get_json()["results"]] == ["live", "live"]
    asked.clear()
    weekday = api.get("/v1/picks/c2?context=weekday").get_json()  # not scored: the plain one
    assert weekday["context_fallback"] is True and weekday["source"] == "precomputed"
    assert asked == []


def test_miss_seam_answers_single_and_batch_misses(lookup_settings, data):
    calls: list[list[tuple[str, str | None]]] = []

    def live(misses, version):
        calls.append([(m.key, m.context) for m in misses])
        assert all(m.dataset == "shop" and version.version == data["shop"] for m in misses)
        return [
            codec.encode_payload(
                PayloadShape("customer_id", "items", "product_id"),
                m.key,
                [(f"p{j}", 0.9 - j / 10) for j in range(5)],
                model="shop",
                model_version="live-1",
                scored_at="2026-11-24T12:00:00Z",
                source="live",
            )
            if m.key.startswith("new")
            else None
            for m in misses
        ]

    api = create_app(lookup_settings, on_miss=live).test_client()
    r = api.get("/v1/picks/new1?k=2")
    body = r.get_json()
    assert body["source"] == "live" and body["dataset_version"] == data["shop"]
    assert r.data.count(b'"source"') == 1
    assert body["model_version"] == "live-1" and body["customer_id"] == "new1"
    assert [i["product_id"] for i in body["items"]] == ["p0", "p1"]
    assert api.get("/v1/picks/gone").status_code == 404
    batch = api.post(
        "/v1/picks:batchGet", json={"customer_ids": ["c1", "new2", "gone", "new2"]}
    ).get_json()
    assert [r.get("source", r.get("error")) for r in batch["results"]] == [
        "precomputed",
        "live",
        "not_found",
        "live",
    ]
    assert (batch["found"], batch["missing"]) == (3, 1)
    cut = api.get("/v1/datasets/shop/new3?min_score=0.75").get_json()  # live answers are cut too
    assert [i["product_id"] for i in cut["items"]] == ["p0", "p1"]
    assert api.get("/v1/picks/new4?context=weekend").get_json()["source"] == "live"
    assert api.get("/v1/picks/c1?context=weekend").status_code == 200  # a hit: no call
    assert calls == [  # one call per request, ids once, the context passed on
        [("new1", None)],
        [("gone", None)],
        [("new2", None), ("gone", None)],
        [("new3", None)],
        [("new4", "weekend")],
    ]


def test_pointer_cache_reads_a_newer_version_on_a_miss(core, rclient):
    first = publish_customers(rclient, core, customers=1, model_version="m1")
    api = create_app(LookupSettings(core=core, pointer_cache_s=60)).test_client()
    assert api.get("/v1/picks/c0").get_json()["dataset_version"] == first
    second = publish_customers(rclient, core, customers=2, model_version="m2")
    # c0 still comes from the cached version (whole and published: within the cache time)
    assert api.get("/v1/picks/c0").get_json()["dataset_version"] == first
    # c1 misses there, so the pointer is read afresh and c1 served from the new version
    assert api.get("/v1/picks/c1").get_json()["dataset_version"] == second
    assert api.get("/v1/picks/c0").get_json()["dataset_version"] == second


# -- datasets a team declares: its own names ------------------------------------

OWN_DATASETS = """
[datasets.basket]
kind = "ranking"
model = "basket"
route = "basket-picks"
key_field = "customer_store"
batch_field = "customers"
list_field = "products"
k = 5
[datasets.basket.entities]
path = "{root}/customers.parquet"
key = ["customer_id", "store_id"]
[datasets.basket.items]
path = "{root}/products.parquet"
key = "sku"
payload = ["name"]
[datasets.basket.contexts]
values = ["weekday", "weekend"]

[datasets.topics]
kind = "external"
key_field = "doc_id"
batch_field = "doc_ids"
list_field = "topics"
entry_field = "topic"
"""
BASKET = PayloadShape("customer_store", "products", "sku")
TOPICS = PayloadShape("doc_id", "topics", "topic")
MAX_K = 7  # not the default: the document must say what this deployment enforces


def basket_payload(key: str, n: int, context: str | None = None) -> bytes:
    entries = [(f"sku-{j}", round(0.9 - j / 10, 4)) for j in range(n)]
    return codec.encode_payload(
        BASKET,
        key,
        entries,
        model="basket",
        model_version="b3",
        scored_at=SCORED_AT,
        context=context,
        extras=[{"name": f"Product {j}"} for j in range(n)],
    )


@pytest.fixture()
def own(settings: Settings, tmp_path: Path) -> LookupSettings:
    config = tmp_path / "prescore.toml"
    config.write_text(OWN_DATASETS.format(root=tmp_path))
    catalog = load(config, {})
    return LookupSettings(
        core=dataclasses.replace(settings, catalog=catalog), max_k=MAX_K, max_batch_ids=10
    )


@pytest.fixture()
def own_data(rclient, own: LookupSettings) -> dict[str, str]:
    core = own.core
    basket = publish(
        rclient,
        core,
        "basket",
        [
            ("c1|s1", basket_payload("c1|s1", 5)),
            ("c2|s1", basket_payload("c2|s1", 5)),
            ("c1|s1|weekend", basket_payload("c1|s1", 2, context="weekend")),
        ],
        "b3",
    )
    doc = codec.encode_payload(
        TOPICS,
        "d1",
        [("sport", 0.8), ("politics", 0.3), ("weather", 0.1)],
        model="imported",
        model_version="x9",
        scored_at=SCORED_AT,
    )
    topics = publish(rclient, core, "topics", [("d1", doc)], "x9", model="imported")
    return {"basket": basket, "topics": topics}


def test_a_declared_ranking_is_served_with_its_own_names(own, own_data):
    api = create_app(own).test_client()
    r = api.get("/v1/basket-picks/c1%7Cs1")  # a composite key: its ids joined by |
    assert r.status_code == 200, r.data
    body = r.get_json()
    assert body["customer_store"] == "c1|s1" and body["source"] == "precomputed"
    assert body["dataset_version"] == own_data["basket"] and body["model_version"] == "b3"
    assert body["products"] == [
        {"sku": f"sku-{j}", "name": f"Product {j}", "score": round(0.9 - j / 10, 4)}
        for j in range(5)
    ]
    assert "customer_id" not in body and "key" not in body and "items" not in body
    assert api.get("/v1/datasets/basket/c1|s1").data == r.data  # the generic route, raw |
    # k (or limit) and min_score cut its list, keeping each entry's fields
    two = api.get("/v1/basket-picks/c1|s1?k=2").get_json()["products"]
    assert [p["sku"] for p in two] == ["sku-0", "sku-1"] and two[1]["name"] == "Product 1"
    assert api.get("/v1/basket-picks/c1|s1?limit=2").get_json()["products"] == two
    above = api.get("/v1/datasets/basket/c1|s1?min_score=0.65").get_json()["products"]
    assert [p["sku"] for p in above] == ["sku-0", "sku-1", "sku-2"]
    both = api.get("/v1/basket-picks/c1|s1?min_score=0.65&k=1").get_json()["products"]
    assert [p["sku"] for p in both] == ["sku-0"]
    # its contexts: key|store|context, else the plain key
    weekend = api.get("/v1/basket-picks/c1|s1?context=weekend").get_json()
    assert weekend["context"] == "weekend" and len(weekend["products"]) == 2
    weekday = api.get("/v1/basket-picks/c1|s1?context=weekday").get_json()
    assert weekday["context_fallback"] is True and len(weekday["products"]) == 5
    # a miss names the dataset's own key field
    miss = api.get("/v1/basket-picks/c9|s1")
    assert miss.status_code == 404
    assert miss.get_json() == {
        "error": "not_found",
        "message": "no entry of basket for customer_store 'c9|s1'",
        "dataset": "basket",
        "customer_store": "c9|s1",
        "dataset_version": own_data["basket"],
        "model_version": "b3",
    }


@pytest.mark.parametrize(
    "key", ["c1", "c1|s1|x", "c1|", "|s1", "c1||s1", "c1\\x|s1", "c1|s\x01", "c1\\"]
)
def test_a_composite_key_needs_every_part(own, own_data, key):
    api = create_app(own).test_client()
    for url in (f"/v1/basket-picks/{key}", f"/v1/datasets/basket/{key}"):
        r = api.get(url)
        assert r.status_code == 400, (url, r.data)
        assert r.get_json()["error"] == "invalid_id" and "customer_store" in r.get_json()["message"]
    r = api.post("/v1/basket-picks:batchGet", json={"customers": ["c1|s1", key]})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_id"
    assert "customers[1]" in r.get_json()["message"]


def test_a_declared_batch_carries_each_key(own, own_data):
    api = create_app(own).test_client()
    body = api.post(
        "/v1/basket-picks:batchGet", json={"customers": ["c2|s1", "c9|s9", "c1|s1"], "k": 1}
    ).get_json()
    assert body["dataset"] == "basket" and body["dataset_version"] == own_data["basket"]
    assert (body["found"], body["missing"]) == (2, 1)
    results = body["results"]
    assert [x["customer_store"] for x in results] == ["c2|s1", "c9|s9", "c1|s1"]
    assert [len(x["products"]) for x in (results[0], results[2])] == [1, 1]
    assert results[1] == {
        "customer_store": "c9|s9",
        "error": "not_found",
        "message": "no entry of basket for customer_store 'c9|s9'",
    }
    same = api.post(
        "/v1/datasets/basket:batchGet", json={"keys": ["c2|s1", "c9|s9", "c1|s1"], "k": 1}
    )
    assert (
        same.data
        == api.post(
            "/v1/basket-picks:batchGet", json={"customers": ["c2|s1", "c9|s9", "c1|s1"], "k": 1}
        ).data
    )
    ctx = api.post(
        "/v1/basket-picks:batchGet",
        json={"customers": ["c1|s1", "c2|s1"], "context": "weekend", "min_score": 0.75},
    ).get_json()["results"]
    assert ctx[0]["context"] == "weekend" and [p["sku"] for p in ctx[0]["products"]] == [
        "sku-0",
        "sku-1",
    ]
    assert ctx[1]["context_fallback"] is True and len(ctx[1]["products"]) == 2
    # another dataset's field names are not taken
    r = api.post("/v1/basket-picks:batchGet", json={"customer_ids": ["c1|s1"]})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_body"
    r = api.post("/v1/basket-picks:batchGet", json={"customers": ["c1|s1"], "k": 3, "limit": 1})
    assert r.status_code == 200 and len(r.get_json()["results"][0]["products"]) == 1


def test_an_external_dataset_is_served_under_datasets_only_and_never_live(own, own_data):
    asked: list[str] = []

    def live(misses, version):
        asked.extend(f"{m.dataset}:{m.key}" for m in misses)
        return [None] * len(misses)

    api = create_app(own, on_miss=live).test_client()
    body = api.get("/v1/datasets/topics/d1?k=2").get_json()
    assert body["doc_id"] == "d1" and body["dataset_version"] == own_data["topics"]
    assert body["topics"] == [{"topic": "sport", "score": 0.8}, {"topic": "politics", "score": 0.3}]
    assert body["model"] == "imported" and body["model_version"] == "x9"
    above = api.get("/v1/datasets/topics/d1?min_score=0.2").get_json()["topics"]
    assert [t["topic"] for t in above] == ["sport", "politics"]
    assert api.get("/v1/topics/d1").get_json()["error"] == "no_route"  # it declared no route
    r = api.get("/v1/datasets/topics/d1?context=weekend")  # it declared no contexts
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_id"
    batch = api.post("/v1/datasets/topics:batchGet", json={"doc_ids": ["d2", "d1"]}).get_json()
    assert [x["doc_id"] for x in batch["results"]] == ["d2", "d1"]
    assert batch["results"][0]["error"] == "not_found" and batch["found"] == 1
    assert api.get("/v1/datasets/topics/d3").status_code == 404
    # its misses never go to live inference (live = false for an external dataset) ...
    assert asked == []
    # ... while the ranking's do
    assert api.get("/v1/basket-picks/c7|s7").status_code == 404
    assert asked == ["basket:c7|s7"]
    # the shop and colours datasets are not served by this deployment
    assert api.get("/v1/picks/c1").get_json()["error"] == "no_route"
    assert api.get("/v1/datasets/shop/c1").get_json()["error"] == "unknown_dataset"
    ready = api.get("/readyz").get_json()
    assert ready["datasets"] == {"basket": own_data["basket"], "topics": own_data["topics"]}
    text = api.get("/metrics").get_data(as_text=True)
    assert _sample(text, "prescore_lookup_keys_total", dataset="topics", result="hit") == 3
    assert _sample(text, "prescore_lookup_keys_total", dataset="topics", result="miss") == 2


def _validator(doc: dict):
    def check(name: str, instance: object) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(instance)

    return check


def _valid(check, name: str, instance: object) -> bool:
    try:
        check(name, instance)
    except jsonschema.ValidationError:
        return False
    return True


def test_the_openapi_document_lists_a_declared_dataset_and_the_bounds_enforced(own, own_data):
    api = create_app(own).test_client()
    doc = api.get("/openapi.json").get_json()
    assert set(doc["paths"]) == _served_paths(api, ["basket", "topics"])
    for path in (
        "/v1/basket-picks/{key}",
        "/v1/basket-picks:batchGet",
        "/v1/datasets/basket/{key}",
        "/v1/datasets/basket:batchGet",
        "/v1/datasets/topics/{key}",
        "/v1/datasets/topics:batchGet",
    ):
        assert path in doc["paths"], path
    assert not any(p.startswith(("/v1/topics", "/v1/picks")) for p in doc["paths"])
    assert "basket" in doc["info"]["description"] and "topics" in doc["info"]["description"]
    schemas = doc["components"]["schemas"]
    payload = schemas["basket.Payload"]
    assert {"customer_store", "products", "context", "context_fallback"} <= set(
        payload["properties"]
    )
    assert "customer_store" in payload["required"]
    assert "sku" in payload["properties"]["products"]["items"]["properties"]
    assert {"doc_id", "topics"} <= set(schemas["topics.Payload"]["properties"])
    assert "context" not in schemas["topics.Payload"]["properties"]
    assert set(schemas["basket.BatchRequest"]["properties"]) == {
        "keys",
        "customers",
        "k",
        "limit",
        "min_score",
        "context",
    }
    assert schemas["basket.BatchRequest"]["properties"]["customers"]["maxItems"] == 10
    missing = schemas["basket.Batch"]["properties"]["results"]["items"]["oneOf"][1]
    assert missing["required"] == ["customer_store", "error"]

    # the query parameters: k and limit are integers 1..max_k, min_score a bounded number
    get = doc["paths"]["/v1/basket-picks/{key}"]["get"]
    params = {p["name"]: p for p in get["parameters"]}
    assert set(params) == {
        "key",
        "k",
        "limit",
        "min_score",
        "context",
        "version",  # the live one or its canary's (prescore.store.canaries)
        "X-Prescore-Canary",
        "If-None-Match",
    }
    assert params["If-None-Match"]["in"] == "header"  # a conditional GET (lookup.caching)
    assert set(get["responses"]["200"]["headers"]) == {"ETag", "Cache-Control"}
    assert "304" in get["responses"]
    assert params["k"]["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_K}
    assert params["limit"]["schema"] == params["k"]["schema"]
    assert params["min_score"]["schema"] == {
        "type": "number",
        "minimum": -MAX_ABS_SCORE,
        "maximum": MAX_ABS_SCORE,
    }
    assert doc["paths"]["/v1/datasets/basket/{key}"]["get"]["parameters"] == get["parameters"]
    assert "context" not in {
        p["name"] for p in doc["paths"]["/v1/datasets/topics/{key}"]["get"]["parameters"]
    }

    # ... and the server takes exactly what they allow
    def status(query: str) -> tuple[int, str]:
        r = api.get(f"/v1/basket-picks/c1|s1?{query}")
        return r.status_code, r.get_json().get("error", "")

    assert status(f"k={MAX_K}") == (200, "")
    assert status(f"k={MAX_K + 1}") == (400, "invalid_k")
    assert status("k=1") == (200, "") and status("k=0") == (400, "invalid_k")
    assert status(f"limit={MAX_K}") == (200, "")
    assert status(f"limit={MAX_K + 1}") == (400, "invalid_limit")
    assert status(f"min_score={MAX_ABS_SCORE:.0f}") == (200, "")
    assert status(f"min_score=-{MAX_ABS_SCORE:.0f}") == (200, "")
    assert status(f"min_score={MAX_ABS_SCORE * 1.5:.0f}") == (400, "invalid_min_score")
    assert status(f"min_score=-{MAX_ABS_SCORE * 1.5:.0f}") == (400, "invalid_min_score")

    # a batch body is refused by the server exactly when the schema refuses it
    check = _validator(doc)
    bodies = [
        {"customers": ["c1|s1"]},
        {"keys": ["c1|s1"], "k": MAX_K, "min_score": -MAX_ABS_SCORE},
        {"customers": ["c1|s1"], "k": MAX_K + 1},
        {"customers": ["c1|s1"], "limit": 0},
        {"customers": ["c1|s1"], "k": 1, "limit": 1},
        {"customers": ["c1|s1"], "min_score": MAX_ABS_SCORE * 2},
        {"customers": ["c1|s1"], "context": "weekend"},
        {"customers": ["c1|s1"], "context": "no way"},
        {"customers": ["c1|s1"], "keys": ["c1|s1"]},
        {"customers": []},
        {"customers": [f"c{i}|s1" for i in range(11)]},
        {"customers": ["c1"]},
        {"customers": ["c1|s1|x"]},
        {"customers": ["a" * 128 + "|" + "b" * 128]},
        {"customers": ["a" * 129 + "|b"]},
        {"customers": ["c1|s1"], "customer_ids": ["c1"]},
        {"doc_ids": ["c1|s1"]},
    ]
    for body in bodies:
        r = api.post("/v1/basket-picks:batchGet", json=body)
        assert r.status_code != 500
        assert _valid(check, "basket.BatchRequest", body) == (r.status_code == 200), (
            body,
            r.status_code,
            r.data,
        )
        if r.status_code == 200:
            check("basket.Batch", r.get_json())

    # and the answers have the documented shapes
    check("basket.Payload", api.get("/v1/basket-picks/c1|s1?context=weekday").get_json())
    check("topics.Payload", api.get("/v1/datasets/topics/d1").get_json())
    check("NotFound", api.get("/v1/basket-picks/c5|s5").get_json())
    check("Error", api.get("/v1/basket-picks/c5").get_json())


def test_batch_get_is_answered_before_flask_and_refusals_reach_flask(lookup_settings, data):
    app = create_app(lookup_settings)
    fast = app.wsgi_app
    flask_calls: list[str] = []
    flask_app = fast.fallthrough  # type: ignore[attr-defined]

    def counted(environ, start_response):  # type: ignore[no-untyped-def]
        flask_calls.append(environ["PATH_INFO"])
        return flask_app(environ, start_response)

    fast.fallthrough = counted  # type: ignore[attr-defined]
    api = app.test_client()
    ok = api.post("/v1/picks:batchGet", json={"customer_ids": ["c1", "ghost"], "k": 2})
    assert ok.status_code == 200 and ok.get_json()["found"] == 1
    generic = api.post("/v1/datasets/shop:batchGet", json={"keys": ["c1"]})
    assert generic.status_code == 200 and generic.get_json()["results"][0]["customer_id"] == "c1"
    assert flask_calls == []  # both answered by the fast path
    refused = [
        api.post("/v1/picks:batchGet", data=b"{nope", content_type="application/json"),
        api.post("/v1/picks:batchGet", json={"customer_ids": ["bad\nid"]}),
        api.post("/v1/picks:batchGet", json={"customer_ids": ["c1"] * 10_000}),
        api.post("/v1/picks:batchGet", data=b"[]", content_type="text/plain"),
    ]
    assert [r.status_code for r in refused] == [400, 400, 413, 415]
    assert all(r.get_json()["error"] for r in refused)  # each from Flask's one error table
    assert len(flask_calls) == 4


def test_a_body_nested_too_deep_is_malformed_json_not_a_500(api, data):
    deep = b'{"customer_ids":' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = api.post("/v1/picks:batchGet", data=deep, content_type="application/json")
    assert (r.status_code, r.get_json()["error"]) == (400, "malformed_json")


def test_datasets_say_what_they_are_and_which_version_they_serve(
    api, data, rclient, lookup_settings
):
    """GET /v1/datasets and /v1/datasets/{name}: the declaration and the live version,
    read from the registry; a dataset not published says so (200), an unknown one 404."""
    doc = api.get("/openapi.json").get_json()
    check = _validator(doc)
    listed = api.get("/v1/datasets")
    assert listed.status_code == 200
    by_name = {d["name"]: d for d in listed.get_json()["datasets"]}
    assert sorted(by_name) == ["colours", "shop"]
    shop = by_name["shop"]
    check("Dataset", shop)
    entry = registry_entry.VersionInfo.from_bytes(
        rclient.hget(keys.registry_key("shop"), data["shop"])
    )
    assert (shop["status"], shop["version"], shop["model"], shop["model_version"]) == (
        "published",
        data["shop"],
        "shop",
        "m1",
    )
    assert shop["rows"] == entry.rows and shop["published_at"] == entry.published_at
    assert 0 <= shop["age_s"] < 3600
    assert shop["routes"] == ["/v1/datasets/shop/{key}", "/v1/picks/{key}"]
    assert shop["key"] == {"field": "customer_id", "parts": 1, "contexts": True}
    assert api.get("/v1/datasets/shop").get_json() == shop
    rclient.delete(keys.pointer_key("colours"), keys.registry_key("colours"))
    colours = api.get("/v1/datasets/colours").get_json()  # this process served it: lost
    check("Dataset", colours)
    assert (colours["status"], colours["version"]) == ("dataset_lost", None)
    fresh = create_app(lookup_settings).test_client()  # one started after the loss
    assert fresh.get("/v1/datasets/colours").get_json()["status"] == "not_published"
    gone = api.get("/v1/datasets/nope")
    assert (gone.status_code, gone.get_json()["error"]) == (404, "unknown_dataset")
    assert api.get("/v1/datasets/shop:batchGet").status_code == 405  # still POST-only


def test_an_answer_carries_validators_and_a_conditional_get_gets_304(
    api, data, rclient, core: Settings, lookup_settings: LookupSettings
):
    """The fast path (ASCII keys) and Flask's (others) alike: a weak ETag that ignores
    the answer's age, 304 with no body while the answer is the one it names, 200 again
    once a new version serves another answer; Cache-Control as configured."""
    write_payloads(rclient, "shop", data["shop"], [("ü1", shop_payload("ü1", 3, "m1"))])
    for path in ("/v1/picks/c2?k=3", "/v1/picks/%C3%BC1?k=3"):
        first = api.get(path)
        tag = first.headers["ETag"]
        assert first.status_code == 200 and re.fullmatch(r'W/"[0-9a-f]{24}"', tag)
        assert first.headers["Cache-Control"] == "no-cache"
        for held in (tag, f'W/"nope", {tag}', tag.removeprefix("W/"), "*"):
            again = api.get(path, headers={"If-None-Match": held})
            assert (again.status_code, again.data) == (304, b""), held
            assert again.headers["ETag"] == tag
            # no body, so nothing of one: RFC 9110 15.4.5
            assert "Content-Type" not in again.headers, again.headers
            assert again.headers.get("Content-Length") in (None, "0"), again.headers
        assert api.get(path, headers={"If-None-Match": 'W/"nope"'}).status_code == 200
        other = api.get(path.replace("k=3", "k=2"))
        assert other.status_code == 200 and other.headers["ETag"] != tag  # another answer
    missing = api.get("/v1/picks/nobody")
    assert missing.status_code == 404 and "ETag" not in missing.headers
    tag = api.get("/v1/picks/c2?k=3").headers["ETag"]
    publish_customers(rclient, core, customers=5, model_version="m2", n=12)
    lookup_settings = dataclasses.replace(lookup_settings, pointer_cache_s=0, cache_max_age_s=30)
    fresh = create_app(lookup_settings).test_client()
    newer = fresh.get("/v1/picks/c2?k=3", headers={"If-None-Match": tag})
    assert newer.status_code == 200 and newer.get_json()["model_version"] == "m2"
    assert newer.headers["ETag"] != tag and newer.headers["Cache-Control"] == "max-age=30"


def test_an_etag_leaves_the_age_out() -> None:
    from lookup.caching import etag

    young = (
        b'{"source":"precomputed","dataset_version":"v1","age_s":1,"customer_id":"u","items":[]}'
    )
    old = young.replace(b'"age_s":1,', b'"age_s":86400,')
    assert etag(young) == etag(old) != etag(young.replace(b'"v1"', b'"v2"'))
    # a payload's own field of that name is part of the answer (no envelope age here)
    own = b'{"source":"precomputed","dataset_version":"v1","customer_id":"u","age_s":5}'
    assert etag(own) != etag(own.replace(b'"age_s":5', b'"age_s":6'))
