"""Post-training quantization: a float32 and a full-integer int8 ``.tflite`` beside a SavedModel.

The int8 model is converted with the TFLite converter from the SavedModel, calibrated on
representative rows from the training set, with every op restricted to int8 kernels
(``TFLITE_BUILTINS_INT8``; float input and output, quantized at the model's edges). Both
files are run in the LiteRT interpreter on held-out rows and compared with the SavedModel
in TensorFlow: quality (AUC for the binary recommender, mAP for the multi-label tagger),
single-row latency and batch throughput. The record goes into model.json under
``quantization``; its ``fastest`` names the runtime the fallback serves by default.

Training jobs call ``quantize_dir`` on the model directory before saving it to the store;
``python -m jobs.quantize --model-store URI --model NAME --data rows.npz`` does it for a
stored version (``x`` = representative/eval rows, ``y`` = labels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from prescore.inference import TFLITE_FILES, load_runner

METRICS = ("auc", "map")


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged)."""
    y = np.asarray(y).ravel().astype(bool)
    score = np.asarray(score, np.float64).ravel()
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
    y = np.asarray(y).ravel().astype(bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(score, np.float64).ravel(), kind="mergesort")
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def mean_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels (columns) of average precision; labels with no positive skipped."""
    aps = [average_precision(y[:, j], scores[:, j]) for j in range(y.shape[1])]
    return float(np.nanmean(aps))


def quality(metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    if metric == "auc":
        return roc_auc(y, scores)
    if metric == "map":
        return mean_average_precision(np.asarray(y), np.asarray(scores))
    raise ValueError(f"metric must be one of {METRICS}")


def convert(saved_model: Path, out_dir: Path, representative: np.ndarray) -> dict[str, Path]:
    """Write model_float32.tflite and model_int8.tflite into ``out_dir``."""
    import tensorflow as tf

    rep = np.asarray(representative, np.float32)

    def samples() -> Iterator[list[np.ndarray]]:
        for i in range(len(rep)):
            yield [rep[i : i + 1]]

    written = {}
    for runtime, filename in TFLITE_FILES.items():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        if runtime == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = samples
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = out_dir / filename
        path.write_bytes(converter.convert())
        written[runtime] = path
    return written


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def measure(
    model_dir: Path, x: np.ndarray, y: np.ndarray, metric: str, batch: int = 64, repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Quality, single-row latency and batch throughput of each runtime on held-out rows."""
    x = np.asarray(x, np.float32)
    rows = x[: min(batch, len(x))]
    out: dict[str, dict[str, float]] = {}
    for runtime in ("tf", *TFLITE_FILES):
        runner = load_runner(model_dir, runtime)
        scores = np.concatenate([runner(x[i : i + 256]) for i in range(0, len(x), 256)])
        single = _timed(lambda r=runner: r(x[:1]), repeats)  # type: ignore[misc]
        batched = _timed(lambda r=runner: r(rows), repeats)  # type: ignore[misc]
        out[runtime] = {
            metric: round(quality(metric, y, scores), 5),
            "single_ms": round(single * 1000, 4),
            "batch_rows_per_s": round(len(rows) / batched, 1),
            "batch": len(rows),
        }
    return out


def quantize_dir(
    model_dir: Path,
    representative: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    metric: str,
    calibration_rows: int = 200,
) -> dict[str, Any]:
    """Convert a model directory (holding saved_model/), measure, return model.json's record."""
    convert(model_dir / "saved_model", model_dir, np.asarray(representative)[:calibration_rows])
    runtimes = measure(model_dir, x_eval, y_eval, metric)
    fastest = max(runtimes, key=lambda r: runtimes[r]["batch_rows_per_s"])
    loss = runtimes["float32"][metric] - runtimes["int8"][metric]
    return {
        "metric": metric,
        "runtimes": runtimes,
        "int8_quality_loss": round(loss, 5),
        "fastest": fastest,
        "calibration_rows": min(calibration_rows, len(representative)),
        "eval_rows": len(x_eval),
    }


def main(argv: list[str] | None = None) -> int:
    """Quantize a stored model version (default: the promoted one) in place."""
    from prescore.modelstore import META_FILE, ModelStore
    from prescore.settings import ModelStoreSettings

    parser = argparse.ArgumentParser(prog="python -m jobs.quantize", description=main.__doc__)
    parser.add_argument("--model-store", required=True, help="model store root URI (file://)")
    parser.add_argument("--model", required=True, choices=("reco", "tagger"))
    parser.add_argument("--version", help="model version (default: promoted)")
    parser.add_argument("--data", required=True, type=Path, help=".npz with x and y arrays")
    args = parser.parse_args(argv)
    store = ModelStore(ModelStoreSettings(root=args.model_store))
    if not store.local:
        parser.error("in-place quantization needs a file:// store; quantize before saving")
    ref = store.resolve(args.model, args.version)
    data = np.load(args.data)
    metric = "auc" if args.model == "reco" else "map"
    record = quantize_dir(ref.path, data["x"], data["x"], data["y"], metric)
    meta = {**ref.meta, "quantization": record}
    (ref.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(json.dumps(record, indent=2))
    print(f"quantized {args.model}/{ref.version}: fastest runtime {record['fastest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
