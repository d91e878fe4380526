"""Micro-batching: requests that arrive together run as one model call.

As TF Serving's batching does: a worker thread takes the first waiting request, then
gathers more until the batch holds ``max_batch`` rows or ``max_wait_s`` has passed since
that first request arrived, and runs the model once on all their rows. A lone request
therefore waits at most ``max_wait_s``. The queue is bounded: when ``max_queue`` requests
are already waiting, ``submit`` fails at once with ``Overloaded`` (503) rather than letting
latency grow without bound. One batcher per model per process: the request threads of
one process share it, so their requests merge.

Its owner starts the thread (``start``) and stops it (``close``). A failure of the model
fails that batch's requests; a failure of the batcher's own bookkeeping (its observer) is
logged with its cause and ends neither the answers nor the thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from prescore.errors import Unavailable
from prescore.models import feeds

Feed = dict[str, np.ndarray]  # one request's rows, by model input name
log = logging.getLogger("prescore.fallback")


class Overloaded(Unavailable):
    """The batch queue is full; retry later."""

    code = "overloaded"


class InferenceTimeout(Unavailable):
    """The model did not answer within the request's deadline."""

    code = "inference_timeout"
    http_status = 504


@dataclass
class _Job:
    feed: Feed
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Counters since start: how many model calls, requests and rows."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    max_requests_in_batch: int = 0


_NOTHING = object()
BatchObserver = Callable[[int, int, float], None]  # (requests, rows, seconds) per model call


class MicroBatcher:
    """Run ``predict`` on merged batches of the rows that concurrent callers submit."""

    def __init__(
        self,
        predict: Callable[[Feed], np.ndarray],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        name: str = "model",
        observe: BatchObserver | None = None,
        adaptive: bool = False,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_s >= 0")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.stats = BatchStats()
        self._observe = observe
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._held: _Job | None = None  # a job that did not fit the last batch goes first
        self._lock = threading.Lock()
        self._closed = False
        self.adaptive = adaptive
        self._active = 0  # requests announced (being prepared) or submitted, not yet answered
        self._local = threading.local()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)

    def start(self) -> MicroBatcher:
        """Start the batching thread; this batcher, for ``MicroBatcher(...).start()``."""
        self._thread.start()
        return self

    def depth(self) -> int:
        """Requests waiting now."""
        return self._queue.qsize() + (1 if self._held is not None else 0)

    def pending(self) -> int:
        """Requests announced or submitted and not answered yet."""
        return self._active

    def _count(self, delta: int) -> None:
        with self._lock:
            self._active += delta

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce a request from before its rows are built until it is answered."""
        if getattr(self._local, "announced", False):
            yield
            return
        self._local.announced = True
        self._count(1)
        try:
            yield
        finally:
            self._local.announced = False
            self._count(-1)

    def submit(self, feed: Feed, timeout_s: float = 10.0) -> np.ndarray:
        """The model's output for ``feed`` (one request's rows, by input name), merged with
        other requests' rows."""
        with self.expecting():
            return self._submit(feed, timeout_s)

    def _submit(self, feed: Feed, timeout_s: float) -> np.ndarray:
        if self._closed:
            raise self._reloading()
        if not self._thread.is_alive():
            if self._closed:  # closed while this request was on its way
                raise self._reloading()
            raise RuntimeError(f"batcher {self.name} is not started")
        job = _Job(feed, feeds.rows(feed))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"model {self.name}: queue full; retry later") from None
        if not job.done.wait(timeout_s):
            raise InferenceTimeout(f"model {self.name} did not answer within {timeout_s:.3f}s")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _reloading(self) -> Unavailable:
        return Unavailable(f"model {self.name} is being replaced; retry", code="reloading")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking requests; those already queued are still answered."""
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _take(self, deadline: float | None) -> _Job | object | None:
        """The next job: the one held over first; ``_NOTHING`` once the deadline passed."""
        if self._held is not None:
            job, self._held = self._held, None
            return job
        if deadline is None:
            return self._queue.get()
        left = deadline - time.monotonic()
        try:
            return self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
        except queue.Empty:
            return _NOTHING

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, rows = [first], first.rows
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            if self.adaptive and self._active <= len(jobs) and self._queue.empty():
                break  # nobody else is on the way: waiting would only add latency
            job = self._take(deadline)
            if job is _NOTHING:
                break
            if not isinstance(job, _Job):  # close(): run this batch, then stop
                self._stopping = True
                break
            if rows + job.rows > self.max_batch:
                self._held = job  # runs first in the next batch
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    def _run(self) -> None:
        while True:
            first = self._take(None)
            if not isinstance(first, _Job):
                break
            self._execute(self._gather(first))
            if self._stopping and self._held is None:
                break
        self._refuse_stragglers()

    def _refuse_stragglers(self) -> None:
        """Answer requests that slipped in behind close() at once instead of at their timeout."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                job.error = self._reloading()
                job.done.set()

    def _execute(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            merged = jobs[0].feed if len(jobs) == 1 else feeds.concat([j.feed for j in jobs])
            out = np.asarray(self.predict(merged))
            at = 0
            for job in jobs:
                job.result = out[at : at + job.rows]
                at += job.rows
        except Exception as exc:  # every waiting caller gets the model's error
            for job in jobs:
                job.error = exc
        try:
            self._record(jobs, time.perf_counter() - started)
        except Exception:  # the answers stand; a broken observer must not end the thread
            log.exception("batcher %s: recording a batch failed", self.name)
        for job in jobs:
            job.done.set()

    def _record(self, jobs: list[_Job], seconds: float) -> None:
        rows = sum(j.rows for j in jobs)
        with self._lock:
            self.stats.batches += 1
            self.stats.requests += len(jobs)
            self.stats.rows += rows
            self.stats.max_requests_in_batch = max(self.stats.max_requests_in_batch, len(jobs))
        if self._observe is not None:
            self._observe(len(jobs), rows, seconds)
