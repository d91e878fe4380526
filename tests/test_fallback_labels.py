"""The fallback serving the real ``tagger`` (jobs.imagegen + jobs.train_tagger) in int8."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from prescore.image_features import decode
from prescore.inference import load_runner
from prescore.modelstore import ModelRef, ModelStore
from prescore.settings import ModelStoreSettings
from tests.fallback_procs import Server

TAGS = "/v1/predict/image-tags"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelRef]:
    from jobs.imagegen import generate
    from jobs.train_tagger import train

    tmp = tmp_path_factory.mktemp("tagger-real")
    photos = tmp / "photos"
    generate(photos, 240, seed=3)
    store = ModelStore(ModelStoreSettings(root=(tmp / "models").as_uri()))
    result = train(photos, store, epochs=3, promote=True)
    return photos, store.resolve("tagger", result.version)


@pytest.fixture(scope="module")
def server(
    trained: tuple[Path, ModelRef], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, ref = trained
    env = {
        "PRESCORE_MODEL_STORE": ref.path.parent.parent.as_uri(),
        "FALLBACK_MODELS": "tagger",
        "FALLBACK_TAGGER_RUNTIME": "int8",
    }
    srv = Server("fallback.serve", env, tmp_path_factory.mktemp("logs") / "fb.log").start()
    yield srv
    srv.stop()


def test_model_json_records_int8_quality(trained: tuple[Path, ModelRef]) -> None:
    _, ref = trained
    quant = ref.meta["quantization"]
    assert ref.int8.is_file()
    assert set(quant["runtimes"]) == {"tf", "float32", "int8"}
    assert all(0.0 <= r["map"] <= 1.0 for r in quant["runtimes"].values())


def test_live_tags_are_the_int8_models_tags_above_threshold(
    server: Server, trained: tuple[Path, ModelRef]
) -> None:
    photos, ref = trained
    size = tuple(ref.meta["image_size"])
    tags = ref.meta["tags"]
    floor = np.array([ref.meta["thresholds"][t] for t in tags])
    runner = load_runner(ref.path, "int8")
    for image_id in ("img-000000", "img-000001", "img-000002"):
        raw = (photos / f"{image_id}.jpg").read_bytes()
        reply = requests.post(
            server.url + TAGS + f"?image_id={image_id}",
            data=raw,
            headers={"Content-Type": "image/jpeg"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        assert (doc["image_id"], doc["source"], doc["model"]) == (image_id, "live", "tagger")
        scores = runner(decode(raw, size)[None])[0]
        expected = {t for t, s, f in zip(tags, scores, floor, strict=True) if s >= f}
        assert {t["tag"] for t in doc["tags"]} == expected
        got = [t["score"] for t in doc["tags"]]
        assert got == sorted(got, reverse=True)


def test_by_id_without_a_photo_store_is_a_per_image_not_found(server: Server) -> None:
    reply = requests.post(
        server.url + TAGS, json={"instances": [{"image_id": "img-000000"}]}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    entry = reply.json()["predictions"][0]
    assert (entry["image_id"], entry["error"]) == ("img-000000", "not_found")
    assert "FALLBACK_PHOTOS" in entry["message"]
