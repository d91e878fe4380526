"""What the fallback tests build on top of tests.domains: one dataset file declaring the
shop (plain model), ``shopf`` (the same tables, the factored export of the same model)
and the colours over a folder of their own, a labels dataset over a feature table
(``swatches``), the models registered in a store, and the answers the models themselves
give (to compare live answers with). Nothing here is prescore code.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prescore.encoding import codec
from prescore.encoding.codec import PayloadShape
from prescore.settings import ModelStoreSettings, Settings
from tests import domains
from tests.frames import read_frame, write_frame
from tests.helpers import registered, with_catalog

SHOP = PayloadShape("customer_id", "items", "product_id")
COLOURS = PayloadShape("key", "colours", "colour")
SCORED_AT = "2026-11-24T10:00:00Z"
IMAGES = [f"img-{i}" for i in range(8)]  # the colours images copied into a test's folder


def _factored(shop_text: str) -> str:
    """The shop declared again as ``shopf``, over the factored export (model shopf-model)."""
    body = shop_text.split("[datasets.shop.training]")[0]  # no training step for this one
    body = body.replace("[datasets.shop", "[datasets.shopf")
    body = body.replace('"shop-model"', '"shopf-model"')
    return body.replace('route = "picks"', 'route = "picksf"')


def colours_toml(folder: Path, extra: str = "") -> str:
    return f"""
[datasets.colours]
kind = "labels"
model = "colour-tagger"
list_field = "colours"
label_field = "colour"
{extra}
[datasets.colours.images]
path = "{folder}/*.jpg"
"""


def swatches_toml(
    table: Path,
    name: str = "swatches",
    min_score: float | None = None,
    model: str = "swatch-tagger",
) -> str:
    floor = f"min_score = {min_score}" if min_score is not None else ""
    return f"""
[datasets.{name}]
kind = "labels"
model = "{model}"
list_field = "colours"
label_field = "colour"
{floor}
[datasets.{name}.rows]
path = "{table}"
key = "swatch_id"
"""


def write_config(
    out: Path,
    *,
    tables: Path | None = None,
    images: Path | None = None,
    factored: bool = False,
    swatches: Path | None = None,
    shop_extra: str = "",
) -> Path:
    """One dataset file declaring what the arguments name."""
    parts = []
    if tables is not None:
        shop_text = domains.shop_config(tables, out, extra=shop_extra).read_text()
        parts.append(shop_text)
        if factored:
            parts.append(_factored(shop_text))
    if images is not None:
        parts.append(colours_toml(images))
    if swatches is not None:
        parts.append(swatches_toml(swatches))
        parts.append(swatches_toml(swatches, "swatches-strict", min_score=0.99))
    out.write_text("\n".join(parts))
    return out


def image_folder(root: Path, colours: dict[str, Any], junk: bool = True) -> Path:
    """``root/images`` with the first colours images (IMAGES), a file that is no image
    (``p-junk.jpg``) and, beside the folder, ``root/secret.jpg``, outside it."""
    folder = root / "images"
    folder.mkdir(parents=True)
    for key in IMAGES:
        shutil.copy(colours["images"] / f"{key}.jpg", folder / f"{key}.jpg")
    if junk:
        (folder / "p-junk.jpg").write_bytes(b"not an image")
    (root / "secret.jpg").write_bytes(domains.colour_jpeg({"red"}))
    return folder


def store_settings(settings: Settings, config: Path, root: Path) -> Settings:
    """``settings`` over the datasets of ``config`` and a fresh model store under ``root``."""
    import dataclasses

    models = ModelStoreSettings(root=(root / "models").as_uri(), cache_dir=str(root / "cache"))
    return with_catalog(dataclasses.replace(settings, models=models), config)


def register_models(
    s: Settings,
    shop: dict[str, Path] | None = None,
    colours: dict[str, Any] | None = None,
    swatch_model: Path | None = None,
) -> None:
    """Register (and promote) the model of every dataset ``s`` declares, without int8."""
    names = set(s.catalog.names())
    if shop is not None and "shop" in names:
        registered(s, "shop-model", shop["plain"])
    if shop is not None and "shopf" in names:
        registered(s, "shopf-model", shop["factored"])
    if colours is not None and "colours" in names:
        registered(s, "colour-tagger", colours["model"])
    if swatch_model is not None and "swatches" in names:
        registered(s, "swatch-tagger", swatch_model)


def process_env(s: Settings, config: Path, **extra: str) -> dict[str, str]:
    """The environment of a fallback or lookup process over these datasets and models."""
    return {
        "PRESCORE_CONFIG": str(config),
        "PRESCORE_MODEL_STORE": s.models.root,
        "PRESCORE_MODEL_CACHE": s.models.cache_dir,
        "REDIS_URL": s.redis.url,
        **extra,
    }


# -- what the models themselves answer ----------------------------------------------------


def customers(tables: Path) -> pd.DataFrame:
    return read_frame(tables / "customers.parquet").set_index("customer_id")


def products(tables: Path) -> pd.DataFrame:
    return read_frame(tables / "products.parquet").set_index("product_id")


def expected_top(
    tables: Path, model_dir: Path, segment: str, categories: list[str], k: int
) -> list[tuple[str, float]]:
    """The top ``k`` products of ``categories`` for a customer of ``segment``, by the
    shop model's own serving signature (what any answer must equal)."""
    prods = products(tables)
    mine = prods[prods["category"].isin(list(categories))]
    scores = domains.shop_scores(model_dir, segment, mine["price"].tolist())
    best = np.argsort(-scores, kind="stable")[:k]
    return [(str(mine.index[i]), float(scores[i])) for i in best]


