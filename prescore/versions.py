"""Versions of a dataset in Redis: write beside the live one, verify, switch, roll back.

A writer calls ``begin`` (registry entry 'writing' with its bucket count, and a lease
held by a token only it knows), keeps the lease alive with :meth:`Versions.lease` while
its tasks write payloads with ``prescore.values.write`` (each batch only while the lease
is still its own: :meth:`Versions.fence`), then ``publish`` verifies the key count (what
the version's buckets hold) and switches the pointer and the registry. Every transition
is a compare-and-set (prescore.transitions): whatever a concurrent writer, rollback or
gc changed between reading and switching makes the switch read and decide again, so no
interleaving moves the pointer backwards or names a version that is not published. A
publish only moves forward: a version older than the live one (a late or orphaned job)
is refused unless forced, and a forced one says so in the registry. A writer that fails
calls ``fail``. One that is killed stops renewing its lease, which lapses within
``writer_lease_s``: its version then lists as ``dead`` with the keys it wrote, and the
next job or ``gc`` removes it; should it wake, its next batch and its publish are
refused. A rollback keeps the version it leaves published, so it can be rolled forward
to again and is retired only as versions beyond the newest N are.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from typing import Any

import redis

from prescore import keys, values
from prescore.codec import VersionInfo, sort_versions
from prescore.errors import NotFound, PublishError
from prescore.redis_client import (
    OUTAGES,
    Client,
    as_bytes,
    as_text,
    check_policy,
    full_message,
    is_full,
)
from prescore.settings import StoreSettings
from prescore.transitions import Change, Conflict, Registry, new_token, transition
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
        self._cas = Registry(client, self.dataset)
        self._tokens: dict[str, str] = {}  # the leases this writer took: version -> token

    # -- reading ---------------------------------------------------------------
    def current(self) -> str | None:
        raw = self.client.get(self._pointer)
        return as_text(raw) if raw is not None else None

    def get(self, version: str) -> VersionInfo:
        return VersionInfo.from_bytes(self._raw(version))

    def _writing(self, version: str, status: str = "writing") -> tuple[bytes, VersionInfo]:
        """The entry of ``version`` as stored and read, refused unless it is ``status``."""
        raw = self._raw(version)
        info = VersionInfo.from_bytes(raw)
        if info.status != status:
            raise PublishError(
                f"version {version} is {info.status}, not {status}",
                code="not_gated" if status == "gated" else "publish_failed",
            )
        return raw, info

    def _raw(self, version: str) -> bytes:
        raw = self.client.hget(self._registry, version)
        if raw is None:
            raise NotFound(f"{self.dataset} has no version {version!r}", code="unknown_version")
        return as_bytes(raw)

    def all(self) -> list[VersionInfo]:
        """Every registered version, newest first; a writing one with the keys it has
        written so far, and as ``dead`` once its writer's lease has lapsed."""
        raw = self.client.hgetall(self._registry)
        infos = sort_versions([VersionInfo.from_bytes(v) for v in raw.values()])
        writing = [i.version for i in infos if i.status == "writing"]
        alive = dict(zip(writing, self._cas.alive(writing), strict=True))
        return [self._live_view(i, alive[i.version]) if i.status == "writing" else i
                for i in infos]  # fmt: skip

    def _live_view(self, info: VersionInfo, alive: bool) -> VersionInfo:
        rows = values.written(self.client, self.placed(info.version, info))
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
        the live version's rows, else for DEFAULT_KEYS). A Redis that may evict published
        versions is refused (ConfigError) before anything is written."""
        check_policy(self.client)
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
        token = new_token()
        seconds, micros = self._clock(keys.lease_key(self.dataset, info.version))
        deadline = seconds * 1000 + micros // 1000 + self._lease_ms()
        pipe = self.client.pipeline(transaction=True)  # entry and lease at once (one slot)
        pipe.set(keys.lease_key(self.dataset, info.version), f"{token}:{deadline}")
        pipe.hset(self._registry, info.version, info.to_bytes())
        pipe.hset(keys.owned_key(self.dataset), info.version, info.buckets)
        try:
            pipe.execute()
        except redis.ResponseError as exc:  # nothing of it was written (EXECABORT)
            if is_full(exc):
                raise PublishError(full_message(self.client), code="store_full") from None
            raise
        self._tokens[info.version] = token
        return info

    def _clock(self, key: str) -> tuple[int, int]:
        """The clock of the node that holds ``key`` (a lease's deadline is read there)."""
        if isinstance(self.client, redis.RedisCluster):
            node = self.client.get_node_from_key(key)
            return self.client.time(target_nodes=node)
        return self.client.time()

    def _lease_ms(self) -> int:
        return max(int(self.settings.writer_lease_s * 1000), 1)

    def token(self, version: str) -> str:
        """The lease token of a version this writer began (its tasks write with it)."""
        return self._tokens[version]

    def renew(self, version: str) -> bool:
        """Hold the lease of ``version`` for another ``writer_lease_s``; False when it is
        no longer this writer's (lapsed and taken over, or removed with its version)."""
        return self._cas.hold(version, self.token(version), self.settings.writer_lease_s)

    def fence(self, version: str, token: str | None = None) -> values.Fence:
        """How a writer sends each batch: only while the version is 'writing' and its
        lease is held by ``token`` (default: this writer's); PublishError ``lease_lost``
        otherwise, so that the writer stops. On a single Redis the check and the batch
        are one script (prescore.transitions): a writer failed or reaped meanwhile lands
        nothing. A cluster spreads a batch over its nodes, where no script spans them:
        there the check precedes the batch, and what lands after a failure is removed by
        gc (README: Store contract)."""
        held = token or self.token(version)

        def refuse(why: str) -> None:
            raise PublishError(
                f"{self.dataset} {version} is no longer this writer's to write ({why}); "
                "stopping", code="lease_lost",
            )  # fmt: skip

        def send(buckets: Mapping[str, Mapping[str, bytes]], progress: tuple[str, int]) -> None:
            if isinstance(self.client, redis.Redis):
                outcome = self._cas.write(version, held, buckets, progress)
                if outcome != "ok":
                    refuse("its lease lapsed" if outcome == "lease" else "it is not writing")
                return
            raw = self.client.hget(self._registry, version)
            status = VersionInfo.from_bytes(raw).status if raw is not None else "gone"
            if not self._cas.alive([version], held)[0] or status != "writing":
                refuse(f"its lease lapsed or it is {status}")
            values.send(self.client, self.dataset, version, buckets, progress)

        return send

    @contextmanager
    def lease(self, version: str) -> Iterator[threading.Event]:
        """Renew the lease of ``version`` every third of ``writer_lease_s`` while inside;
        yields an event set once the lease is lost (its writes are refused from then on).
        A store outage is retried at the next beat and said once on stderr."""
        stop, lost = threading.Event(), threading.Event()

        def beat() -> None:
            failing = False
            while not stop.wait(self.settings.writer_lease_s / 3):
                try:
                    held = self.renew(version)
                except OUTAGES as exc:
                    if not failing:
                        print(f"{self.dataset} {version}: lease not renewed ({exc}); "
                              "retrying", file=sys.stderr, flush=True)  # fmt: skip
                    failing = True
                    continue
                failing = False
                if not held:
                    print(f"{self.dataset} {version}: the lease is lost; its writes stop",
                          file=sys.stderr, flush=True)  # fmt: skip
                    lost.set()
                    return

        thread = threading.Thread(target=beat, name=f"lease-{version}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join(timeout=1)

    def _finish(self, version: str, change: Change) -> None:
        """After a writer's last transition: its token goes, and its progress counts (an
        outage leaves them to gc, which removes them with the version)."""
        self._tokens.pop(version, None)
        with suppress(*OUTAGES):
            self.client.delete(keys.written_key(self.dataset, version))

    def _lease(self, version: str) -> tuple[str, str] | None:
        token = self._tokens.get(version)
        return (version, token) if token else None

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
        rows scored, ...) are kept in the registry entry, where the exporter reads them.
        The switch is made only while this writer holds the version's lease (when it
        began it) and only over the live version it checked against."""
        self._writing(version)
        found = self.count_keys(version)
        if found != expected_rows or expected_rows == 0:
            self.fail(version, f"count check failed: expected {expected_rows}, found {found}")
            raise PublishError(
                f"{self.dataset} {version}: expected {expected_rows} keys, found {found}; "
                "the pointer was not moved"
            )
        stale: list[str] = []

        def decide() -> Change:
            raw, info = self._writing(version)
            live = self.current()
            note = info.note
            if live is not None and version < live:
                if not force:
                    stale.append(live)
                    raise _Stale()
                note = f"forced over the newer live version {live}" + (f"; {note}" if note else "")
            now = utcnow_iso()
            done = info.replace(
                status="published", rows=found, finished_at=now, published_at=now, note=note,
                extra={**info.extra, **(figures or {})},
            )  # fmt: skip
            return Change(live, {version: (raw, done.to_bytes())}, version, self._lease(version))

        try:
            change = transition(self._cas, decide)
        except _Stale:
            why = f"older than the live version {stale[-1]}: a late or orphaned job"
            self.fail(version, why)
            raise PublishError(
                f"{self.dataset} {version} is {why}; refused (force to publish it anyway)",
                code="stale_publish",
            ) from None
        except Conflict as exc:
            raise PublishError(
                f"{self.dataset} {version}: not published: {exc}", code="lease_lost"
            ) from None
        self._finish(version, change)
        if retire:
            self.retire_old()
        return self.get(version)

    def gate(self, version: str, rows: int, report: Mapping[str, Any], summary: str) -> VersionInfo:
        """Keep a version that failed its data gates unpublished: ``gated``, with the
        gates' report; its keys stay, to be looked at or released."""
        made: list[VersionInfo] = []

        def decide() -> Change:
            raw, info = self._writing(version)
            entry = info.replace(
                status="gated", rows=rows, finished_at=utcnow_iso(), note=f"gated: {summary}",
                extra={**info.extra, "gates": dict(report)},
            )  # fmt: skip
            made[:] = [entry]
            return Change(self.current(), {version: (raw, entry.to_bytes())},
                          lease=self._lease(version))  # fmt: skip

        self._finish(version, self._transition(decide, version))
        return made[0]

    def _transition(self, decide: Callable[[], Change], version: str) -> Change:
        try:
            return transition(self._cas, decide)
        except Conflict as exc:
            raise PublishError(f"{self.dataset} {version}: {exc}", code="lease_lost") from None

    def release(self, version: str, by: str, reason: str) -> VersionInfo:
        """Publish a gated version anyway: an operator's decision, recorded in its entry."""
        if not reason.strip():
            raise PublishError("say why the gates are overridden (--reason)", code="no_reason")
        made: list[VersionInfo] = []

        def decide() -> Change:
            raw, info = self._writing(version, "gated")
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
                extra={**info.extra, "released_by": by, "released_at": now,
                       "release_reason": reason},
            )  # fmt: skip
            made[:] = [done]
            return Change(self.current(), {version: (raw, done.to_bytes())}, version)

        self._transition(decide, version)
        return made[0]

    def fail(self, version: str, reason: str, status: str = "failed") -> None:
        """Mark a version failed and remove what it wrote; the pointer never names it.
        The record comes first, so that no publish or release can switch to it while
        its keys go; a Redis too full to record has its keys removed first, then room to
        record. A version published meanwhile is not failed."""
        if self.current() == version:
            raise PublishError(f"refusing to fail the live version {version}")

        def decide() -> Change:
            raw = self._raw(version)
            info = VersionInfo.from_bytes(raw)
            live = self.current()
            if live == version or info.status in ("published", "retired"):
                raise PublishError(f"refusing to fail the {info.status} version {version}")
            entry = info.replace(status=status, finished_at=utcnow_iso(), note=reason)
            return Change(live, {version: (raw, entry.to_bytes())})

        try:
            self._transition(decide, version)
        except redis.ResponseError as exc:
            if not is_full(exc):
                raise
            self.delete_keys(version)  # a full Redis: free first (it cannot be published:
            self._transition(decide, version)  # its entry is still as its writer left it)
        # the lease goes whoever held it: a writer that wakes finds it gone and stops
        self.client.delete(keys.lease_key(self.dataset, version))
        self._finish(version, Change(None, {}))
        self.delete_keys(version)

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Point readers at ``to`` or at the newest published version before the live one.

        The version left stays published (noted), so rolling forward to it again works.
        The switch is made only if the live version and the target are still as read:
        a publish or another rollback in between refuses it, and changes nothing."""
        found: list[VersionInfo] = []
        seen: list[str | None] = []

        def decide() -> Change:
            live = self.current()
            if live is None:
                raise NotFound(f"{self.dataset} has no live version", code="no_version")
            seen.append(live)
            if seen[0] != live:
                raise PublishError(
                    f"{self.dataset}: the live version changed from {seen[0]} to {live} during "
                    "the rollback; nothing was changed (look again, then roll back)",
                    code="conflict",
                )
            raw = self.client.hgetall(self._registry)
            entries = {as_text(k): as_bytes(v) for k, v in raw.items()}
            infos = sort_versions([VersionInfo.from_bytes(v) for v in entries.values()])
            candidates = [i for i in infos if i.status == "published" and i.version != live]
            if to is not None:
                candidates = [i for i in candidates if i.version == to]
            else:
                candidates = [i for i in candidates if i.version < live]
            if not candidates:
                raise NotFound(
                    f"no published version of {self.dataset} to roll back to",
                    code="no_rollback_target",
                )
            target = candidates[0]
            if found and found[0].version != target.version:
                raise PublishError(
                    f"{self.dataset}: {found[0].version} was retired during the rollback; "
                    "nothing was changed", code="conflict",
                )  # fmt: skip
            left = VersionInfo.from_bytes(entries[live]).replace(
                note=f"rolled back to {target.version} at {utcnow_iso()}"
            )
            found[:] = [target]
            same = entries[target.version]  # checked, not changed
            switch = {live: (entries[live], left.to_bytes()), target.version: (same, same)}
            return Change(live, switch, target.version)

        self._transition(decide, to or "rollback")
        return found[0]

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
                    self._drop_gated_keys(info.version)
                gated_seen = True
            if info.version == live or (
                info.status == "published" and kept < self.settings.keep_versions
            ):
                kept += 1
                continue
            if info.status == "published":
                if self._remove(info, "retired", info.note):
                    removed.append(info.version)
            elif info.status == "writing":
                continue  # its writer is alive
            history += 1
            # the registry must not grow without bound; a gated entry stays (an operator
            # may still release it), its keys removed above
            if history > HISTORY and info.status in ("failed", "retired"):
                self.delete_keys(info.version)
                self.client.hdel(self._registry, info.version)
        self._sweep_unlisted()
        return removed

    def _drop_gated_keys(self, version: str) -> None:
        """Remove the keys of a gated version older than the newest gated one: noted
        first (a release counting its keys meanwhile finds them changed and refuses)."""

        def decide() -> Change:
            raw = self._raw(version)
            info = VersionInfo.from_bytes(raw)
            if info.status != "gated" or self.current() == version:
                raise _Kept()
            entry = info.replace(note=info.note + " (keys removed)")
            return Change(self.current(), {version: (raw, entry.to_bytes())})

        try:
            self._transition(decide, version)
        except _Kept:
            return
        self.delete_keys(version)

    def _sweep_unlisted(self) -> None:
        """Remove the keys of versions the registry no longer lists (trimmed from its
        history), found in the record of every version that may hold keys; a version
        leaves that record only once they are gone, after its entry."""
        owned = self.client.hgetall(keys.owned_key(self.dataset))
        listed = {as_text(v) for v in self.client.hkeys(self._registry)}
        store = self.settings
        for raw, buckets in owned.items():
            version = as_text(raw)
            if version in listed:
                continue
            where = Placed(self.dataset, version, int(buckets))
            values.delete(self.client, where, store.delete_batch, store.live_ttl_s)
            self.client.delete(keys.lease_key(self.dataset, version))
            self.client.hdel(keys.owned_key(self.dataset), version)

    def _remove(self, info: VersionInfo, status: str, note: str) -> str:
        """Retire a published version that is not live: recorded first (so no rollback
        can pick it from then on), then its keys removed."""

        def decide() -> Change:
            raw = self._raw(info.version)
            now = VersionInfo.from_bytes(raw)
            live = self.current()
            if live == info.version or now.status != "published":
                raise _Kept()
            return Change(live, {info.version: (raw, now.replace(status=status, note=note)
                                                .to_bytes())})  # fmt: skip

        try:
            self._transition(decide, info.version)
        except _Kept:
            return ""
        except redis.ResponseError as exc:
            if not is_full(exc):
                raise
            # a full Redis refuses the record: its keys go first (no rollback can switch to
            # it meanwhile: a rollback records too), then the record finds room
            self.delete_keys(info.version)
            try:
                self._transition(decide, info.version)
            except _Kept:
                return ""
        self.delete_keys(info.version)
        return info.version

    def delete_keys(self, version: str) -> int:
        """UNLINK every key of ``version``, found from its own record (prescore.values)."""
        where, store = self.placed(version), self.settings
        return values.delete(self.client, where, store.delete_batch, store.live_ttl_s)


class _Stale(Exception):
    """A publish found a newer live version (decided inside a transition)."""


class _Kept(Exception):
    """A retirement found the version live again, or no longer published."""
