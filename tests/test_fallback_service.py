"""The fallback service as a real granian process over a real model store and TensorFlow."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from prescore.inference import load_runner
from prescore.modelstore import ModelStore
from prescore.settings import ModelStoreSettings
from tests import fallback_models as fm
from tests.fallback_procs import Server, metric_value

RECO = "/v1/predict/recommendations"
TAGS = "/v1/predict/image-tags"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fm.saved_store(tmp_path_factory.mktemp("fallback-store"))


PHOTOS = {"p-pool": {"pool"}, "p-sea-bed": {"sea_view", "bed"}, "p-none": set()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photo store folder: three photos, a corrupt one, and a photo outside it."""
    return fm.photo_folder(tmp_path_factory.mktemp("photo-store"), PHOTOS, junk=True)


@pytest.fixture(scope="module")
def server(
    store_root: str, photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "PRESCORE_MODEL_STORE": store_root,
        "FALLBACK_PHOTOS": photos.as_uri(),
        "FALLBACK_RECO_RUNTIME": "tf",
        "FALLBACK_TAGGER_RUNTIME": "tf",
        "FALLBACK_RECO_MAX_WAIT_MS": "30",  # long enough that concurrent requests merge
        "FALLBACK_WATCH_INTERVAL_S": "0.3",
        "FALLBACK_SWAP_GRACE_S": "2",
    }
    log = tmp_path_factory.mktemp("logs") / "fallback.log"
    srv = Server("fallback.serve", env, log).start()
    yield srv
    srv.stop()


def test_ready_health_openapi(server: Server) -> None:
    ready = requests.get(server.url + "/readyz", timeout=5).json()
    assert ready == {"status": "ready", "models": {"reco": "1", "tagger": "1"}}
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    spec = requests.get(server.url + "/openapi.json", timeout=5).json()
    assert {RECO, TAGS} <= set(spec["paths"])


def test_recommendations_match_the_model_and_the_stored_payload_shape(
    server: Server, store_root: str
) -> None:
    vec = [0.3] * fm.DENSE_FEATURES
    body = {"instances": [{"user_id": "new1", "features": {"vec": vec}}], "k": 5}
    reply = requests.post(server.url + RECO, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["model"], doc["model_version"]) == ("reco", "1")
    payload = doc["predictions"][0]
    assert list(payload) == ["user_id", "items", "model", "model_version", "scored_at", "source"]
    assert payload["source"] == "live" and payload["user_id"] == "new1"
    # the top 5 of the 40 default candidates, as the model itself ranks them
    ref = ModelStore(ModelStoreSettings(root=store_root)).resolve("reco")
    rows = fm.dense_rows(ref.meta, {"vec": vec}, None, fm.HOTELS)
    scores = load_runner(ref.path, "tf")(rows).ravel()
    expected = [fm.HOTELS[i] for i in np.argsort(-scores, kind="stable")[:5]]
    assert [i["hotel_id"] for i in payload["items"]] == expected
    assert [i["score"] for i in payload["items"]] == sorted(
        (i["score"] for i in payload["items"]), reverse=True
    )


