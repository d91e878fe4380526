"""The micro-batcher with a real (tiny) Keras model over named feeds: merging seen through
its counters, each caller getting exactly its own rows back."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from fallback.batcher import InferenceTimeout, MicroBatcher, Overloaded

keras = pytest.importorskip("keras")

Feed = dict[str, np.ndarray]
TAGS = ("a", "b", "c")


@pytest.fixture(scope="module")
def model() -> Callable[[Feed], np.ndarray]:
    """Two named raw inputs, as a registered model takes them: six floats and a list of
    string tags per row (padded with "", which the StringLookup inside treats as padding)."""
    x = keras.Input((6,), name="x")
    tags = keras.Input((None,), dtype="string", name="tags")
    hot = keras.layers.StringLookup(vocabulary=list(TAGS), mask_token="", output_mode="multi_hot")
    h = keras.layers.Concatenate()([x, hot(tags)])
    out = keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(h))
    net = keras.Model({"x": x, "tags": tags}, out)
    return lambda feed: np.asarray(net(feed, training=False))


def _rows(n: int, seed: int = 0, width: int = 2) -> Feed:
    rng = np.random.default_rng(seed)
    tags = np.full((n, width), "", object)
    for i in range(n):
        picked = rng.choice(
            TAGS, size=int(rng.integers(0, min(width, len(TAGS)) + 1)), replace=False
        )
        tags[i, : len(picked)] = list(picked)
    return {"x": rng.random((n, 6), dtype=np.float32), "tags": tags}


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

    def counted(feed: Feed) -> np.ndarray:
        calls.append(len(feed["x"]))
        return model(feed)

    # A long wait makes merging certain without relying on timing of the threads.
    batcher = MicroBatcher(counted, max_batch=64, max_wait_s=0.5, max_queue=64).start()
    inputs = [_rows(2, seed=i) for i in range(12)]
    results = _concurrently(lambda i: batcher.submit(inputs[i]), 12)
    batcher.close()
    for feed, y in zip(inputs, results, strict=True):
        assert isinstance(y, np.ndarray)
        np.testing.assert_allclose(y, model(feed), rtol=1e-5, atol=1e-6)  # its own rows
    assert batcher.stats.requests == 12
    assert batcher.stats.rows == 24
    assert batcher.stats.batches == len(calls) < 12
    assert batcher.stats.max_requests_in_batch > 1
    assert sum(calls) == 24


def test_requests_with_lists_of_different_lengths_merge_padded(model) -> None:
    """A request's list input may be wider than another's: the merged batch pads the
    narrower ones with "", and every caller still gets the answer of its rows alone."""
    widths = [1, 3, 2, 5, 1, 4]
    inputs = [_rows(3, seed=10 + i, width=w) for i, w in enumerate(widths)]
    seen: list[tuple[int, int]] = []

    def counted(feed: Feed) -> np.ndarray:
        seen.append(feed["tags"].shape)
        return model(feed)

    batcher = MicroBatcher(counted, max_batch=64, max_wait_s=0.5, max_queue=64).start()
    results = _concurrently(lambda i: batcher.submit(inputs[i]), len(inputs))
    batcher.close()
    assert batcher.stats.max_requests_in_batch > 1
    assert any(shape[1] > 1 and shape[0] > 3 for shape in seen)  # a merged, padded batch
    for feed, y in zip(inputs, results, strict=True):
        assert isinstance(y, np.ndarray) and y.shape == (3, 1)
        np.testing.assert_allclose(y, model(feed), rtol=1e-5, atol=1e-6)


def test_lone_request_is_answered_after_at_most_max_wait(model) -> None:
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=0.01).start()
    out = batcher.submit(_rows(3), timeout_s=5)
    assert out.shape == (3, 1)
    assert (batcher.stats.batches, batcher.stats.requests) == (1, 1)
    batcher.close()


def test_batches_never_exceed_max_batch(model) -> None:
    sizes: list[int] = []

    def sized(feed: Feed) -> np.ndarray:
        sizes.append(len(feed["x"]))
        return model(feed)

    batcher = MicroBatcher(sized, max_batch=10, max_wait_s=0.3, max_queue=64).start()
    inputs = [_rows(4, seed=i) for i in range(9)]
    results = _concurrently(lambda i: batcher.submit(inputs[i]), 9)
    batcher.close()
    for feed, r in zip(inputs, results, strict=True):
        assert isinstance(r, np.ndarray) and r.shape == (4, 1)
        np.testing.assert_allclose(r, model(feed), rtol=1e-5, atol=1e-6)
    assert sum(sizes) == 36
    assert max(sizes) <= 10


def test_full_queue_answers_overloaded_at_once(model) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocked(feed: Feed) -> np.ndarray:
        entered.set()
        release.wait(10)
        return model(feed)

    batcher = MicroBatcher(blocked, max_batch=1, max_wait_s=0.0, max_queue=2).start()
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


def test_a_model_slower_than_the_deadline_is_an_inference_timeout(model) -> None:
    release = threading.Event()

    def slow(feed: Feed) -> np.ndarray:
        release.wait(10)
        return model(feed)

    batcher = MicroBatcher(slow, max_batch=8, max_wait_s=0.0).start()
    with pytest.raises(InferenceTimeout) as info:
        batcher.submit(_rows(1), timeout_s=0.2)
    assert (info.value.code, info.value.http_status) == ("inference_timeout", 504)
    release.set()
    assert batcher.submit(_rows(1), timeout_s=10).shape == (1, 1)  # the worker carries on
    batcher.close()


def test_model_error_reaches_every_caller_and_worker_survives(model) -> None:
    def picky(feed: Feed) -> np.ndarray:
        if feed["x"].shape[1] != 6:
            raise ValueError("wrong width")
        return model(feed)

    batcher = MicroBatcher(picky, max_batch=8, max_wait_s=0.0).start()
    bad = {"x": np.zeros((1, 5), np.float32), "tags": np.full((1, 1), "", object)}
    with pytest.raises(ValueError, match="wrong width"):
        batcher.submit(bad)
    assert batcher.submit(_rows(1)).shape == (1, 1)
    batcher.close()


def test_close_answers_what_is_queued(model) -> None:
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.2).start()
    results = _concurrently(lambda i: batcher.submit(_rows(1, seed=i)), 6)
    batcher.close()
    assert all(isinstance(r, np.ndarray) for r in results)
    with pytest.raises(Exception) as info:
        batcher.submit(_rows(1))
    assert getattr(info.value, "code", "") == "reloading"


def test_adaptive_lone_request_does_not_wait(model) -> None:
    # max_wait far beyond the request's timeout: only the adaptive rule can answer in time
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=30.0, adaptive=True).start()
    assert batcher.submit(_rows(2), timeout_s=5).shape == (2, 1)
    batcher.close()


def test_adaptive_waits_for_a_request_announced_on_its_way(model) -> None:
    batcher = MicroBatcher(model, max_batch=64, max_wait_s=30.0, adaptive=True).start()
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


def test_a_batcher_answers_only_once_its_owner_started_it(model) -> None:
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="not started"):
        batcher.submit(_rows(1), timeout_s=5)
    assert batcher.start().submit(_rows(1), timeout_s=5).shape == (1, 1)
    batcher.close()


def test_a_failing_observer_is_logged_and_neither_answers_nor_the_thread_are_lost(
    model, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(requests: int, rows: int, seconds: float) -> None:
        raise ValueError("the metrics are broken")

    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.0, observe=broken).start()
    with caplog.at_level("ERROR", logger="prescore.fallback"):
        first = batcher.submit(_rows(2, seed=1), timeout_s=5)
        second = batcher.submit(_rows(3, seed=2), timeout_s=5)
    assert (first.shape, second.shape) == ((2, 1), (3, 1))
    np.testing.assert_allclose(second, model(_rows(3, seed=2)), rtol=1e-5)
    failures = [r for r in caplog.records if "recording a batch failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info and r.exc_info[0] is ValueError for r in failures)
    assert batcher.stats.batches == 2
    batcher.close()
