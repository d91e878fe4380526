"""Lookup on a miss of a ranking (the shop): real lookup and fallback servers over one
dataset file, real Redis, real TensorFlow; the model version the lookup asks for; what a
client sends never reaching what others read; and a fallback down (killed) or refusing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.encoding import keys
from prescore.settings import Settings
from tests import domains
from tests import fallback_domains as fd
from tests.fallback_lookup_helpers import (
    PREDICT_ROUTE,
    current,
    fallback_calls,
    fallback_server,
    hits,
    lookup_env,
    lookup_server,
    outcomes,
    publish_data,
    stored,
)
from tests.fallback_procs import Server, free_port, metric_value
from tests.helpers import registered
from tests.lookup_helpers import publish

# the fixtures world, fallback and lookup
pytest_plugins = ["tests.fallback_lookup_fixtures"]


_top = fd.top_products


def test_a_miss_is_answered_live_written_back_and_then_a_hit(
    lookup: Server, rclient: redis.Redis, shop: dict[str, Path]
) -> None:
    first = requests.get(lookup.url + "/v1/picks/c3?k=3", timeout=5)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["source"] == "live" and doc["dataset_version"] == current(rclient)
    assert (doc["customer_id"], doc["model"], doc["model_version"]) == ("c3", "shop-model", "1")
    assert [i["product_id"] for i in doc["items"]] == _top(shop, "c3", 3)  # from the table row
    key = keys.value_key("shop", current(rclient), "c3")
    assert 0 < rclient.ttl(key) <= 86_400  # written back under the current version, with TTL
    assert json.loads(rclient.get(key) or b"")["source"] == "live"  # marked as a live write-back
    hits0 = hits(lookup, "shop", "written_back")
    again = requests.get(lookup.url + "/v1/datasets/shop/c3?k=3", timeout=5).json()
    assert again["source"] == "written_back" and again["items"] == doc["items"]
    assert (
        hits(lookup, "shop", "written_back") == hits0 + 1
    )  # the second request was served from Redis
    hit = requests.get(lookup.url + "/v1/picks/c0", timeout=5).json()
    assert hit["source"] == "precomputed"


def test_a_miss_carries_its_request_id_and_traceparent_to_the_fallback(
    lookup: Server, fallback: Server
) -> None:
    """Both sides log the same request: the lookup forwards X-Request-ID and a W3C
    traceparent on its live call (a malformed traceparent is not forwarded)."""
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    for key, rid, sent, forwarded in (
        ("c6", "trace-test-1", parent, parent),
        ("c7", "trace-test-2", "x", ""),
    ):
        headers = {"X-Request-ID": rid, "traceparent": sent}
        reply = requests.get(f"{lookup.url}/v1/picks/{key}?k=2", headers=headers, timeout=5)
        assert reply.status_code == 200 and reply.json()["source"] == "live", reply.text
        assert reply.headers["X-Request-ID"] == rid
        lines = [
            json.loads(line)
            for line in fallback.log.read_text().splitlines()
            if line.startswith("{") and f'"{rid}"' in line
        ]
        assert [(d["path"], d["status"]) for d in lines] == [("/v1/datasets/shop:predict", 200)]
        assert lines[0].get("traceparent", "") == forwarded


def test_openapi_documents_predict(lookup: Server) -> None:
    spec = requests.get(lookup.url + "/openapi.json", timeout=5).json()
    for path in ("/v1/picks:predict", "/v1/datasets/shop:predict"):
        post = spec["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/shop.PredictRequest"
        }
    request = spec["components"]["schemas"]["shop.PredictRequest"]
    assert request["required"] == ["features"]
    assert {"customer_id", "key", "features", "k"} <= set(request["properties"])
    assert "candidates" not in request["properties"] and request["additionalProperties"] is False
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    assert {"fallback_timeout", "fallback_unavailable", "invalid_features"} <= set(codes)


def test_a_customer_the_table_lacks_is_404_and_not_stored(
    lookup: Server, rclient: redis.Redis
) -> None:
    reply = requests.get(lookup.url + "/v1/picks/stranger", timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (404, "not_found")
    assert stored(rclient, "shop", "stranger") is None


def test_a_new_customer_with_features_is_scored_but_never_stored(
    lookup: Server, rclient: redis.Redis, shop: dict[str, Path]
) -> None:
    features = {"segment": "premium", "categories": ["garden"]}
    body = {"customer_id": "newbie", "features": features, "k": 4}
    reply = requests.post(lookup.url + "/v1/picks:predict", json=body, timeout=5)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["source"] == "live" and doc["customer_id"] == "newbie"
    want = fd.expected_top(shop["tables"], shop["plain"], "premium", ["garden"], 4)
    assert [i["product_id"] for i in doc["items"]] == [p for p, _ in want]
    # made from what the caller sent: nothing is written where other clients read
    assert stored(rclient, "shop", "newbie") is None
    same = requests.post(
        lookup.url + "/v1/datasets/shop:predict",
        json={"key": "newbie", "features": features, "k": 4},
        timeout=5,
    ).json()
    assert same["items"] == doc["items"] and stored(rclient, "shop", "newbie") is None
    known = requests.post(
        lookup.url + "/v1/picks:predict",
        json={"customer_id": "c0", "features": {"segment": "budget", "categories": ["toys"]}},
        timeout=5,
    ).json()
    assert known["source"] == "precomputed"  # a published key is a hit, not rescored
    bad = requests.post(lookup.url + "/v1/picks:predict", json={"customer_id": "x"}, timeout=5)
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_features")


def _nested(depth: int) -> list:  # type: ignore[type-arg]
    value: list = [1.0]  # type: ignore[type-arg]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"categories": ["toys"]}, "segment"),
        ({"segment": "budget", "categories": ["toys"], "age": 3}, "age"),
        ({"segment": 7, "categories": ["toys"]}, "segment"),
        ({"segment": "budget", "categories": {"a": 1}}, "categories"),
        ({"segment": "budget", "categories": ["toys"], "age": float("nan")}, "age"),
        ({"segment": "budget", "categories": ["toys"], "age": [1.0, float("inf")]}, "age"),
        ({"segment": "budget", "categories": _nested(600)}, "categories"),  # no 500
    ],
)
def test_features_the_model_cannot_take_are_the_callers_400(
    lookup: Server, rclient: redis.Redis, features: dict[str, Any], named: str
) -> None:
    body = json.dumps({"customer_id": "n1", "features": features})  # NaN as JSON's NaN
    json_type = {"Content-Type": "application/json"}
    reply = requests.post(lookup.url + "/v1/picks:predict", data=body, headers=json_type, timeout=5)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_features"), reply.text
    assert named in reply.json()["message"]
    assert stored(rclient, "shop", "n1") is None


def test_refused_features_never_open_the_breaker(lookup: Server) -> None:
    """The fallback's 400s are the caller's fault, no sign of an outage: after more of them
    than the breaker's limit (5), misses are still answered live."""
    body = {"customer_id": "n2", "features": {"segment": 1, "categories": ["toys"]}}
    for _ in range(7):
        reply = requests.post(lookup.url + "/v1/picks:predict", json=body, timeout=5)
        assert reply.status_code == 400
    live = requests.get(lookup.url + "/v1/picks/c8", timeout=5)
    assert live.status_code == 200 and live.json()["source"] == "live"


