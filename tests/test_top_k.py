"""The scoring job's per-user top-K against a plain sort of each user's scores."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.top_k import top_k_per_entity as top_k_per_user


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_matches_sorting_each_user(k: int) -> None:
    rng = np.random.default_rng(3)
    counts = np.array([5, 0, 1, 12, 3, 40, 0, 10])
    scores = rng.random(counts.sum()).astype(np.float32)
    scores[:3] = 0.5  # ties inside one user
    best, exists = top_k_per_user(counts, scores, k)
    assert best.shape == exists.shape == (len(counts), min(k, counts.max()))
    start = 0
    for u, n in enumerate(counts):
        own = scores[start : start + n]
        want = np.sort(own)[::-1][:k]
        got = best[u][exists[u]]
        assert exists[u].sum() == min(k, n)
        assert ((got >= start) & (got < start + n)).all()  # pair indices of this user only
        np.testing.assert_array_equal(scores[got], want)  # the k best, best first
        assert len(set(got.tolist())) == len(got)
        start += n


def test_top_k_of_no_pairs() -> None:
    best, exists = top_k_per_user(np.array([0, 0]), np.empty(0, np.float32), 10)
    assert best.shape == (2, 1) and not exists.any()
