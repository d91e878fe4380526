"""Reading one version of a dataset from Redis, with a short per-process pointer cache.

A request resolves the pointer once and reads every key from that version, so an answer
never mixes versions. The pointer is cached for ``pointer_cache_s`` per process: a hit
then costs one Redis round trip. A publish keeps the previous version's keys for
rollback, so a cached pointer still reads complete data; and when a read misses, the
pointer is read afresh and the keys read again from the new version if it moved (a
version retired or rolled back meanwhile), so neither the cache nor a publish racing a
read turns a hit into a miss or a partial answer. A dataset this process has seen
published whose pointer is then gone was lost by the store (Redis restarted without its
data): that is a 503 ``dataset_lost``, never a 404 that reads as "no such key".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.connection import AbstractConnection

from prescore import keys
from prescore.codec import VersionInfo
from prescore.errors import NotFound, StoreUnavailable
from prescore.redis_client import OUTAGES, Client, mget

_INFO_CACHE_MAX = 64


class LeanReader:
    """GET / MGET on one connection per thread, skipping the pool and retry machinery.

    The hot path of the API is one GET; this halves the client-side cost of it. A
    connection broken since its last use (Redis restarted) is reconnected and the
    command sent once more; any other failure raises at once (no retry loop).
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._new = lambda: pool.connection_class(**pool.connection_kwargs)
        self._local = threading.local()

    def _conn(self) -> AbstractConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._local.conn = self._new()
            self._local.pid = os.getpid()
        return conn

    def read(self, names: list[str]) -> list[bytes | None]:
        conn = self._conn()
        command = ("GET", names[0]) if len(names) == 1 else ("MGET", *names)
        try:
            reply = self._send(conn, command)
        except redis.ConnectionError:
            conn.disconnect()
            reply = self._send(conn, command)  # once, on a fresh connection
        return [reply] if len(names) == 1 else list(reply)

    @staticmethod
    def _send(conn: AbstractConnection, command: tuple[str, ...]) -> Any:
        try:
            conn.send_command(*command)
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise


@dataclass(frozen=True)
class Resolved:
    """The version one request reads, with what the registry says of it."""

    dataset: str
    version: str
    model: str = ""
    model_version: str = ""


class StoreReader:
    """Read payloads of one dataset version; Redis outages become StoreUnavailable."""

    def __init__(
        self,
        client: Client,
        pointer_cache_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.pointer_cache_s = pointer_cache_s
        self._clock = clock
        self._pointers: dict[str, tuple[float, Resolved]] = {}
        self._infos: dict[tuple[str, str], Resolved] = {}  # version ids never change meaning
        self._lock = threading.Lock()
        self._seen: set[str] = set()  # datasets this process has found published
        self._lean = LeanReader(client) if isinstance(client, redis.Redis) else None
        self.on_error: Callable[[str], None] | None = None  # (action): counts outages

    def _outage(self, action: str, doing: str, exc: BaseException) -> StoreUnavailable:
        """The error a Redis outage while ``doing`` is, told to ``on_error`` as ``action``
        (a plain try/except where this is used: a context manager costs the hot path)."""
        if self.on_error is not None:
            self.on_error(action)
        return StoreUnavailable(f"store unavailable while {doing}: {type(exc).__name__}")

    def resolve(self, dataset: str, *, fresh: bool = False) -> Resolved:
        """The version readers use now (cached for ``pointer_cache_s`` unless ``fresh``)."""
        if not fresh and self.pointer_cache_s > 0:
            cached = self._pointers.get(dataset)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
        try:
            raw = self.client.get(keys.pointer_key(dataset))
        except OUTAGES as exc:
            raise self._outage("pointer", "reading the version pointer", exc) from exc
        if raw is None:
            self._pointers.pop(dataset, None)
            if dataset in self._seen:  # it was published: the store lost it
                raise StoreUnavailable(
                    f"the published data of {dataset!r} is missing from the store (it was "
                    "lost, e.g. Redis restarted empty); it must be republished",
                    code="dataset_lost",
                )
            raise NotFound(f"no published version of {dataset!r}", code="no_version")
        self._seen.add(dataset)
        version = raw.decode() if isinstance(raw, bytes) else raw
        resolved = self._info(dataset, version)
        if self.pointer_cache_s > 0:
            self._pointers[dataset] = (self._clock() + self.pointer_cache_s, resolved)
        return resolved

    def _info(self, dataset: str, version: str) -> Resolved:
        found = self._infos.get((dataset, version))
        if found is not None:
            return found
        try:
            raw = self.client.hget(keys.registry_key(dataset), version)
        except OUTAGES as exc:
            raise self._outage("registry", "reading the version registry", exc) from exc
        info = VersionInfo.from_bytes(raw) if raw is not None else None
        resolved = Resolved(
            dataset, version, info.model if info else "", info.model_version if info else ""
        )
        with self._lock:
            if len(self._infos) >= _INFO_CACHE_MAX:
                self._infos.clear()
            self._infos[(dataset, version)] = resolved
        return resolved

    def read(self, dataset: str, entity_keys: list[str]) -> tuple[Resolved, list[bytes | None]]:
        """Every key from one version: the payload bytes, or None where it is missing."""
        resolved = self.resolve(dataset)
        values = self._get(dataset, resolved.version, entity_keys)
        if any(v is None for v in values):
            latest = self.resolve(dataset, fresh=True)
            if latest.version != resolved.version:
                resolved, values = latest, self._get(dataset, latest.version, entity_keys)
        return resolved, values

    def _get(self, dataset: str, version: str, entity_keys: list[str]) -> list[bytes | None]:
        names = [keys.value_key(dataset, version, k) for k in entity_keys]
        try:
            if self._lean is not None:
                return self._lean.read(names)
            if len(names) == 1:
                return [cast("bytes | None", self.client.get(names[0]))]
            return mget(self.client, names)
        except OUTAGES as exc:
            raise self._outage("payloads", "reading payloads", exc) from exc

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except OUTAGES as exc:
            raise self._outage("ping", "pinging Redis", exc) from exc