def test_a_client_cannot_change_what_another_client_reads(
    lookup: Server, rclient: redis.Redis, shop: dict[str, Path]
) -> None:
    """The attack: post chosen features (or candidates) under a victim's key, before and
    after the victim is first served, then see what the victim is served. The victim's
    answer is made from the dataset's own table, and stays so."""
    c = fd.customers(shop["tables"]).loc["c4"]
    other = "premium" if c["segment"] == "budget" else "budget"
    attack = {"customer_id": "c4", "features": {"segment": other, "categories": ["toys"]}}
    before = requests.post(lookup.url + "/v1/picks:predict", json=attack, timeout=5).json()
    assert before["source"] == "live"  # answered, from the attacker's features ...
    assert stored(rclient, "shop", "c4") is None  # ... and never stored
    victim = requests.get(lookup.url + "/v1/picks/c4", timeout=5).json()
    assert victim["source"] == "live"
    assert [i["product_id"] for i in victim["items"]] == _top(shop, "c4", 5)
    assert victim["items"] != before["items"]
    kept = stored(rclient, "shop", "c4")
    after = requests.post(lookup.url + "/v1/picks:predict", json=attack, timeout=5).json()
    assert after["source"] == "written_back" and after["items"] == victim["items"]
    with_candidates = {**attack, "customer_id": "c5", "candidates": ["p1"]}
    refused = requests.post(lookup.url + "/v1/picks:predict", json=with_candidates, timeout=5)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_body")
    again = requests.get(lookup.url + "/v1/picks/c4", timeout=5).json()
    assert again["items"] == victim["items"] and stored(rclient, "shop", "c4") == kept
    assert stored(rclient, "shop", "c5") is None


