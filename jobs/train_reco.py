"""Train the booking-probability model and store it as a new version of ``reco``.

    python -m jobs.train_reco --data var/data [--epochs 4] [--promote]

A Keras MLP over the one float32 matrix of prescore.reco_features; AUC on held-out
events is reported beside a popularity ranking (each hotel's booking rate in training).
The model is exported as a SavedModel with its model.json (feature schema, metrics, data
range) and, unless ``--no-int8``, float32 and int8 TFLite variants (jobs.quantize).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.training import TrainResult, add_training_flags, run_training, store_trained
from prescore.modelstore import ModelStore
from prescore.reco_features import Schema, encode

MODEL_NAME = "reco"
CONTEXT_DROPOUT = 0.3  # share of training rows with the context blanked out


def load_tables(data: Path) -> dict[str, pd.DataFrame]:
    names = ("users", "hotels", "contexts", "events_train", "events_test")
    return {n: pd.read_parquet(data / f"{n}.parquet") for n in names}


def encode_events(
    events: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    schema: Schema,
    contexts: list[str | None] | None = None,
) -> np.ndarray:
    """Rows of ``events`` (user_id, hotel_id, context) as the model's input matrix."""
    users = tables["users"].set_index("user_id").loc[events["user_id"]].reset_index()
    hotels = tables["hotels"].set_index("hotel_id").loc[events["hotel_id"]].reset_index()
    return encode(
        users, hotels, contexts if contexts is not None else list(events["context"]), schema
    )


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The baseline: each hotel's booking rate in training (smoothed)."""
    stats = train.groupby("hotel_id")["booked"].agg(["sum", "count"])
    prior = train["booked"].mean()
    rate = (stats["sum"] + 10 * prior) / (stats["count"] + 10)
    return test["hotel_id"].map(rate).fillna(prior).to_numpy()


def build_model(width: int) -> Any:
    import keras

    model = keras.Sequential(
        [
            keras.Input((width,), name="features"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    return model


def fit(
    tables: dict[str, pd.DataFrame], epochs: int, seed: int
) -> tuple[Any, Schema, dict[str, float]]:
    """Fit the model; returns it, its schema and held-out metrics."""
    import keras

    from jobs.quantize import roc_auc

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    schema = Schema.fit(tables["users"], tables["hotels"], tables["contexts"])
    train, test = tables["events_train"], tables["events_test"]
    contexts: list[str | None] = [
        None if drop else c
        for c, drop in zip(train["context"], rng.random(len(train)) < CONTEXT_DROPOUT, strict=True)
    ]
    x_train = encode_events(train, tables, schema, contexts)
    model = build_model(schema.width)
    model.fit(
        x_train,
        train["booked"].to_numpy(np.float32),
        epochs=epochs,
        batch_size=512,
        verbose=2,
        shuffle=True,
    )
    x_test = encode_events(test, tables, schema)
    y_test = test["booked"].to_numpy()
    metrics = {
        "auc": roc_auc(y_test, model.predict(x_test, batch_size=4096, verbose=0).ravel()),
        "popularity_auc": roc_auc(y_test, popularity_scores(train, test)),
        "test_events": float(len(test)),
        "train_events": float(len(train)),
    }
    return model, schema, metrics


def build_int8(
    model_dir: Path, representative: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray
) -> dict[str, Any]:
    """The hook where the float32 and int8 TFLite variants are made and measured."""
    from jobs.quantize import quantize_dir

    return quantize_dir(model_dir, representative, x_eval, y_eval, "auc")


def train(
    data: Path,
    store: ModelStore,
    *,
    epochs: int = 4,
    seed: int = 7,
    promote: bool = False,
    int8: bool = True,
) -> TrainResult:
    """Train on ``data``, store the model as the next version, optionally promote it."""
    tables = load_tables(data)
    model, schema, metrics = fit(tables, epochs, seed)
    train_events, test_events = tables["events_train"], tables["events_test"]
    meta: dict[str, Any] = {
        "kind": "booking-probability MLP",
        "schema": schema.to_dict(),
        "feature_width": schema.width,
        "metrics": metrics,
        "data": {
            "path": str(data),
            "train_from": str(train_events["date"].min()),
            "train_to": str(train_events["date"].max()),
            "test_from": str(test_events["date"].min()),
            "test_to": str(test_events["date"].max()),
        },
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.export(str(model_dir / "saved_model"), verbose=False)
        if int8:
            x_rep = encode_events(
                train_events.sample(min(2000, len(train_events)), random_state=seed), tables, schema
            )
            sample = test_events.sample(min(5000, len(test_events)), random_state=seed)
            meta["quantization"] = build_int8(
                model_dir, x_rep, encode_events(sample, tables, schema), sample["booked"].to_numpy()
            )
        return store_trained(store, MODEL_NAME, model_dir, meta, promote)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("var/data"))
    add_training_flags(parser, epochs=4)
    args = parser.parse_args(argv)
    return run_training(
        args,
        args.data,
        train,
        lambda r: (
            f"reco version {r.version}{' (promoted)' if r.promoted else ''}: "
            f"held-out AUC {r.metrics['auc']:.4f} vs popularity {r.metrics['popularity_auc']:.4f} "
            f"({int(r.metrics['test_events'])} events)"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
