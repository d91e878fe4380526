"""Demo data and the recommendation model, on small real data with real TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jobs.datagen import Sizes, generate
from prescore.inference import TFRunner
from prescore.reco_features import Schema, encode


def test_datagen_is_deterministic_and_sane(tmp_path: Path) -> None:
    sizes = Sizes(users=120, hotels=60, regions=4, impressions_per_user=20)
    generate(tmp_path / "a", sizes, seed=11)
    generate(tmp_path / "b", sizes, seed=11)
    for name in ("users", "hotels", "events_train", "events_test"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "a" / f"{name}.parquet"),
            pd.read_parquet(tmp_path / "b" / f"{name}.parquet"),
        )
    users = pd.read_parquet(tmp_path / "a" / "users.parquet").set_index("user_id")
    hotels = pd.read_parquet(tmp_path / "a" / "hotels.parquet").set_index("hotel_id")
    train = pd.read_parquet(tmp_path / "a" / "events_train.parquet")
    test = pd.read_parquet(tmp_path / "a" / "events_test.parquet")
    assert len(train) + len(test) == 120 * 20
    assert train["date"].max() < test["date"].min()  # held out by time
    assert 0.05 < train["booked"].mean() < 0.6
    region_of = hotels["region"]
    assert all(
        region_of[h] in set(users.loc[u, "regions"])
        for u, h in zip(train["user_id"], train["hotel_id"], strict=True)
    )


def test_features_encode_unknowns_and_missing_context(reco_data: Path) -> None:
    users = pd.read_parquet(reco_data / "users.parquet")
    hotels = pd.read_parquet(reco_data / "hotels.parquet")
    contexts = pd.read_parquet(reco_data / "contexts.parquet")
    schema = Schema.fit(users, hotels, contexts)
    assert Schema.from_dict(schema.to_dict()) == schema
    new_user = pd.DataFrame(
        {"country": ["zz"], "language": ["xx"], "device": ["watch"], "regions": [["r0"]]}
    )
    x = encode(new_user, hotels.head(1), [None], schema)
    assert x.shape == (1, schema.width) and x.dtype == np.float32
    with_ctx = encode(new_user, hotels.head(1), ["summer-sat"], schema)
    assert not np.array_equal(x, with_ctx)


def test_model_beats_popularity_and_is_stored(reco_store) -> None:
    store, result = reco_store
    metrics = result.metrics
    assert metrics["auc"] > metrics["popularity_auc"] + 0.02, metrics
    ref = store.resolve("reco")
    assert ref.version == result.version
    meta = ref.meta
    assert meta["feature_width"] == Schema.from_dict(meta["schema"]).width
    assert meta["data"]["train_to"] < meta["data"]["test_from"]
    scores = TFRunner(ref.saved_model)(np.zeros((3, meta["feature_width"]), np.float32))
    assert scores.shape == (3, 1) and np.all((scores >= 0) & (scores <= 1))