def test_batch_of_users_with_known_unknown_and_candidates(server: Server) -> None:
    body = {
        "instances": [
            {"user_id": "u_known"},  # known to the model by id
            {"user_id": "stranger"},  # no features: per-instance not_found
            {"user_id": "c1", "features": {"vec": [1.0] * 12}, "candidates": ["h1", "h2"]},
            {"user_id": "c2", "features": {"vec": [1.0] * 12}, "context": "weekend"},
        ],
        "k": 3,
    }
    preds = requests.post(server.url + RECO, json=body, timeout=10).json()["predictions"]
    assert len(preds[0]["items"]) == 3
    assert preds[1]["error"] == "not_found" and preds[1]["user_id"] == "stranger"
    assert {i["hotel_id"] for i in preds[2]["items"]} == {"h1", "h2"}
    assert preds[3]["context"] == "weekend"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "malformed_json"),
        ({"instances": []}, 400, "invalid_instances"),
        ({"instances": [{"user_id": "bad id!"}]}, 400, "invalid_id"),
        ({"instances": [{"user_id": "u"}], "k": 0}, 400, "invalid_k"),
        ({"instances": [{"user_id": "u", "features": []}]}, 400, "invalid_features"),
        ({"instances": [{"user_id": "u"}] * 101}, 413, "too_many_instances"),
    ],
)
def test_bad_recommendation_requests(server: Server, body: object, status: int, code: str) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    reply = requests.post(
        server.url + RECO, data=data, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert (reply.status_code, reply.json()["error"]) == (status, code)


def test_image_tags_raw_and_base64(server: Server) -> None:
    raw = requests.post(
        server.url + TAGS + "?image_id=img1",
        data=fm.jpeg({"pool", "bed"}),
        headers={"Content-Type": "image/jpeg"},
        timeout=10,
    )
    assert raw.status_code == 200, raw.text
    doc = raw.json()
    assert doc["image_id"] == "img1" and doc["source"] == "live"
    assert {t["tag"] for t in doc["tags"]} == {"pool", "bed"}
    b64 = base64.b64encode(fm.jpeg({"sea_view"})).decode()
    batch = requests.post(
        server.url + TAGS, json={"instances": [{"image_id": "img2", "b64": b64}]}, timeout=10
    ).json()
    assert [t["tag"] for t in batch["predictions"][0]["tags"]] == ["sea_view"]


def _tagger_calls(server: Server) -> tuple[float, float]:
    """(model calls, rows) of the tagger so far."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    return (
        metric_value(text, "fallback_batch_requests_count", model="tagger"),
        metric_value(text, "fallback_batch_rows_sum", model="tagger"),
    )


def test_image_tags_by_id_from_the_photo_store(
    server: Server, store_root: str, photos: Path
) -> None:
    calls0, rows0 = _tagger_calls(server)
    ids = ["p-pool", "p-missing", "p-sea-bed", "p-junk", "p-none"]
    reply = requests.post(
        server.url + TAGS, json={"instances": [{"image_id": i} for i in ids]}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["model"], doc["model_version"]) == ("tagger", "1")
    got = dict(zip(ids, doc["predictions"], strict=True))
    for image_id in ("p-pool", "p-sea-bed", "p-none"):
        payload = got[image_id]
        # the bulk tagging job's payload shape (prescore.codec.encode_tags), source live
        assert list(payload) == [
            "image_id",
            "tags",
            "model",
            "model_version",
            "scored_at",
            "source",
        ]
        assert (payload["image_id"], payload["source"]) == (image_id, "live")
        expected = fm.model_tags(store_root, (photos / f"{image_id}.jpg").read_bytes())
        assert {t["tag"] for t in payload["tags"]} == set(expected)
        for tag in payload["tags"]:
            assert tag["score"] == pytest.approx(expected[tag["tag"]], abs=1e-4)
        scores = [t["score"] for t in payload["tags"]]
        assert scores == sorted(scores, reverse=True)
    assert {t["tag"] for t in got["p-sea-bed"]["tags"]} == {"sea_view", "bed"}  # the model learnt
    assert got["p-missing"]["error"] == "not_found" and got["p-missing"]["image_id"] == "p-missing"
    assert got["p-junk"]["error"] == "bad_image"  # a bad file in the store is one entry, not a 400
    calls, rows = _tagger_calls(server)
    assert (calls - calls0, rows - rows0) == (1, 3)  # every photo of the request in one call


def test_image_tags_by_id_refuses_bad_ids_before_reading(server: Server, photos: Path) -> None:
    calls0, _ = _tagger_calls(server)
    for bad in ("../secret", "..", ".hidden", "p-pool/../../secret", ""):
        body = {"instances": [{"image_id": "p-pool"}, {"image_id": bad}]}
        reply = requests.post(server.url + TAGS, json=body, timeout=10)
        assert (reply.status_code, reply.json()["error"]) == (400, "invalid_id"), bad
    assert _tagger_calls(server)[0] == calls0  # nothing was tagged
    many = {"instances": [{"image_id": f"p{i}"} for i in range(101)]}
    reply = requests.post(server.url + TAGS, json=many, timeout=10)
    assert (reply.status_code, reply.json()["error"]) == (413, "too_many_instances")
    mixed = {  # sent bytes and ids read from the store, in one request
        "instances": [
            {"image_id": "sent", "b64": base64.b64encode(fm.jpeg({"bed"})).decode()},
            {"image_id": "p-pool"},
        ]
    }
    preds = requests.post(server.url + TAGS, json=mixed, timeout=10).json()["predictions"]
    assert [{t["tag"] for t in p["tags"]} for p in preds] == [{"bed"}, {"pool"}]


def test_bad_images(server: Server) -> None:
    junk = requests.post(
        server.url + TAGS, data=b"not an image", headers={"Content-Type": "image/jpeg"}, timeout=5
    )
    assert (junk.status_code, junk.json()["error"]) == (400, "bad_image")
    assert "0x" not in junk.text and "BytesIO" not in junk.text  # no internals in a body
    empty = requests.post(
        server.url + TAGS, data=b"", headers={"Content-Type": "image/jpeg"}, timeout=5
    )
    assert (empty.status_code, empty.json()["error"]) == (400, "empty_image")
    wrong = requests.post(
        server.url + TAGS, data=b"x", headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert (wrong.status_code, wrong.json()["error"]) == (415, "unsupported_media_type")


def test_concurrent_requests_merge_into_fewer_model_calls(server: Server) -> None:
    before = requests.get(server.url + "/metrics", timeout=5).text
    calls0 = metric_value(before, "fallback_batch_requests_count", model="reco")
    reqs0 = metric_value(before, "fallback_batch_requests_sum", model="reco")
    start = threading.Barrier(24)
    statuses: list[int] = []

    def one(i: int) -> None:
        body = {"instances": [{"user_id": f"n{i}", "features": {"vec": [0.1 * i] * 12}}]}
        start.wait()
        statuses.append(requests.post(server.url + RECO, json=body, timeout=10).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    after = requests.get(server.url + "/metrics", timeout=5).text
    calls = metric_value(after, "fallback_batch_requests_count", model="reco") - calls0
    merged = metric_value(after, "fallback_batch_requests_sum", model="reco") - reqs0
    assert statuses == [200] * 24
    assert merged == 24
    assert calls < 24  # several requests shared a model call
    assert "fallback_queue_depth" in after


def test_promoted_version_is_picked_up_with_no_failed_request(
    server: Server, store_root: str, tmp_path: Path
) -> None:
    store = ModelStore(ModelStoreSettings(root=store_root))
    new_dir = fm.build_dense(tmp_path / "reco2", seed=5, epochs=2)
    version = store.save("reco", new_dir, fm.reco_meta({"u_known": [0.5] * 12}))
    statuses: list[int] = []
    seen: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        body = {"instances": [{"user_id": "u_known"}]}
        while not stop.is_set():
            reply = requests.post(server.url + RECO, json=body, timeout=10)
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                seen.add(reply.json()["model_version"])

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    store.promote("reco", version)
    for _ in range(200):
        if version in seen:
            break
        threading.Event().wait(0.1)
    threading.Event().wait(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert version in seen
    assert set(statuses) == {200}
    assert requests.get(server.url + "/readyz", timeout=5).json()["models"]["reco"] == version
