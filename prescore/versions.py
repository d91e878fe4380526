"""Versions of a dataset in Redis: write beside the live one, verify, switch, roll back.

A job calls ``begin`` (registry entry 'writing'), writes payloads with ``write_payloads``,
then ``publish`` verifies the key count and switches the pointer and the registry in one
MULTI/EXEC. A job that fails calls ``fail``; one that is killed leaves 'writing', which a
later ``retire_old`` removes once it is stale. The pointer only ever names a version
whose every key was written.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from prescore import keys
from prescore.codec import VersionInfo, sort_versions
from prescore.errors import NotFound, PublishError
from prescore.redis_client import Client, mget, mset
from prescore.settings import StoreSettings

HISTORY = 20  # retired and failed versions listed in the registry


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_payloads(
    client: Client, dataset: str, version: str, rows: Iterable[tuple[str, bytes]], batch: int = 1000
) -> int:
    """SET each ``(key, payload)`` under ``version``, ``batch`` keys an MSET; returns the count."""
    written = 0
    chunk: dict[str, bytes] = {}
    prefix = keys.version_prefix(dataset, version)  # + key: its value key
    for key, payload in rows:
        chunk[prefix + key] = payload
        written += 1
        if len(chunk) >= batch:
            mset(client, chunk)
            chunk = {}
    mset(client, chunk)
    return written


def read_current(client: Client, dataset: str, ids: list[str]) -> tuple[str, list[bytes | None]]:
    """Resolve the pointer once, then read every id from that one version."""
    version = client.get(keys.pointer_key(dataset))
    if version is None:
        raise NotFound(f"no published version of {dataset!r}", code="no_version")
    v = _text(version)
    return v, mget(client, [keys.value_key(dataset, v, i) for i in ids])


class Versions:
    """The version registry and pointer of one dataset."""

    def __init__(self, client: Client, dataset: str, settings: StoreSettings) -> None:
        self.client = client
        self.dataset = keys.check_dataset(dataset)
        self.settings = settings
        self._pointer = keys.pointer_key(dataset)
        self._registry = keys.registry_key(dataset)

    # -- reading ---------------------------------------------------------------
    def current(self) -> str | None:
        raw = self.client.get(self._pointer)
        return _text(raw) if raw is not None else None

    def get(self, version: str) -> VersionInfo:
        raw = self.client.hget(self._registry, version)
        if raw is None:
            raise NotFound(f"{self.dataset} has no version {version!r}", code="unknown_version")
        return VersionInfo.from_bytes(raw)

    def all(self) -> list[VersionInfo]:
        """Every registered version, newest first."""
        raw = self.client.hgetall(self._registry)
        return sort_versions([VersionInfo.from_bytes(v) for v in raw.values()])

    def count_keys(self, version: str) -> int:
        """Keys present under ``version`` (SCAN: never blocks Redis)."""
        pattern = keys.version_prefix(self.dataset, version) + "*"
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=5000))

    # -- writing ---------------------------------------------------------------
    def begin(self, model: str, model_version: str, note: str = "") -> VersionInfo:
        """Register a new version as 'writing' and return it."""
        newest = max((_text(v) for v in self.client.hkeys(self._registry)), default=None)
        info = VersionInfo(
            version=keys.new_version_id(after=newest),
            status="writing",
            model=model,
            model_version=model_version,
            started_at=utcnow_iso(),
            note=note,
        )
        self.client.hset(self._registry, info.version, info.to_bytes())
        return info

    def publish(self, version: str, expected_rows: int, *, retire: bool = True) -> VersionInfo:
        """Verify the count, then switch pointer and registry atomically; retire old ones
        (unless ``retire`` is False: the caller runs :meth:`retire_old` itself)."""
        info = self.get(version)
        if info.status != "writing":
            raise PublishError(f"version {version} is {info.status}, not writing")
        found = self.count_keys(version)
        if found != expected_rows or expected_rows == 0:
            self.fail(version, f"count check failed: expected {expected_rows}, found {found}")
            raise PublishError(
                f"{self.dataset} {version}: expected {expected_rows} keys, found {found}; "
                "the pointer was not moved"
            )
        now = utcnow_iso()
        done = info.replace(status="published", rows=found, finished_at=now, published_at=now)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._pointer, version)
        pipe.hset(self._registry, version, done.to_bytes())
        pipe.execute()
        if retire:
            self.retire_old()
        return done

    def fail(self, version: str, reason: str) -> None:
        """Mark a version failed and remove what it wrote; the pointer never names it."""
        if self.current() == version:
            raise PublishError(f"refusing to fail the live version {version}")
        info = self.get(version)
        self.client.hset(
            self._registry,
            version,
            info.replace(status="failed", finished_at=utcnow_iso(), note=reason).to_bytes(),
        )
        self.delete_keys(version)

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Point readers at ``to`` or at the newest published version before the live one."""
        live = self.current()
        if live is None:
            raise NotFound(f"{self.dataset} has no live version", code="no_version")
        candidates = [i for i in self.all() if i.status == "published" and i.version != live]
        if to is not None:
            candidates = [i for i in candidates if i.version == to]
        else:
            candidates = [i for i in candidates if i.version < live]
        if not candidates:
            raise NotFound(
                f"no published version of {self.dataset} to roll back to", code="no_rollback_target"
            )
        target = candidates[0]
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._pointer, target.version)
        pipe.hset(
            self._registry,
            live,
            self.get(live)
            .replace(status="rolled_back", note=f"rolled back to {target.version}")
            .to_bytes(),
        )
        pipe.execute()
        return target

    # -- housekeeping ----------------------------------------------------------
    def retire_old(self) -> list[str]:
        """Remove published versions beyond the newest N and stale writers; trim history."""
        live = self.current()
        stale_before = (
            datetime.now(timezone.utc) - timedelta(seconds=self.settings.stale_writing_s)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        kept = history = 0
        removed: list[str] = []
        for info in self.all():
            if info.version == live or (
                info.status == "published" and kept < self.settings.keep_versions
            ):
                kept += 1
                continue
            if info.status in ("published", "rolled_back"):
                removed.append(self._remove(info, "retired", info.note))
            elif info.status == "writing" and info.started_at <= stale_before:
                removed.append(self._remove(info, "failed", "killed while writing"))
            elif info.status == "writing":
                continue  # another job may still be writing it
            history += 1
            if history > HISTORY:  # the registry must not grow without bound
                self.client.hdel(self._registry, info.version)
        return removed

    def _remove(self, info: VersionInfo, status: str, note: str) -> str:
        self.delete_keys(info.version)
        self.client.hset(
            self._registry, info.version, info.replace(status=status, note=note).to_bytes()
        )
        return info.version

    def delete_keys(self, version: str) -> int:
        """UNLINK every key of ``version`` in batches (non-blocking on the server)."""
        pattern = keys.version_prefix(self.dataset, version) + "*"
        batch: list[bytes] = []
        deleted = 0
        for key in self.client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= self.settings.delete_batch:
                deleted += self._unlink(batch)
                batch = []
        if batch:
            deleted += self._unlink(batch)
        return deleted

    def _unlink(self, batch: list[bytes]) -> int:
        # One command a batch; redis-py's cluster client splits it by slot.
        return int(self.client.unlink(*batch))
