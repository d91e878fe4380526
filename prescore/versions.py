"""Versions of a dataset in Redis: write beside the live one, verify, switch, roll back.

A writer calls ``begin`` (registry entry 'writing' with its bucket count, and a lease),
keeps the lease alive with :meth:`Versions.lease` while its tasks write payloads with
``prescore.values.write``, then ``publish`` verifies the key count (what the version's
buckets hold) and switches the pointer and the registry in one MULTI/EXEC. A publish
only moves forward: a version older than the live one (a late or orphaned job) is
refused unless forced, and a forced one says so in the registry. A writer that fails
calls ``fail``. One that is killed stops renewing its lease, which
expires within ``writer_lease_s``: its version then lists as ``dead`` with the keys it
wrote, and the next job or ``gc`` removes it. The pointer only ever names a version
whose every key was written. A rollback keeps the version it leaves published, so it can
be rolled forward to again and is retired only as versions beyond the newest N are.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from prescore import keys, values
from prescore.codec import VersionInfo, sort_versions
from prescore.errors import NotFound, PublishError
from prescore.redis_client import Client, as_text
from prescore.settings import StoreSettings
from prescore.values import Placed

HISTORY = 20  # retired and failed versions listed in the registry
DEFAULT_KEYS = 100_000  # a first version's bucket count assumes this many keys


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_payloads(
    client: Client, dataset: str, version: str, rows: Iterable[tuple[str, bytes]], batch: int = 2000
) -> int:
    """Write ``(key, payload)`` rows into a registered version's buckets; how many."""
    where = Versions(client, dataset, StoreSettings()).placed(version)
    return values.write(client, where, rows, batch)


