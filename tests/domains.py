"""Domains built inside the tests with their own names, tables and models: what a team
that is not the hotel demo brings. Nothing here is prescore code; the tests drive these
through prescore's public contract only (a dataset file, ``prescore models register``,
the bulk job, the lookup and the fallback).

- **shop**: customers x products. Customers have a ``segment`` and the ``categories``
  they buy in; products a ``category`` and a ``price``. Candidates: the products of a
  customer's categories (the ``match`` rule over a list column). The model takes two raw
  inputs, ``segment`` (a string, through a StringLookup inside the graph) and ``price``
  (Normalization inside), learnt from purchases drawn from a hidden rule: budget
  customers buy cheap products, premium ones dear ones. It is exported with or without
  the factored signatures.
- **colours**: a ``labels`` dataset over JPEGs of the tests' own size, whose own tag
  names (``red``, ``green``, ``blue``) are the colours a small CNN learns to see.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.frames import read_frame, write_frame

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SEGMENTS = ("budget", "regular", "premium")
CATEGORIES = ("books", "garden", "kitchen", "toys")
COLOURS = ("red", "green", "blue")
IMAGE_SIZE = 24


def shop_tables(folder: Path, customers: int = 300, products: int = 60, seed: int = 1) -> Path:
    """customers, products, purchases_train and purchases_test parquet files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cust = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(customers)],
            "segment": [SEGMENTS[s] for s in rng.integers(0, 3, customers)],
            "categories": [
                sorted({CATEGORIES[j] for j in rng.integers(0, 4, int(rng.integers(1, 3)))})
                for _ in range(customers)
            ],
        }
    )
    prod = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(products)],
            "category": [CATEGORIES[i % 4] for i in range(products)],
            "price": np.round(np.exp(rng.normal(3.0, 0.8, products)), 2),
            "name": [f"Product {i}" for i in range(products)],
        }
    )
    write_frame(cust, folder / "customers.parquet", index=False)
    write_frame(prod, folder / "products.parquet", index=False)
    n = customers * 20
    c = rng.integers(0, customers, n)
    p = rng.integers(0, products, n)
    log_price = np.log(prod["price"].to_numpy())[p]
    taste = cust["segment"].map({"budget": -1.5, "regular": 0.0, "premium": 1.5}).to_numpy()[c]
    logit = taste * (log_price - 3.0) * 1.5
    bought = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    events = pd.DataFrame(
        {
            "customer_id": cust["customer_id"].to_numpy()[c],
            "product_id": prod["product_id"].to_numpy()[p],
            "bought": bought,
        }
    )
    cut = int(n * 0.8)
    write_frame(events.iloc[:cut], folder / "purchases_train.parquet", index=False)
    write_frame(events.iloc[cut:], folder / "purchases_test.parquet", index=False)
    return folder


def shop_config(tables: Path, out: Path, *, extra: str = "") -> Path:
    """A prescore.toml declaring the shop dataset (and ``extra`` TOML after it)."""
    out.write_text(
        f"""
[datasets.shop]
kind = "ranking"
model = "shop-model"
route = "picks"
k = 5
[datasets.shop.entities]
path = "{tables}/customers.parquet"
key = "customer_id"
[datasets.shop.items]
path = "{tables}/products.parquet"
key = "product_id"
payload = ["name", "price"]
[datasets.shop.candidates]
rule = "match"
entity_column = "categories"
item_column = "category"
[datasets.shop.training]
entry = "tests.domains:train_shop_entry"
heldout = {{ path = "{tables}/purchases_test.parquet" }}
label = "bought"
metric = "auc"
max_regression = 0.01
{extra}
"""
    )
    return out


def _pairs(tables: Path, events: pd.DataFrame) -> dict[str, np.ndarray]:
    cust = read_frame(tables / "customers.parquet").set_index("customer_id")
    prod = read_frame(tables / "products.parquet").set_index("product_id")
    return {
        "segment": cust.loc[events["customer_id"], "segment"].to_numpy(object),
        "price": prod.loc[events["product_id"], "price"].to_numpy(np.float32),
    }


