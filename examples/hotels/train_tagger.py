"""Train the demo's photo tagger, a small multi-label Keras CNN, and write it as a
SavedModel with its model.json.

    python -m examples.hotels.train_tagger --images var/images --out var/train/tagger
    prescore models register tagger var/train/tagger --promote    # then, the public contract

Reads ``labels.jsonl`` and the JPEGs beside it (examples.hotels.imagegen), decodes them with
prescore.models.image_features (the same pixels the bulk job and the fallback feed the model:
uint8, resized to the model's input size; the scaling to [0, 1] is inside the model),
splits by image into train / validation / test, picks a threshold per tag on validation
(best F1) and reports held-out mAP and micro-F1 beside a label-frequency baseline.
model.json holds the tag vocabulary (``labels``) with human names, the thresholds and the
metrics; the input size is the model's own input shape.
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

from examples.hotels.imagegen import LABELS, TAGS
from prescore.models.image_features import decode
from prescore.models.quality import average_precision, mean_average_precision

IMAGE_SIZE = (64, 64)


def load_images(
    images: Path, size: tuple[int, int] = IMAGE_SIZE, reduced: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images [n, H, W, 3] and their multi-hot labels [n, len(TAGS)]
    (``reduced=False``: JPEGs decoded at full scale, prescore.models.image_features.decode)."""
    with open(images / "labels.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    paths = [images / f"{r['image_id']}.jpg" for r in rows]
    x = np.stack([decode(p.read_bytes(), size, reduced=reduced) for p in paths])
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

    inputs = keras.Input((*size, 3), dtype="uint8", name="image")
    h = layers.Rescaling(1 / 255)(inputs)
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


def train(images: Path, out: Path, *, epochs: int = 20, seed: int = 7) -> dict[str, Any]:
    """Fit on ``images``; write ``out/saved_model`` and ``out/model.json``; returns model.json."""
    x, y = load_images(images)
    model, thresholds, metrics = fit(x, y, epochs, seed)
    meta: dict[str, Any] = {
        "kind": "labels",
        "description": "multi-label hotel photo tagger",
        "labels": list(TAGS),
        "label_names": dict(LABELS),
        "thresholds": {t: round(float(v), 5) for t, v in zip(TAGS, thresholds, strict=True)},
        "metrics": metrics,
        "training_data": {"path": str(images), "images": len(x)},
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.export(str(out / "saved_model"), verbose=False)
    (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("var/images"))
    parser.add_argument("--out", type=Path, required=True, help="folder the model is written to")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    m = train(args.images, args.out, epochs=args.epochs, seed=args.seed)["metrics"]
    print(
        f"tagger written to {args.out}: held-out mAP {m['map']:.4f} vs label frequency "
        f"{m['baseline_map']:.4f}, micro-F1 {m['micro_f1']:.4f} vs {m['baseline_micro_f1']:.4f} "
        f"({int(m['test_images'])} test images); {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
