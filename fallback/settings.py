"""Frozen settings of the live inference fallback, built once from env vars (and serve flags)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prescore.errors import ConfigError
from prescore.models.inference import RUNTIMES
from prescore.settings import (
    Settings,
    env_bind,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_secret,
    env_str,
)


@dataclass(frozen=True)
class BatchSettings:
    """Micro-batching of one model: rows per model call, wait for company, queue bound."""

    max_batch: int
    max_wait_s: float = 0.005
    max_queue: int = 256
    adaptive: bool = True  # stop waiting once every request on its way is in the batch

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str, max_batch: int) -> BatchSettings:
        return cls(
            max_batch=env_int(env, f"{prefix}_MAX_BATCH", max_batch, lo=1),
            max_wait_s=env_float(env, f"{prefix}_MAX_WAIT_MS", cls.max_wait_s * 1000) / 1000,
            max_queue=env_int(env, f"{prefix}_MAX_QUEUE", cls.max_queue, lo=1),
            adaptive=env_bool(env, f"{prefix}_ADAPTIVE", cls.adaptive),
        )


def _pairs(text: str, name: str) -> dict[str, str]:
    """``"reco=tf,tags=int8"`` -> ``{"reco": "tf", "tags": "int8"}``."""
    out = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{name}: expected dataset=value pairs, got {item!r}")
        out[key] = value
    return out


@dataclass(frozen=True)
class FallbackSettings:
    """Everything the fallback service needs; the core settings included."""

    core: Settings = field(default_factory=Settings)
    bind: str = "127.0.0.1:8081"
    # One process: micro-batching merges the requests of one process, and TensorFlow
    # already uses every core for one batch. Threads carry the concurrent requests.
    workers: int = 1
    threads: int = 32
    graceful_timeout_s: int = 10  # a worker still busy this long after SIGTERM is killed
    datasets: tuple[str, ...] = ()  # the datasets answered live; empty: every live one
    runtime: str = "auto"  # tf | float32 | int8 | auto (fastest measured at registration)
    runtimes: Mapping[str, str] = field(default_factory=dict)  # per dataset, over runtime
    inference_threads: int = 0  # LiteRT threads per interpreter; 0: all cores
    # rows per model call: pairs of a ranking, images or rows of labels
    ranking_batch: BatchSettings = field(default_factory=lambda: BatchSettings(max_batch=4096))
    labels_batch: BatchSettings = field(default_factory=lambda: BatchSettings(max_batch=32))
    request_timeout_s: float = 5.0  # a request waiting longer for the model gets a 504
    watch_interval_s: float = 5.0  # how often the PROMOTED pointers are checked
    tables_refresh_s: float = 300.0  # how often a dataset's tables are read again
    swap_grace_s: float = 5.0  # a replaced model keeps answering requests already holding it
    models_kept: int = 2  # model versions kept loaded per model (the promoted one and one more)
    webhdfs_url: str = ""  # WebHDFS endpoint of hdfs:// inputs (tables, images)
    max_instances: int = 100  # keys (or images) in one request
    max_candidates: int = 5000  # items scored for one entity
    max_k: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    metrics_dir: str = ""  # prometheus multiprocess dir (several workers); made at start
    metrics_bind: str = ""  # host:port of /metrics on its own port (then not on bind's)
    log_level: str = "info"
    access_log: bool = False  # one JSON log line per request, with the caller's request id
    # With a token, :predict needs "Authorization: Bearer <token>" (the lookup sends it)
    token: str = field(default="", repr=False)
    # Without a token, a bind beyond loopback is refused unless a network policy (or the
    # like) lets only the lookup reach it: it serves predictions and /metrics to anyone.
    behind_network_policy: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FallbackSettings:
        env = os.environ if env is None else env
        settings = cls(
            core=Settings.from_env(env),
            bind=env_bind(env, "FALLBACK_BIND", cls.bind),
            metrics_bind=env_bind(env, "FALLBACK_METRICS_BIND", cls.metrics_bind),
            token=env_secret(env, "PRESCORE_FALLBACK_TOKEN"),
            behind_network_policy=env_bool(env, "FALLBACK_BEHIND_NETWORK_POLICY", False),
            workers=env_int(env, "FALLBACK_WORKERS", cls.workers, lo=1),
            threads=env_int(env, "FALLBACK_THREADS", cls.threads, lo=1),
            graceful_timeout_s=env_int(env, "FALLBACK_GRACEFUL_TIMEOUT_S", cls.graceful_timeout_s),
            datasets=tuple(d for d in env_str(env, "FALLBACK_DATASETS", "").split(",") if d),
            runtime=env_str(env, "FALLBACK_RUNTIME", cls.runtime),
            runtimes=_pairs(env_str(env, "FALLBACK_RUNTIMES", ""), "FALLBACK_RUNTIMES"),
            inference_threads=env_int(env, "FALLBACK_INFERENCE_THREADS", cls.inference_threads),
            ranking_batch=BatchSettings.from_env(env, "FALLBACK_RANKING", 4096),
            labels_batch=BatchSettings.from_env(env, "FALLBACK_LABELS", 32),
            request_timeout_s=env_float(
                env, "FALLBACK_REQUEST_TIMEOUT_S", cls.request_timeout_s, lo=0.001
            ),
            watch_interval_s=env_float(  # 0 would spin the watcher and the upkeep
                env, "FALLBACK_WATCH_INTERVAL_S", cls.watch_interval_s, lo=0.1
            ),
            tables_refresh_s=env_float(
                env, "FALLBACK_TABLES_REFRESH_S", cls.tables_refresh_s, lo=0.1
            ),
            swap_grace_s=env_float(env, "FALLBACK_SWAP_GRACE_S", cls.swap_grace_s),
            models_kept=env_int(env, "FALLBACK_MODELS_KEPT", cls.models_kept),
            webhdfs_url=env_str(env, "FALLBACK_WEBHDFS_URL", cls.webhdfs_url),
            max_instances=env_int(env, "FALLBACK_MAX_INSTANCES", cls.max_instances, lo=1),
            max_candidates=env_int(env, "FALLBACK_MAX_CANDIDATES", cls.max_candidates, lo=1),
            max_k=env_int(env, "FALLBACK_MAX_K", cls.max_k, lo=1),
            max_body_bytes=env_int(env, "FALLBACK_MAX_BODY_BYTES", cls.max_body_bytes, lo=64),
            metrics_dir=env_str(env, "PROMETHEUS_MULTIPROC_DIR", cls.metrics_dir),
            log_level=env_choice(
                env, "PRESCORE_LOG_LEVEL", cls.log_level, ("debug", "info", "warning", "error")
            ),
            access_log=env_bool(env, "FALLBACK_ACCESS_LOG", cls.access_log),
        )
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
        if self.models_kept < 2:  # the promoted version and the one loaded beside it
            raise ConfigError(f"FALLBACK_MODELS_KEPT={self.models_kept}: must be at least 2")

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
