"""Model feeds built from a dataset's own tables, outside Spark: a sample to calibrate the
int8 variant with, and the held-out rows retraining gates on.

Ranking: pairs of entity, item (and context) rows, each input taken from the table that
holds its column (prescore.models.signature.bind_inputs). Labels: decoded images (resized to the
model's input) or feature rows. Tables are read with prescore.data.local_tables.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from prescore.data import local_tables
from prescore.data.datasets import Dataset, Table
from prescore.data.images import ImageStore
from prescore.errors import ConfigError, InvalidInput
from prescore.models import feeds
from prescore.models.image_features import decode, model_input
from prescore.models.signature import (
    Column,
    Columns,
    Signatures,
    Tensor,
    bind_inputs,
    image_dims,
    image_input,
)

Feed = dict[str, np.ndarray]


def ranking_tables(
    dataset: Dataset, webhdfs_url: str = ""
) -> tuple[dict[str, pd.DataFrame], dict[str, Columns]]:
    """The entity, item (and context) tables of a ranking dataset, and their columns."""
    assert dataset.entities is not None and dataset.items is not None
    entity, entity_cols = local_tables.read_typed(dataset.entities, webhdfs_url=webhdfs_url)
    item, item_cols = local_tables.read_typed(dataset.items, webhdfs_url=webhdfs_url)
    tables, sides = {"entity": entity, "item": item}, {"entity": entity_cols, "item": item_cols}
    ctx = dataset.contexts
    if ctx is not None:
        if ctx.table is not None:
            tables["context"], sides["context"] = local_tables.read_typed(
                ctx.table, webhdfs_url=webhdfs_url
            )
        else:
            tables["context"] = pd.DataFrame({ctx.key: list(ctx.values)})
            sides["context"] = {ctx.key: Column("string")}
    return tables, sides


def _side_inputs(
    inputs: Mapping[str, Tensor], sides: Mapping[str, Columns], where: str
) -> dict[str, dict[str, Tensor]]:
    bound = bind_inputs(inputs, sides, where)
    out: dict[str, dict[str, Tensor]] = {side: {} for side in sides}
    for name, side in bound.items():
        out[side][name] = inputs[name]
    return out


def _pair_feed(
    tables: Mapping[str, pd.DataFrame],
    by_side: Mapping[str, Mapping[str, Tensor]],
    rows: Mapping[str, np.ndarray],
) -> Feed:
    """Feeds of pairs: row ``rows[side][i]`` of each side's table (-1: blank context)."""
    out: Feed = {}
    for side, inputs in by_side.items():
        if not inputs:
            continue
        index = rows[side]
        frame = tables[side].iloc[np.maximum(index, 0)].reset_index(drop=True)
        feed = feeds.feeds(frame, inputs)
        if side == "context" and (index < 0).any():
            blank = feeds.blank(inputs, int((index < 0).sum()))
            for name in feed:
                feed[name][index < 0] = blank[name]
        out.update(feed)
    return out


def sample(dataset: Dataset, sigs: Signatures, n: int = 256, webhdfs_url: str = "") -> Feed:
    """``n`` representative rows for the model's serving signature (a fixed seed)."""
    rng = np.random.default_rng(7)
    where = f"dataset {dataset.name}"
    if dataset.kind == "ranking":
        tables, sides = ranking_tables(dataset, webhdfs_url)
        by_side = _side_inputs(sigs.serving.inputs, sides, where)
        rows = {side: rng.integers(0, len(t), n) for side, t in tables.items()}
        return _pair_feed(tables, by_side, rows)
    if dataset.images:
        name, tensor = image_input(sigs.serving, where)
        paths = _image_paths(dataset)[:n]
        pixels = [_decode_file(p, tensor, dataset.max_image_bytes) for p in paths]
        good = [p for p in pixels if p is not None]
        if not good:
            raise ConfigError(f"{where}: no readable image under {dataset.images}")
        return {name: model_input(np.stack(good), tensor.dtype)}
    assert dataset.rows is not None
    frame = local_tables.read(dataset.rows, webhdfs_url=webhdfs_url)
    picked = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    return feeds.feeds(picked, sigs.serving.inputs)


