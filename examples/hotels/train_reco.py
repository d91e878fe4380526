"""Train the demo's booking model and write it as a SavedModel with its model.json.

    python -m examples.hotels.train_reco --data var/data --out var/train/reco [--epochs 4]
    prescore models register reco var/train/reco --promote     # then, the public contract

A Keras model over the raw columns of users, hotels and contexts, with its preprocessing
inside the graph (vocabulary lookups, one-hot and multi-hot, log-price normalization),
so the bulk job and live inference feed it the tables' own values. Besides the serving
signature (one row per user x hotel pair), it exports the factored signatures of
prescore's model contract: ``encode_entity`` (a user's columns -> a row),
``encode_item`` (a hotel's), ``encode_context`` (a season and day's) and ``score_pairs``
(encoded rows -> score), so a bulk run encodes each user, hotel and context once. The
"hotel in one of the user's regions" feature is made in ``score_pairs`` from the two
encoded rows, which share the region vocabulary. Held-out AUC is reported beside a
popularity ranking (each hotel's booking rate in training).

Lookups use integer ids and ``one_hot`` (not ``StringLookup``'s multi-hot mode, whose
bincount op TFLite lacks), so the model converts to an int8 LiteRT variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from prescore.models.quality import roc_auc

CONTEXT_DROPOUT = 0.3  # share of training rows with the context blanked out
USER = ("country", "language", "device", "regions")
HOTEL = ("region", "price", "stars", "amenities")
CONTEXT = ("season", "day")


def load_tables(data: Path) -> dict[str, pd.DataFrame]:
    names = ("users", "hotels", "contexts", "events_train", "events_test")
    return {n: pq.read_table(data / f"{n}.parquet").to_pandas() for n in names}


def event_columns(
    events: pd.DataFrame, tables: dict[str, pd.DataFrame], blank_context: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The raw columns of each event's user, hotel and context, as the model takes them."""
    users = tables["users"].set_index("user_id").loc[events["user_id"]]
    hotels = tables["hotels"].set_index("hotel_id").loc[events["hotel_id"]]
    ctx = tables["contexts"].set_index("context").loc[events["context"]]
    season, day = ctx["season"].to_numpy(object), ctx["day"].to_numpy(object)
    if blank_context is not None:  # trained with some contexts unknown: scoring without one
        season, day = np.where(blank_context, "", season), np.where(blank_context, "", day)
    return {
        "country": users["country"].to_numpy(object),
        "language": users["language"].to_numpy(object),
        "device": users["device"].to_numpy(object),
        "regions": _padded(users["regions"]),
        "region": hotels["region"].to_numpy(object),
        "price": hotels["price"].to_numpy(np.float32),
        "stars": hotels["stars"].to_numpy(np.float32),
        "amenities": _padded(hotels["amenities"]),
        "season": season,
        "day": day,
    }


