"""Versions of a dataset in Redis: write beside the live one, verify, switch, roll back.

A writer calls ``begin`` (registry entry 'writing' with its bucket count, and a lease
held by a token only it knows), keeps the lease alive with :meth:`Versions.lease` while
its tasks write payloads with ``prescore.store.values.write`` (each batch only while the lease
is still its own: :meth:`Versions.fence`), then ``publish`` verifies the key count (what
the version's buckets hold) and switches the pointer and the registry. Every transition
is a compare-and-set (prescore.store.transitions): whatever a concurrent writer, rollback or
gc changed between reading and switching makes the switch read and decide again, so no
interleaving moves the pointer backwards or names a version that is not published. A
publish only moves forward: a version older than the live one (a late or orphaned job)
is refused unless forced, and a forced one says so in the registry. A writer that fails
calls ``fail``. One that is killed stops renewing its lease, which lapses within
``writer_lease_s``: its version then lists as ``dead`` with the keys it wrote, and the
next job or ``gc`` removes it; should it wake, its next batch and its publish are
refused. A rollback keeps the version it leaves published, so it can be rolled forward
to again and is retired only as versions beyond the newest N are (an operator's rollback
and release: prescore.store.switches).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, suppress
from typing import Any

import redis

from prescore.encoding import keys
from prescore.encoding.compact import Frame
from prescore.encoding.registry_entry import VersionInfo, sort_versions, utcnow_iso
from prescore.errors import NotFound, PublishError
from prescore.settings import StoreSettings
from prescore.store import canaries, deltas, switches, values, version_gc, writers
from prescore.store.canaries import Canary
from prescore.store.redis_client import (
    OUTAGES,
    Client,
    as_bytes,
    as_text,
    is_full,
)
from prescore.store.transitions import Change, Conflict, Registry, transition
from prescore.store.values import Placed

ANY_LIVE = "*"  # a publish not gated against a live version (no id is '*')


def write_payloads(
    client: Client,
    dataset: str,
    version: str,
    rows: Iterable[tuple[str, bytes]],
    batch: int = values.WRITE_BATCH,
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
        self.registry = Registry(client, self.dataset)
        self._tokens: dict[str, str] = {}  # the leases this writer took: version -> token

    # -- reading ---------------------------------------------------------------
    def current(self) -> str | None:
        raw = self.client.get(self._pointer)
        return as_text(raw) if raw is not None else None

    def get(self, version: str) -> VersionInfo:
        return VersionInfo.from_bytes(self.raw(version))

    def writing(self, version: str, status: str = "writing") -> tuple[bytes, VersionInfo]:
        """The entry of ``version`` as stored and read, refused unless it is ``status``."""
        raw = self.raw(version)
        info = VersionInfo.from_bytes(raw)
        if info.status != status:
            raise PublishError(
                f"version {version} is {info.status}, not {status}",
                code="not_gated" if status == "gated" else "publish_failed",
            )
        return raw, info

    def raw(self, version: str) -> bytes:
        """The registry entry of ``version`` as stored (what a compare-and-set checks)."""
        raw = self.client.hget(self._registry, version)
        if raw is None:
            raise NotFound(f"{self.dataset} has no version {version!r}", code="unknown_version")
        return as_bytes(raw)

    def entries(self) -> list[VersionInfo]:
        """Every registered version as recorded, newest first (:meth:`all` tells how far
        a writing one has got, and whether its writer is alive)."""
        raw = self.client.hgetall(self._registry)
        return sort_versions([VersionInfo.from_bytes(v) for v in raw.values()])

    def all(self) -> list[VersionInfo]:
        """Every registered version, newest first; a writing one with the keys it has
        written so far, and as ``dead`` once its writer's lease has lapsed."""
        infos = self.entries()
        writing = [i.version for i in infos if i.status == "writing"]
        alive = dict(zip(writing, self.registry.alive(writing), strict=True))
        return [self._live_view(i, alive[i.version]) if i.status == "writing" else i for i in infos]

    def _live_view(self, info: VersionInfo, alive: bool) -> VersionInfo:
        rows = values.written(self.client, Placed.of(self.dataset, info))
        return info.replace(rows=rows, status="writing" if alive else "dead")

    def placed(self, version: str) -> Placed:
        """Where the keys of ``version`` live, as its registry entry says (with the entry
        at hand: ``Placed.of``)."""
        return Placed.of(self.dataset, self.get(version))

    def count_keys(self, version: str) -> int:
        """Keys present under ``version``, counted in its own buckets."""
        return values.count(self.client, self.placed(version))

    # -- writing ---------------------------------------------------------------
    def begin(
        self,
        model: str,
        model_version: str,
        note: str = "",
        expected_keys: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> VersionInfo:
        """Register a new version as 'writing', with its lease held by this writer
        (prescore.store.writers.begin), and return it."""
        info, token = writers.begin(self, model, model_version, note, expected_keys, extra)
        self._tokens[info.version] = token
        return info

    def token(self, version: str) -> str:
        """The lease token of a version this writer began (its tasks write with it)."""
        return self._tokens[version]

    def renew(self, version: str) -> bool:
        """Hold the lease of ``version`` for another ``writer_lease_s``; False when it is
        no longer this writer's (lapsed and taken over, or removed with its version)."""
        return self.registry.hold(version, self.token(version), self.settings.writer_lease_s)

    def fence(self, version: str, token: str | None = None) -> values.Fence:
        """How a writer holding ``token`` (default: this writer's) sends each batch of
        ``version``: only while it still holds the version (prescore.store.writers)."""
        return writers.fence(self, version, token or self.token(version))

    def write_frames(
        self, where: Placed, frames: Mapping[int, Frame], token: str | None = None
    ) -> None:
        """Store the frames of a version this writer (or ``token``'s) writes, checked
        against its lease (prescore.store.writers.write_frames)."""
        writers.write_frames(self, where, token or self.token(where.version), frames)

    def lease(
        self, version: str, say: Callable[[str], None] = writers.to_stderr
    ) -> AbstractContextManager[threading.Event]:
        """Renew this writer's lease of ``version`` while inside (prescore.store.writers);
        yields an event set once it is lost. ``say``: where a failed renewal is told."""
        return writers.keep_lease(self, version, say)

    def finish(self, version: str, change: Change) -> None:
        """After a writer's last transition: its token goes, and its progress counts (an
        outage leaves them to gc, which removes them with the version)."""
        self._tokens.pop(version, None)
        with suppress(*OUTAGES):
            self.client.delete(keys.written_key(self.dataset, version))

    def held(self, version: str) -> tuple[str, str] | None:
        """(version, token) of the lease this writer holds on ``version``, if it began it:
        what its own transitions are checked against."""
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
        gated_against: str | None = ANY_LIVE,
        stage: bool = False,
    ) -> VersionInfo:
        """Verify the count, then switch pointer and registry atomically; retire old ones
        (unless ``retire`` is False: the caller runs :meth:`retire_old` itself). A version
        older than the live one is refused unless ``force``. ``figures`` (a run's duration,
        rows scored, ...) are kept in the registry entry, where the exporter reads them.
        The switch is made only while this writer holds the version's lease (when it
        began it) and only over the live version it checked against; ``gated_against``:
        the live version its gates ran against (None: none), refused with LiveChanged if
        another is live by the switch, so that it is gated again. ``stage``: recorded as
        ``staged`` instead, readers left on the live version (a canary's candidate:
        prescore.store.canaries)."""
        found = self.verify(version, expected_rows)
        stale: list[str] = []

        def decide() -> Change:
            raw, info = self.writing(version)
            live = self.current()
            note = info.note
            if live is not None and version < live:
                if not force or stage:  # a staged one older than the live one never goes live
                    stale.append(live)
                    raise _Stale()
                note = f"forced over the newer live version {live}" + (f"; {note}" if note else "")
            if gated_against != ANY_LIVE and live != gated_against:
                raise LiveChanged(live)
            now = utcnow_iso()
            done = info.replace(
                status=canaries.STAGED if stage else "published",
                rows=found,
                finished_at=now,
                published_at="" if stage else now,
                note=note,
                extra={**info.extra, **(figures or {})},
            )
            if stage:
                return Change(live, {version: (raw, done.to_bytes())}, lease=self.held(version))
            carry, listed = deltas.carried(self, live, version)
            entries = {version: (raw, done.to_bytes()), **carry}
            return Change(live, entries, version, self.held(version), deltas=listed)

        try:
            change = transition(self.registry, decide)
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
        self.finish(version, change)
        if retire:
            self.retire_old()
        return self.get(version)

    def verify(self, version: str, expected_rows: int) -> int:
        """Seal a version this writer is writing and count its keys: how many, or the
        version failed and PublishError when they are not the ``expected_rows`` (>0)."""
        self.writing(version)
        self._seal(version)
        found = self.count_keys(version)
        if found != expected_rows or expected_rows == 0:
            self.fail(version, f"count check failed: expected {expected_rows}, found {found}")
            raise PublishError(
                f"{self.dataset} {version}: expected {expected_rows} keys, found {found}; "
                "nothing was switched in"
            )
        return found

    def gate(self, version: str, rows: int, report: Mapping[str, Any], summary: str) -> VersionInfo:
        """Keep a version that failed its data gates unpublished: ``gated``, with the
        gates' report; its keys stay, to be looked at or released."""
        made: list[VersionInfo] = []
        self._seal(version)

        def decide() -> Change:
            raw, info = self.writing(version)
            entry = info.replace(
                status="gated",
                rows=rows,
                finished_at=utcnow_iso(),
                note=f"gated: {summary}",
                extra={**info.extra, "gates": dict(report)},
            )
            made[:] = [entry]
            return Change(
                self.current(), {version: (raw, entry.to_bytes())}, lease=self.held(version)
            )

        self.finish(version, self.apply(decide, version))
        return made[0]

    def _seal(self, version: str) -> None:
        """Seal the buckets of a version this writer began, before it is counted and
        switched: no late write of any of its writers (a straggling task) lands after.
        PublishError ``lease_lost`` when some were no longer its (failed or reaped)."""
        token = self._tokens.get(version)
        if token is None:  # not begun here: its own writer seals it
            return
        where = self.placed(version)
        if self.registry.seal(token, where.bucket_names()) < where.buckets:
            raise PublishError(
                f"{self.dataset} {version}: its buckets were removed while it was written "
                "(failed or reaped); not published",
                code="lease_lost",
            )

    def apply(self, decide: Callable[[], Change], version: str) -> Change:
        """Run a transition (prescore.store.transitions.transition); a lost lease is a
        PublishError ``lease_lost`` about ``version``."""
        try:
            return transition(self.registry, decide)
        except Conflict as exc:
            raise PublishError(f"{self.dataset} {version}: {exc}", code="lease_lost") from None

    def release(
        self, version: str, by: str, reason: str, *, force: bool = False, dry_run: bool = False
    ) -> VersionInfo:
        """Publish a gated version anyway, ``by`` an operator for ``reason`` (older than
        the live one: only ``force``d; prescore.store.switches.release)."""
        return switches.release(self, version, by, reason, force=force, dry_run=dry_run)

    def fail(self, version: str, reason: str, status: str = "failed") -> None:
        """Mark a version failed and remove what it wrote; the pointer never names it.
        The record comes first, so that no publish or release can switch to it while
        its keys go; a Redis too full to record has its keys removed first, then room to
        record. A version published meanwhile is not failed."""
        if self.current() == version:
            raise PublishError(f"refusing to fail the live version {version}")

        def decide() -> Change:
            raw = self.raw(version)
            info = VersionInfo.from_bytes(raw)
            live = self.current()
            if live == version or info.status in ("published", "retired"):
                raise PublishError(f"refusing to fail the {info.status} version {version}")
            entry = info.replace(status=status, finished_at=utcnow_iso(), note=reason)
            return Change(live, {version: (raw, entry.to_bytes())})

        try:
            self.apply(decide, version)
        except redis.ResponseError as exc:
            if not is_full(exc):
                raise
            self.delete_keys(version)  # a full Redis: free first (it cannot be published:
            self.apply(decide, version)  # its entry is still as its writer left it)
        # the lease goes whoever held it: a writer that wakes finds it gone and stops
        self.client.delete(keys.lease_key(self.dataset, version))
        self.finish(version, Change(None, {}))
        self.forget(version)

    def rollback(self, to: str | None = None, *, dry_run: bool = False) -> VersionInfo:
        """Point readers at ``to`` or at the newest published version before the live one
        (prescore.store.switches.rollback)."""
        return switches.rollback(self, to, dry_run=dry_run)

    # -- deltas of the live version (prescore.store.deltas) ----------------------------
    def attach(self, version: str, expected_rows: int, figures: Mapping[str, Any]) -> VersionInfo:
        """Count a delta this writer wrote and attach it to the live version."""
        return deltas.attach(self, version, expected_rows, figures)

    def drop_delta(self, version: str, *, dry_run: bool = False) -> VersionInfo:
        """Roll back one delta of the live version (its keys go)."""
        return deltas.drop(self, version, dry_run=dry_run)

    # -- canaries beside the live version (prescore.store.canaries) ----------------------
    def canary(self, version: str, percent: float, *, dry_run: bool = False) -> Canary:
        """Serve a staged or published ``version`` to ``percent`` of keys."""
        return canaries.start(self, version, percent, dry_run=dry_run)

    def promote(
        self, version: str, by: str = "", *, force: bool = False, dry_run: bool = False
    ) -> VersionInfo:
        """Switch readers to the canary's version, ``version``."""
        promoted = canaries.promote(self, version, by, force=force, dry_run=dry_run)
        if not dry_run:
            self.retire_old()
        return promoted

    def abort(self, *, dry_run: bool = False) -> Canary:
        """End the canary; every key is the live version's again."""
        return canaries.abort(self, dry_run=dry_run)

    # -- housekeeping (prescore.store.version_gc) ------------------------------------
    def reap_dead(self) -> list[str]:
        """Fail the versions of writers whose lease lapsed (killed jobs)."""
        return version_gc.reap_dead(self)

    def retire_old(self) -> list[str]:
        """Reap dead writers, retire published versions beyond the newest N (the live one
        always kept), trim the history, and remove the keys of every version past
        keeping; the versions retired or reaped."""
        return version_gc.retire_old(self)

    def gc_plan(self) -> dict[str, list[str]]:
        """What :meth:`retire_old` would do now, changing nothing."""
        return version_gc.plan(self)

    def gc(self) -> dict[str, list[str]]:
        """:meth:`retire_old`, saying everything it did, as :meth:`gc_plan` says it."""
        return version_gc.collect(self)

    def forget(self, version: str) -> None:
        """Remove the keys of a version in a final state, then its line in the record of
        versions that may hold keys (an outage in between leaves it to gc)."""
        self.delete_keys(version)
        self.client.hdel(keys.owned_key(self.dataset), version)

    def delete_keys(self, version: str) -> int:
        """UNLINK every key of ``version``, found from its own record (prescore.store.values)."""
        where, store = self.placed(version), self.settings
        return values.delete(self.client, where, store.delete_batch, store.live_ttl_s)


class LiveChanged(PublishError):
    """The live version changed between a version's gates and its switch: gate it again."""

    def __init__(self, live: str | None) -> None:
        super().__init__(f"the live version changed to {live} after the gates", code="live_changed")
        self.live = live


class _Stale(Exception):
    """A publish found a newer live version (decided inside a transition)."""
