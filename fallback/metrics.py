"""Prometheus metrics of the fallback, every name prefixed ``prescore_fallback_``:
requests, latency, batch sizes, queue depth, the model version served, whether the tables
read by key are read through their index.

The service runs one process by default (batching merges the requests of one process).
With PROMETHEUS_MULTIPROC_DIR set (``python -m fallback.serve`` makes the folder when it
does not exist yet, as on a fresh Kubernetes emptyDir), every worker writes its values
there and /metrics sums them (also on its own port, FALLBACK_METRICS_BIND, served by the
main process). The queue depth, the model versions and the tables' index state are
sampled into gauges by each worker (``sample``, every watch interval and before its own
/metrics answers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from fallback.batcher import BatchObserver

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """The app's metrics, in their own registry (tests build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str = "") -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "prescore_fallback_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "prescore_fallback_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "prescore_fallback_batch_requests",
            "Requests merged into one model call, by dataset",
            ["dataset"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "prescore_fallback_batch_rows",
            "Rows in one model call, by dataset",
            ["dataset"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "prescore_fallback_inference_seconds",
            "Time of one model call, by dataset",
            ["dataset"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "prescore_fallback_queue_depth",
            "Requests waiting for a model call",
            ["dataset"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._depths: dict[str, Callable[[], float]] = {}
        self.table_index_ready = Gauge(
            "prescore_fallback_table_index_ready",
            "1: a table read by key is read through its index, or is small enough to scan; "
            "0: a large table is scanned on every miss (its index not built, or stale)",
            ["dataset", "table"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self._tables: dict[str, Callable[[], Mapping[str, bool]]] = {}
        self.model_version = Gauge(
            "prescore_fallback_model_version",
            "Version of the model served as promoted, by dataset",
            ["dataset"],
            multiprocess_mode="livemostrecent",
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
        self._depths[dataset] = depth

    def track_tables(self, dataset: str, ready: Callable[[], Mapping[str, bool]]) -> None:
        self._tables[dataset] = ready

    def sample(self, promoted: Mapping[str, str]) -> None:
        """Set the gauges read from state: queue depths and promoted model versions."""
        for dataset, depth in self._depths.items():
            self.queue_depth.labels(dataset).set(depth())
        for dataset, ready in self._tables.items():
            for table, ok in ready().items():
                self.table_index_ready.labels(dataset, table).set(1 if ok else 0)
        for dataset, version in promoted.items():
            self.model_version.labels(dataset).set(float(version) if version.isdigit() else -1)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """Every worker's values in multiprocess mode, else this process's."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