def read_current(client: Client, dataset: str, ids: list[str]) -> tuple[str, list[bytes | None]]:
    """Resolve the pointer once, then read every id from that one version (as served)."""
    version = client.get(keys.pointer_key(dataset))
    if version is None:
        raise NotFound(f"no published version of {dataset!r}", code="no_version")
    where = Versions(client, dataset, StoreSettings()).placed(as_text(version))
    return where.version, values.read(client, where, ids)


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
        return as_text(raw) if raw is not None else None

    def get(self, version: str) -> VersionInfo:
        raw = self.client.hget(self._registry, version)
        if raw is None:
            raise NotFound(f"{self.dataset} has no version {version!r}", code="unknown_version")
        return VersionInfo.from_bytes(raw)

    def all(self) -> list[VersionInfo]:
        """Every registered version, newest first; a writing one with the keys it has
        written so far, and as ``dead`` once its writer's lease has lapsed."""
        raw = self.client.hgetall(self._registry)
        infos = sort_versions([VersionInfo.from_bytes(v) for v in raw.values()])
        return [self._live_view(i) if i.status == "writing" else i for i in infos]

    def _live_view(self, info: VersionInfo) -> VersionInfo:
        rows = values.written(self.client, self.placed(info.version, info))
        alive = self.client.exists(keys.lease_key(self.dataset, info.version))
        return info.replace(rows=rows, status="writing" if alive else "dead")

    def placed(self, version: str, info: VersionInfo | None = None) -> Placed:
        """Where the keys of ``version`` live."""
        info = info or self.get(version)
        return Placed(self.dataset, version, info.buckets)

    def count_keys(self, version: str) -> int:
        """Keys present under ``version``, counted in its own buckets."""
        return values.count(self.client, self.placed(version))

    # -- writing ---------------------------------------------------------------
    def begin(
        self, model: str, model_version: str, note: str = "", expected_keys: int = 0
    ) -> VersionInfo:
        """Remove dead writers' versions, then register a new version as 'writing' with
        its lease, and return it. Its buckets are sized for ``expected_keys`` (else for
        the live version's rows, else for DEFAULT_KEYS)."""
        self.reap_dead()
        newest = max((as_text(v) for v in self.client.hkeys(self._registry)), default=None)
        live = self.client.hget(self._registry, self.current() or "")
        rows = VersionInfo.from_bytes(live).rows if live is not None else 0
        guess = expected_keys or rows or DEFAULT_KEYS
        info = VersionInfo(
            version=keys.new_version_id(after=newest),
            status="writing",
            model=model,
            model_version=model_version,
            buckets=keys.bucket_count(guess),
            started_at=utcnow_iso(),
            note=note,
        )
        self.renew(info.version)
        self.client.hset(self._registry, info.version, info.to_bytes())
        return info

    def renew(self, version: str) -> None:
        """Hold the lease of ``version`` for another ``writer_lease_s``."""
        ms = int(self.settings.writer_lease_s * 1000)
        self.client.set(keys.lease_key(self.dataset, version), b"1", px=max(ms, 1))

    @contextmanager
    def lease(self, version: str) -> Iterator[None]:
        """Renew the lease of ``version`` every third of ``writer_lease_s`` while inside."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.settings.writer_lease_s / 3):
                try:
                    self.renew(version)
                except Exception:
                    continue

        thread = threading.Thread(target=beat, name=f"lease-{version}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1)

    def _done_writing(self, pipe: object, version: str) -> None:
        pipe.delete(keys.lease_key(self.dataset, version))  # type: ignore[attr-defined]
        pipe.delete(keys.written_key(self.dataset, version))  # type: ignore[attr-defined]

    def publish(
        self,
        version: str,
        expected_rows: int,
        *,
        retire: bool = True,
        force: bool = False,
        figures: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """Verify the count, then switch pointer and registry atomically; retire old ones
        (unless ``retire`` is False: the caller runs :meth:`retire_old` itself). A version
        older than the live one is refused unless ``force``. ``figures`` (a run's duration,
        rows scored, ...) are kept in the registry entry, where the exporter reads them."""
        info = self.get(version)
        if info.status != "writing":
            raise PublishError(f"version {version} is {info.status}, not writing")
        live = self.current()
        note = info.note
        if live is not None and version < live:
            if not force:
                why = f"older than the live version {live}: a late or orphaned job"
                self.fail(version, why)
                raise PublishError(
                    f"{self.dataset} {version} is {why}; refused (force to publish it anyway)",
                    code="stale_publish",
                )
            note = f"forced over the newer live version {live}" + (f"; {note}" if note else "")
        found = self.count_keys(version)
        if found != expected_rows or expected_rows == 0:
            self.fail(version, f"count check failed: expected {expected_rows}, found {found}")
            raise PublishError(
                f"{self.dataset} {version}: expected {expected_rows} keys, found {found}; "
                "the pointer was not moved"
            )
        now = utcnow_iso()
        done = info.replace(
            status="published",
            rows=found,
            finished_at=now,
            published_at=now,
            note=note,
            extra={**info.extra, **(figures or {})},
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._pointer, version)
        pipe.hset(self._registry, version, done.to_bytes())
        self._done_writing(pipe, version)
        pipe.execute()
        if retire:
            self.retire_old()
        return done

    def gate(self, version: str, rows: int, report: Mapping[str, Any], summary: str) -> VersionInfo:
        """Keep a version that failed its data gates unpublished: ``gated``, with the
        gates' report; its keys stay, to be looked at or released."""
        info = self.get(version)
        entry = info.replace(
            status="gated", rows=rows, finished_at=utcnow_iso(), note=f"gated: {summary}",
            extra={**info.extra, "gates": dict(report)},
        )  # fmt: skip
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._registry, version, entry.to_bytes())
        self._done_writing(pipe, version)
        pipe.execute()
        return entry

    def release(self, version: str, by: str, reason: str) -> VersionInfo:
        """Publish a gated version anyway: an operator's decision, recorded in its entry."""
        info = self.get(version)
        if info.status != "gated":
            raise PublishError(f"version {version} is {info.status}, not gated", code="not_gated")
        if not reason.strip():
            raise PublishError("say why the gates are overridden (--reason)", code="no_reason")
        found = self.count_keys(version)
        if found != info.rows:
            raise PublishError(
                f"{self.dataset} {version}: expected {info.rows} keys, found {found}; "
                "it cannot be released", code="publish_failed",
            )  # fmt: skip
        now = utcnow_iso()
        done = info.replace(
            status="published", published_at=now,
            note=f"released by {by} over its gates: {reason}",
            extra={**info.extra, "released_by": by, "released_at": now, "release_reason": reason},
        )  # fmt: skip
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._pointer, version)
        pipe.hset(self._registry, version, done.to_bytes())
        pipe.execute()
        return done

    def fail(self, version: str, reason: str, status: str = "failed") -> None:
        """Mark a version failed and remove what it wrote; the pointer never names it."""
        if self.current() == version:
            raise PublishError(f"refusing to fail the live version {version}")
        info = self.get(version)
        pipe = self.client.pipeline(transaction=True)
        entry = info.replace(status=status, finished_at=utcnow_iso(), note=reason)
        pipe.hset(self._registry, version, entry.to_bytes())
        self._done_writing(pipe, version)
        pipe.execute()
        self.delete_keys(version)

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Point readers at ``to`` or at the newest published version before the live one.

        The version left stays published (noted), so rolling forward to it again works."""
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
        left = self.get(live).replace(note=f"rolled back to {target.version} at {utcnow_iso()}")
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._pointer, target.version)
        pipe.hset(self._registry, live, left.to_bytes())
        pipe.execute()
        return target

    # -- housekeeping ----------------------------------------------------------
    def reap_dead(self) -> list[str]:
        """Remove the versions of writers whose lease lapsed (killed jobs)."""
        dead = [i.version for i in self.all() if i.status == "dead"]
        for version in dead:
            self.fail(version, "dead: its writer stopped renewing its lease", status="failed")
        return dead

    def retire_old(self) -> list[str]:
        """Remove dead writers' versions and published ones beyond the newest N (the live
        one always kept); trim the history."""
        removed = self.reap_dead()
        live = self.current()
        kept = history = 0
        gated_seen = False
        for info in self.all():
            if info.status == "gated":  # the newest keeps its keys, to be released
                if gated_seen and not info.note.endswith("(keys removed)"):
                    self.delete_keys(info.version)
                    entry = info.replace(note=info.note + " (keys removed)")
                    self.client.hset(self._registry, info.version, entry.to_bytes())
                gated_seen = True
            if info.version == live or (
                info.status == "published" and kept < self.settings.keep_versions
            ):
                kept += 1
                continue
            if info.status == "published":
                removed.append(self._remove(info, "retired", info.note))
            elif info.status == "writing":
                continue  # its writer is alive
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
        """UNLINK every key of ``version``, found from its own record (prescore.values)."""
        where, store = self.placed(version), self.settings
        return values.delete(self.client, where, store.delete_batch, store.live_ttl_s)
