"""Post-training quantization: float32 and full-integer int8 ``.tflite`` variants of a
SavedModel's serving signature, where the model allows (TensorFlow, at registration).

The int8 model is converted with the TFLite converter, calibrated on representative feeds
from the dataset, with every op restricted to int8 kernels (``TFLITE_BUILTINS_INT8``; float
input and output, quantized at the model's edges). Not every model converts: ops outside
TFLite's builtins stop both variants, and int8's conversion fails on more (or crashes the
converter, which registration therefore runs in a child process). Each variant stands alone:
one that fails is recorded under ``not_built`` with why, the other kept; with neither, live
inference serves the SavedModel. The files are run in LiteRT on held-out feeds beside the
SavedModel in TensorFlow: agreement, quality when the truth is given (AUC or mAP),
single-row latency and batch throughput. The record goes into model.json under
``quantization``; its ``fastest`` names the runtime the fallback serves by default
(``auto``): the fastest of those that agree with TensorFlow, every score within ``MAX_DIFF``
of its own (and, with the truth given, losing at most ``MAX_QUALITY_LOSS`` of the metric). A
variant that converts but answers otherwise is kept on disk, marked ``agrees: false``, and
never served by ``auto``.
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
from prescore.models.inference import TFLITE_FILES, Runner, load_runner
from prescore.models.quality import quality
from prescore.models.signature import SERVING

log = logging.getLogger(__name__)
_CAPTURE = threading.Lock()
Feed = Mapping[str, np.ndarray]
MAX_DIFF = 0.1  # 8-bit steps of a sigmoid output are 1/256 apart; more is a broken variant
MAX_QUALITY_LOSS = 0.02


def convert(saved_model: Path, out_dir: Path, representative: Feed, runtime: str) -> Path:
    """Write ``runtime``'s file (model_float32.tflite or model_int8.tflite) into ``out_dir``."""
    import tensorflow as tf

    rows = feeding.rows(representative)

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for i in range(rows):
            yield {k: v[i : i + 1] for k, v in representative.items()}

    # the converter calibrates in tf.lite.Interpreter, which warns that it is deprecated
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SERVING])
    if runtime == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = out_dir / TFLITE_FILES[runtime]
    path.write_bytes(converter.convert())
    return path


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
    lite: tuple[str, ...] = tuple(TFLITE_FILES),
) -> dict[str, dict[str, float]]:
    """Per runtime (TensorFlow, then the ``lite`` variants): agreement with TF, quality
    (with ``y``), latency and throughput."""
    out, reference = measure_one(
        load_runner(model_dir, meta, "tf"), feed, None, y, metric, batch, repeats
    )
    measured = {"tf": out}
    for runtime in lite:
        runner = load_runner(model_dir, meta, runtime)
        measured[runtime], _ = measure_one(runner, feed, reference, y, metric, batch, repeats)
    return measured


