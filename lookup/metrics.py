"""Prometheus metrics of the lookup, every name prefixed ``prescore_``.

Under granian with several workers, ``python -m lookup.serve`` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before prometheus_client is imported; each
worker then writes its values to files there and /metrics sums every worker's. What the
datasets' registries say (live version, its age and rows, the last run's figures) is read
from Redis when /metrics is scraped (lookup.exporter), so a batch job's figures reach
Prometheus without a Pushgateway.

| metric | labels | what |
| --- | --- | --- |
| prescore_lookup_requests_total | route, method, status | HTTP requests |
| prescore_lookup_request_duration_seconds | route | time to answer |
| prescore_lookup_keys_total | dataset, result | keys asked for: hit, written_back, miss |
| prescore_lookup_live_answers_total | dataset | misses answered by live inference |
| prescore_lookup_fallback_errors_total | dataset, cause | timeout, unavailable, circuit_open, |
|  |  | refused, invalid_answer (a prediction not served) |
| prescore_lookup_fallback_seconds | dataset | a live call as the lookup sees it |
| prescore_lookup_breaker_open | dataset | 1 open, 0.5 half open, 0 closed (worst worker) |
| prescore_lookup_store_errors_total | action | Redis unreachable or slow |
| prescore_lookup_canary_keys_total | dataset, served, result | while a canary runs: keys |
|  |  | by the side that served them (live, canary): hit, miss |
| prescore_lookup_canary_seconds | dataset, served | while a canary runs: a single lookup |
| prescore_lookup_canary_shadow_overlap | dataset, served | while a canary runs: shadow |
|  |  | checks, by side |
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BREAKER = {"closed": 0.0, "half-open": 0.5, "open": 1.0}


# the methods a request is counted under; any other is "other" (clients choose them)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The app's metrics, in their own registry (one per app; tests build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str = "") -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "prescore_lookup_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "prescore_lookup_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.keys = Counter(
            "prescore_lookup_keys",
            "Keys asked for, by dataset and result (hit: precomputed; written_back: a hit on "
            "an earlier live answer; miss: not in the store)",
            ["dataset", "result"],
            registry=r,
        )
        self.live = Counter(
            "prescore_lookup_live_answers",
            "Misses answered by live inference",
            ["dataset"],
            registry=r,
        )
        self.fallback_errors = Counter(
            "prescore_lookup_fallback_errors",
            "Misses live inference did not answer, by cause",
            ["dataset", "cause"],
            registry=r,
        )
        self.fallback_seconds = Histogram(
            "prescore_lookup_fallback_seconds",
            "A live inference call, seen from the lookup",
            ["dataset"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker = Gauge(
            "prescore_lookup_breaker_open",
            "The circuit to live inference: 1 open, 0.5 half open, 0 closed",
            ["dataset"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_errors = Counter(
            "prescore_lookup_store_errors",
            "Redis unreachable or too slow, by what was done",
            ["action"],
            registry=r,
        )
        self.saved = Counter(
            "prescore_lookup_singleflight_saved",
            "Live inference calls saved: misses that waited for another request's answer",
            ["dataset"],
            registry=r,
        )
        self.stale = Counter(
            "prescore_lookup_stale_answers",
            "Answers older than their dataset's max age",
            ["dataset"],
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "prescore_lookup_shadow_overlap",
            "Shadow checks: share of a precomputed answer's entries the live one also has",
            ["dataset"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.shadow_diff = Histogram(
            "prescore_lookup_shadow_score_diff",
            "Shadow checks: mean absolute score difference of the entries both answers have",
            ["dataset"],
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
            registry=r,
        )
        # while a canary runs (prescore.store.canaries), the same figures by the side that
        # served them: "live" or "canary" (which versions those are: prescore_dataset_canary)
        self.canary_keys = Counter(
            "prescore_lookup_canary_keys",
            "Keys asked for while a canary runs, by the side that served them and result",
            ["dataset", "served", "result"],
            registry=r,
        )
        self.canary_seconds = Histogram(
            "prescore_lookup_canary_seconds",
            "Time to answer a single lookup while a canary runs, by the side that served it",
            ["dataset", "served"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.canary_shadow_overlap = Histogram(
            "prescore_lookup_canary_shadow_overlap",
            "Shadow checks while a canary runs (as prescore_lookup_shadow_overlap), by side",
            ["dataset", "served"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.collectors: list[Any] = []  # read at scrape time (lookup.exporter)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (labels() costs a lock and a tuple)."""
        key = (id(metric), *labels)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = metric.labels(*labels)
        return found

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:  # a client's made-up method makes no series of its own
            method = "other"
        children = self._children.get((route, method, status))
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_keys(self, dataset: str, hits: int, misses: int, written_back: int = 0) -> None:
        if hits:
            self._child(self.keys, dataset, "hit").inc(hits)
        if written_back:
            self._child(self.keys, dataset, "written_back").inc(written_back)
        if misses:
            self._child(self.keys, dataset, "miss").inc(misses)

    def count(self, metric: Any, *labels: str, by: float = 1) -> None:
        self._child(metric, *labels).inc(by)

    def seconds(self, metric: Any, dataset: str, value: float, *labels: str) -> None:
        self._child(metric, dataset, *labels).observe(value)

    def breaker_state(self, dataset: str, state: str) -> None:
        self._child(self.breaker, dataset).set(BREAKER.get(state, 1.0))

    def render(self) -> bytes:
        """The text exposition: of every worker in multiprocess mode, else of this app;
        plus what the collectors read now."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            registry = self.registry
        text = generate_latest(registry)
        for collector in self.collectors:
            fresh = CollectorRegistry()
            fresh.register(collector)
            text += generate_latest(fresh)
        return text
