"""Building the Redis client from settings, and turning its outages into our errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import EqualJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from prescore.errors import ConfigError, StoreUnavailable
from prescore.settings import RedisSettings

Client: TypeAlias = "redis.Redis | RedisCluster"

# What a dead, restarting or overloaded Redis raises; all mean "try again later".
OUTAGES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    OSError,
)


def safe_url(url: str) -> str:
    """``url`` with any password masked, for logs: ``redis://:***@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def connect(settings: RedisSettings, **overrides: Any) -> Client:
    """A client with short timeouts and a small bounded retry, single node or cluster."""
    options: dict[str, Any] = dict(
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        # jittered, so that many clients retrying after a blip do not retry in step
        retry=Retry(EqualJitterBackoff(cap=0.05, base=0.005), settings.retries),
        health_check_interval=30,
        max_connections=settings.max_connections,
    )
    if settings.url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=settings.tls_ca_file or None,
            ssl_certfile=settings.tls_cert_file or None,
            ssl_keyfile=settings.tls_key_file or None,
        )
    options.update(overrides)
    if not settings.cluster:
        return redis.Redis.from_url(settings.url, **options)
    try:  # a cluster client asks the nodes for the slots at once
        return RedisCluster.from_url(settings.url, **options)
    except redis.exceptions.RedisClusterException as exc:
        if "cluster mode is not enabled" in str(exc).lower() or "cluster_enabled" in str(exc):
            raise ConfigError(
                f"PRESCORE_REDIS_CLUSTER=1, but the Redis at {safe_url(settings.url)} is not a "
                "cluster (set PRESCORE_REDIS_CLUSTER=0)"
            ) from None
        raise StoreUnavailable(
            f"cannot reach the Redis Cluster at {safe_url(settings.url)}", code="store_unavailable"
        ) from None


@contextmanager
def store_errors(action: str = "talking to Redis") -> Iterator[None]:
    """Re-raise a Redis outage as StoreUnavailable, with a message a client can show."""
    try:
        yield
    except OUTAGES as exc:
        raise StoreUnavailable(f"store unavailable while {action}: {type(exc).__name__}") from exc


def as_text(raw: bytes | str) -> str:
    """A reply as text (clients decode replies or not, as they were built)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def as_bytes(raw: bytes | str) -> bytes:
    """A reply as bytes."""
    return raw.encode() if isinstance(raw, str) else raw


def mget(client: Client, keys: list[str]) -> list[Any]:
    """MGET that stays within one slot per command on Redis Cluster."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return list(client.mget_nonatomic(keys))
    return list(client.mget(keys))
