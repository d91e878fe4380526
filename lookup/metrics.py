"""Prometheus metrics of the lookup: requests, latency, hits and misses.

Under granian with several workers, ``python -m lookup.serve`` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before prometheus_client is imported; each
worker then writes its values to files there and /metrics sums every worker's.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Metrics:
    """The app's metrics, in their own registry (one per app; tests build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str = "") -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lookup_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lookup_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.keys = Counter(
            "lookup_keys",
            "Ids looked up, by dataset and result (hit: precomputed; miss: not in the store)",
            ["dataset", "result"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._keys: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:  # labels() costs a lock and a tuple build: once per combination
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def _key_child(self, dataset: str, result: str) -> Any:
        child = self._keys.get((dataset, result))
        if child is None:
            child = self._keys[(dataset, result)] = self.keys.labels(dataset, result)
        return child

    def count_keys(self, dataset: str, hits: int, misses: int) -> None:
        if hits:
            self._key_child(dataset, "hit").inc(hits)
        if misses:
            self._key_child(dataset, "miss").inc(misses)

    def render(self) -> bytes:
        """The text exposition: of every worker in multiprocess mode, else of this app."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)
