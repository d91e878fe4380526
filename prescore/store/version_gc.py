"""Housekeeping of a dataset's versions: dead writers reaped, versions beyond the newest
N retired, the registry's history trimmed, and the keys of every version past keeping
removed.

What may hold keys is known without a SCAN: the record ``ps:{dataset}:owned`` lists every
version from its ``begin`` until its keys are gone, and a version's keys are its buckets
and its own records (prescore.store.values). Each removal is recorded first, by compare-and-set
(prescore.store.transitions), so no rollback or release can switch to a version while its keys
go; a Redis too full to record has the keys removed first, then room to record.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from prescore.encoding import keys
from prescore.encoding.registry_entry import FINAL, VersionInfo, utcnow_iso
from prescore.store import canaries, deltas, values
from prescore.store.canaries import Canary
from prescore.store.dataset_versions import DatasetVersions
from prescore.store.redis_client import as_text, is_full
from prescore.store.transitions import Change
from prescore.store.values import Placed

HISTORY = 20  # retired and failed versions listed in the registry
KEYS_REMOVED = " (keys removed)"  # a gated version's note, once an older gated one's go


def reap_dead(v: DatasetVersions) -> list[str]:
    """Fail the versions of writers whose lease lapsed (killed jobs), removing their keys."""
    dead = [i.version for i in v.all() if i.status == "dead"]
    for version in dead:
        v.fail(version, "dead: its writer stopped renewing its lease", status="failed")
    return dead


def retire_old(v: DatasetVersions) -> list[str]:
    """:func:`collect`; the versions retired or reaped."""
    done = collect(v)
    return done["reap"] + done["retire"] + done["retire_deltas"]


def collect(v: DatasetVersions) -> dict[str, list[str]]:
    """Reap dead writers, retire published versions beyond the newest ``keep_versions``
    (the live one always kept), drop the keys of gated versions older than the newest,
    trim the history, and sweep what is left over; what it did, as :func:`plan` says."""
    done: dict[str, list[str]] = {"reap": reap_dead(v), "retire": [], "drop_gated_keys": []}
    done["trim"] = []
    live, canary, _ = canaries.read(v.client, v.dataset)
    for action, version in _decide(v.all(), live, v.settings.keep_versions, canary):
        if action == "drop_gated_keys":
            _drop_gated_keys(v, version)
        elif action == "retire" and not _retire(v, version):
            continue
        elif action == "trim":  # the registry must not grow without bound
            v.client.hdel(keys.registry_key(v.dataset), version)
        done[action].append(version)
    # after their bases: the deltas of one retired now
    done["retire_deltas"] = deltas.retire_unlisted(v)
    done["sweep"] = sweep(v)
    return done


def plan(v: DatasetVersions) -> dict[str, list[str]]:
    """What :func:`retire_old` would do now, changing nothing (``gc --dry-run``): the
    versions it would reap, retire, drop the keys of, trim from the history, and the
    leftovers whose keys it would sweep."""
    infos = v.all()
    dead = [i.version for i in infos if i.status == "dead"]
    after_reaping = [i.replace(status="failed") if i.status == "dead" else i for i in infos]
    done: dict[str, list[str]] = {
        "reap": dead,
        "retire": [],
        "drop_gated_keys": [],
        "trim": [],
    }
    live, canary, _ = canaries.read(v.client, v.dataset)
    for action, version in _decide(after_reaping, live, v.settings.keep_versions, canary):
        done[action].append(version)
    done["retire_deltas"] = deltas.unlisted(v, gone=set(done["retire"]))
    entries = {i.version: i for i in after_reaping}
    done["sweep"] = sorted(  # a reaped version's keys go as it is reaped, not here
        version
        for version in map(as_text, v.client.hkeys(keys.owned_key(v.dataset)))
        if version not in dead and (version not in entries or _past_keeping(entries[version]))
    )
    return done


def _decide(
    infos: list[VersionInfo], live: str | None, keep: int, canary: Canary | None = None
) -> Iterator[tuple[str, str]]:
    """What housekeeping does to each of ``infos`` (newest first): ``drop_gated_keys``
    (a gated version older than the newest gated one), ``retire`` (a published version
    beyond the ``keep`` newest, never the live one; a staged one older than the newest
    staged or than the live one, which can no longer be promoted; never the canary's),
    ``trim`` (a failed or retired entry beyond the HISTORY kept; a gated entry stays, as
    an operator may still release it)."""
    kept = history = 0
    gated_seen = staged_seen = False
    for info in infos:
        if info.status == "gated":  # the newest keeps its keys, to be released
            if gated_seen and not info.note.endswith(KEYS_REMOVED):
                yield "drop_gated_keys", info.version
            gated_seen = True
        if canary is not None and info.version == canary.version:
            continue
        if info.status == canaries.STAGED:  # the newest stays while newer than the live one
            if staged_seen or (live is not None and info.version < live):
                yield "retire", info.version
            staged_seen = True
            continue
        if info.version == live or (info.status == "published" and kept < keep):
            kept += 1
            continue
        if info.status == "published":
            yield "retire", info.version
        elif info.status == "writing":
            continue  # its writer is alive
        history += 1
        if history > HISTORY and info.status in FINAL:
            yield "trim", info.version


def sweep(v: DatasetVersions) -> list[str]:
    """Remove the keys of every version the owned record lists that is past keeping:
    failed, retired, a gated one whose keys were dropped, or no longer listed (trimmed).
    Each of these states is final, so nothing can write or switch to it meanwhile; a
    version leaves the record once its keys are gone (a removal an outage cut short is
    finished here)."""
    owned_key = keys.owned_key(v.dataset)
    owned = v.client.hgetall(owned_key)
    entries = v.client.hgetall(keys.registry_key(v.dataset))
    swept: list[str] = []
    for raw, buckets in owned.items():
        entry = entries.get(raw)
        if entry is not None and not _past_keeping(VersionInfo.from_bytes(entry)):
            continue
        version = as_text(raw)
        store = v.settings
        values.delete(
            v.client, Placed(v.dataset, version, int(buckets)), store.delete_batch, store.live_ttl_s
        )
        v.client.delete(keys.lease_key(v.dataset, version))
        v.client.hdel(owned_key, version)
        swept.append(version)
    return sorted(swept)


def _past_keeping(info: VersionInfo) -> bool:
    return info.status in FINAL or (info.status == "gated" and info.note.endswith(KEYS_REMOVED))


def _drop_gated_keys(v: DatasetVersions, version: str) -> None:
    """Remove the keys of a gated version older than the newest gated one: noted first (a
    release counting its keys meanwhile finds them changed and refuses)."""

    def decide() -> Change:
        raw = v.raw(version)
        info = VersionInfo.from_bytes(raw)
        live = v.current()
        if info.status != "gated" or live == version:
            raise _Kept()
        return Change(
            live, {version: (raw, info.replace(note=info.note + KEYS_REMOVED).to_bytes())}
        )

    try:
        v.apply(decide, version)
    except _Kept:
        return
    v.forget(version)


def _retire(v: DatasetVersions, version: str) -> bool:
    """Retire a published or staged version that is neither live nor the canary's:
    recorded first (so no rollback or canary can pick it from then on; the canary as read
    is checked, so one started meanwhile keeps it), then its keys removed; whether it was
    retired."""

    def decide() -> Change:
        raw = v.raw(version)
        now = VersionInfo.from_bytes(raw)
        live, canary, was = canaries.read(v.client, v.dataset)
        if live == version or now.status not in canaries.CANDIDATES:
            raise _Kept()
        if canary is not None and canary.version == version:
            raise _Kept()
        earlier = f"; {now.note}" if now.note else ""  # e.g. the rollback that left it
        retired = now.replace(status="retired", note=f"retired at {utcnow_iso()}{earlier}")
        return Change(live, {version: (raw, retired.to_bytes())}, canary=(was, was))

    try:
        try:
            v.apply(decide, version)
        except redis.ResponseError as exc:
            if not is_full(exc):
                raise
            # a full Redis refuses the record: its keys go first (no rollback can switch
            # to it meanwhile: a rollback records too), then the record finds room
            v.delete_keys(version)
            v.apply(decide, version)
    except _Kept:
        return False
    v.forget(version)
    return True


class _Kept(Exception):
    """A removal found the version live again, or no longer in the state it removes."""
