"""Quality metrics of a model on held-out data (numpy only): ROC AUC and mean average
precision. Registration measures the int8 variant with them; retraining gates on them."""

from __future__ import annotations

import numpy as np

METRICS = ("auc", "map")


def _labelled(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose label is known, the label as a bool: a missing one (null, NaN) is
    no negative and no positive (as a bool, NaN was a positive)."""
    known = np.asarray(y, np.float64).ravel()
    keep = ~np.isnan(known)
    return known[keep] != 0, np.asarray(score, np.float64).ravel()[keep]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged) over the rows whose label
    is known."""
    y, score = _labelled(y, score)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    y, score = _labelled(y, score)
    if not y.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def mean_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels (columns) of average precision; labels with no positive skipped."""
    y = y.reshape(len(y), -1)
    scores = scores.reshape(y.shape)  # a one-label model's scores come flattened
    aps = [average_precision(y[:, j], scores[:, j]) for j in range(y.shape[1])]
    return float(np.nanmean(aps))


def quality(metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    """``metric`` of ``scores`` against the truth ``y`` (higher is better for both)."""
    if metric == "auc":
        return roc_auc(y, scores)
    if metric == "map":
        return mean_average_precision(np.asarray(y), np.asarray(scores))
    raise ValueError(f"metric must be one of {', '.join(METRICS)}")
