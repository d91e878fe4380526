"""Typed, frozen settings built once from environment variables (and CLI flags).

Every deployable builds its settings at its entry point and passes them down; nothing
below reads ``os.environ``. Defaults make the local demo work. Each setting is declared
once, on its field (prescore.env): its variable, bounds, default and doc, from which it
is read and checked, ``prescore config`` lists it and docs/reference.md's tables come.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis

from prescore.data.datasets import Catalog, load
from prescore.env import env_str, env_url, group, read, setting
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


REDIS_SCHEMES = ("redis", "rediss", "unix")
STORE_SCHEMES = ("file", "hdfs", "s3", "gs", "")  # "": a plain path


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the store. Timeouts are short: a slow Redis is an outage."""

    url: str = setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        kind="url",
        schemes=REDIS_SCHEMES,
        doc="the store (`rediss://` for TLS, `unix://`); its password is never logged",
    )
    cluster: bool = setting("PRESCORE_REDIS_CLUSTER", False, doc="talk Redis Cluster")
    socket_timeout_s: float = setting(
        "PRESCORE_REDIS_TIMEOUT_S", 1.0, lo=0.001, hi=60, doc="socket timeout of a Redis call"
    )
    connect_timeout_s: float = setting(
        "PRESCORE_REDIS_CONNECT_TIMEOUT_S", 0.25, lo=0.001, hi=60, doc="connect timeout"
    )
    retries: int = setting(
        "PRESCORE_REDIS_RETRIES",
        1,
        hi=10,
        doc="retries of a Redis call whose connection failed (the lookup never retries a "
        "read that timed out)",
    )
    max_connections: int = setting(
        "PRESCORE_REDIS_MAX_CONNECTIONS", 64, lo=1, doc="the connection pool's size"
    )
    tls_ca_file: str = setting(
        "PRESCORE_REDIS_TLS_CA_FILE",
        "",
        kind="path",
        doc="`rediss://`: the CA that signed the server's certificate",
    )
    tls_cert_file: str = setting(
        "PRESCORE_REDIS_TLS_CERT_FILE",
        "",
        kind="path",
        doc="`rediss://`: this client's certificate (mTLS)",
    )
    tls_key_file: str = setting(
        "PRESCORE_REDIS_TLS_KEY_FILE", "", kind="path", doc="`rediss://`: this client's key (mTLS)"
    )

    def __post_init__(self) -> None:
        try:  # its options (?socket_timeout=...) too: refused here, not by the first call
            redis.connection.parse_url(self.url)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL={masked_url(self.url)!r}: {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings:
        return read(cls, env)


@dataclass(frozen=True)
class StoreSettings:
    """Version lifecycle in Redis."""

    keep_versions: int = setting(
        "PRESCORE_KEEP_VERSIONS",
        3,
        lo=1,
        doc="published versions kept for rollback, the live one included",
    )
    live_ttl_s: int = setting("PRESCORE_LIVE_TTL_S", 86_400, lo=1, doc="TTL of live write-backs")
    live_max_keys: int = setting(
        "PRESCORE_LIVE_MAX_KEYS", 100_000, doc="live write-backs a version may gain per TTL"
    )
    # A writer renews its lease every third of this; a version whose lease lapsed was
    # left by a killed writer: it shows as dead and the next job or gc removes it.
    writer_lease_s: float = setting(
        "PRESCORE_WRITER_LEASE_S",
        30.0,
        lo=0.1,
        doc="a writer's lease; a killed or paused writer is dead after this, and its later "
        "writes and publish are refused",
    )
    delete_batch: int = 1000  # keys per UNLINK when removing an old version

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StoreSettings:
        return read(cls, env)


@dataclass(frozen=True)
class ModelStoreSettings:
    """Where models live: ``file://...`` (default, under var/), ``hdfs://host:port/path``
    ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""

    root: str = setting(
        "PRESCORE_MODEL_STORE",
        (DEFAULT_VAR / "models").as_uri(),
        kind="url",
        schemes=STORE_SCHEMES,
        shown="file://<var>/models",
        doc="the model store's root",
    )
    webhdfs_url: str = setting(
        "PRESCORE_WEBHDFS_URL", "", doc="WebHDFS endpoint of an `hdfs://` root (default: derived)"
    )
    hdfs_user: str = setting("PRESCORE_HDFS_USER", "", doc="the user HDFS is read as")
    cache_dir: str = setting(
        "PRESCORE_MODEL_CACHE",
        str(DEFAULT_VAR / "model-cache"),
        kind="path",
        shown="<var>/model-cache",
        doc="where versions of an `hdfs://`, `s3://` or `gs://` store are downloaded to",
    )
    timeout_s: float = setting(
        "PRESCORE_MODEL_STORE_TIMEOUT_S",
        30.0,
        lo=0.1,
        doc="timeout of a store call (the model store's, and `prescore publish`'s source's)",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ModelStoreSettings:
        return read(cls, env)


@dataclass(frozen=True)
class Settings:
    """What every deployable shares."""

    redis: RedisSettings = group(RedisSettings)
    store: StoreSettings = group(StoreSettings)
    models: ModelStoreSettings = group(ModelStoreSettings)
    config: str = setting("PRESCORE_CONFIG", "", kind="path", doc="the dataset declarations (TOML)")
    var_dir: str = setting(
        "PRESCORE_VAR",
        str(DEFAULT_VAR),
        kind="path",
        shown="<var>",
        doc="where state goes unless set apart: the demo's data, and the model store and "
        "its cache by default. `<var>` is a checkout's `var/`, an installed copy's "
        "`$XDG_DATA_HOME/prescore` (`~/.local/share/prescore`)",
    )
    catalog: Catalog = field(default_factory=Catalog)  # the declared datasets
    spark_scratch: str = setting(
        "PRESCORE_SPARK_SCRATCH",
        DEFAULT_SPARK_SCRATCH,
        kind="path",
        shown="<temp dir>/prescore-spark",
        doc="local-mode jobs' Spark scratch, a folder per job process (a killed job's is "
        "removed by the next job)",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        config = env_str(env, "PRESCORE_CONFIG", "")
        return read(cls, _var_defaults(env), catalog=load(config, env) if config else Catalog())

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
            out = replace(out, config=config, catalog=load(config, env))
        return out


def _var_defaults(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with the model store and its cache under ``PRESCORE_VAR`` where it names
    a folder and they are not set themselves (their defaults are documented as there)."""
    var = env.get("PRESCORE_VAR", "")
    if not var:
        return env
    under = {
        "PRESCORE_MODEL_STORE": (Path(var).absolute() / "models").as_uri(),
        "PRESCORE_MODEL_CACHE": str(Path(var) / "model-cache"),
    }
    return {**under, **{k: v for k, v in env.items() if v or k not in under}}  # "": unset
