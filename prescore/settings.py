"""Typed, frozen settings built once from environment variables (and CLI flags).

Every deployable builds its settings at its entry point and passes them down; nothing
below reads ``os.environ``. Defaults make the local demo work. A bad value is refused
where it is read, in one line that names the variable, the value and what is allowed
(``LOOKUP_THREADS='four': must be an integer of at least 1``), never a traceback.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from prescore.data.datasets import Catalog, load
from prescore.errors import ConfigError
from prescore.logs import masked_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_var() -> Path:
    """Where state goes when no setting says: a checkout's var/ (the demo, the tests), else
    the user's data folder. An installed package's own folder is no place for it: it may
    be read-only, and an upgrade replaces it."""
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / "var"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "prescore"


DEFAULT_VAR = _default_var()
DEFAULT_SPARK_SCRATCH = str(Path(tempfile.gettempdir()) / "prescore-spark")


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value != "" else default


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" of at least {lo:g}"
    return f" of at most {hi:g}" if hi is not None else ""


def _checked(
    name: str, raw: str, value: float, what: str, lo: float | None, hi: float | None
) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={raw!r}: must be {what}{_bounds(lo, hi)}")


def env_int(
    env: Mapping[str, str], name: str, default: int, lo: int | None = 0, hi: int | None = None
) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer{_bounds(lo, hi)}") from None
    _checked(name, raw, value, "an integer", lo, hi)
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    lo: float | None = 0.0,
    hi: float | None = None,
) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r}: must be a number{_bounds(lo, hi)}")
    _checked(name, raw, value, "a number", lo, hi)
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "1" if default else "0")
    if raw.lower() not in _TRUE + _FALSE:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(_TRUE + _FALSE)}")
    return raw.lower() in _TRUE


def env_choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = _get(env, name, default)
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


def env_url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    """A URL whose scheme is one of ``schemes`` (the value shown with no password)."""
    raw = _get(env, name, default)
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        shown = masked_url(raw)
        allowed = ", ".join(f"{s}://" if s else "a path" for s in schemes)
        raise ConfigError(f"{name}={shown!r}: must be a URL of {allowed}")
    return raw


REDIS_SCHEMES = ("redis", "rediss", "unix")
STORE_SCHEMES = ("file", "hdfs", "s3", "")  # "": a plain path


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return _get(env, name, default)


def env_bind(env: Mapping[str, str], name: str, default: str) -> str:
    """``host:port`` to listen on (empty when the default is empty: not listening)."""
    raw = _get(env, name, default)
    if not raw:
        return raw
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r}: must be host:port (e.g. 0.0.0.0:9090)")
    return raw


def env_secret(env: Mapping[str, str], name: str, min_length: int = 16) -> str:
    """A shared secret: empty (none), or at least ``min_length`` characters; never shown."""
    raw = env.get(name, "")
    if raw and (len(raw) < min_length or raw != raw.strip()):
        raise ConfigError(
            f"{name}: must be at least {min_length} characters with no surrounding spaces "
            f"(got {len(raw)} characters)"
        )
    return raw


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the store. Timeouts are short: a slow Redis is an outage."""

    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    socket_timeout_s: float = 1.0
    connect_timeout_s: float = 0.25
    retries: int = 1
    max_connections: int = 64
    # rediss:// only: the CA that signed the server's certificate, and this client's own
    # certificate and key where the server asks for one (mutual TLS)
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings:
        return cls(
            url=env_url(env, "REDIS_URL", cls.url, REDIS_SCHEMES),
            cluster=env_bool(env, "PRESCORE_REDIS_CLUSTER", cls.cluster),
            socket_timeout_s=env_float(
                env, "PRESCORE_REDIS_TIMEOUT_S", cls.socket_timeout_s, lo=0.001, hi=60
            ),
            connect_timeout_s=env_float(
                env, "PRESCORE_REDIS_CONNECT_TIMEOUT_S", cls.connect_timeout_s, lo=0.001, hi=60
            ),
            retries=env_int(env, "PRESCORE_REDIS_RETRIES", cls.retries, hi=10),
            max_connections=env_int(
                env, "PRESCORE_REDIS_MAX_CONNECTIONS", cls.max_connections, lo=1
            ),
            tls_ca_file=env_str(env, "PRESCORE_REDIS_TLS_CA_FILE", ""),
            tls_cert_file=env_str(env, "PRESCORE_REDIS_TLS_CERT_FILE", ""),
            tls_key_file=env_str(env, "PRESCORE_REDIS_TLS_KEY_FILE", ""),
        )