def _image_paths(dataset: Dataset) -> list[str]:
    parsed = urlparse(dataset.images)
    if parsed.scheme not in ("", "file"):
        raise ConfigError(f"dataset {dataset.name}: images on {parsed.scheme}:// are not read here")
    path = parsed.path if parsed.scheme else dataset.images
    exts = {e.lower() for e in dataset.image_extensions}
    found = (
        sorted(glob.glob(path)) if any(c in path for c in "*?[") else sorted(glob.glob(path + "/*"))
    )
    return [p for p in found if p.rsplit(".", 1)[-1].lower() in exts]


def _decode_file(path: str, tensor: Tensor, max_bytes: int) -> np.ndarray | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        h, w, c = image_dims(tensor)
        return decode(raw, (h, w), max_bytes, channels=c)
    except (OSError, InvalidInput):
        return None


def heldout(
    dataset: Dataset,
    sigs: Signatures,
    meta: Mapping[str, Any],
    table: Table,
    label: str,
    webhdfs_url: str = "",
) -> tuple[Feed, np.ndarray]:
    """The held-out rows' feeds and truth (0/1 per pair, or label lists as multi-hot)."""
    rows = local_tables.read(table, webhdfs_url=webhdfs_url)
    where = f"dataset {dataset.name}: held-out table {table.path}"
    if label not in rows.columns:
        raise ConfigError(f"{where}: no label column {label!r}")
    if dataset.kind == "ranking":
        return _ranking_heldout(dataset, sigs, rows, label, where, webhdfs_url)
    labels = [str(x) for x in meta.get("labels", [])]
    truth = np.array([[x in set(v) for x in labels] for v in rows[label]], np.float32)
    if dataset.images:
        name, tensor = image_input(sigs.serving, where)
        store = ImageStore.for_dataset(dataset, webhdfs_url)
        key = dataset.key_field if dataset.key_field in rows.columns else rows.columns[0]
        pixels, keep = [], []
        for i, k in enumerate(rows[key].astype(str)):
            raw = store.read(k)
            try:
                h, w, c = image_dims(tensor)
                pixels.append(decode(raw or b"", (h, w), channels=c))
                keep.append(i)
            except InvalidInput:
                continue
        return {name: model_input(np.stack(pixels), tensor.dtype)}, truth[keep]
    return feeds.feeds(rows, sigs.serving.inputs), truth


def _ranking_heldout(
    dataset: Dataset,
    sigs: Signatures,
    rows: pd.DataFrame,
    label: str,
    where: str,
    webhdfs_url: str,
) -> tuple[Feed, np.ndarray]:
    assert dataset.entities is not None and dataset.items is not None
    tables, sides = ranking_tables(dataset, webhdfs_url)
    by_side = _side_inputs(sigs.serving.inputs, sides, where)
    picks: dict[str, np.ndarray] = {}
    keys = {"entity": list(dataset.entities.key), "item": list(dataset.items.key)}
    if dataset.contexts is not None:
        keys["context"] = [dataset.contexts.key]
    for side, cols in keys.items():
        missing = [c for c in cols if c not in rows.columns]
        if missing and side != "context":
            raise ConfigError(f"{where}: no column {', '.join(missing)} to find the {side}")
        if missing:
            picks[side] = np.full(len(rows), -1)
            continue
        index = {
            tuple(k): i
            for i, k in enumerate(tables[side][cols].astype(str).itertuples(index=False))
        }
        picks[side] = np.array(
            [index.get(tuple(k), -1) for k in rows[cols].astype(str).itertuples(index=False)]
        )
    known = (picks["entity"] >= 0) & (picks["item"] >= 0)
    if not known.any():
        raise ConfigError(f"{where}: no held-out row names a known entity and item")
    picks = {side: p[known] for side, p in picks.items()}
    return _pair_feed(tables, by_side, picks), rows[label].to_numpy()[known]
