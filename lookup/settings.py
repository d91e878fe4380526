"""Frozen settings of the lookup API, built once from env vars (and serve flags)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

from prescore.errors import ConfigError
from prescore.service.serving import WSGIServer
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


def _default_workers() -> int:
    return max(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerSettings:
    """How granian runs the app (prescore.service.serving): processes, and app threads in each."""

    bind: str = "127.0.0.1:8080"
    workers: int = field(default_factory=_default_workers)
    # A lookup holds a thread for one Redis round trip (or one live call on a miss). More
    # threads than this only queue on the GIL: at 8, p99 was 2-5x that at 2-4 (bench_lookup).
    threads: int = 4
    backlog: int = 2048
    graceful_timeout_s: int = 10
    header_timeout_s: float = 30.0  # a request's line and headers (and keep-alive idle time)
    metrics_dir: str = ""  # prometheus multiprocess dir; a fresh temp dir when empty
    # How often a thread that holds the GIL hands it over (CPython's default: 5 ms).
    switch_interval_s: float = 0.005
    gc_freeze: bool = True  # keep the loaded app out of the GC's generations (shorter pauses)
    access_log: bool = False  # one JSON log line per request (the hot path's too)
    log_level: str = "info"
    metrics_bind: str = ""  # host:port of /metrics on its own port (then not on bind's)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        return cls(
            bind=env_bind(env, "LOOKUP_BIND", cls.bind),
            metrics_bind=env_bind(env, "LOOKUP_METRICS_BIND", cls.metrics_bind),
            workers=env_int(env, "LOOKUP_WORKERS", _default_workers(), lo=1),
            threads=env_int(env, "LOOKUP_THREADS", cls.threads, lo=1),
            backlog=env_int(env, "LOOKUP_BACKLOG", cls.backlog, lo=1),
            graceful_timeout_s=env_int(
                env, "LOOKUP_GRACEFUL_TIMEOUT_S", cls.graceful_timeout_s, lo=1
            ),
            header_timeout_s=env_float(
                env, "LOOKUP_HEADER_TIMEOUT_S", cls.header_timeout_s, lo=0.1, hi=3600
            ),
            metrics_dir=env_str(env, "PROMETHEUS_MULTIPROC_DIR", cls.metrics_dir),
            switch_interval_s=env_float(
                env, "LOOKUP_SWITCH_INTERVAL_S", cls.switch_interval_s, lo=0.0001
            ),
            gc_freeze=env_bool(env, "LOOKUP_GC_FREEZE", cls.gc_freeze),
            access_log=env_bool(env, "LOOKUP_ACCESS_LOG", cls.access_log),
            log_level=env_choice(
                env, "PRESCORE_LOG_LEVEL", cls.log_level, ("debug", "info", "warning", "error")
            ),
        )

    def wsgi_server(self) -> WSGIServer:
        return WSGIServer(
            bind=self.bind,
            workers=self.workers,
            threads=self.threads,
            name="prescore-lookup",
            backlog=self.backlog,
            kill_timeout_s=self.graceful_timeout_s,
            header_timeout_s=self.header_timeout_s,
        )


@dataclass(frozen=True)
class BreakerSettings:
    """When the circuit to live inference opens (lookup.live.breaker): at least ``min_calls``
    in the last ``window_s`` seconds, ``ratio`` of them failed; after ``reset_s``,
    ``probes`` trial calls decide whether it closes."""

    window_s: float = 10.0
    min_calls: int = 20
    ratio: float = 0.5
    reset_s: float = 1.0
    probes: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BreakerSettings:
        p = "PRESCORE_FALLBACK_BREAKER"
        return cls(
            window_s=env_float(env, f"{p}_WINDOW_S", cls.window_s, lo=0.1),
            min_calls=env_int(env, f"{p}_MIN_CALLS", cls.min_calls, lo=1),
            ratio=env_float(env, f"{p}_RATIO", cls.ratio, lo=0.01, hi=1.0),
            reset_s=env_float(env, f"{p}_RESET_S", cls.reset_s, lo=0.01),
            probes=env_int(env, f"{p}_PROBES", cls.probes, lo=1),
        )


@dataclass(frozen=True)
class LookupSettings:
    """Everything the lookup API needs; the core settings included."""

    core: Settings = field(default_factory=Settings)
    max_k: int = 1000  # the largest k / limit a request may ask for
    max_batch_ids: int = 100
    max_body_bytes: int = 64 * 1024
    # A pointer read is cached this long per process (0 disables). A publish is seen by
    # every worker within this time; a request still reads exactly one version.
    pointer_cache_s: float = 1.0
    # Once ready, /readyz stays ready this long through a store outage (answering JSON 503s)
    ready_grace_s: float = 30.0
    fallback_url: str = ""  # live inference on a miss; empty: a miss is a 404
    fallback_timeout_s: float = 0.1  # deadline of one live call (a whole request's misses)
    fallback_token: str = field(default="", repr=False)  # sent as Authorization: Bearer
    breaker: BreakerSettings = field(default_factory=lambda: BreakerSettings())
    # What the fallback takes in one call (its FALLBACK_MAX_INSTANCES): a batch with more
    # misses than this is sent in several calls, within the one deadline.
    fallback_max_instances: int = 100
    miss_log: bool = True  # misses recorded for the next bulk run (prescore.store.misslog)
    single_flight: bool = True  # one live call per missing key at a time (lookup.live.singleflight)
    negative_ttl_s: float = 60.0  # a key live inference had no answer for is not asked again
    shadow_rate: float = 0.0  # share of hits also answered live and compared (lookup.live.shadow)
    cache_max_age_s: int = 0  # Cache-Control of an answer (lookup.caching): 0, no-cache
    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LookupSettings:
        env = os.environ if env is None else env
        settings = cls(
            core=Settings.from_env(env),
            max_k=env_int(env, "LOOKUP_MAX_K", cls.max_k, lo=1),
            max_batch_ids=env_int(env, "LOOKUP_MAX_BATCH_IDS", cls.max_batch_ids, lo=1),
            max_body_bytes=env_int(env, "LOOKUP_MAX_BODY_BYTES", cls.max_body_bytes, lo=64),
            pointer_cache_s=env_float(env, "LOOKUP_POINTER_CACHE_S", cls.pointer_cache_s),
            ready_grace_s=env_float(env, "LOOKUP_READY_GRACE_S", cls.ready_grace_s),
            fallback_url=env_str(env, "PRESCORE_FALLBACK_URL", cls.fallback_url),
            fallback_token=env_secret(env, "PRESCORE_FALLBACK_TOKEN"),
            fallback_timeout_s=env_float(
                env, "PRESCORE_FALLBACK_TIMEOUT_S", cls.fallback_timeout_s, lo=0.001
            ),
            breaker=BreakerSettings.from_env(env),
            fallback_max_instances=env_int(
                env, "PRESCORE_FALLBACK_MAX_INSTANCES", cls.fallback_max_instances, lo=1
            ),
            miss_log=env_bool(env, "LOOKUP_MISS_LOG", cls.miss_log),
            single_flight=env_bool(env, "LOOKUP_SINGLE_FLIGHT", cls.single_flight),
            negative_ttl_s=env_float(env, "LOOKUP_NEGATIVE_TTL_S", cls.negative_ttl_s, lo=0.001),
            shadow_rate=env_float(env, "LOOKUP_SHADOW_RATE", cls.shadow_rate, hi=1.0),
            cache_max_age_s=env_int(env, "LOOKUP_CACHE_MAX_AGE_S", cls.cache_max_age_s, lo=0),
            server=ServerSettings.from_env(env),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work together, at start-up rather than per request
        (each value alone was checked where it was read)."""
        if self.fallback_url:
            parsed = urlparse(self.fallback_url)
            if parsed.scheme != "http" or not parsed.hostname:
                raise ConfigError(
                    f"PRESCORE_FALLBACK_URL={self.fallback_url!r}: must be http://host:port"
                )

    def with_server(self, **changes: Any) -> LookupSettings:
        """A copy with some server fields replaced (serve flags win over env)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, server=replace(self.server, **given))
