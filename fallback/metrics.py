"""Prometheus metrics of the fallback: requests, latency, batch sizes, queue depth.

The service runs one process by default (batching merges the requests of one process), so
the metrics live in that process's own registry.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fallback.batcher import BatchObserver

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """The app's metrics, in their own registry (tests build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fallback_requests", "HTTP requests by route and status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "fallback_request_duration_seconds", "Time to answer a request, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "fallback_batch_requests", "Requests merged into one model call, by dataset",
            ["dataset"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "fallback_batch_rows", "Rows in one model call, by dataset",
            ["dataset"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "fallback_inference_seconds", "Time of one model call, by dataset",
            ["dataset"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "fallback_queue_depth", "Requests waiting for a model call", ["dataset"], registry=r
        )
        self.model_version = Gauge(
            "fallback_model_version",
            "Version of the model served as promoted, by dataset",
            ["dataset"],
            registry=r,
        )

    def observer(self, dataset: str) -> BatchObserver:
        """What a dataset's model batcher calls after each model call."""
        reqs, rows = self.batch_requests.labels(dataset), self.batch_rows.labels(dataset)
        seconds = self.inference.labels(dataset)

        def observe(n_requests: int, n_rows: int, took_s: float) -> None:
            reqs.observe(n_requests)
            rows.observe(n_rows)
            seconds.observe(took_s)

        return observe

    def track_depth(self, dataset: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(dataset).set_function(depth)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
