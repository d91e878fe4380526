"""Model runtimes shared by the fallback service and jobs.quantize: one call, ``predict(batch)``.

``tf``: the SavedModel's ``serve`` endpoint (what ``keras.Model.export`` writes), in
TensorFlow. ``float32`` / ``int8``: a ``.tflite`` file in the LiteRT interpreter
(``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated). An interpreter has a fixed
input shape and is not thread-safe, so the LiteRT runner pads each batch up to a power of
two and keeps one interpreter per such size, behind a lock (the batcher calls it from one
thread anyway).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from prescore.errors import ModelStoreError

RUNTIMES = ("tf", "float32", "int8")
TFLITE_FILES = {"float32": "model_float32.tflite", "int8": "model_int8.tflite"}


class Runner(Protocol):
    runtime: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TFRunner:
    """A SavedModel's ``serve`` endpoint in TensorFlow."""

    runtime = "tf"

    def __init__(self, saved_model: Path) -> None:
        import tensorflow as tf  # only the service process needs TensorFlow

        if not saved_model.is_dir():
            raise ModelStoreError(f"no SavedModel at {saved_model}")
        self._loaded = tf.saved_model.load(str(saved_model))
        self.serve: Callable[[Any], Any] = self._loaded.serve  # the endpoint, for tf.functions

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.serve(batch.astype(np.float32, copy=False)))


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class LiteRunner:
    """A ``.tflite`` model in the LiteRT interpreter (float32 or int8 inside)."""

    def __init__(self, path: Path, runtime: str, threads: int | None = None) -> None:
        if not path.is_file():
            raise ModelStoreError(f"no {runtime} model at {path}")
        self.runtime = runtime
        self._content = path.read_bytes()
        self._threads = threads
        self._interpreters: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _interpreter(self, size: int) -> Any:
        found = self._interpreters.get(size)
        if found is not None:
            return found
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=self._content, num_threads=self._threads)
        detail = interp.get_input_details()[0]
        interp.resize_tensor_input(detail["index"], [size, *detail["shape"][1:]])
        interp.allocate_tensors()
        self._interpreters[size] = interp
        return interp

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = _bucket(n)
        x = batch.astype(np.float32, copy=False)
        if size != n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), np.float32)])
        with self._lock:
            interp = self._interpreter(size)
            inp = interp.get_input_details()[0]
            out = interp.get_output_details()[0]
            interp.set_tensor(inp["index"], _quantize(x, inp))
            interp.invoke()
            y = _dequantize(interp.get_tensor(out["index"]), out)
        return y[:n]


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float input as the tensor's type (int8 models may take int8 input)."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return np.array(y)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def load_runner(model_dir: Path, runtime: str, threads: int | None = None) -> Runner:
    """The runner of one model version directory in the given runtime."""
    if runtime == "tf":
        return TFRunner(model_dir / "saved_model")
    if runtime in TFLITE_FILES:
        return LiteRunner(model_dir / TFLITE_FILES[runtime], runtime, threads)
    raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")


def pick_runtime(meta: dict[str, Any], model_dir: Path, configured: str) -> str:
    """The configured runtime, or with ``auto`` the fastest one measured at build time."""
    if configured != "auto":
        return configured
    quant = meta.get("quantization") or {}
    best = quant.get("fastest")
    if best in TFLITE_FILES and (model_dir / TFLITE_FILES[best]).is_file():
        return str(best)
    return "tf"