def train_shop(
    tables: Path,
    out: Path,
    *,
    factored: bool = False,
    good: bool = True,
    channel: bool = False,
    seed: int = 3,
) -> Path:
    """Train the shop model on the purchases (``good=False``: on shuffled labels, a model
    no better than chance) and write ``out/saved_model`` and ``out/model.json``.
    ``channel``: a third input, ``channel`` (a context: ``web``, ``app`` or none), in
    whose ``app`` the customers' taste in price is turned round."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    events = read_frame(tables / "purchases_train.parquet")
    y = events["bought"].to_numpy(np.float32)
    if not good:
        y = np.random.default_rng(seed).permutation(y)
    x = _pairs(tables, events)
    if channel:
        return _train_shop_channel(x, y, out, factored, seed)
    segment = keras.Input((), dtype="string", name="segment")
    price = keras.Input((), dtype="float32", name="price")
    lookup = keras.layers.StringLookup(vocabulary=list(SEGMENTS), output_mode="one_hot")
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(np.log(x["price"]))
    entity = keras.Model({"segment": segment}, lookup(segment), name="encode_entity")
    item = keras.Model(
        {"price": price}, keras.layers.Reshape((1,))(norm(keras.ops.log(price))), name="encode_item"
    )
    e_in = keras.Input((len(SEGMENTS) + 1,), name="entity")
    i_in = keras.Input((1,), name="item")
    h = keras.layers.Concatenate()(
        [
            e_in,
            i_in,
            keras.layers.Multiply()([e_in, keras.ops.repeat(i_in, len(SEGMENTS) + 1, axis=1)]),
        ]
    )
    h = keras.layers.Dense(16, activation="relu")(h)
    head = keras.Model(
        {"entity": e_in, "item": i_in}, keras.layers.Dense(1, activation="sigmoid")(h)
    )
    full = keras.Model(
        {"segment": segment, "price": price},
        head({"entity": entity({"segment": segment}), "item": item({"price": price})}),
    )
    full.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    full.fit(
        {"segment": tf.constant(x["segment"].tolist()), "price": x["price"]},
        y,
        epochs=4,
        batch_size=256,
        verbose=0,
    )
    towers = {"entity": entity, "item": item}
    _export_ranking(out, full, towers, head, factored)
    (out / "model.json").write_text(
        json.dumps({"kind": "ranking", "metrics": {"trained_on": len(y)}})
    )
    return out


def _train_shop_channel(
    x: dict[str, np.ndarray], y: np.ndarray, out: Path, factored: bool, seed: int
) -> Path:
    """The shop model with a ``channel`` input (a context): its one-hot times the
    segment-price features, so that the channel can turn the ranking round; ``factored``:
    with ``encode_context`` beside the entity's and item's encoders."""
    import keras
    import tensorflow as tf

    picked = np.random.default_rng(seed).integers(0, 3, len(y))
    x = {**x, "channel": np.array(["", "web", "app"], dtype=object)[picked]}
    y = np.where(picked == 2, 1.0 - y, y).astype(np.float32)
    segment = keras.Input((), dtype="string", name="segment")
    price = keras.Input((), dtype="float32", name="price")
    chan = keras.Input((), dtype="string", name="channel")
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(np.log(x["price"]))
    towers = {
        "entity": keras.Model(
            {"segment": segment},
            keras.layers.StringLookup(vocabulary=list(SEGMENTS), output_mode="one_hot")(segment),
        ),
        "item": keras.Model(
            {"price": price}, keras.layers.Reshape((1,))(norm(keras.ops.log(price)))
        ),
        "context": keras.Model(
            {"channel": chan},
            keras.layers.StringLookup(vocabulary=["web", "app"], output_mode="one_hot")(chan),
        ),
    }
    width = {k: int(m.output.shape[-1]) for k, m in towers.items()}
    enc = {k: keras.Input((w,), name=k) for k, w in width.items()}
    e, i, c = enc["entity"], enc["item"], enc["context"]
    ei = keras.layers.Multiply()([e, keras.ops.repeat(i, width["entity"], axis=1)])
    cei = keras.ops.reshape(
        c[:, :, None] * ei[:, None, :], (-1, width["context"] * width["entity"])
    )
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([e, i, c, ei, cei]))
    head = keras.Model(enc, keras.layers.Dense(1, activation="sigmoid")(h))
    inputs = {"segment": segment, "price": price, "channel": chan}
    full = keras.Model(
        inputs,
        head(
            {
                "entity": towers["entity"]({"segment": segment}),
                "item": towers["item"]({"price": price}),
                "context": towers["context"]({"channel": chan}),
            }
        ),
    )
    full.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    feed = {k: tf.constant(v.tolist()) if v.dtype == object else v for k, v in x.items()}
    full.fit(feed, y, epochs=4, batch_size=256, verbose=0)

    _export_ranking(out, full, towers, head, factored)
    (out / "model.json").write_text(json.dumps({"kind": "ranking", "metrics": {}}))
    return out


def _export_ranking(
    out: Path, full: Any, towers: dict[str, Any], head: Any, factored: bool
) -> None:
    """``out/saved_model``: serving_default, and with ``factored`` each tower's
    ``encode_<side>`` and the head's ``score_pairs`` (prescore.models.signature)."""
    import keras
    import tensorflow as tf

    def specs(model: Any) -> dict[str, Any]:
        return {
            i.name: tf.TensorSpec(i.shape, tf.as_dtype(i.dtype), name=i.name) for i in model.inputs
        }

    out.mkdir(parents=True, exist_ok=True)
    archive = keras.export.ExportArchive()
    archive.track(full)
    archive.add_endpoint(
        "serving_default", lambda d: {"score": full(d)}, input_signature=[specs(full)]
    )
    if factored:
        for name, tower in towers.items():
            archive.track(tower)
            archive.add_endpoint(
                f"encode_{name}", _named(name, tower), input_signature=[specs(tower)]
            )
        archive.track(head)
        archive.add_endpoint(
            "score_pairs", lambda d: {"score": head(d)}, input_signature=[specs(head)]
        )
    archive.write_out(str(out / "saved_model"), verbose=False)


