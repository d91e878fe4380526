"""The micro-batcher with a real (tiny) Keras model: merging seen through its counters."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from fallback.batcher import MicroBatcher, Overloaded

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model() -> Callable[[np.ndarray], np.ndarray]:
    net = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    return lambda x: np.asarray(net(x, training=False))


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 6), dtype=np.float32)


def _concurrently(fn: Callable[[int], object], n: int) -> list[object]:
    results: list[object] = [None] * n
    start = threading.Barrier(n)

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_requests_merge_into_fewer_model_calls(model) -> None:
    calls: list[int] = []

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return model(x)

    # A long wait makes merging certain without relying on timing of the threads.
    batcher = MicroBatcher(counted, max_batch=64, max_wait_s=0.5, max_queue=64)
    inputs = [_rows(2, seed=i) for i in range(12)]
    results = _concurrently(lambda i: batcher.submit(inputs[i]), 12)
    batcher.close()
    for x, y in zip(inputs, results, strict=True):
        assert isinstance(y, np.ndarray)
        np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-6)  # each gets its own rows
    assert batcher.stats.requests == 12
    assert batcher.stats.rows == 24
    assert batcher.stats.batches == len(calls) < 12
    assert batcher.stats.max_requests_in_batch > 1
    assert sum(calls) == 24


def test_lone_request_is_answered_after_at_most_max_wait(model) -> None:
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=0.01)
    out = batcher.submit(_rows(3), timeout_s=5)
    assert out.shape == (3, 1)
    assert (batcher.stats.batches, batcher.stats.requests) == (1, 1)
    batcher.close()


def test_batches_never_exceed_max_batch(model) -> None:
    sizes: list[int] = []

    def sized(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return model(x)

    batcher = MicroBatcher(sized, max_batch=10, max_wait_s=0.3, max_queue=64)
    results = _concurrently(lambda i: batcher.submit(_rows(4, seed=i)), 9)
    batcher.close()
    assert all(isinstance(r, np.ndarray) and r.shape == (4, 1) for r in results)
    assert sum(sizes) == 36
    assert max(sizes) <= 10


def test_full_queue_answers_overloaded_at_once(model) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocked(x: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(10)
        return model(x)

    batcher = MicroBatcher(blocked, max_batch=1, max_wait_s=0.0, max_queue=2)
    first = threading.Thread(target=batcher.submit, args=(_rows(1),))
    first.start()
    assert entered.wait(5)  # the worker is busy with the first request
    waiting = [threading.Thread(target=batcher.submit, args=(_rows(1),)) for _ in range(2)]
    for t in waiting:
        t.start()
    while batcher.depth() < 2:
        threading.Event().wait(0.01)
    with pytest.raises(Overloaded) as info:
        batcher.submit(_rows(1))
    assert info.value.code == "overloaded" and info.value.http_status == 503
    release.set()
    for t in [first, *waiting]:
        t.join(10)
    assert batcher.stats.requests == 3
    batcher.close()


def test_model_error_reaches_every_caller_and_worker_survives(model) -> None:
    def picky(x: np.ndarray) -> np.ndarray:
        if x.shape[1] != 6:
            raise ValueError("wrong width")
        return model(x)

    batcher = MicroBatcher(picky, max_batch=8, max_wait_s=0.0)
    with pytest.raises(ValueError, match="wrong width"):
        batcher.submit(np.zeros((1, 5), np.float32))
    assert batcher.submit(_rows(1)).shape == (1, 1)
    batcher.close()


def test_close_answers_what_is_queued(model) -> None:
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.2)
    results = _concurrently(lambda i: batcher.submit(_rows(1, seed=i)), 6)
    batcher.close()
    assert all(isinstance(r, np.ndarray) for r in results)
    with pytest.raises(Exception) as info:
        batcher.submit(_rows(1))
    assert getattr(info.value, "code", "") == "reloading"


def test_adaptive_lone_request_does_not_wait(model) -> None:
    # max_wait far beyond the request's timeout: only the adaptive rule can answer in time
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=30.0, adaptive=True)
    assert batcher.submit(_rows(2), timeout_s=5).shape == (2, 1)
    batcher.close()


def test_adaptive_waits_for_a_request_announced_on_its_way(model) -> None:
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=30.0, adaptive=True)
    announced, go = threading.Event(), threading.Event()
    results: list[np.ndarray] = []

    def preparing() -> None:
        with batcher.expecting():  # building its rows, not submitted yet
            announced.set()
            go.wait(10)
            results.append(batcher.submit(_rows(1, seed=1), timeout_s=10))

    other = threading.Thread(target=preparing)
    other.start()
    assert announced.wait(5)
    mine = threading.Thread(target=lambda: results.append(batcher.submit(_rows(1), 10)))
    mine.start()
    while batcher.pending() < 2:  # mine is submitted too
        threading.Event().wait(0.01)
    go.set()
    other.join(15)
    mine.join(15)
    batcher.close()
    assert len(results) == 2
    assert (batcher.stats.batches, batcher.stats.max_requests_in_batch) == (1, 2)