def measure_one(
    runner: Runner,
    feed: Feed,
    reference: np.ndarray | None,
    y: np.ndarray | None,
    metric: str,
    batch: int = 64,
    repeats: int = 20,
) -> tuple[dict[str, float], np.ndarray]:
    """One runtime's record (its scores against ``reference``'s, TensorFlow's), and its
    scores of ``feed``."""
    n = feeding.rows(feed)
    rows = _slice(feed, slice(0, min(batch, n)))
    scores = np.concatenate([runner(_slice(feed, slice(i, i + 256))) for i in range(0, n, 256)])
    single = median_seconds(lambda: runner(_slice(feed, slice(0, 1))), repeats)
    batched = median_seconds(lambda: runner(rows), repeats)
    diff = 0.0 if reference is None else float(np.abs(scores - reference).max())
    record = {
        "max_abs_diff_vs_tf": round(diff, 5),
        "single_ms": round(single * 1000, 4),
        "batch_rows_per_s": round(feeding.rows(rows) / batched, 1),
        "batch": feeding.rows(rows),
    }
    if y is not None:
        record[metric] = round(quality(metric, y, scores), 5)
    return record, scores


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
    lite: tuple[str, ...] = tuple(TFLITE_FILES),
) -> dict[str, Any]:
    """Convert a model directory (holding saved_model/) to each of the ``lite`` variants
    and measure those that convert and run; model.json's record.

    Each variant stands alone: a model whose int8 conversion fails (string lookups do:
    full-integer kernels have no strings) keeps its float32 variant, and the record's
    ``not_built`` says why the other is missing. A model that gets no variant at all is
    recorded as ``{"built": False, "reason": ...}``.
    """
    calibration = _slice(representative, slice(0, calibration_rows))
    for runtime in set(TFLITE_FILES) - set(lite):  # an earlier file would outlive its record
        (model_dir / TFLITE_FILES[runtime]).unlink(missing_ok=True)
    try:
        tf_runner = load_runner(model_dir, meta, "tf")
        tf_record, reference = measure_one(tf_runner, eval_feed, None, y_eval, metric)
    except Exception as exc:  # a model TensorFlow cannot run on the sample: nothing to compare
        return {"built": False, "reason": f"TensorFlow could not score the sample: {_reason(exc)}"}
    if not np.isfinite(reference).all():  # NaN agrees with nothing, TensorFlow itself neither
        return {"built": False, "reason": "TensorFlow's scores of the sample are not all finite"}
    measured, failed = _variants(
        model_dir, meta, calibration, eval_feed, reference, lite, y_eval, metric
    )
    if not measured:
        reason = next(iter(failed.values()), "no variant asked for")
        return {"built": False, "reason": reason, **({"not_built": failed} if failed else {})}
    return _record({"tf": tf_record, **measured}, failed, y_eval, metric, calibration, eval_feed)


def _variants(
    model_dir: Path,
    meta: Mapping[str, Any],
    calibration: Feed,
    eval_feed: Feed,
    reference: np.ndarray,
    lite: tuple[str, ...],
    y_eval: np.ndarray | None = None,
    metric: str = "auc",
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Each of the ``lite`` variants converted and measured on its own: the records of
    those that convert and run, and why each of the others did not (its file removed)."""
    measured: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    for runtime in lite:
        said: list[str] = []
        try:
            with _converter_output(said):
                convert(model_dir / "saved_model", model_dir, calibration, runtime)
            runner = load_runner(model_dir, meta, runtime)
            measured[runtime], _ = measure_one(runner, eval_feed, reference, y_eval, metric)
        except Exception as exc:  # the converter and LiteRT raise many kinds: "not this one"
            (model_dir / TFLITE_FILES[runtime]).unlink(missing_ok=True)
            log.debug("the converter said: %s", "".join(said))
            failed[runtime] = _reason(exc)
    return measured, failed


def _record(
    measured: dict[str, dict[str, float]],
    failed: dict[str, str],
    y_eval: np.ndarray | None,
    metric: str,
    calibration: Feed,
    eval_feed: Feed,
) -> dict[str, Any]:
    """model.json's ``quantization``: each runtime measured, whether it agrees, the
    fastest of those that do, and why any variant is missing."""
    agrees = {name: _agrees(measured, name, metric, y_eval is not None) for name in measured}
    record: dict[str, Any] = {
        "built": True,
        "runtimes": {name: {**r, "agrees": agrees[name]} for name, r in measured.items()},
        "fastest": max(
            (r for r in measured if agrees[r]), key=lambda r: measured[r]["batch_rows_per_s"]
        ),
        "calibration_rows": feeding.rows(calibration),
        "eval_rows": feeding.rows(eval_feed),
    }
    if failed:
        record["not_built"] = failed
    if y_eval is not None:
        record["metric"] = metric
        if {"float32", "int8"} <= set(measured):
            loss = measured["float32"][metric] - measured["int8"][metric]
            record["int8_quality_loss"] = round(loss, 5)
    return record