def top_products(shop: dict[str, Path], key: str, k: int, model: Path | None = None) -> list[str]:
    """Customer ``key``'s top ``k`` product ids by the shop model (default: the plain one)."""
    c = customers(shop["tables"]).loc[key]
    found = expected_top(
        shop["tables"], model or shop["plain"], c["segment"], list(c["categories"]), k
    )
    return [p for p, _ in found]


def colour_scores(model_dir: Path, raw: bytes) -> dict[str, float]:
    """The colours CNN's score per label for image bytes ``raw`` (TensorFlow)."""
    import tensorflow as tf

    from prescore.models.image_features import decode

    pixels = decode(raw, (domains.IMAGE_SIZE, domains.IMAGE_SIZE))[None]
    serve = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    out = np.asarray(next(iter(serve(tf.constant(pixels)).values())))[0]
    return {c: float(s) for c, s in zip(domains.COLOURS, out, strict=True)}


def shop_payload(customer_id: str, n: int, model_version: str) -> bytes:
    """A precomputed shop payload: products p0, p1, ... scored 0.9, 0.89, ..."""
    items = [(f"p{j}", round(0.9 - j / 100, 4)) for j in range(n)]
    extras = [{"name": f"Product {j}", "price": 1.0} for j in range(n)]
    return codec.encode_payload(
        SHOP,
        customer_id,
        items,
        model="shop-model",
        model_version=model_version,
        scored_at=SCORED_AT,
        extras=extras,
    )


def colours_payload(key: str, colours: list[tuple[str, float]], model_version: str) -> bytes:
    return codec.encode_payload(
        COLOURS,
        key,
        colours,
        model="colour-tagger",
        model_version=model_version,
        scored_at=SCORED_AT,
    )


# -- swatches: a labels dataset over a feature table ----------------------------------------


def swatch_table(folder: Path) -> Path:
    """``swatches.parquet``: swatch_id and the swatch's r, g, b (0..1)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    rgb = rng.random((40, 3)).astype(np.float32)
    frame = pd.DataFrame(
        {"swatch_id": [f"s{i}" for i in range(40)], "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]}
    )
    write_frame(frame, folder / "swatches.parquet", index=False)
    return folder / "swatches.parquet"


def swatch_model(out: Path, colours: tuple[str, ...] = domains.COLOURS) -> Path:
    """A real Keras model over three raw float inputs (r, g, b): a channel above 0.5 is
    its colour (fixed weights, so its answers are known without training); ``colours``
    the first of them it labels (one: a yes/no classifier, its output ``[batch, 1]``)."""
    import keras

    ins = {c: keras.Input((), dtype="float32", name=c) for c in ("r", "g", "b")}
    stacked = keras.layers.Concatenate()([keras.layers.Reshape((1,))(ins[c]) for c in "rgb"])
    n = len(colours)
    dense = keras.layers.Dense(n, activation="sigmoid")
    model = keras.Model(ins, dense(stacked))
    dense.set_weights([np.eye(3, n, dtype=np.float32) * 20, np.full(n, -10, np.float32)])
    out.mkdir(parents=True, exist_ok=True)
    model.export(str(out / "saved_model"), verbose=False)
    meta = {"kind": "labels", "labels": list(colours), "thresholds": 0.5}
    (out / "model.json").write_text(json.dumps(meta))
    return out


def swatch_colours(r: float, g: float, b: float) -> dict[str, float]:
    """The swatch model's scores, computed by hand."""
    return {
        c: float(1 / (1 + np.exp(-(20 * v - 10))))
        for c, v in zip(domains.COLOURS, (r, g, b), strict=True)
    }


def jpeg_bytes(colours: set[str]) -> bytes:
    return domains.colour_jpeg(colours, seed=99)


def png_bytes(colours: set[str]) -> bytes:
    from PIL import Image

    raw = domains.colour_jpeg(colours, seed=98)
    buf = io.BytesIO()
    Image.open(io.BytesIO(raw)).save(buf, "PNG")
    return buf.getvalue()
