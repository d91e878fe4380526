"""The one cache of a Spark Python worker: models, Redis clients and per-run tables.

Spark reuses a Python worker across the tasks of a job (``spark.python.worker.reuse``),
so what is costly to build (a loaded model, a Redis connection pool, a run's encoded
items) is built once per worker and kept, as ``pyspark.ml.model_cache.ModelCache`` does
for ``predict_batch_udf``. That cache holds predict functions only and a fixed three; this
one builds any value under its lock the first time its key is asked for and keeps the
most recently used ``size`` entries, so a worker that lives across runs drops the tables
of old runs instead of growing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerCache:
    """A bounded, locked, least-recently-used map of built values."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value of ``key``, built by ``build()`` (once, under the lock) if absent."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            value = build()
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


CACHE = WorkerCache()  # the worker's one cache
