"""Scoring (user, hotel) pairs: gathering the feature blocks and the model in one TF call.

A model row is ``user block | hotel block | context block | region match``
(prescore.reco_features). Building the rows with numpy and handing them to the model
costs a write of the whole pair matrix, a copy into a tensor and a Python round trip per
batch; a ``tf.function`` that gathers the rows itself and calls the SavedModel's ``serve``
endpoint scores the same rows about a third faster on one core (bench/bench_scoring.py).
The blocks are small (users of a chunk, hotels, one context); only indices go in per pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prescore.inference import TFRunner

_SCORERS: dict[TFRunner, Any] = {}  # runners live as long as their worker (jobs.bulk)


def _build(serve: Any, widths: tuple[int, int, int]) -> Any:
    import tensorflow as tf

    user_w, hotel_w, ctx_w = widths

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, user_w], tf.float32),
            tf.TensorSpec([None, hotel_w], tf.float32),
            tf.TensorSpec([1, ctx_w], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.float32),
        ]
    )
    def score(user_x, hotel_x, ctx_x, owner, hotel_idx, match):
        n = tf.shape(owner)[0]
        rows = tf.concat(
            [
                tf.gather(user_x, owner),
                tf.gather(hotel_x, hotel_idx),
                tf.broadcast_to(ctx_x, [n, ctx_w]),
                match[:, None],
            ],
            axis=1,
        )
        return tf.reshape(serve(rows), [-1])

    # the concrete function skips the signature matching of every call (~0.2 ms of ~6)
    return score.get_concrete_function()


def score_pairs(
    runner: TFRunner,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray],
    owner: np.ndarray,
    hotel_idx: np.ndarray,
    match: np.ndarray,
    batch_rows: int,
) -> np.ndarray:
    """Scores of pairs ``(owner[i], hotel_idx[i])`` in one context, ``batch_rows`` a call.

    ``blocks`` are the encoded users (indexed by ``owner``), hotels (by ``hotel_idx``) and
    the one context row; ``match`` is each pair's region-match feature.
    """
    user_x, hotel_x, ctx_x = blocks
    widths = (user_x.shape[1], hotel_x.shape[1], ctx_x.shape[1])
    if runner not in _SCORERS:  # one per loaded model, for the worker's life
        _SCORERS[runner] = _build(runner.serve, widths)
    score = _SCORERS[runner]
    scores = np.empty(len(owner), np.float32)
    for i in range(0, len(owner), batch_rows):
        part = slice(i, i + batch_rows)
        scores[part] = score(user_x, hotel_x, ctx_x, owner[part], hotel_idx[part], match[part])
    return scores
