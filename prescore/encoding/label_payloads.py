"""Labels payloads from model scores (numpy and the codec): each key's labels at or above
their threshold, best first. One rule for the bulk job and live inference alike.

A label's threshold is the dataset's ``min_score`` when it declares one, else model.json
``thresholds`` (one number, a list in label order, or one per label name), else 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prescore.encoding import codec
from prescore.encoding.codec import PayloadShape


def thresholds(meta: Mapping[str, Any], labels: Sequence[str], floor: float | None) -> np.ndarray:
    """Each label's threshold: the dataset's one ``floor``, else model.json's, else 0.5."""
    if floor is not None:
        return np.full(len(labels), floor, np.float32)
    raw = meta.get("thresholds", 0.5)
    if isinstance(raw, dict):
        return np.array([float(raw.get(t, 0.5)) for t in labels], np.float32)
    if isinstance(raw, list):
        return np.asarray(raw, np.float32)
    return np.full(len(labels), float(raw), np.float32)


def encode(
    shape: PayloadShape,
    keys: Sequence[str],
    scores: np.ndarray,
    meta: Mapping[str, Any],
    *,
    model: str,
    model_version: str,
    scored_at: str,
    floor: float | None = None,
    source: str | None = None,
) -> list[bytes]:
    """One payload per key (row of ``scores``): its labels at or above threshold."""
    labels = [str(x) for x in meta["labels"]]
    cut = thresholds(meta, labels, floor)
    if scores.ndim == 1:  # a one-label model's [n, 1] output, flattened by its runner
        scores = scores.reshape(-1, 1)
    out = []
    for key, row in zip(keys, scores, strict=True):
        best = [j for j in np.argsort(-row, kind="stable") if row[j] >= cut[j]]
        out.append(
            codec.encode_payload(
                shape,
                key,
                [(labels[j], float(row[j])) for j in best],
                model=model,
                model_version=model_version,
                scored_at=scored_at,
                source=source,
            )
        )
    return out
