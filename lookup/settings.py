"""Frozen settings of the lookup API, built once from env vars (and serve flags)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

from prescore.env import LOG_LEVELS, group, read, setting
from prescore.errors import ConfigError
from prescore.service.serving import WSGIServer
from prescore.settings import Settings


def _default_workers() -> int:
    return max(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerSettings:
    """How granian runs the app (prescore.service.serving): processes, and app threads in each."""

    bind: str = setting("LOOKUP_BIND", "127.0.0.1:8080", kind="bind", doc="where it listens")
    metrics_bind: str = setting(
        "LOOKUP_METRICS_BIND",
        "",
        kind="bind",
        doc="`host:port` to serve `/metrics` on from the main process (then the service "
        "port answers it 404)",
    )
    workers: int = setting(
        "LOOKUP_WORKERS",
        factory=_default_workers,
        lo=1,
        shown="cores, at least 2",
        doc="lookup processes (`--workers` wins)",
    )
    # A lookup holds a thread for one Redis round trip (or one live call on a miss). More
    # threads than this only queue on the GIL (bench_lookup's thread rows).
    threads: int = setting(
        "LOOKUP_THREADS", 4, lo=1, doc="app threads in each process (`--threads` wins)"
    )
    backlog: int = setting("LOOKUP_BACKLOG", 2048, lo=1, doc="the listen backlog")
    graceful_timeout_s: int = setting(
        "LOOKUP_GRACEFUL_TIMEOUT_S",
        10,
        lo=1,
        doc="a worker still busy this long after SIGTERM is killed",
    )
    header_timeout_s: float = setting(
        "LOOKUP_HEADER_TIMEOUT_S",
        30.0,
        lo=0.1,
        hi=3600,
        doc="a connection whose next request line and headers have not all arrived this long "
        "after it opened or its last answer was sent is closed (granian's timer; no app "
        "thread waits for headers). It is also how long an idle kept-alive connection stays "
        "open: keep it above the idle timeout of a proxy or load balancer in front",
    )
    body_timeout_s: float = setting(
        "LOOKUP_BODY_TIMEOUT_S",
        0.0,
        hi=3600,
        doc="0: request bodies are read as granian's WSGI reads them, with no time limit (a "
        "client stalling its body holds an app thread; put a proxy that buffers bodies in "
        "front). Above 0: the lookup is served over RSGI, a body that has not arrived "
        "within this is answered 408 and no app thread waits for it, at a cost in "
        "throughput (docs/benchmarks.md)",
    )
    metrics_dir: str = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        kind="path",
        shown="a fresh temporary folder",
        doc="where the workers' metrics are summed",
    )
    switch_interval_s: float = setting(
        "LOOKUP_SWITCH_INTERVAL_S",
        0.005,
        lo=0.0001,
        doc="how often a thread holding the GIL hands it over (CPython's default: 5 ms)",
    )
    gc_freeze: bool = setting(
        "LOOKUP_GC_FREEZE",
        True,
        doc="keep the loaded app out of the GC's generations (shorter pauses)",
    )
    access_log: bool = setting(
        "LOOKUP_ACCESS_LOG",
        False,
        doc="one JSON log line per request: its `request_id`, and the caller's W3C "
        "`traceparent` when sent (both passed on to the fallback on a miss)",
    )
    log_level: str = setting(
        "PRESCORE_LOG_LEVEL", "info", kind="choice", choices=LOG_LEVELS, doc="the log level"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        return read(cls, env)

    def wsgi_server(self, max_body_bytes: int = 0) -> WSGIServer:
        """How granian serves the app; ``max_body_bytes``: how much of a body a timed read
        takes at most (the app refuses more, 413)."""
        return WSGIServer(
            bind=self.bind,
            workers=self.workers,
            threads=self.threads,
            name="prescore-lookup",
            backlog=self.backlog,
            kill_timeout_s=self.graceful_timeout_s,
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            max_body_bytes=max_body_bytes,
        )


@dataclass(frozen=True)
class BreakerSettings:
    """When the circuit to live inference opens (lookup.live.breaker): at least ``min_calls``
    in the last ``window_s`` seconds, ``ratio`` of them failed; after ``reset_s``,
    ``probes`` trial calls decide whether it closes."""

    window_s: float = setting(
        "PRESCORE_FALLBACK_BREAKER_WINDOW_S", 10.0, lo=0.1, doc="the breaker's window"
    )
    min_calls: int = setting(
        "PRESCORE_FALLBACK_BREAKER_MIN_CALLS",
        20,
        lo=1,
        doc="calls in the window before the breaker may open",
    )
    ratio: float = setting(
        "PRESCORE_FALLBACK_BREAKER_RATIO",
        0.5,
        lo=0.01,
        hi=1.0,
        doc="the share of those calls failed that opens it",
    )
    reset_s: float = setting(
        "PRESCORE_FALLBACK_BREAKER_RESET_S", 1.0, lo=0.01, doc="how long it stays open"
    )
    probes: int = setting(
        "PRESCORE_FALLBACK_BREAKER_PROBES",
        3,
        lo=1,
        doc="trial calls that then decide whether it closes",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BreakerSettings:
        return read(cls, env)


@dataclass(frozen=True)
class LookupSettings:
    """Everything the lookup API needs; the core settings included."""

    core: Settings = field(default_factory=Settings)
    max_k: int = setting("LOOKUP_MAX_K", 1000, lo=1, doc="the largest k a request may ask for")
    max_batch_ids: int = setting("LOOKUP_MAX_BATCH_IDS", 100, lo=1, doc="keys in one batchGet")
    max_body_bytes: int = setting(
        "LOOKUP_MAX_BODY_BYTES", 64 * 1024, lo=64, doc="the largest request body"
    )
    pointer_cache_s: float = setting(
        "LOOKUP_POINTER_CACHE_S",
        1.0,
        doc="a version pointer read is cached this long per process (0: never); a publish "
        "is seen by every worker within it, and a request still reads exactly one version",
    )
    ready_grace_s: float = setting(
        "LOOKUP_READY_GRACE_S",
        30.0,
        doc="once ready, `/readyz` stays ready (`degraded`) this long through a store outage",
    )
    fallback_url: str = setting(
        "PRESCORE_FALLBACK_URL",
        "",
        doc="live inference on a miss (`http://host:port`); none: a miss is a 404",
    )
    fallback_timeout_s: float = setting(
        "PRESCORE_FALLBACK_TIMEOUT_S",
        0.1,
        lo=0.001,
        doc="the deadline of one request's live calls",
    )
    fallback_token: str = setting(
        "PRESCORE_FALLBACK_TOKEN",
        "",
        kind="secret",
        doc="sent as `Authorization: Bearer`; the fallback requires it when it has it set",
    )
    breaker: BreakerSettings = group(BreakerSettings)
    # What the fallback takes in one call (its FALLBACK_MAX_INSTANCES): a batch with more
    # misses than this is sent in several calls, within the one deadline.
    fallback_max_instances: int = setting(
        "PRESCORE_FALLBACK_MAX_INSTANCES",
        100,
        lo=1,
        doc="keys per live call (the fallback's `FALLBACK_MAX_INSTANCES`)",
    )
    miss_log: bool = setting(
        "LOOKUP_MISS_LOG",
        True,
        doc="record missed keys for the next bulk run (and the dataset's `miss_log`)",
    )
    single_flight: bool = setting(
        "LOOKUP_SINGLE_FLIGHT",
        True,
        doc="one live call per missing key at a time, and the negative cache",
    )
    negative_ttl_s: float = setting(
        "LOOKUP_NEGATIVE_TTL_S",
        60.0,
        lo=0.001,
        doc="how long a key live inference had no answer for is answered 404 without a call",
    )
    shadow_rate: float = setting(
        "LOOKUP_SHADOW_RATE", 0.0, hi=1.0, doc="share of hits also answered live and compared"
    )
    cache_max_age_s: int = setting(
        "LOOKUP_CACHE_MAX_AGE_S",
        0,
        doc="`Cache-Control` of a single key's answer: `no-cache` at 0 (asked again each time, "
        "with its `ETag`), else `max-age=N` (an answer up to N s behind a version switch)",
    )
    version_pick: bool = setting(
        "LOOKUP_VERSION_PICK",
        True,
        doc="let a request choose the live version or its canary's (`?version=`, "
        "`X-Prescore-Canary`); off: each key goes to the side its slot chooses, and the "
        "request's choice is ignored",
    )
    server: ServerSettings = group(ServerSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LookupSettings:
        env = os.environ if env is None else env
        settings = read(cls, env, core=Settings.from_env(env))
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
