"""Frozen settings of the live inference fallback, built once from env vars (and serve flags)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prescore.env import LOG_LEVELS, group, read, setting
from prescore.errors import ConfigError
from prescore.models.inference import RUNTIMES
from prescore.settings import Settings


@dataclass(frozen=True)
class BatchSettings:
    """Micro-batching of one model: rows per model call, wait for company, queue bound.
    Read under a prefix per dataset kind (``FALLBACK_RANKING``, ``FALLBACK_LABELS``)."""

    max_batch: int = setting(
        "_MAX_BATCH", 4096, lo=1, doc="rows per model call (a ranking's pairs, labels' inputs)"
    )
    max_wait_s: float = setting(
        "_MAX_WAIT_MS",
        0.005,
        per=1000,
        doc="milliseconds a batch waits for company after its first request",
    )
    max_queue: int = setting(
        "_MAX_QUEUE", 256, lo=1, doc="requests waiting at most; beyond, 503 `overloaded`"
    )
    adaptive: bool = setting(
        "_ADAPTIVE", True, doc="stop waiting once every request on its way is in the batch"
    )


@dataclass(frozen=True)
class FallbackSettings:
    """Everything the fallback service needs; the core settings included."""

    core: Settings = field(default_factory=Settings)
    bind: str = setting("FALLBACK_BIND", "127.0.0.1:8081", kind="bind", doc="where it listens")
    # One process: micro-batching merges the requests of one process, and TensorFlow
    # already uses every core for one batch. Threads carry the concurrent requests.
    workers: int = setting("FALLBACK_WORKERS", 1, lo=1, doc="processes (`--workers` wins)")
    threads: int = setting(
        "FALLBACK_THREADS", 32, lo=1, doc="request threads in each (`--threads` wins)"
    )
    graceful_timeout_s: int = setting(
        "FALLBACK_GRACEFUL_TIMEOUT_S",
        10,
        doc="a worker still busy this long after SIGTERM is killed",
    )
    datasets: tuple[str, ...] = setting(
        "FALLBACK_DATASETS",
        (),
        kind="list",
        doc="the datasets answered live; none named: every declared one with `live = true` "
        "and a model",
    )
    runtime: str = setting(
        "FALLBACK_RUNTIME",
        "auto",
        kind="choice",
        choices=("auto", *RUNTIMES),
        doc="how models run; `auto`: the fastest variant measured at registration, int8 "
        "included where it agreed within 0.1 (a label whose score lies that close to its "
        "threshold may differ from the bulk job's, which runs `tf`: name `tf` or `float32` "
        "for the same labels)",
    )
    runtimes: Mapping[str, str] = setting(
        "FALLBACK_RUNTIMES",
        factory=dict,
        kind="pairs",
        doc="a runtime per dataset over `FALLBACK_RUNTIME` (`reco=tf,tags=int8`)",
    )
    inference_threads: int = setting(
        "FALLBACK_INFERENCE_THREADS", 0, doc="LiteRT threads per interpreter; 0: all cores"
    )
    ranking_batch: BatchSettings = group(BatchSettings, "FALLBACK_RANKING", max_batch=4096)
    labels_batch: BatchSettings = group(BatchSettings, "FALLBACK_LABELS", max_batch=32)
    request_timeout_s: float = setting(
        "FALLBACK_REQUEST_TIMEOUT_S",
        5.0,
        lo=0.001,
        doc="a request waiting longer for the model gets a 504",
    )
    watch_interval_s: float = setting(  # 0 would spin the watcher and the upkeep
        "FALLBACK_WATCH_INTERVAL_S",
        5.0,
        lo=0.1,
        doc="how often the promoted versions (and remote tables' files) are checked",
    )
    tables_refresh_s: float = setting(
        "FALLBACK_TABLES_REFRESH_S",
        300.0,
        lo=0.1,
        doc="how often the tables kept in memory are read again",
    )
    swap_grace_s: float = setting(
        "FALLBACK_SWAP_GRACE_S",
        5.0,
        doc="a replaced model keeps answering the requests already holding it this long",
    )
    models_kept: int = setting(
        "FALLBACK_MODELS_KEPT",
        2,
        lo=2,
        doc="versions kept loaded per model (the promoted one and one more); 3 while a "
        "canary's model version and the live version's both differ from the promoted one, "
        "or each load evicts the other",
    )
    webhdfs_url: str = setting(
        "FALLBACK_WEBHDFS_URL", "", doc="WebHDFS endpoint of `hdfs://` tables and images"
    )
    max_instances: int = setting(
        "FALLBACK_MAX_INSTANCES", 100, lo=1, doc="keys (or images) in one request"
    )
    max_candidates: int = setting(
        "FALLBACK_MAX_CANDIDATES", 5000, lo=1, doc="items scored for one entity"
    )
    max_k: int = setting("FALLBACK_MAX_K", 1000, lo=1, doc="the largest k a request may ask for")
    max_body_bytes: int = setting(
        "FALLBACK_MAX_BODY_BYTES", 8 * 1024 * 1024, lo=64, doc="the largest request body"
    )
    body_timeout_s: float = setting(
        "FALLBACK_BODY_TIMEOUT_S",
        0.0,
        hi=3600,
        doc="0: request bodies are read as granian's WSGI reads them, with no time limit (a "
        "client stalling its body holds an app thread). Above 0: served over RSGI, a body "
        "that has not arrived within this is answered 408 and no app thread waits for it "
        "(as LOOKUP_BODY_TIMEOUT_S)",
    )
    metrics_dir: str = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        kind="path",
        shown="made at start",
        doc="where the workers' metrics are summed",
    )
    metrics_bind: str = setting(
        "FALLBACK_METRICS_BIND",
        "",
        kind="bind",
        doc="`host:port` of `/metrics` on its own port (then not on the service's)",
    )
    log_level: str = setting(
        "PRESCORE_LOG_LEVEL", "info", kind="choice", choices=LOG_LEVELS, doc="the log level"
    )
    access_log: bool = setting(
        "FALLBACK_ACCESS_LOG",
        False,
        doc="one JSON log line per request, with the `request_id` and `traceparent` the "
        "lookup passed on",
    )
    token: str = setting(
        "PRESCORE_FALLBACK_TOKEN",
        "",
        kind="secret",
        doc="`:predict` then needs `Authorization: Bearer <token>` (the lookup sends it)",
    )
    behind_network_policy: bool = setting(
        "FALLBACK_BEHIND_NETWORK_POLICY",
        False,
        doc="without a token, a bind beyond loopback is refused unless this says a network "
        "policy lets only the lookup reach it (it serves predictions and `/metrics`)",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FallbackSettings:
        env = os.environ if env is None else env
        settings = read(cls, env, core=Settings.from_env(env))
        settings.check()
        return settings

    def served(self) -> list[str]:
        """The datasets answered live: those named, else every declared live one."""
        catalog = self.core.catalog
        if self.datasets:
            return [catalog.get(d).name for d in self.datasets]
        return [n for n in catalog.names() if catalog.get(n).live and catalog.get(n).model]

    def check(self) -> None:
        """Refuse settings that cannot work, at start-up rather than per request."""
        for name, runtime in [("FALLBACK_RUNTIME", self.runtime), *self.runtimes.items()]:
            # the variable was checked as it was read; this one may come from a constructor
            if runtime != "auto" and runtime not in RUNTIMES:
                raise ConfigError(
                    f"{name}: runtime must be auto or one of {', '.join(RUNTIMES)}; got {runtime!r}"
                )
        for name in self.datasets:
            d = self.core.catalog.get(name)
            if not (d.live and d.model):
                raise ConfigError(
                    f"FALLBACK_DATASETS: {name!r} is not answered live (it declares "
                    f"{'no model' if not d.model else 'live = false'})"
                )
        for flag, value in (("--workers", self.workers), ("--threads", self.threads)):
            if value < 1:  # the flags override the variables, which were checked already
                raise ConfigError(f"{flag}={value}: must be at least 1")

    def check_exposure(self) -> None:
        """Refuse to serve without a token on an address beyond loopback, unless told
        that a network policy guards it (FALLBACK_BEHIND_NETWORK_POLICY=1)."""
        host = self.bind.rpartition(":")[0].strip("[]")
        if self.token or self.behind_network_policy or _loopback(host):
            return
        raise ConfigError(
            f"FALLBACK_BIND {self.bind}: serving beyond loopback needs "
            "PRESCORE_FALLBACK_TOKEN (the lookup sends it), or FALLBACK_BEHIND_NETWORK_POLICY=1 "
            "where a network policy lets only the lookup reach it"
        )

    def runtime_for(self, dataset: str) -> str:
        return self.runtimes.get(dataset, self.runtime)

    def batch_for(self, kind: str) -> BatchSettings:
        return self.ranking_batch if kind == "ranking" else self.labels_batch

    def with_changes(self, **changes: Any) -> FallbackSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False