def _named(name: str, model: Any) -> Any:
    return lambda inputs: {name: model(inputs)}


def train_shop_entry(output: str) -> None:
    """The training entry point the shop's declaration names (jobs.retrain calls it)."""
    tables = Path(os.environ["SHOP_TABLES"])
    train_shop(tables, Path(output), good=os.environ.get("SHOP_GOOD", "1") == "1")


def shop_scores(model_dir: Path, segment: str, prices: list[float]) -> np.ndarray:
    """The model's own scores for one customer segment over products of ``prices``."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    out = serve(segment=tf.constant([segment] * len(prices)), price=tf.constant(prices, tf.float32))
    return np.asarray(next(iter(out.values()))).reshape(-1)


# -- colours: a labels dataset over JPEGs -------------------------------------------------------


def colour_jpeg(colours: set[str], size: int = 40, seed: int = 0) -> bytes:
    """A JPEG whose channels carry ``colours`` (what the small CNN learns)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = rng.random((size, size, 3)) * 0.2 + 0.1
    for j, colour in enumerate(COLOURS):
        if colour in colours:
            x[..., j] += 0.6
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def colour_images(folder: Path, n: int = 120, seed: int = 2) -> dict[str, list[str]]:
    """``n`` JPEGs ``img-<i>.jpg`` with random colours; returns each key's colours."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        colours = {c for c in COLOURS if rng.random() < 0.45}
        (folder / f"img-{i}.jpg").write_bytes(colour_jpeg(colours, seed=i))
        truth[f"img-{i}"] = sorted(colours)
    return truth


def bad_image_files(folder: Path) -> None:
    """Files a team's image folder may hold that a run must skip and report: a broken
    JPEG, an empty file, text named .jpg and an image past the decoder's pixel bound."""
    from PIL import Image

    (folder / "corrupt-1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    (folder / "empty-1.jpg").write_bytes(b"")
    (folder / "notes-1.jpg").write_text("not a photo at all\n")
    Image.new("RGB", (6000, 6000), (10, 10, 10)).save(folder / "huge-1.jpg", quality=20)


def train_colours(folder: Path, truth: dict[str, list[str]], out: Path, seed: int = 4) -> Path:
    """A small CNN over uint8 [IMAGE_SIZE, IMAGE_SIZE, 3] images (scaling inside), its
    label vocabulary and thresholds in model.json."""
    import keras

    from prescore.models.image_features import decode

    keras.utils.set_random_seed(seed)
    keys = sorted(truth)
    x = np.stack(
        [decode((folder / f"{k}.jpg").read_bytes(), (IMAGE_SIZE, IMAGE_SIZE)) for k in keys]
    )
    y = np.array([[c in truth[k] for c in COLOURS] for k in keys], np.float32)
    model = keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="pixels"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(COLOURS), activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.03), "binary_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.export(str(out / "saved_model"), verbose=False)
    meta = {"kind": "labels", "labels": list(COLOURS), "thresholds": 0.5}
    (out / "model.json").write_text(json.dumps(meta))
    return out