def test_a_batch_sends_all_misses_in_one_call(lookup: Server, fallback: Server) -> None:
    before = fallback_calls(fallback)
    body = {"keys": ["c0", "c3", "stranger", "c1", "c3"], "k": 2}
    reply = requests.post(lookup.url + "/v1/picks:batchGet", json=body, timeout=5)
    doc = reply.json()
    assert reply.status_code == 200 and (doc["found"], doc["missing"]) == (4, 1)
    assert outcomes(doc) == ["precomputed", "live", "not_found", "precomputed", "live"]
    assert all(len(r.get("items", [])) == 2 for r in doc["results"] if "source" in r)
    assert fallback_calls(fallback) == before + 1


def test_more_misses_than_the_fallback_takes_go_in_several_calls(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    fallback: Server,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    small = lookup_server(
        world,
        redis_url,
        fallback.url,
        tmp_path / "lookup.log",
        PRESCORE_FALLBACK_MAX_INSTANCES="1",
    )
    try:
        before = fallback_calls(fallback)
        body = {"keys": ["c3", "c0", "stranger", "c6"], "k": 2}
        reply = requests.post(small.url + "/v1/picks:batchGet", json=body, timeout=5)
        doc = reply.json()
        assert reply.status_code == 200 and (doc["found"], doc["missing"]) == (3, 1)
        assert outcomes(doc) == ["live", "precomputed", "not_found", "live"]
        assert fallback_calls(fallback) == before + 3  # one call per miss
    finally:
        small.stop()


def test_a_later_call_failing_keeps_the_answers_of_the_earlier_ones(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish_data(rclient, settings)
    fb = fallback_server(world, tmp_path / "fb.log").start()
    env = lookup_env(world, redis_url, fb.url, PRESCORE_FALLBACK_MAX_INSTANCES="1")
    app = create_app(LookupSettings.from_env(env))
    client = app.extensions["fallback_client"]
    real_post, calls = client._post, []

    def post(path: str, *rest: Any) -> Any:
        calls.append(path)
        if len(calls) == 2:
            fb.kill()  # the fallback goes away between two calls of one batch
        return real_post(path, *rest)

    monkeypatch.setattr(client, "_post", post)
    try:
        body = {"keys": ["c0", "c3", "c6", "c7"], "k": 2}
        reply = app.test_client().post("/v1/picks:batchGet", json=body)
        doc = reply.get_json()
        assert reply.status_code == 200, doc
        unavailable = "fallback_unavailable"
        assert outcomes(doc) == ["precomputed", "live", unavailable, unavailable]
        assert (doc["found"], doc["missing"]) == (2, 2) and len(calls) == 2  # none after it
        assert calls == ["/v1/datasets/shop:predict"] * 2
        assert stored(rclient, "shop", "c3") is not None  # the earlier answer written back
        assert stored(rclient, "shop", "c6") is None
    finally:
        fb.stop()


RESET_S = 3.0


def test_fallback_killed_gives_fast_errors_breaker_opens_then_recovers(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    fb = fallback_server(world, tmp_path / "fb.log").start()
    lk: Server | None = None
    try:
        lk = lookup_server(
            world,
            redis_url,
            fb.url,
            tmp_path / "lookup.log",
            PRESCORE_FALLBACK_BREAKER_MIN_CALLS="3",
            # open long enough that the calls below all find it open on a loaded machine
            PRESCORE_FALLBACK_BREAKER_RESET_S=str(RESET_S),
        )
        assert requests.get(lk.url + "/v1/picks/m0", timeout=5).status_code == 404
        fb.kill()
        # a batch serves its hits; each miss says live inference is unavailable
        body = {"keys": ["c0", "c9", "c1", "c9"], "k": 2}
        reply = requests.post(lk.url + "/v1/picks:batchGet", json=body, timeout=5)
        doc = reply.json()
        assert reply.status_code == 200, reply.text
        unavailable = "fallback_unavailable"
        assert outcomes(doc) == ["precomputed", unavailable, "precomputed", unavailable]
        assert (doc["found"], doc["missing"]) == (2, 2)
        assert len(doc["results"][0]["items"]) == 2 and doc["results"][1]["customer_id"] == "c9"
        codes, messages = [], []
        for i in range(8):
            started = time.monotonic()
            reply = requests.get(lk.url + f"/v1/picks/miss{i}", timeout=5)
            assert time.monotonic() - started < 1.0  # well within a second, never hanging
            codes.append((reply.status_code, reply.json()["error"]))
            messages.append(reply.json()["message"])
            hit = requests.get(lk.url + "/v1/picks/c0", timeout=5)
            assert hit.status_code == 200  # hits never depend on the fallback
        assert set(codes) == {(503, "fallback_unavailable")}
        assert "circuit open" in messages[-1]  # the shop's breaker opened
        body = {"keys": ["c2", "c10"]}
        doc = requests.post(lk.url + "/v1/picks:batchGet", json=body, timeout=5).json()
        assert outcomes(doc) == ["precomputed", "fallback_unavailable"]
        assert "circuit open" in doc["results"][1]["message"]
        # one breaker per dataset: the colours' is still closed, its misses still tried
        body = {"keys": ["img-0", "img-hit"]}
        reply = requests.post(lk.url + "/v1/datasets/colours:batchGet", json=body, timeout=5)
        assert reply.status_code == 200, reply.text
        assert outcomes(reply.json()) == ["fallback_unavailable", "precomputed"]
        assert "circuit open" not in reply.json()["results"][0]["message"]
        single = requests.get(lk.url + "/v1/datasets/colours/img-0", timeout=5)
        assert (single.status_code, single.json()["error"]) == (503, "fallback_unavailable")
        fb.start()
        time.sleep(RESET_S + 0.2)  # the breaker's reset timeout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = requests.get(lk.url + "/v1/picks/c3", timeout=5)
            if reply.status_code == 200:
                break
            time.sleep(0.3)
        assert reply.status_code == 200 and reply.json()["source"] == "live"
    finally:
        if lk is not None:
            lk.stop()
        fb.stop()


def test_the_live_answer_comes_from_the_model_version_of_the_dataset_version(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    shop: dict[str, Path],
    colours: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Version 1 made the published data; version 2 is promoted since. A miss is answered
    by version 1 (loaded in the background on the first ask), so one answer never mixes
    two models; a dataset version made by version 2 gets version 2's live answers."""
    s = fd.store_settings(Settings(), world["config"], tmp_path)
    registered(s, "shop-model", shop["plain"])
    worse = domains.train_shop(shop["tables"], tmp_path / "worse", good=False, seed=5)
    registered(s, "shop-model", worse)  # version 2, promoted
    registered(s, "colour-tagger", colours["model"])
    own = {**world, "settings": s}
    publish_data(rclient, settings, model_version="1")
    fb = fallback_server(own, tmp_path / "fb.log").start()
    lk: Server | None = None
    try:
        lk = lookup_server(
            own,
            redis_url,
            fb.url,
            tmp_path / "lookup.log",
            PRESCORE_FALLBACK_BREAKER_MIN_CALLS="100",
        )
        ready = requests.get(fb.url + "/readyz", timeout=5).json()
        assert ready["models"]["shop"] == "2"  # version 1 is not even loaded
        deadline, seen = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            reply = requests.get(lk.url + "/v1/picks/c5", timeout=5)
            seen.append(reply.status_code)
            if reply.status_code == 200:
                break
            assert reply.json()["error"] == "fallback_unavailable"  # model_loading behind it
            time.sleep(0.2)
        doc = reply.json()
        assert (doc["source"], doc["model_version"]) == ("live", "1"), seen
        assert [i["product_id"] for i in doc["items"]] == _top(shop, "c5", 5)
        rows = [(c, fd.shop_payload(c, 5, "2")) for c in ("c0", "c1")]
        publish(rclient, settings, "shop", rows, "2", model="shop-model")
        newer = requests.get(lk.url + "/v1/picks/c5", timeout=5).json()
        assert (newer["source"], newer["model_version"]) == ("live", "2")  # a new version
        assert [i["product_id"] for i in newer["items"]] == _top(shop, "c5", 5, worse)
    finally:
        if lk is not None:
            lk.stop()
        fb.stop()


def test_live_write_backs_are_bounded_per_version(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    fallback: Server,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    lk = lookup_server(
        world, redis_url, fallback.url, tmp_path / "lookup.log", PRESCORE_LIVE_MAX_KEYS="1"
    )
    try:
        first = requests.get(lk.url + "/v1/picks/c3", timeout=5)
        second = requests.get(lk.url + "/v1/picks/c4", timeout=5)
        assert [first.json()["source"], second.json()["source"]] == ["live", "live"]
        assert stored(rclient, "shop", "c3") is not None
        assert stored(rclient, "shop", "c4") is None  # over the bound
        assert stored(rclient, "shop", "c0") is not None
        third = requests.get(lk.url + "/v1/datasets/colours/img-0", timeout=5)
        assert third.json()["source"] == "live"
        assert stored(rclient, "colours", "img-0") is not None  # a bound per dataset version
    finally:
        lk.stop()


def test_error_bodies_carry_no_internals(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    lk = lookup_server(world, redis_url, "http://127.0.0.1:1", tmp_path / "lookup.log")
    try:
        for path in ("/v1/picks/nobody", "/v1/datasets/colours/img-0"):
            reply = requests.get(lk.url + path, timeout=5)
            assert (reply.status_code, reply.json()["error"]) == (503, "fallback_unavailable")
            assert "Errno" not in reply.text and "refused" not in reply.text.lower()
            assert "127.0.0.1" not in reply.text
        body = {"customer_id": "n", "features": {"segment": "budget", "categories": ["toys"]}}
        reply = requests.post(lk.url + "/v1/picks:predict", json=body, timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (503, "fallback_unavailable")
        assert "Errno" not in reply.text
    finally:
        lk.stop()


def test_the_fallback_route_is_one_for_every_dataset(fallback: Server, lookup: Server) -> None:
    before = fallback_calls(fallback, PREDICT_ROUTE)
    requests.get(lookup.url + "/v1/picks/c11", timeout=5)
    requests.get(lookup.url + "/v1/datasets/colours/img-3", timeout=5)
    assert fallback_calls(fallback, PREDICT_ROUTE) == before + 2


def test_a_fallback_refusing_what_it_does_not_serve_is_unavailable_not_the_callers_fault(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A fallback deployed with other settings than the lookup (it serves only the shop,
    and takes at most 2 instances a call): its 404 and 413 are no fault of the caller's,
    so a miss is a 503 fallback_unavailable (a batch keeps its hits), never a 4xx."""
    publish_data(rclient, settings)
    fb = fallback_server(
        world, tmp_path / "fb.log", FALLBACK_DATASETS="shop", FALLBACK_MAX_INSTANCES="2"
    ).start()
    lk: Server | None = None
    try:
        lk = lookup_server(world, redis_url, fb.url, tmp_path / "lookup.log")
        single = requests.get(lk.url + "/v1/datasets/colours/img-0", timeout=5)
        assert (single.status_code, single.json()["error"]) == (503, "fallback_unavailable")
        body = {"keys": ["img-hit", "img-1"]}
        doc = requests.post(lk.url + "/v1/datasets/colours:batchGet", json=body, timeout=5).json()
        assert outcomes(doc) == ["precomputed", "fallback_unavailable"]
        body = {"keys": ["c0", "c3", "c4", "c5"], "k": 2}
        reply = requests.post(lk.url + "/v1/picks:batchGet", json=body, timeout=5)
        assert reply.status_code == 200, reply.text
        unavailable = "fallback_unavailable"
        assert outcomes(reply.json()) == ["precomputed", unavailable, unavailable, unavailable]
        assert stored(rclient, "shop", "c3") is None
        live = requests.get(lk.url + "/v1/picks/c3", timeout=5)  # one miss: within its bound
        assert live.status_code == 200 and live.json()["source"] == "live"
    finally:
        if lk is not None:
            lk.stop()
        fb.stop()


def test_the_fallback_makes_its_metrics_folder_and_sums_its_workers(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming a folder that does not exist yet (a fresh emptyDir
    path): the fallback makes it and /metrics serves what both workers counted."""
    folder = tmp_path / "not" / "yet" / "metrics"
    fb = fallback_server(
        world, tmp_path / "fb.log", PROMETHEUS_MULTIPROC_DIR=str(folder), FALLBACK_WORKERS="2"
    ).start()
    try:
        body = {"instances": [{"key": "c1"}]}
        for _ in range(12):  # new connections: both workers answer some
            with requests.Session() as s:
                reply = s.post(fb.url + "/v1/datasets/shop:predict", json=body, timeout=30)
                assert reply.status_code == 200, reply.text
        text = requests.get(fb.url + "/metrics", timeout=5).text
        assert fallback_calls(fb) == 12
        assert 'prescore_fallback_queue_depth{dataset="shop"}' in text
        assert 'prescore_fallback_model_version{dataset="shop"} 1.0' in text
        assert 'prescore_fallback_table_index_ready{dataset="shop",table="entities"} 1.0' in text
        assert folder.is_dir() and any(folder.glob("*.db"))
    finally:
        fb.stop()


def test_the_fallback_needs_its_token_and_metrics_can_have_their_own_port(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """With PRESCORE_FALLBACK_TOKEN, :predict answers only a caller sending it (the lookup
    does, from the same setting); health stays open. /metrics of both services listens on
    its own port when asked, and the API port then has none. The token is never logged."""
    token = "s3cret-token-0123456789"
    fb_metrics, lk_metrics = free_port(), free_port()
    publish_data(rclient, settings)
    fb = fallback_server(
        world,
        tmp_path / "fb.log",
        PRESCORE_FALLBACK_TOKEN=token,
        FALLBACK_METRICS_BIND=f"127.0.0.1:{fb_metrics}",
    ).start()
    servers = [fb]
    try:
        predict = fb.url + "/v1/datasets/shop:predict"
        body = {"instances": [{"key": "c3"}]}
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": token},
        ):
            reply = requests.post(predict, json=body, headers=headers, timeout=10)
            assert (reply.status_code, reply.json()["error"]) == (401, "unauthorized")
            assert reply.headers["WWW-Authenticate"] == "Bearer"
        ok = requests.post(
            predict, json=body, timeout=10, headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200, ok.text
        assert requests.get(fb.url + "/readyz", timeout=5).status_code == 200
        assert requests.get(fb.url + "/metrics", timeout=5).status_code == 404
        text = requests.get(f"http://127.0.0.1:{fb_metrics}/metrics", timeout=5).text
        assert (
            metric_value(
                text, "prescore_fallback_requests_total", route=PREDICT_ROUTE, status="401"
            )
            == 3
        )
        without = lookup_server(world, redis_url, fb.url, tmp_path / "lk0.log")
        servers.append(without)
        reply = requests.get(without.url + "/v1/picks/c4", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (503, "fallback_unavailable")
        lk = lookup_server(
            world,
            redis_url,
            fb.url,
            tmp_path / "lk1.log",
            PRESCORE_FALLBACK_TOKEN=token,
            LOOKUP_METRICS_BIND=f"127.0.0.1:{lk_metrics}",
        )
        servers.append(lk)
        reply = requests.get(lk.url + "/v1/picks/c4", timeout=5)
        assert reply.status_code == 200 and reply.json()["source"] == "live"
        assert requests.get(lk.url + "/metrics", timeout=5).status_code == 404
        text = requests.get(f"http://127.0.0.1:{lk_metrics}/metrics", timeout=5).text
        assert metric_value(text, "prescore_lookup_live_answers_total", dataset="shop") == 1
        assert 'prescore_dataset_info{dataset="shop"' in text  # the registry, read by the main
    finally:
        for s in servers:
            s.stop()
    for log in tmp_path.glob("*.log"):
        assert token not in log.read_text()
