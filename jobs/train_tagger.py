"""Train the photo tagger: a small multi-label Keras CNN, versioned in the model store.

    python -m jobs.train_tagger --images var/images [--model-store URI] [--promote]

Reads ``labels.jsonl`` and the JPEGs beside it (jobs.imagegen), decodes them with
prescore.image_features (the same pixels the bulk job and the fallback feed the model),
splits by image into train / validation / test, picks a threshold per tag on validation
(best F1) and reports held-out mAP and micro-F1 beside a label-frequency baseline.
model.json holds the tag vocabulary with human labels, the thresholds, the metrics and
the input size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from jobs.imagegen import LABELS, TAGS
from jobs.quantize import average_precision, mean_average_precision
from jobs.training import TrainResult, add_training_flags, run_training, store_trained
from prescore.image_features import decode
from prescore.modelstore import ModelStore

MODEL_NAME = "tagger"
IMAGE_SIZE = (64, 64)


def load_images(images: Path, size: tuple[int, int] = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images [n, H, W, 3] and their multi-hot labels [n, len(TAGS)]."""
    with open(images / "labels.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    x = np.stack([decode((images / f"{r['image_id']}.jpg").read_bytes(), size) for r in rows])
    y = np.array([[t in r["tags"] for t in TAGS] for r in rows], np.float32)
    return x, y


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test indices (70 / 15 / 15), fixed by ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(n * 0.7), int(n * 0.85)
    return order[:a], order[a:b], order[b:]


def best_thresholds(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per tag, the score threshold with the best F1 on ``(y, scores)``."""
    out = np.full(y.shape[1], 0.5, np.float32)
    for j in range(y.shape[1]):
        best = -1.0
        for t in np.unique(scores[:, j]):
            pred = scores[:, j] >= t
            tp = float((pred & (y[:, j] > 0)).sum())
            f1 = 2 * tp / (pred.sum() + y[:, j].sum()) if tp else 0.0
            if f1 > best:
                best, out[j] = f1, t
    return out


def micro_f1(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> float:
    pred = scores >= thresholds
    tp = float((pred & (y > 0)).sum())
    return 2 * tp / (pred.sum() + y.sum()) if tp else 0.0


def build_model(size: tuple[int, int], n_tags: int) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((*size, 3), name="image")
    h = inputs
    for width in (16, 32, 64):
        h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(64, activation="relu")(h)
    outputs = layers.Dense(n_tags, activation="sigmoid", name="tags")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    return model


def fit(
    x: np.ndarray, y: np.ndarray, epochs: int, seed: int
) -> tuple[Any, np.ndarray, dict[str, float]]:
    """Fit; returns the model, per-tag thresholds and held-out metrics beside the baseline."""
    import keras

    keras.utils.set_random_seed(seed)
    tr, va, te = split(len(x), seed)
    model = build_model(x.shape[1:3], y.shape[1])
    model.fit(x[tr], y[tr], epochs=epochs, batch_size=32, verbose=2, shuffle=True)
    val_scores = model.predict(x[va], batch_size=256, verbose=0)
    test_scores = model.predict(x[te], batch_size=256, verbose=0)
    thresholds = best_thresholds(y[va], val_scores)
    freq = y[tr].mean(axis=0)  # the baseline scores every image with each tag's frequency
    base_val, base_test = (np.tile(freq, (len(idx), 1)) for idx in (va, te))
    metrics = {
        "map": mean_average_precision(y[te], test_scores),
        "micro_f1": micro_f1(y[te], test_scores, thresholds),
        "baseline_map": mean_average_precision(y[te], base_test),
        "baseline_micro_f1": micro_f1(y[te], base_test, best_thresholds(y[va], base_val)),
        "train_images": float(len(tr)),
        "test_images": float(len(te)),
    }
    for j, tag in enumerate(TAGS):
        metrics[f"ap_{tag}"] = average_precision(y[te, j], test_scores[:, j])
    return model, thresholds, {k: round(float(v), 5) for k, v in metrics.items()}


def build_int8(
    model_dir: Path, representative: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray
) -> dict[str, Any]:
    """The hook where the float32 and int8 TFLite variants are made and measured.

    Gets the exported model dir (holding saved_model/) and representative inputs; returns
    the record stored under ``quantization`` in model.json.
    """
    from jobs.quantize import quantize_dir

    return quantize_dir(model_dir, representative, x_eval, y_eval, "map")


def train(
    images: Path,
    store: ModelStore,
    *,
    epochs: int = 20,
    seed: int = 7,
    promote: bool = False,
    int8: bool = True,
) -> TrainResult:
    """Train on ``images``, store the model as the next version, optionally promote it."""
    x, y = load_images(images)
    model, thresholds, metrics = fit(x, y, epochs, seed)
    meta: dict[str, Any] = {
        "kind": "multi-label photo tagger CNN",
        "tags": list(TAGS),
        "labels": dict(LABELS),
        "thresholds": {t: round(float(v), 5) for t, v in zip(TAGS, thresholds, strict=True)},
        "image_size": list(IMAGE_SIZE),
        "input": {"shape": [*IMAGE_SIZE, 3], "dtype": "float32", "range": [0.0, 1.0]},
        "metrics": metrics,
        "data": {"path": str(images), "images": len(x)},
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.export(str(model_dir / "saved_model"), verbose=False)
        if int8:
            tr, _, te = split(len(x), seed)
            meta["quantization"] = build_int8(model_dir, x[tr[:200]], x[te], y[te])
        return store_trained(store, MODEL_NAME, model_dir, meta, promote)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("var/images"))
    add_training_flags(parser, epochs=20)
    args = parser.parse_args(argv)
    return run_training(
        args,
        args.images,
        train,
        lambda r: (
            f"tagger version {r.version}{' (promoted)' if r.promoted else ''}: "
            f"held-out mAP {r.metrics['map']:.4f} vs label frequency "
            f"{r.metrics['baseline_map']:.4f}, micro-F1 {r.metrics['micro_f1']:.4f} vs "
            f"{r.metrics['baseline_micro_f1']:.4f} ({int(r.metrics['test_images'])} test images)"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
