"""The fallback serving the real ``reco`` model (jobs.datagen + jobs.train_reco, int8 built)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from fallback.reco_rows import request_matrix
from prescore.inference import load_runner
from prescore.modelstore import ModelRef, ModelStore
from prescore.reco_features import Schema, encode
from prescore.settings import ModelStoreSettings
from tests.fallback_procs import Server

RECO = "/v1/predict/recommendations"


def schema(ref: ModelRef) -> Schema:
    return Schema.from_dict(ref.meta["schema"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelRef]:
    from jobs.datagen import Sizes, generate
    from jobs.train_reco import train

    tmp = tmp_path_factory.mktemp("reco-real")
    data = tmp / "data"
    generate(data, Sizes(users=400, hotels=120, impressions_per_user=20, days=20, test_days=5))
    store = ModelStore(ModelStoreSettings(root=(tmp / "models").as_uri()))
    result = train(data, store, epochs=2, promote=True)
    return data, store.resolve("reco", result.version)


@pytest.fixture(scope="module")
def server(
    trained: tuple[Path, ModelRef], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data, ref = trained
    env = {
        "PRESCORE_MODEL_STORE": ref.path.parent.parent.as_uri(),
        "FALLBACK_MODELS": "reco",
        "FALLBACK_RECO_RUNTIME": "float32",
        "FALLBACK_DATA_DIR": str(data),
    }
    srv = Server("fallback.serve", env, tmp_path_factory.mktemp("logs") / "fb.log").start()
    yield srv
    srv.stop()


def test_model_json_records_both_variants(trained: tuple[Path, ModelRef]) -> None:
    _, ref = trained
    quant = ref.meta["quantization"]
    assert ref.int8.is_file() and (ref.path / "model_float32.tflite").is_file()
    assert {"tf", "float32", "int8"} == set(quant["runtimes"])
    assert all(0.0 <= r["auc"] <= 1.0 for r in quant["runtimes"].values())
    assert abs(quant["int8_quality_loss"]) < 0.02


def test_known_user_by_id_gets_hotels_of_their_regions_ranked_by_the_model(
    server: Server, trained: tuple[Path, ModelRef]
) -> None:
    data, ref = trained
    users = pd.read_parquet(data / "users.parquet").set_index("user_id")
    hotels = pd.read_parquet(data / "hotels.parquet")
    regions = set(users.loc["u3", "regions"])
    body = {"instances": [{"user_id": "u3", "context": "summer-sat"}], "k": 5}
    reply = requests.post(server.url + RECO, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    payload = reply.json()["predictions"][0]
    got = [i["hotel_id"] for i in payload["items"]]
    in_regions = list(hotels[hotels["region"].isin(regions)]["hotel_id"])
    assert set(got) <= set(in_regions)
    meta = {**ref.meta, "serving": {"data_dir": str(data)}}
    rows = request_matrix(meta, {"user_id": "u3"}, "summer-sat", in_regions)
    # the rows are exactly those the bulk job builds (prescore.reco_features.encode)
    n = len(in_regions)
    pairs = hotels.set_index("hotel_id").loc[in_regions].reset_index()
    same = encode(users.loc[["u3"] * n].reset_index(), pairs, ["summer-sat"] * n, schema(ref))
    np.testing.assert_array_equal(rows, same)
    scores = load_runner(ref.path, "float32")(rows).ravel()
    expected = [in_regions[i] for i in np.argsort(-scores, kind="stable")[:5]]
    assert len(got) == min(5, len(in_regions)) > 0
    assert got == expected
    assert payload["context"] == "summer-sat" and payload["source"] == "live"


def test_new_user_from_features(server: Server) -> None:
    features = {"country": "NL", "language": "nl", "device": "mobile", "regions": ["r1", "r2"]}
    body = {"instances": [{"user_id": "brand-new", "features": features}], "k": 3}
    payload = requests.post(server.url + RECO, json=body, timeout=10).json()["predictions"][0]
    assert len(payload["items"]) == 3
    unknown = {"instances": [{"user_id": "nobody"}]}
    pred = requests.post(server.url + RECO, json=unknown, timeout=10).json()["predictions"][0]
    assert pred["error"] == "not_found"
