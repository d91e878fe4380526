"""An operator's switches of a dataset's live version, beside the writers' publish: roll
back (to the newest published version before the live one, or to one named) and release
(a version its gates kept, published anyway, the operator's reason recorded). Each is a
compare-and-set transition (prescore.store.transitions) made through the dataset's
versions (prescore.store.versions.Versions, named by the DatasetVersions Protocol): a
publish, another rollback or gc in between makes it decide again or refuse, never switch
to what it did not check. ``dry_run``: every check made, nothing changed."""

from __future__ import annotations

from collections.abc import Mapping

from prescore.encoding import keys
from prescore.encoding.registry_entry import VersionInfo, sort_versions, utcnow_iso
from prescore.errors import NotFound, PublishError
from prescore.store import deltas
from prescore.store.dataset_versions import DatasetVersions
from prescore.store.redis_client import as_bytes, as_text
from prescore.store.transitions import Change


def release(
    versions: DatasetVersions,
    version: str,
    by: str,
    reason: str,
    *,
    force: bool = False,
    dry_run: bool = False,
) -> VersionInfo:
    """Publish a gated version anyway: an operator's decision, recorded in its entry
    (``dry_run``: every check made, the entry it would write returned, nothing
    changed). Like a publish it only moves forward: one older than the live version is
    refused (``stale_publish``) unless ``force``, and a forced one says so."""
    if not reason.strip():
        raise PublishError("say why the gates are overridden (--reason)", code="no_reason")
    made: list[VersionInfo] = []

    def decide() -> Change:
        raw, info = versions.writing(version, "gated")
        found = versions.count_keys(version)
        if found != info.rows:
            raise PublishError(
                f"{versions.dataset} {version}: expected {info.rows} keys, found {found}; "
                "it cannot be released",
                code="publish_failed",
            )
        live = versions.current()
        over = ""
        if live is not None and version < live:
            if not force:
                raise PublishError(
                    f"{versions.dataset} {version} is older than the live version {live}; "
                    "refused (--force to release it over the newer one)",
                    code="stale_publish",
                )
            over = f"; forced over the newer live version {live}"
        now = utcnow_iso()
        done = info.replace(
            status="published",
            published_at=now,
            note=f"released by {by} over its gates: {reason}{over}",
            extra={
                **info.extra,
                "released_by": by,
                "released_at": now,
                "release_reason": reason,
            },
        )
        made[:] = [done]
        carry, listed = deltas.carried(versions, live, version)
        entries = {version: (raw, done.to_bytes()), **carry}
        return Change(live, entries, version, deltas=listed)

    if dry_run:
        decide()
    else:
        versions.apply(decide, version)
    return made[0]


def rollback(
    versions: DatasetVersions, to: str | None = None, *, dry_run: bool = False
) -> VersionInfo:
    """Point readers at ``to`` or at the newest published version before the live one
    (``dry_run``: the version it would switch to, nothing changed).

    The version left stays published (noted), so rolling forward to it again works.
    The switch is made only if the live version and the target are still as read:
    a publish or another rollback in between refuses it, and changes nothing."""
    found: list[VersionInfo] = []
    seen: list[str | None] = []

    def decide() -> Change:
        live = versions.current()
        if live is None:
            raise NotFound(f"{versions.dataset} has no live version", code="no_version")
        seen.append(live)
        if seen[0] != live:
            raise PublishError(
                f"{versions.dataset}: the live version changed from {seen[0]} to {live} during "
                "the rollback; nothing was changed (look again, then roll back)",
                code="conflict",
            )
        raw = versions.client.hgetall(keys.registry_key(versions.dataset))
        entries = {as_text(k): as_bytes(v) for k, v in raw.items()}
        infos = sort_versions([VersionInfo.from_bytes(v) for v in entries.values()])
        candidates = [i for i in infos if i.status == "published" and i.version != live]
        if to is not None:
            candidates = [i for i in candidates if i.version == to]
        else:
            candidates = [i for i in candidates if i.version < live]
        if not candidates:
            raise _no_target(versions.dataset, to, live, entries)
        target = candidates[0]
        if found and found[0].version != target.version:
            raise PublishError(
                f"{versions.dataset}: {found[0].version} was retired during the rollback; "
                "nothing was changed",
                code="conflict",
            )
        left = VersionInfo.from_bytes(entries[live]).replace(
            note=f"rolled back to {target.version} at {utcnow_iso()}"
        )
        found[:] = [target]
        same = entries[target.version]  # checked, not changed
        switch = {live: (entries[live], left.to_bytes()), target.version: (same, same)}
        return Change(live, switch, target.version)

    if dry_run:
        decide()
    else:
        versions.apply(decide, to or "rollback")
    return found[0]


def _no_target(dataset: str, to: str | None, live: str, entries: Mapping[str, bytes]) -> NotFound:
    """Why a rollback (to ``to``, if named) has no version to switch to."""
    if to is None:
        return NotFound(
            f"no published version of {dataset} older than the live one ({live}) to roll back to",
            code="no_rollback_target",
        )
    if to not in entries:
        return NotFound(
            f"{dataset} has no version {to!r} (prescore versions {dataset} lists them)",
            code="unknown_version",
        )
    if to == live:
        return NotFound(f"{to} is already the live version of {dataset}", code="no_rollback_target")
    status = VersionInfo.from_bytes(entries[to]).status
    return NotFound(
        f"{dataset} {to} is {status}: only a published version can be rolled back to",
        code="no_rollback_target",
    )