@dataclass(frozen=True)
class StoreSettings:
    """Version lifecycle in Redis."""

    keep_versions: int = 3  # published versions kept for rollback, the live one included
    live_ttl_s: int = 86_400  # TTL of live write-back entries
    live_max_keys: int = 100_000  # live write-backs a version may gain per TTL window
    # A writer renews its lease every third of this; a version whose lease lapsed was
    # left by a killed writer: it shows as dead and the next job or gc removes it.
    writer_lease_s: float = 30.0
    delete_batch: int = 1000  # keys per UNLINK when removing an old version

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StoreSettings:
        return cls(
            keep_versions=env_int(env, "PRESCORE_KEEP_VERSIONS", cls.keep_versions, lo=1),
            live_ttl_s=env_int(env, "PRESCORE_LIVE_TTL_S", cls.live_ttl_s, lo=1),
            live_max_keys=env_int(env, "PRESCORE_LIVE_MAX_KEYS", cls.live_max_keys),
            writer_lease_s=env_float(env, "PRESCORE_WRITER_LEASE_S", cls.writer_lease_s, lo=0.1),
        )


@dataclass(frozen=True)
class ModelStoreSettings:
    """Where models live: ``file://...`` (default, under var/), ``hdfs://host:port/path``
    or ``s3://bucket/prefix``."""

    root: str = (DEFAULT_VAR / "models").as_uri()
    webhdfs_url: str = ""  # e.g. http://namenode:9870; derived from root when empty
    hdfs_user: str = ""
    cache_dir: str = str(DEFAULT_VAR / "model-cache")
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ModelStoreSettings:
        return cls(
            root=env_url(env, "PRESCORE_MODEL_STORE", cls.root, STORE_SCHEMES),
            webhdfs_url=env_str(env, "PRESCORE_WEBHDFS_URL", cls.webhdfs_url),
            hdfs_user=env_str(env, "PRESCORE_HDFS_USER", cls.hdfs_user),
            cache_dir=env_str(env, "PRESCORE_MODEL_CACHE", cls.cache_dir),
            timeout_s=env_float(env, "PRESCORE_MODEL_STORE_TIMEOUT_S", cls.timeout_s, lo=0.1),
        )


@dataclass(frozen=True)
class Settings:
    """What every deployable shares."""

    redis: RedisSettings = field(default_factory=RedisSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    models: ModelStoreSettings = field(default_factory=ModelStoreSettings)
    var_dir: str = str(DEFAULT_VAR)
    catalog: Catalog = field(default_factory=Catalog)  # the declared datasets
    # where local-mode jobs keep their Spark scratch, a folder per job process
    spark_scratch: str = DEFAULT_SPARK_SCRATCH

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        config = env_str(env, "PRESCORE_CONFIG", "")
        return cls(
            redis=RedisSettings.from_env(env),
            store=StoreSettings.from_env(env),
            models=ModelStoreSettings.from_env(env),
            var_dir=env_str(env, "PRESCORE_VAR", str(DEFAULT_VAR)),
            catalog=load(config, env) if config else Catalog(),
            spark_scratch=env_str(env, "PRESCORE_SPARK_SCRATCH", DEFAULT_SPARK_SCRATCH),
        )

    def with_overrides(
        self,
        redis_url: str | None = None,
        model_store: str | None = None,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """These settings with the command-line flags that every entry point takes, each
        checked as its variable is (a bad one is a ConfigError naming the flag)."""
        out = self
        if redis_url:
            url = env_url({"--redis-url": redis_url}, "--redis-url", "", REDIS_SCHEMES)
            out = replace(out, redis=replace(out.redis, url=url))
        if model_store:
            root = env_url({"--model-store": model_store}, "--model-store", "", STORE_SCHEMES)
            out = replace(out, models=replace(out.models, root=root))
        if config:
            out = replace(out, catalog=load(config, env))
        return out
