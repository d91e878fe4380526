"""Building the Redis client from settings, and turning its outages into our errors."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import redis
from redis.backoff import EqualJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from prescore.errors import ConfigError, PrescoreError, StoreUnavailable
from prescore.logs import masked_url
from prescore.settings import RedisSettings

Client: TypeAlias = "redis.Redis | RedisCluster"

# What a dead, restarting or overloaded Redis raises; all mean "try again later".
OUTAGES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    # a cluster whose topology cannot be read or whose slots are not covered
    redis.exceptions.RedisClusterException,
    OSError,
)


def connect(settings: RedisSettings, *, retry_timeouts: bool = True, **overrides: Any) -> Client:
    """A client with short timeouts and a small bounded retry, single node or cluster.
    ``retry_timeouts`` False: only a connection that failed is tried again, a read that
    timed out is final (a request then waits for a stalled Redis one timeout, not one a
    try: the lookup's). redis-py's cluster client retries timeouts with its connection
    errors alike: there it means no retry at all."""
    retried: tuple[type[Exception], ...] = (redis.ConnectionError,)
    if retry_timeouts:
        retried += (redis.TimeoutError, socket.timeout)
    retries = settings.retries if retry_timeouts or not settings.cluster else 0
    options: dict[str, Any] = dict(
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        # jittered, so that many clients retrying after a blip do not retry in step
        retry=Retry(EqualJitterBackoff(cap=0.05, base=0.005), retries, supported_errors=retried),
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
                f"PRESCORE_REDIS_CLUSTER=1, but the Redis at {masked_url(settings.url)} is not a "
                "cluster (set PRESCORE_REDIS_CLUSTER=0)"
            ) from None
        raise StoreUnavailable(
            f"cannot reach the Redis Cluster at {masked_url(settings.url)}",
            code="store_unavailable",
        ) from None


REFUSED = "redis_refused"  # check_policy's code for a Redis that refuses this client


def check_policy(client: Client) -> None:
    """ConfigError when Redis may evict any key under memory pressure (``maxmemory-policy``
    ``allkeys-*``): published versions would vanish, answered as 404s. ``noeviction`` and
    ``volatile-*`` are safe: only live write-backs and short-lived keys have a TTL (a
    writer's lease has none); ConfigError too when Redis refuses the credentials. A Redis
    that cannot be reached passes: it is checked again by the next writer or service
    that reaches it."""
    try:
        if isinstance(client, RedisCluster):
            found = client.info("memory", target_nodes=RedisCluster.ALL_NODES)
            nodes = [v for v in found.values() if isinstance(v, dict)] or [found]
        else:
            nodes = [client.info("memory")]
    except redis.AuthenticationError:  # no outage: it would refuse every call the same
        raise ConfigError(
            f"the Redis at {_endpoint(client)} refused this client's credentials (the user "
            "and password of REDIS_URL)",
            code=REFUSED,
        ) from None
    except OUTAGES:
        return
    except redis.ResponseError as exc:  # e.g. a database number it does not have
        raise ConfigError(
            f"the Redis at {_endpoint(client)} refused this client: {exc} (REDIS_URL)",
            code=REFUSED,
        ) from None
    for node in nodes:
        policy = str(node.get("maxmemory_policy", ""))
        if policy.startswith("allkeys-"):
            raise ConfigError(
                f"the Redis at {_endpoint(client)} has maxmemory-policy {policy}: under memory "
                "pressure it would evict published versions; set noeviction (or a "
                "volatile-* policy, docs/reference.md: Store contract)"
            )


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps, a Spark task's error included) is Redis refusing
    a write at its ``maxmemory``."""
    while exc is not None:
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(
            exc
        ):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def memory(client: Client) -> tuple[int, int, str]:
    """Bytes Redis uses, its ``maxmemory`` (0: no limit) and its ``maxmemory-policy``;
    summed over a cluster's primaries, where a node without a limit makes the whole
    unlimited, and one that may evict makes the whole evicting."""
    if isinstance(client, RedisCluster):
        found = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        nodes = [v for v in found.values() if isinstance(v, dict)] or [found]
    else:
        nodes = [client.info("memory")]
    limits = [int(n.get("maxmemory", 0)) for n in nodes]
    used = sum(int(n.get("used_memory", 0)) for n in nodes)
    evicting = {str(n.get("maxmemory_policy", "")) for n in nodes} - {"noeviction"}
    policy = ",".join(sorted(evicting)) or "noeviction"
    return used, 0 if 0 in limits else sum(limits), policy


def full_message(client: Client) -> str:
    """What a publish that did not fit says: the memory figures of the Redis it filled."""
    try:
        info = client.info("memory")
        if isinstance(client, RedisCluster):
            info = next((v for v in info.values() if isinstance(v, dict)), info)
        used, limit = info.get("used_memory_human", "?"), info.get("maxmemory_human", "?")
        policy = info.get("maxmemory_policy", "?")
    except OUTAGES:
        used = limit = policy = "?"
    return (
        f"Redis is full: {used} used of maxmemory {limit} ({policy}); the version did not fit, "
        "what it wrote was removed and the live version is unchanged (make room: "
        "PRESCORE_KEEP_VERSIONS, prescore gc, or more maxmemory)"
    )


def _endpoint(client: Client) -> str:
    """Where ``client`` talks to, for a message (no password: none is in these fields)."""
    if isinstance(client, RedisCluster):
        return ", ".join(n.name for n in client.get_nodes())
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")


# Redis' own outages, without the plain OSError that OUTAGES also takes (a socket error
# redis-py lets through): for code that also reads files, whose OSErrors are not Redis'
REDIS_OUTAGES = tuple(e for e in OUTAGES if e is not OSError)


@contextmanager
def store_errors(
    action: str = "talking to Redis", outages: tuple[type[BaseException], ...] = OUTAGES
) -> Iterator[None]:
    """Re-raise a Redis outage as StoreUnavailable, with a message a client can show."""
    try:
        yield
    except PrescoreError:  # already one of ours (a file store's StorageUnavailable is an OSError)
        raise
    except outages as exc:
        raise StoreUnavailable(f"store unavailable while {action}", cause=outage(exc)) from exc


def outage(exc: BaseException) -> str:
    """What a Redis outage was, for the log (the caller is told only that the store is
    unavailable: not that it refused a password, say)."""
    return f"{type(exc).__name__}: {exc}"[:300]


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


def run_packed(client: redis.Redis, packed: Iterable[bytes]) -> list[Any]:
    """The replies of commands already packed (``hiredis.pack_command``), sent as they
    are packed on one of the client's connections: a bulk writer's, whose batches hold
    more arguments than redis-py's pipeline packs cheaply one by one, and whose Redis
    runs one command while the next is packed. As that pipeline does, an error reply is
    raised once every reply has been read, and a broken connection is tried again as the
    client's retry says (every command sent again, each once)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    todo = iter(packed)  # taken from once: a retry sends again only what was sent
    sent: list[bytes] = []
    try:
        replies: list[Any] = conn.retry.call_with_retry(
            lambda: _exchange(conn, todo, sent), lambda _: conn.disconnect()
        )
    except BaseException:  # replies may be left unread on it: not for the next user
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    error = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
    if error is not None:
        raise error
    return replies


_SEND_BYTES = 1 << 16  # packed commands sent together once they hold this many bytes


def _exchange(conn: Any, todo: Iterator[bytes], sent: list[bytes]) -> list[Any]:
    """Send what was ``sent`` before (a retry's), then the rest of ``todo``, each counted
    as sent before it goes; then read as many replies, each whole so that the next
    stays in step."""
    waiting, size, first = list(sent), sum(map(len, sent)), True
    for command in todo:
        sent.append(command)
        waiting.append(command)
        size += len(command)
        if size >= _SEND_BYTES:
            conn.send_packed_command([b"".join(waiting)], check_health=first)
            waiting, size, first = [], 0, False
    if waiting:
        conn.send_packed_command([b"".join(waiting)], check_health=first)
    replies: list[Any] = []
    for _ in sent:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies
