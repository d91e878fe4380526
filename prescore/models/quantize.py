"""Post-training quantization: float32 and full-integer int8 ``.tflite`` variants of a
SavedModel's serving signature, where the model allows (TensorFlow, at registration).

The int8 model is converted with the TFLite converter, calibrated on representative
feeds from the dataset, with every op restricted to int8 kernels (``TFLITE_BUILTINS_INT8``;
float input and output, quantized at the model's edges). Not every model converts: ops
outside TFLite's builtins (string preprocessing often is) stop it, and the record then
says why, and live inference serves the SavedModel. Both files are run in LiteRT on
held-out feeds beside the SavedModel in TensorFlow: agreement, quality when the truth
is given (AUC or mAP), single-row latency and batch throughput. The record goes into
model.json under ``quantization``; its ``fastest`` names the runtime the fallback serves
by default (``auto``): the fastest of those that agree with TensorFlow, every score
within ``MAX_DIFF`` of its own (and, with the truth given, losing at most
``MAX_QUALITY_LOSS`` of the metric). A variant that converts but answers otherwise is
kept on disk, marked ``agrees: false``, and never served by ``auto``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prescore.models import feeds as feeding
from prescore.models.inference import TFLITE_FILES, load_runner
from prescore.models.quality import quality
from prescore.models.signature import SERVING

log = logging.getLogger(__name__)
_CAPTURE = threading.Lock()
Feed = Mapping[str, np.ndarray]
MAX_DIFF = 0.1  # 8-bit steps of a sigmoid output are 1/256 apart; more is a broken variant
MAX_QUALITY_LOSS = 0.02


def convert(saved_model: Path, out_dir: Path, representative: Feed) -> dict[str, Path]:
    """Write model_float32.tflite and model_int8.tflite into ``out_dir``."""
    import tensorflow as tf

    rows = feeding.rows(representative)

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for i in range(rows):
            yield {k: v[i : i + 1] for k, v in representative.items()}

    # the converter calibrates in tf.lite.Interpreter, which warns that it is deprecated
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
    written = {}
    for runtime, filename in TFLITE_FILES.items():
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model), signature_keys=[SERVING]
        )
        if runtime == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = samples
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = out_dir / filename
        path.write_bytes(converter.convert())
        written[runtime] = path
    return written


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def _slice(feed: Feed, part: slice) -> dict[str, np.ndarray]:
    return {k: v[part] for k, v in feed.items()}


def measure(
    model_dir: Path,
    meta: Mapping[str, Any],
    feed: Feed,
    y: np.ndarray | None,
    metric: str,
    batch: int = 64,
    repeats: int = 20,
) -> dict[str, dict[str, float]]:
    """Per runtime: agreement with TF, quality (with ``y``), latency and throughput."""
    n = feeding.rows(feed)
    rows = _slice(feed, slice(0, min(batch, n)))
    out: dict[str, dict[str, float]] = {}
    reference: np.ndarray | None = None
    for runtime in ("tf", *TFLITE_FILES):
        runner = load_runner(model_dir, meta, runtime)
        scores = np.concatenate([runner(_slice(feed, slice(i, i + 256))) for i in range(0, n, 256)])
        reference = scores if reference is None else reference
        single = median_seconds(lambda r=runner: r(_slice(feed, slice(0, 1))), repeats)  # type: ignore[misc]
        batched = median_seconds(lambda r=runner: r(rows), repeats)  # type: ignore[misc]
        record = {
            "max_abs_diff_vs_tf": round(float(np.abs(scores - reference).max()), 5),
            "single_ms": round(single * 1000, 4),
            "batch_rows_per_s": round(feeding.rows(rows) / batched, 1),
            "batch": feeding.rows(rows),
        }
        if y is not None:
            record[metric] = round(quality(metric, y, scores), 5)
        out[runtime] = record
    return out


def _agrees(runtimes: Mapping[str, Any], name: str, metric: str, scored: bool) -> bool:
    """Whether runtime ``name`` answers as TensorFlow does (tf itself always does)."""
    record = runtimes[name]
    if not record["max_abs_diff_vs_tf"] <= MAX_DIFF:  # NaN disagrees too
        return False
    return not scored or runtimes["tf"][metric] - record[metric] <= MAX_QUALITY_LOSS


@contextlib.contextmanager
def _converter_output(said: list[str]) -> Iterator[None]:
    """Keep what the converter writes to file descriptor 2 (MLIR's ``error:`` lines,
    TensorFlow's C++ logs, dozens for a model that simply does not convert) off the
    terminal: the record's reason says why, in one line; the text goes into ``said``
    (logged at debug). File descriptor 2 is the process's: one capture at a time."""
    with _CAPTURE, tempfile.TemporaryFile() as sink:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said.append(sink.read().decode(errors="replace"))


def _reason(exc: Exception) -> str:
    """One line on why a model did not convert: the ops LiteRT lacks, where it says."""
    text = str(exc)
    ops = re.search(r"TF Select ops: ([^\n]+)", text)
    if ops:
        return f"LiteRT has no kernels for the ops {ops.group(1).strip()}"[:300]
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def quantize_dir(
    model_dir: Path,
    meta: Mapping[str, Any],
    representative: Feed,
    eval_feed: Feed,
    y_eval: np.ndarray | None = None,
    metric: str = "auc",
    calibration_rows: int = 200,
) -> dict[str, Any]:
    """Convert a model directory (holding saved_model/) and measure; model.json's record.

    A model that does not convert gets ``{"built": False, "reason": ...}``.
    """
    calibration = _slice(representative, slice(0, calibration_rows))
    said: list[str] = []
    try:
        with _converter_output(said):
            convert(model_dir / "saved_model", model_dir, calibration)
        runtimes = measure(model_dir, meta, eval_feed, y_eval, metric)
        agrees = {name: _agrees(runtimes, name, metric, y_eval is not None) for name in runtimes}
    except Exception as exc:  # the converter and LiteRT raise many kinds: all mean "not here"
        for filename in TFLITE_FILES.values():
            (model_dir / filename).unlink(missing_ok=True)
        log.debug("the converter said: %s", "".join(said))
        return {"built": False, "reason": _reason(exc)}
    record: dict[str, Any] = {
        "built": True,
        "runtimes": {name: {**r, "agrees": agrees[name]} for name, r in runtimes.items()},
        "fastest": max(
            (r for r in runtimes if agrees[r]), key=lambda r: runtimes[r]["batch_rows_per_s"]
        ),
        "calibration_rows": feeding.rows(calibration),
        "eval_rows": feeding.rows(eval_feed),
    }
    if y_eval is not None:
        record["metric"] = metric
        record["int8_quality_loss"] = round(
            runtimes["float32"][metric] - runtimes["int8"][metric], 5
        )
    return record