def colours_config(folder: Path, out: Path, extra: str = "") -> Path:
    out.write_text(
        f"""
[datasets.colours]
kind = "labels"
model = "colour-tagger"
list_field = "colours"
label_field = "colour"
[datasets.colours.images]
path = "{folder}/*.jpg"
{extra}
"""
    )
    return out


# -- shapes: labels from a feature table --------------------------------------------------------

SHAPES = ("small", "wide", "tall")


def rows_model(out: Path) -> Path:
    """A labels model over rows with no training: ``width``, ``height`` -> small, wide,
    tall, by a fixed rule (so the tests know every answer)."""
    import tensorflow as tf

    class Shapes(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="width"),
                tf.TensorSpec([None], tf.float32, name="height"),
            ]
        )
        def serve(self, width: Any, height: Any) -> dict[str, Any]:
            small = tf.sigmoid(5.0 * (0.5 - tf.maximum(width, height)))
            wide = tf.sigmoid(5.0 * (width - height - 0.5))
            tall = tf.sigmoid(5.0 * (height - width - 0.5))
            return {"scores": tf.stack([small, wide, tall], axis=1)}

    module = Shapes()
    tf.saved_model.save(
        module, str(out / "saved_model"), signatures={"serving_default": module.serve}
    )
    (out / "model.json").write_text(json.dumps({"kind": "labels", "labels": list(SHAPES)}))
    return out


def words_model(out: Path) -> Path:
    """A labels model over a list of words (a string list column) with no training: which
    colours a row's words name, by a Keras ``StringLookup`` and a multi-hot. Its float32
    LiteRT variant converts; its int8 one does not (full-integer calibration fails on a
    list of strings)."""
    import keras

    words = keras.Input((None,), dtype="string", name="words")
    lookup = keras.layers.StringLookup(vocabulary=["", *COLOURS])  # 0: unknown, 1: ""
    hot = keras.ops.max(keras.ops.one_hot(lookup(words), len(COLOURS) + 2), axis=1)
    named = keras.ops.sigmoid(8.0 * hot[:, 2:] - 4.0)  # a colour named: 0.982, else 0.018
    keras.Model(words, named).export(str(out / "saved_model"), verbose=False)
    (out / "model.json").write_text(json.dumps({"kind": "labels", "labels": list(COLOURS)}))
    return out
