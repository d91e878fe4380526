"""A registered model loaded in TensorFlow: its signatures called with named feeds.

Shared by the bulk jobs, the fallback and the registration of models (the lookup never
imports it). ``describe`` reads a SavedModel's signatures into the record model.json
keeps (prescore.models.signature); :class:`TFModel` calls them. For a factored ranking model,
:meth:`TFModel.pair_scorer` builds one ``tf.function`` that gathers each pair's encoded
entity, item and context rows and calls ``score_pairs`` on them, so per pair only two
indices go in (building the pair rows in numpy would cost a write of the whole matrix
and a copy into a tensor per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prescore.errors import ModelMismatch, ModelStoreError
from prescore.models.signature import SERVING, Signature, Signatures, Tensor, output_name

PairScorer = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray], Any]


def _tensor(spec: Any) -> Tensor:
    shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())
    return Tensor(spec.dtype.name, shape)


def _signature(fn: Any) -> Signature:
    _, kwargs = fn.structured_input_signature
    outputs = fn.structured_outputs
    if not isinstance(outputs, Mapping):
        raise ModelMismatch("a signature must return a dict of named outputs")
    return Signature(
        {name: _tensor(spec) for name, spec in kwargs.items()},
        {name: _tensor(spec) for name, spec in outputs.items()},
    )


def _load(saved_model: Path) -> Any:
    import tensorflow as tf

    if not (saved_model / "saved_model.pb").is_file():
        raise ModelStoreError(f"no SavedModel at {saved_model} (saved_model.pb is missing)")
    try:
        return tf.saved_model.load(str(saved_model))
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise ModelStoreError(f"cannot load the SavedModel at {saved_model}: {exc}") from exc


def describe(saved_model: Path) -> Signatures:
    """The signatures of the SavedModel at ``saved_model`` (loads it once)."""
    loaded = _load(saved_model)
    return Signatures({name: _signature(fn) for name, fn in loaded.signatures.items()})


class TFModel:
    """One model version in TensorFlow; ``meta`` is its model.json."""

    runtime = "tf"

    def __init__(self, saved_model: Path, meta: Mapping[str, Any]) -> None:
        self._loaded = _load(saved_model)
        self.meta = dict(meta)
        self.signatures = Signatures.from_json(meta["signature"])
        self._outputs = {
            name: output_name(sig, meta, f"model {meta.get('name', '?')} {name}")
            for name, sig in self.signatures.by_name.items()
        }
        self._pairs: Any = None

    @property
    def inputs(self) -> Mapping[str, Tensor]:
        return self.signatures.serving.inputs

    def call(self, name: str, feed: Mapping[str, np.ndarray], *, flat: bool = True) -> np.ndarray:
        """Signature ``name``'s output on ``feed`` as float32; with ``flat``, one score per
        row as a 1-D array (a ``[n, 1]`` output is flattened)."""
        import tensorflow as tf

        fn = self._loaded.signatures[name]
        wanted = self.signatures.by_name[name].inputs
        args = {k: tf.constant(feed[k], dtype=wanted[k].dtype) for k in wanted}
        out = np.asarray(fn(**args)[self._outputs[name]], np.float32)
        return out.reshape(-1) if flat and out.ndim == 2 and out.shape[1] == 1 else out

    def encode(self, name: str, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """The encoded rows of ``encode_entity`` / ``encode_item`` / ``encode_context``."""
        return self.call(name, feed, flat=False)

    def __call__(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.call(SERVING, feed)

    def pair_scorer(self) -> PairScorer:
        """``f(entity_rows, item_rows, context_row|None, owner, item_idx) -> scores``."""
        if self._pairs is None:
            self._pairs = self._build_pairs()
        return self._pairs

    def _build_pairs(self) -> PairScorer:
        import tensorflow as tf

        fn = self._loaded.signatures["score_pairs"]
        inputs = self.signatures.by_name["score_pairs"].inputs
        out = self._outputs["score_pairs"]
        has_ctx = "context" in inputs
        specs = [
            tf.TensorSpec([None, inputs["entity"].shape[1]], tf.float32),
            tf.TensorSpec([None, inputs["item"].shape[1]], tf.float32),
            tf.TensorSpec([1, inputs["context"].shape[1] if has_ctx else 0], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64),
        ]

        @tf.function(input_signature=specs)
        def score(entity, item, context, owner, item_idx):
            args = {"entity": tf.gather(entity, owner), "item": tf.gather(item, item_idx)}
            if has_ctx:
                n = tf.shape(owner)[0]
                args["context"] = tf.broadcast_to(context, [n, tf.shape(context)[1]])
            return tf.reshape(fn(**args)[out], [-1])

        # the concrete function skips the signature matching of every call
        concrete = score.get_concrete_function()
        empty = np.zeros((1, 0), np.float32)

        def call(
            e: np.ndarray, i: np.ndarray, c: np.ndarray | None, o: np.ndarray, x: np.ndarray
        ) -> Any:
            return concrete(e, i, empty if c is None else c, o, x)

        return call
