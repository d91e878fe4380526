"""Model runtimes for live inference: one call, ``model(feed) -> scores``, whatever runs it.

``tf``: the SavedModel in TensorFlow (prescore.models.tf_model). ``float32`` / ``int8``: a
``.tflite`` variant of its serving signature in the LiteRT interpreter (``ai_edge_litert``,
no TensorFlow needed). An interpreter has fixed input shapes and is not thread-safe, so
the LiteRT runner pads each batch up to a power of two and keeps one interpreter per
such shape (a bounded few), behind a lock; the fallback's batcher calls it from one
thread anyway. Every runner carries the model's ``meta`` (model.json) and ``signatures``.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from prescore.errors import ModelStoreError
from prescore.models.signature import SERVING, Signatures, output_name

RUNTIMES = ("tf", "float32", "int8")
TFLITE_FILES = {"float32": "model_float32.tflite", "int8": "model_int8.tflite"}
_SHAPES_KEPT = 16


class Runner(Protocol):
    runtime: str
    meta: dict[str, Any]
    signatures: Signatures

    def __call__(self, feed: Mapping[str, np.ndarray]) -> np.ndarray: ...


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class LiteModel:
    """The serving signature of a ``.tflite`` file in the LiteRT interpreter."""

    def __init__(
        self,
        path: Path,
        runtime: str,
        meta: Mapping[str, Any],
        threads: int | None = None,
        min_rows: int = 1,
    ) -> None:
        if not path.is_file():
            raise ModelStoreError(f"no {runtime} model at {path}")
        self.runtime = runtime
        self.meta = dict(meta)
        self.signatures = Signatures.from_json(meta["signature"])
        self._output = output_name(self.signatures.serving, meta, f"{path.name}")
        self._content = path.read_bytes()
        self._threads = threads
        # a bulk job pads every batch to its own size: one interpreter (and its tensors'
        # memory) a worker, not one per power of two its partial batches come in
        self._min_rows = min_rows
        self._interpreters: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _interpreter(self, shapes: dict[str, tuple[int, ...]]) -> Any:
        key = tuple(sorted(shapes.items()))
        found = self._interpreters.get(key)
        if found is not None:
            self._interpreters.move_to_end(key)
            return found
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=self._content, num_threads=self._threads)
        runner = interp.get_signature_runner(SERVING)
        details, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # it holds the interpreter's tensors, which resizing refuses
        for name, shape in shapes.items():
            interp.resize_tensor_input(details[name]["index"], list(shape))
        interp.allocate_tensors()
        found = (interp, details, outputs[self._output])
        self._interpreters[key] = found
        if len(self._interpreters) > _SHAPES_KEPT:
            self._interpreters.popitem(last=False)
        return found

    def __call__(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feed.values())))
        size = _bucket(max(n, self._min_rows))
        padded = {}
        for name, x in feed.items():
            if size != n:
                pad = (
                    np.zeros((size - n, *x.shape[1:]), x.dtype)
                    if x.dtype != object
                    else (np.full((size - n, *x.shape[1:]), "", object))
                )
                x = np.concatenate([x, pad])
            padded[name] = x
        with self._lock:
            interp, details, out = self._interpreter({k: v.shape for k, v in padded.items()})
            for name, x in padded.items():
                interp.set_tensor(details[name]["index"], _quantize(x, details[name]))
            interp.invoke()
            y = _dequantize(interp.get_tensor(out["index"]), out)
        y = y[:n]
        return y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """An input as the tensor's type (int8 models may take int8 input; strings as bytes)."""
    dtype = detail["dtype"]
    if x.dtype == object:
        return np.array([s.encode() if isinstance(s, str) else s for s in x.ravel()]).reshape(
            x.shape
        )
    if dtype in (np.float32, np.uint8) and x.dtype == dtype:
        return x
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return np.array(y)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def load_runner(
    model_dir: Path,
    meta: Mapping[str, Any],
    runtime: str,
    threads: int | None = None,
    min_rows: int = 1,
) -> Runner:
    """The runner of one model version directory in the given runtime (a LiteRT one pads
    each batch to at least ``min_rows`` rows)."""
    if runtime == "tf":
        from prescore.models.tf_model import TFModel

        return TFModel(model_dir / "saved_model", meta)
    if runtime in TFLITE_FILES:
        return LiteModel(model_dir / TFLITE_FILES[runtime], runtime, meta, threads, min_rows)
    raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")


def pick_runtime(meta: Mapping[str, Any], model_dir: Path, configured: str) -> str:
    """The configured runtime, or with ``auto`` the fastest one measured at registration;
    where TensorFlow is not installed (the LiteRT-only fallback image), the fastest LiteRT
    variant that answers as the SavedModel does."""
    if configured != "auto":
        return configured
    quant = meta.get("quantization") or {}
    best = quant.get("fastest")
    if best in TFLITE_FILES and (model_dir / TFLITE_FILES[best]).is_file():
        return str(best)
    if importlib.util.find_spec("tensorflow") is None:
        runtimes = quant.get("runtimes") or {}
        lite = [r for r in TFLITE_FILES if runtimes.get(r, {}).get("agrees")]
        lite = [r for r in lite if (model_dir / TFLITE_FILES[r]).is_file()]
        if lite:
            return max(lite, key=lambda r: runtimes[r]["batch_rows_per_s"])
    return "tf"