def tensors(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Columns as Keras takes them (strings as tf.string tensors; numpy has no string dtype
    Keras accepts)."""
    import tensorflow as tf

    return {k: tf.constant(v.tolist()) if v.dtype == object else v for k, v in columns.items()}


def _padded(lists: pd.Series) -> np.ndarray:
    width = max(1, max(len(x) for x in lists))
    out = np.full((len(lists), width), "", object)
    for i, row in enumerate(lists):
        out[i, : len(row)] = list(row)
    return out


def popularity_scores(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The baseline: each hotel's booking rate in training (smoothed)."""
    stats = train.groupby("hotel_id")["booked"].agg(["sum", "count"])
    prior = train["booked"].mean()
    rate = (stats["sum"] + 10 * prior) / (stats["count"] + 10)
    return test["hotel_id"].map(rate).fillna(prior).to_numpy()


class Vocab:
    """A vocabulary inside the graph: values -> one-hot (a value) or multi-hot (a list).

    Column 0 is "unknown"; "" is padding and sets nothing. Built from integer lookups and
    ``one_hot``, which LiteRT has. "" is a term of the lookup whose column is dropped, not
    its mask token: a mask is applied with a ``where`` against a scalar, which LiteRT
    shapes as a scalar for a batch of one row (and the model then fails to run one)."""

    def __init__(self, values: list[str]) -> None:
        import keras

        self.size = len(values) + 1
        self.lookup = keras.layers.StringLookup(vocabulary=["", *values])  # 0: unknown, 1: ""

    def one(self, x: Any) -> Any:
        import keras

        hot = keras.ops.one_hot(self.lookup(x), self.size + 1)
        return keras.ops.concatenate([hot[..., :1], hot[..., 2:]], axis=-1)

    def many(self, x: Any) -> Any:
        import keras

        return keras.ops.max(self.one(x), axis=1)


def build(tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The towers, the pair head and the full model, vocabularies fitted on the tables."""
    import keras
    from keras import layers

    users, hotels, contexts = tables["users"], tables["hotels"], tables["contexts"]
    regions = Vocab(sorted(set(hotels["region"]) | {r for rs in users["regions"] for r in rs}))
    vocab = {c: Vocab(sorted(set(users[c]))) for c in ("country", "language", "device")}
    amenities = Vocab(sorted({a for lst in hotels["amenities"] for a in lst}))
    season, day = Vocab(sorted(set(contexts["season"]))), Vocab(sorted(set(contexts["day"])))
    log_price = layers.Normalization(axis=None)
    log_price.adapt(np.log(hotels["price"].to_numpy(np.float32)))

    def text(name: str, lists: bool = False) -> Any:
        return keras.Input((None,) if lists else (), dtype="string", name=name)

    user_in = {c: text(c) for c in ("country", "language", "device")} | {
        "regions": text("regions", lists=True)
    }
    hotel_in = {
        "region": text("region"),
        "price": keras.Input((), dtype="float32", name="price"),
        "stars": keras.Input((), dtype="float32", name="stars"),
        "amenities": text("amenities", lists=True),
    }
    ctx_in = {"season": text("season"), "day": text("day")}
    user_vec = layers.Concatenate()(
        [vocab[c].one(user_in[c]) for c in vocab] + [regions.many(user_in["regions"])]
    )
    hotel_vec = layers.Concatenate()(
        [
            regions.one(hotel_in["region"]),  # first: score_pairs matches regions on it
            amenities.many(hotel_in["amenities"]),
            keras.ops.expand_dims(log_price(keras.ops.log(hotel_in["price"])), -1),
            keras.ops.expand_dims((hotel_in["stars"] - 3.0) / 2.0, -1),
        ]
    )
    ctx_vec = layers.Concatenate()([season.one(ctx_in["season"]), day.one(ctx_in["day"])])
    towers = {
        "entity": keras.Model(user_in, user_vec, name="encode_entity"),
        "item": keras.Model(hotel_in, hotel_vec, name="encode_item"),
        "context": keras.Model(ctx_in, ctx_vec, name="encode_context"),
    }
    width = {k: int(m.output.shape[-1]) for k, m in towers.items()}
    enc = {k: keras.Input((w,), name=k) for k, w in width.items()}
    user_regions = enc["entity"][:, width["entity"] - regions.size :]  # regions come last
    match = keras.ops.sum(user_regions[:, 1:] * enc["item"][:, 1 : regions.size], axis=1)
    h = layers.Concatenate()(
        [enc["entity"], enc["item"], enc["context"], layers.Reshape((1,))(match)]
    )
    h = layers.Dense(64, activation="relu")(h)
    h = layers.Dense(32, activation="relu")(h)
    head = keras.Model(enc, layers.Dense(1, activation="sigmoid")(h), name="score_pairs")
    encoded = {
        "entity": towers["entity"](user_in),
        "item": towers["item"](hotel_in),
        "context": towers["context"](ctx_in),
    }
    full = keras.Model({**user_in, **hotel_in, **ctx_in}, head(encoded))
    full.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    return {"model": full, "towers": towers, "head": head}


def _specs(model: Any) -> dict[str, Any]:
    """A Keras model's named inputs as the specs of an export endpoint."""
    import tensorflow as tf

    return {i.name: tf.TensorSpec(i.shape, tf.as_dtype(i.dtype), name=i.name) for i in model.inputs}


def _named(name: str, model: Any) -> Any:
    """An endpoint returning ``{name: model(inputs)}`` (no default arguments: TF would
    take them for inputs)."""
    return lambda inputs: {name: model(inputs)}


def export(parts: dict[str, Any], out: Path) -> None:
    """The SavedModel: serving_default plus the factored signatures."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(parts["model"])
    full, towers, head = parts["model"], parts["towers"], parts["head"]
    archive.add_endpoint(
        "serving_default", lambda d: {"score": full(d)}, input_signature=[_specs(full)]
    )
    for name, tower in towers.items():
        archive.track(tower)
        archive.add_endpoint(f"encode_{name}", _named(name, tower), input_signature=[_specs(tower)])
    archive.track(head)
    archive.add_endpoint(
        "score_pairs", lambda d: {"score": head(d)}, input_signature=[_specs(head)]
    )
    archive.write_out(str(out / "saved_model"), verbose=False)


def train(data: Path, out: Path, *, epochs: int = 4, seed: int = 7) -> dict[str, Any]:
    """Fit on ``data``; write ``out/saved_model`` and ``out/model.json``; returns model.json."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    tables = load_tables(data)
    train_ev, test_ev = tables["events_train"], tables["events_test"]
    parts = build(tables)
    x = tensors(event_columns(train_ev, tables, rng.random(len(train_ev)) < CONTEXT_DROPOUT))
    parts["model"].fit(
        x, train_ev["booked"].to_numpy(np.float32), epochs=epochs, batch_size=512, verbose=2
    )
    test_x = tensors(event_columns(test_ev, tables))
    scores = parts["model"].predict(test_x, batch_size=4096, verbose=0)
    y = test_ev["booked"].to_numpy()
    meta = {
        "kind": "ranking",
        "description": "booking probability of a user for a hotel (in a season and day)",
        "output": "score",
        "metrics": {
            "auc": roc_auc(y, scores.ravel()),
            "popularity_auc": roc_auc(y, popularity_scores(train_ev, test_ev)),
            "test_events": float(len(test_ev)),
            "train_events": float(len(train_ev)),
        },
        "training_data": {
            "path": str(data),
            "train_from": str(train_ev["date"].min()),
            "train_to": str(train_ev["date"].max()),
            "test_from": str(test_ev["date"].min()),
            "test_to": str(test_ev["date"].max()),
        },
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.mkdir(parents=True, exist_ok=True)
    export(parts, out)
    (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("var/data"))
    parser.add_argument("--out", type=Path, required=True, help="folder the model is written to")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    meta = train(args.data, args.out, epochs=args.epochs, seed=args.seed)
    m = meta["metrics"]
    print(
        f"reco model written to {args.out}: held-out AUC {m['auc']:.4f} vs popularity "
        f"{m['popularity_auc']:.4f} ({int(m['test_events'])} events); "
        f"{time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
