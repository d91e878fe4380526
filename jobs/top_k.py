"""The ``k`` best candidates of every entity of a chunk, in one vectorised selection."""

from __future__ import annotations

import numpy as np


def top_k_per_entity(
    counts: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices of each entity's ``k`` best, best first, and which of them exist.

    Pairs are grouped by entity (``counts`` pairs each); the scores are laid out in an
    entities x candidates grid padded with -inf, so the selection is one vectorised
    argpartition instead of a loop over entities.
    """
    n = len(counts)
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    width = max(int(counts.max(initial=0)), 1)
    cells = np.full(n * width, -np.inf, np.float32)
    # pair i, the j-th of entity u (i = starts[u] + j), goes to cell u * width + j
    cells[np.arange(len(scores)) + np.repeat(np.arange(n) * width - starts, counts)] = scores
    grid = cells.reshape(n, width)
    kk = min(k, width)
    part = np.argpartition(grid, width - kk, axis=1)[:, width - kk :]  # the kk largest
    order = np.argsort(-np.take_along_axis(grid, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return starts[:, None] + best, best < counts[:, None]
