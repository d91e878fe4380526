"""The fallback service as a real granian process over a real model store and TensorFlow,
answering datasets that are not the demo: the shop (a ranking, twice: the plain and the
factored export of one model) and the colours (labels of images read from their folder)."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from prescore.settings import Settings
from tests import domains
from tests import fallback_domains as fd
from tests.fallback_procs import Server, metric_value
from tests.helpers import read_until_closed, registered, unanswered

SHOP = "/v1/datasets/shop:predict"
BODY_TIMEOUT_S = 3
SHOPF = "/v1/datasets/shopf:predict"
COLOURS = "/v1/datasets/colours:predict"


@pytest.fixture(scope="module")
def world(
    shop: dict[str, Path], colours: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The dataset file, the image folder and a model store with the three models."""
    root = tmp_path_factory.mktemp("fallback-service")
    images = fd.image_folder(root, colours)
    config = fd.write_config(
        root / "prescore.toml", tables=shop["tables"], images=images, factored=True
    )
    s = fd.store_settings(Settings(), config, root)
    fd.register_models(s, shop, colours)
    return {"settings": s, "config": config, "images": images, "root": root}


@pytest.fixture(scope="module")
def server(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = fd.process_env(
        world["settings"],
        world["config"],
        FALLBACK_RUNTIME="tf",
        FALLBACK_RANKING_MAX_WAIT_MS="30",  # long enough that concurrent requests merge
        FALLBACK_RANKING_ADAPTIVE="0",
        FALLBACK_WATCH_INTERVAL_S="0.3",
        FALLBACK_SWAP_GRACE_S="2",
        # served over RSGI with timed bodies: these tests run through that adapter, the
        # other fallback modules' servers through granian's WSGI
        FALLBACK_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    log = tmp_path_factory.mktemp("logs") / "fallback.log"
    srv = Server("fallback.serve", env, log).start()
    yield srv
    srv.stop()


def _post(server: Server, path: str, body: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=10)


def _calls(server: Server, dataset: str) -> tuple[float, float]:
    """(model calls, rows) of ``dataset``'s model so far."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    return (
        metric_value(text, "prescore_fallback_batch_requests_count", dataset=dataset),
        metric_value(text, "prescore_fallback_batch_rows_sum", dataset=dataset),
    )


def test_ready_health_openapi(server: Server) -> None:
    ready = requests.get(server.url + "/readyz", timeout=5).json()
    assert ready == {"status": "ready", "models": {"colours": "1", "shop": "1", "shopf": "1"}}
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    spec = requests.get(server.url + "/openapi.json", timeout=5).json()
    assert {SHOP, SHOPF, COLOURS, "/readyz", "/metrics"} <= set(spec["paths"])
    codes = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    assert {"invalid_features", "model_loading", "unknown_dataset", "bad_image"} <= codes
    colours_body = spec["paths"][COLOURS]["post"]["requestBody"]["content"]
    assert {"application/json", "image/*"} <= set(colours_body)  # a raw image too
    assert "image/*" not in spec["paths"][SHOP]["post"]["requestBody"]["content"]


def test_a_known_customer_is_ranked_by_the_model_in_the_stored_payload_shape(
    server: Server, shop: dict[str, Path]
) -> None:
    c = fd.customers(shop["tables"]).loc["c3"]
    reply = _post(server, SHOP, {"instances": [{"key": "c3"}]})
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["dataset"], doc["model"], doc["model_version"]) == ("shop", "shop-model", "1")
    payload = doc["predictions"][0]
    # the bulk job's payload (tests/test_shop_job.py), source live
    assert list(payload) == [
        "customer_id",
        "items",
        "model",
        "model_version",
        "scored_at",
        "source",
    ]
    assert (payload["customer_id"], payload["source"]) == ("c3", "live")
    assert (payload["model"], payload["model_version"]) == ("shop-model", "1")
    expected = fd.expected_top(
        shop["tables"], shop["plain"], c["segment"], list(c["categories"]), 5
    )
    assert [i["product_id"] for i in payload["items"]] == [p for p, _ in expected]  # k = 5
    assert [i["score"] for i in payload["items"]] == pytest.approx(
        [s for _, s in expected], abs=1e-4
    )
    products = fd.products(shop["tables"])
    for item in payload["items"]:  # the declared item payload columns, then the score
        assert list(item) == ["product_id", "name", "price", "score"]
        row = products.loc[item["product_id"]]
        assert (item["name"], item["price"]) == (row["name"], pytest.approx(row["price"]))
        assert row["category"] in set(c["categories"])  # the match rule's candidates


def test_the_plain_and_the_factored_export_give_the_same_top_k(server: Server) -> None:
    keys = [f"c{i}" for i in range(0, 300, 11)]
    body = {"instances": [{"key": k} for k in keys], "k": 8}
    plain = _post(server, SHOP, body).json()["predictions"]
    factored = _post(server, SHOPF, body).json()["predictions"]
    assert len(plain) == len(factored) == len(keys)
    for a, b in zip(plain, factored, strict=True):
        assert a["customer_id"] == b["customer_id"] and len(a["items"]) == len(b["items"]) > 0
        assert [i["product_id"] for i in a["items"]] == [i["product_id"] for i in b["items"]]
        assert [i["score"] for i in a["items"]] == pytest.approx(
            [i["score"] for i in b["items"]], abs=2e-4
        )
    assert factored[0]["model"] == "shopf-model"


@pytest.mark.parametrize("path", [SHOP, SHOPF])
def test_a_new_customer_is_scored_from_the_features_it_sends(
    server: Server, shop: dict[str, Path], path: str
) -> None:
    features = {"segment": "premium", "categories": ["toys", "books"]}
    body = {"instances": [{"key": "brand-new", "features": features}], "k": 4}
    reply = _post(server, path, body)
    assert reply.status_code == 200, reply.text
    payload = reply.json()["predictions"][0]
    assert payload["customer_id"] == "brand-new"
    expected = fd.expected_top(shop["tables"], shop["plain"], "premium", ["toys", "books"], 4)
    assert [i["product_id"] for i in payload["items"]] == [p for p, _ in expected]
    assert [i["score"] for i in payload["items"]] == pytest.approx(
        [s for _, s in expected], abs=2e-4
    )
    # features sent for a key the table holds are what is scored (never the table row)
    c = fd.customers(shop["tables"]).loc["c5"]
    other = "budget" if c["segment"] != "budget" else "premium"
    sent = {"segment": other, "categories": list(c["categories"])}
    answer = _post(server, path, {"instances": [{"key": "c5", "features": sent}]}).json()
    want = fd.expected_top(shop["tables"], shop["plain"], other, list(c["categories"]), 5)
    assert [i["product_id"] for i in answer["predictions"][0]["items"]] == [p for p, _ in want]


def test_a_batch_mixes_known_unknown_and_sent_customers(server: Server) -> None:
    body = {
        "instances": [
            {"key": "c0"},  # in the entity table
            {"key": "stranger"},  # neither in the table nor sent: a per-instance not_found
            {"key": "n1", "features": {"segment": "budget", "categories": ["garden"]}},
            {"key": "c1"},
        ],
        "k": 3,
    }
    reply = _post(server, SHOP, body)
    assert reply.status_code == 200, reply.text
    preds = reply.json()["predictions"]
    assert [p["customer_id"] for p in preds] == ["c0", "stranger", "n1", "c1"]
    assert [len(p.get("items", [])) for p in preds] == [3, 0, 3, 3]
    assert (preds[1]["error"], set(preds[1])) == ("not_found", {"customer_id", "error", "message"})


def test_an_integer_key_is_the_key_of_its_digits(server: Server) -> None:
    sent = {"segment": "budget", "categories": ["garden"]}
    by_int = _post(server, SHOP, {"instances": [{"key": 17, "features": sent}], "k": 3})
    by_text = _post(server, SHOP, {"instances": [{"key": "17", "features": sent}], "k": 3})
    assert by_int.status_code == 200, by_int.text
    (pred,) = by_int.json()["predictions"]
    assert pred["customer_id"] == "17" and len(pred["items"]) == 3
    assert pred["items"] == by_text.json()["predictions"][0]["items"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "malformed_json"),
        ([1, 2], 400, "invalid_body"),
        ({"instances": []}, 400, "invalid_instances"),
        ({"instances": [{"key": "c1"}], "extra": 1}, 400, "invalid_body"),
        ({"instances": ["c1"]}, 400, "invalid_instances"),
        ({"instances": [{"key": "bad\nid"}]}, 400, "invalid_id"),
        ({"instances": [{"key": 7.5}]}, 400, "invalid_id"),  # an integer is a key; a float is not
        ({"instances": [{"key": True}]}, 400, "invalid_id"),
        ({"instances": [{"key": "c1"}], "k": 0}, 400, "invalid_k"),
        ({"instances": [{"key": "c1"}], "k": 1001}, 400, "invalid_k"),
        ({"instances": [{"key": "c1"}], "k": "3"}, 400, "invalid_k"),
        ({"instances": [{"key": "c1"}], "model_version": "latest"}, 400, "invalid_body"),
        ({"instances": [{"key": "c1"}], "model_version": "\u0663"}, 400, "invalid_body"),  # a digit
        ({"instances": [{"key": "c1"}], "model_version": "\u00b2"}, 400, "invalid_body"),  # not 0-9
        ({"instances": [{"key": "c1", "features": []}]}, 400, "invalid_features"),
        ({"instances": [{"key": "c1", "features": {}}]}, 400, "invalid_features"),
        # the old API took candidates from the caller: what is scored is the dataset's rule
        ({"instances": [{"key": "c1", "candidates": ["p1"]}]}, 400, "invalid_instances"),
        ({"instances": [{"key": "c1", "b64": "AAAA"}]}, 400, "invalid_instances"),
        ({"instances": [{"key": "c1", "context": "weekend"}]}, 400, "invalid_id"),
        ({"instances": [{"key": "c1"}] * 101}, 413, "too_many_instances"),
    ],
)
def test_bad_ranking_requests(server: Server, body: object, status: int, code: str) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    reply = requests.post(
        server.url + SHOP, data=data, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert (reply.status_code, reply.json()["error"]) == (status, code), reply.text


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"categories": ["toys"]}, "missing segment"),
        ({"segment": "budget"}, "missing categories"),
        ({"segment": "budget", "categories": ["toys"], "age": 40}, "unknown age"),
        ({"segment": "budget", "categories": ["toys"], "price": 3.0}, "unknown price"),
        ({"segment": 3, "categories": ["toys"]}, "features.segment"),
        ({"segment": ["budget"], "categories": ["toys"]}, "features.segment"),
        ({"segment": None, "categories": ["toys"]}, "features.segment"),
        ({"segment": "budget", "categories": {"toys": 1}}, "features.categories"),
        ({"segment": "budget", "categories": [["toys"]]}, "features.categories"),
    ],
)
@pytest.mark.parametrize("path", [SHOP, SHOPF])
def test_features_missing_unknown_or_mistyped_are_a_400_naming_them(
    server: Server, features: dict[str, Any], named: str, path: str
) -> None:
    calls0 = _calls(server, path.split("/")[3].split(":")[0])
    body = {"instances": [{"key": "c1"}, {"key": "n9", "features": features}]}
    reply = _post(server, path, body)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_features"), reply.text
    assert named in reply.json()["message"]
    assert "Traceback" not in reply.text
    assert _calls(server, path.split("/")[3].split(":")[0]) == calls0  # nothing was scored


def test_unknown_dataset_and_wrong_media_types(server: Server) -> None:
    reply = _post(server, "/v1/datasets/nope:predict", {"instances": [{"key": "a"}]})
    assert (reply.status_code, reply.json()["error"]) == (404, "unknown_dataset")
    for path in (SHOP, COLOURS):
        wrong = requests.post(
            server.url + path, data=b"x", headers={"Content-Type": "text/plain"}, timeout=5
        )
        assert (wrong.status_code, wrong.json()["error"]) == (415, "unsupported_media_type")
    image_to_ranking = requests.post(
        server.url + SHOP,
        data=fd.jpeg_bytes({"red"}),
        headers={"Content-Type": "image/jpeg"},
        timeout=5,
    )
    assert (image_to_ranking.status_code, image_to_ranking.json()["error"]) == (
        415,
        "unsupported_media_type",
    )
    get = requests.get(server.url + SHOP, timeout=5)
    assert (get.status_code, get.json()["error"]) == (405, "method_not_allowed")


def _above(scores: dict[str, float]) -> dict[str, float]:
    return {c: s for c, s in scores.items() if s >= 0.5}


def test_labels_of_a_raw_image_and_of_base64(server: Server, colours: dict[str, Any]) -> None:
    raw = fd.jpeg_bytes({"red", "blue"})
    reply = requests.post(
        server.url + COLOURS + "?key=upload-1",
        data=raw,
        headers={"Content-Type": "image/jpeg"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["key"], doc["source"], doc["model"]) == ("upload-1", "live", "colour-tagger")
    expected = _above(fd.colour_scores(colours["model"], raw))
    assert [c["colour"] for c in doc["colours"]] == sorted(expected, key=lambda c: -expected[c])
    assert set(expected) == {"red", "blue"}  # the model sees the colours
    for entry in doc["colours"]:
        assert entry["score"] == pytest.approx(expected[entry["colour"]], abs=1e-4)
    png = fd.png_bytes({"green"})
    b64 = base64.b64encode(png).decode()
    batch = _post(server, COLOURS, {"instances": [{"key": "up-2", "b64": b64}]}).json()
    expected = _above(fd.colour_scores(colours["model"], png))
    assert [c["colour"] for c in batch["predictions"][0]["colours"]] == list(expected) == ["green"]
    octets = requests.post(
        server.url + COLOURS,
        data=png,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert [c["colour"] for c in octets.json()["colours"]] == ["green"]


def test_labels_by_key_from_the_image_folder_in_one_model_call(
    server: Server, colours: dict[str, Any], world: dict[str, Any]
) -> None:
    calls0, rows0 = _calls(server, "colours")
    keys = ["img-0", "img-missing", "img-1", "p-junk", "img-2"]
    reply = _post(server, COLOURS, {"instances": [{"key": k} for k in keys]})
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["dataset"], doc["model"], doc["model_version"]) == ("colours", "colour-tagger", "1")
    got = dict(zip(keys, doc["predictions"], strict=True))
    for key in ("img-0", "img-1", "img-2"):
        payload = got[key]
        # the bulk labels job's payload shape, source live
        assert list(payload) == ["key", "colours", "model", "model_version", "scored_at", "source"]
        assert (payload["key"], payload["source"]) == (key, "live")
        scores = fd.colour_scores(colours["model"], (world["images"] / f"{key}.jpg").read_bytes())
        assert {c["colour"] for c in payload["colours"]} == set(_above(scores))
        assert set(_above(scores)) == set(colours["truth"][key])  # the model learnt them
        for entry in payload["colours"]:
            assert entry["score"] == pytest.approx(scores[entry["colour"]], abs=1e-4)
        ordered = [c["score"] for c in payload["colours"]]
        assert ordered == sorted(ordered, reverse=True)
    assert (got["img-missing"]["key"], got["img-missing"]["error"]) == ("img-missing", "not_found")
    assert got["p-junk"]["error"] == "bad_image"  # a bad file in the folder: one entry, not a 400
    calls, rows = _calls(server, "colours")
    assert (calls - calls0, rows - rows0) == (1, 3)  # every image of the request in one call


def test_keys_that_could_leave_the_folder_are_refused_before_reading(server: Server) -> None:
    calls0 = _calls(server, "colours")
    for bad in ("../secret", "..", ".hidden", "img-0/../../secret", "", "x" * 241):
        body = {"instances": [{"key": "img-0"}, {"key": bad}]}
        reply = _post(server, COLOURS, body)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id"), bad
    raw = requests.post(
        server.url + COLOURS + "?key=../secret",
        data=fd.jpeg_bytes({"red"}),
        headers={"Content-Type": "image/jpeg"},
        timeout=5,
    )
    assert (raw.status_code, raw.json()["error"]) == (400, "invalid_id")
    assert _calls(server, "colours") == calls0  # nothing was labelled
    secret = _post(server, COLOURS, {"instances": [{"key": "secret"}]}).json()
    assert secret["predictions"][0]["error"] == "not_found"  # secret.jpg lies outside
    many = {"instances": [{"key": f"p{i}"} for i in range(101)]}
    reply = _post(server, COLOURS, many)
    assert (reply.status_code, reply.json()["error"]) == (413, "too_many_instances")
    mixed = {  # sent bytes and keys read from the folder, in one request
        "instances": [
            {"key": "sent", "b64": base64.b64encode(fd.jpeg_bytes({"green"})).decode()},
            {"key": "img-0"},
        ]
    }
    preds = _post(server, COLOURS, mixed).json()["predictions"]
    assert [p["key"] for p in preds] == ["sent", "img-0"]
    assert {c["colour"] for c in preds[0]["colours"]} == {"green"}


def test_bad_images(server: Server) -> None:
    junk = requests.post(
        server.url + COLOURS,
        data=b"not an image",
        headers={"Content-Type": "image/jpeg"},
        timeout=5,
    )
    assert (junk.status_code, junk.json()["error"]) == (400, "bad_image")
    assert "0x" not in junk.text and "BytesIO" not in junk.text  # no internals in a body
    empty = requests.post(
        server.url + COLOURS, data=b"", headers={"Content-Type": "image/jpeg"}, timeout=5
    )
    assert (empty.status_code, empty.json()["error"]) == (400, "empty_image")
    sent_junk = _post(server, COLOURS, {"instances": [{"key": "x", "b64": "bm90IGFuIGltYWdl"}]})
    assert (sent_junk.status_code, sent_junk.json()["error"]) == (400, "bad_image")
    not_b64 = _post(server, COLOURS, {"instances": [{"key": "x", "b64": "%%%"}]})
    assert (not_b64.status_code, not_b64.json()["error"]) == (400, "bad_image")
    features = _post(server, COLOURS, {"instances": [{"key": "img-0", "features": {"r": 1}}]})
    assert (features.status_code, features.json()["error"]) == (400, "invalid_features")


def test_concurrent_requests_merge_into_fewer_model_calls(server: Server) -> None:
    calls0, _ = _calls(server, "shop")
    before = requests.get(server.url + "/metrics", timeout=5).text
    reqs0 = metric_value(before, "prescore_fallback_batch_requests_sum", dataset="shop")
    start = threading.Barrier(24)
    statuses: list[int] = []

    def one(i: int) -> None:
        body = {"instances": [{"key": f"c{i}"}]}
        start.wait()
        statuses.append(_post(server, SHOP, body).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    after = requests.get(server.url + "/metrics", timeout=5).text
    calls = metric_value(after, "prescore_fallback_batch_requests_count", dataset="shop") - calls0
    merged = metric_value(after, "prescore_fallback_batch_requests_sum", dataset="shop") - reqs0
    assert statuses == [200] * 24
    assert merged == 24
    assert calls < 24  # several requests shared a model call
    assert 'fallback_queue_depth{dataset="shop"}' in after
    assert metric_value(after, "prescore_fallback_model_version", dataset="colours") == 1


def test_a_promoted_version_is_picked_up_and_an_asked_for_version_is_served(
    server: Server, world: dict[str, Any], shop: dict[str, Path], tmp_path: Path
) -> None:
    """Runs last: it changes the promoted shop model."""
    s: Settings = world["settings"]
    worse = domains.train_shop(shop["tables"], tmp_path / "v2", good=False, seed=5)
    v2 = registered(s, "shop-model", worse, promote=False).version
    statuses: list[int] = []
    seen: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            reply = _post(server, SHOP, {"instances": [{"key": "c7"}]})
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                seen.add(reply.json()["model_version"])

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    from prescore.models.store import ModelStore

    ModelStore(s.models).promote("shop-model", v2)
    for _ in range(200):
        if v2 in seen:
            break
        threading.Event().wait(0.1)
    threading.Event().wait(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert v2 == "2" and v2 in seen
    assert set(statuses) == {200}  # the swap failed no request
    assert requests.get(server.url + "/readyz", timeout=5).json()["models"]["shop"] == "2"
    c = fd.customers(shop["tables"]).loc["c7"]
    cats = list(c["categories"])
    # the version a caller asks for is the one that answers (v1 is still loaded)
    old = _post(server, SHOP, {"instances": [{"key": "c7"}], "model_version": "1"}).json()
    new = _post(server, SHOP, {"instances": [{"key": "c7"}]}).json()
    assert (old["model_version"], new["model_version"]) == ("1", "2")
    assert old["predictions"][0]["model_version"] == "1"
    for doc, model in ((old, shop["plain"]), (new, worse)):
        want = fd.expected_top(shop["tables"], model, c["segment"], cats, 5)
        got = doc["predictions"][0]["items"]
        assert [i["score"] for i in got] == pytest.approx([sc for _, sc in want], abs=2e-4)
    # a version the fallback has not loaded is loaded in the background: 503 until then
    v3 = registered(s, "shop-model", shop["factored"], promote=False).version
    first = _post(server, SHOP, {"instances": [{"key": "c7"}], "model_version": v3})
    assert (first.status_code, first.json()["error"]) == (503, "model_loading")
    for _ in range(300):
        reply = _post(server, SHOP, {"instances": [{"key": "c7"}], "model_version": v3})
        if reply.status_code == 200:
            break
        assert reply.json()["error"] == "model_loading"
        threading.Event().wait(0.1)
    assert reply.status_code == 200 and reply.json()["model_version"] == v3 == "3"
    assert [i["product_id"] for i in reply.json()["predictions"][0]["items"]] == [
        i["product_id"] for i in old["predictions"][0]["items"]
    ]  # v3 is the factored export of the model of v1
    # a version the store does not have is a 404 at once, every time, never a load
    for _ in range(5):
        missing = _post(server, SHOP, {"instances": [{"key": "c7"}], "model_version": "99"})
        assert (missing.status_code, missing.json()["error"]) == (404, "unknown_model_version")
        assert "99" in missing.json()["message"]
    assert requests.get(server.url + "/readyz", timeout=5).json() == {
        "status": "ready",
        "models": {"colours": "1", "shop": "2", "shopf": "1"},
    }


def test_with_timed_bodies_a_stalled_body_is_408_and_others_are_answered(
    server: Server,
) -> None:
    """FALLBACK_BODY_TIMEOUT_S: more connections than the worker has threads send a
    prediction's headers and part of its body, then stall; a whole request is answered
    while they are all still unanswered, each stalled one gets 408 once the timeout has
    passed, and a body over FALLBACK_MAX_BODY_BYTES its 413 once the bound is read."""
    stalled = []
    try:
        opened = time.monotonic()
        for _ in range(33):  # one worker, 32 threads (FALLBACK_THREADS' default)
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            conn.sendall(
                f"POST {SHOP} HTTP/1.1\r\nHost: fallback\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                + b'{"instances'
            )
            stalled.append(conn)
        reply = _post(server, SHOP, {"instances": [{"key": "c3"}]})
        assert reply.status_code == 200 and reply.json()["predictions"][0]["customer_id"] == "c3"
        # a body longer than the bound (8 MiB) is refused once the bound is read, its rest unsent
        big = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        stalled.append(big)
        with contextlib.suppress(OSError):  # the server may answer and close meanwhile
            big.sendall(
                f"POST {SHOP} HTTP/1.1\r\nHost: fallback\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 9000000\r\n\r\n"
                + b'{"instances": [{"key": "'
                + b"c" * (8 * 1024 * 1024)
            )
        refused = read_until_closed(big)
        assert refused.startswith(b"HTTP/1.1 413") and b'"error":"too_large"' in refused
        assert all(unanswered(conn) for conn in stalled[:-1])  # before the timeout
        answers = [read_until_closed(conn) for conn in stalled[:-1]]
        assert time.monotonic() - opened >= BODY_TIMEOUT_S - 0.1  # at the timeout, not at once
        assert all(a.startswith(b"HTTP/1.1 408") and b"body_timeout" in a for a in answers)
    finally:
        for conn in stalled:
            conn.close()
