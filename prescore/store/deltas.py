"""Deltas: keys published into the live version after it went live, each all or nothing.

A delta is written as a version is (its own id, buckets, lease, fenced batches and count
check) and then, instead of moving the pointer, attached to the live version by one
compare-and-set (prescore.store.transitions): its id joins ``ps:{dataset}:deltas``, which
holds the live version's id and then its deltas' ids, newest first, and its registry
entry becomes ``delta``, naming its base in ``extra.delta_of``. Until that script runs
no reader sees any of its keys; from then on every reader sees all of them.

Readers take the pointer and the deltas together (:func:`layers`) and read each key from
the newest delta that holds it, else from the base: one round trip for any number of
keys and deltas, and never two versions in one answer. The deltas key counts only while
its first id is the pointer's, and every switch rewrites it in the switch's own script: a
rollback takes the version's deltas with it, a publish or release carries over those
that began after the incoming version did (:func:`carried`). A delta that began before
another ranks below it wherever it attaches (ids sort by when they began), so a late
delta never hides a newer one's answer for the same key. A delta holds the answers of
its version's model, and a version takes at most MAX_DELTAS (:func:`base_for`, checked
before anything is written and again at the attach). A delta can be rolled back alone
(:func:`drop`); gc retires the entries of deltas no longer listed once their base is no
longer kept, and removes their keys (:func:`retire_unlisted`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from prescore.encoding import keys
from prescore.encoding.compact import Frame
from prescore.encoding.registry_entry import VersionInfo, utcnow_iso
from prescore.errors import NotFound, PublishError
from prescore.store import values
from prescore.store.dataset_versions import DatasetVersions
from prescore.store.redis_client import Client, as_text
from prescore.store.transitions import Change
from prescore.store.values import Layer, Placed

DELTA = "delta"  # the registry status of an attached delta
DELTA_OF = "delta_of"  # the entry's ``extra`` field naming its base version
MAX_DELTAS = 16  # a version's deltas; beyond them a full version is the better tool


def listed(raw: bytes | str | None, live: str | None) -> tuple[str, ...]:
    """The deltas of ``live``, newest first, from the deltas key's value (none where the
    value names another version: it was left by one that is no longer live)."""
    ids = as_text(raw).split() if raw else []
    return tuple(ids[1:]) if ids and live is not None and ids[0] == live else ()


def _text(live: str, ids: Sequence[str]) -> str:
    return " ".join((live, *ids)) if ids else ""


def read(client: Client, dataset: str) -> tuple[str | None, tuple[str, ...], str]:
    """(live version, its deltas newest first, the deltas key as read) now."""
    live, raw = with_pointer(client, dataset, keys.deltas_key(dataset))
    return live, listed(raw, live), raw


def with_pointer(client: Client, dataset: str, name: str) -> tuple[str | None, str]:
    """(the live version, the key ``name`` beside it: '' where absent), read together:
    what a key that counts only beside the pointer (deltas, a canary) is read with."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.pointer_key(dataset))
    pipe.get(name)
    pointer, raw = pipe.execute()
    return (as_text(pointer) if pointer is not None else None), as_text(raw) if raw else ""


def layers(
    v: DatasetVersions,
    version: str | None = None,
    frames: Callable[[Placed], Mapping[int, Frame]] | None = None,
) -> tuple[Placed, list[Layer]]:
    """Where readers read: ``version`` (default the live one) and, for the live one, its
    deltas newest first, each with its frames (``frames``: how they are had, default
    read now) (the lookup's own reads, with their keys held: lookup.store). NotFound:
    none live."""
    live, ids, _ = read(v.client, v.dataset)
    chosen = version or live
    if chosen is None:
        raise NotFound(f"{v.dataset}: nothing published", code="no_version")
    over = [v.placed(i) for i in ids] if chosen == live else []
    load = frames or partial(values.load_frames, v.client)
    return v.placed(chosen), [Layer(d, load(d)) for d in over]


def base_for(v: DatasetVersions, model: tuple[str, str]) -> VersionInfo:
    """The live version a delta made by ``model`` (name, version) would be added to,
    checked before anything is written (and again as it attaches): PublishError
    ``no_version``, ``model_mismatch`` or ``too_many_deltas`` otherwise."""
    live, ids, _ = read(v.client, v.dataset)
    if live is None:
        raise PublishError(
            f"{v.dataset} has no live version to add a delta to: publish a full version first",
            code="no_version",
        )
    base = VersionInfo.from_bytes(v.raw(live))
    _check(v.dataset, live, base, model, len(ids))
    return base


def _check(dataset: str, live: str, base: VersionInfo, model: tuple[str, str], n: int) -> None:
    if model != (base.model, base.model_version):
        raise PublishError(
            f"a delta of {dataset} made by {model[0]}/{model[1]} would be read beside its "
            f"version {live}, made by {base.model}/{base.model_version}: a delta holds the "
            "answers of its version's model (a new model is a full version)",
            code="model_mismatch",
        )
    if n >= MAX_DELTAS:
        raise PublishError(
            f"{dataset} {live} already has {n} deltas, the most a version takes (each costs "
            "every read of a key it holds); publish a full version",
            code="too_many_deltas",
        )


def carried(
    v: DatasetVersions, live: str | None, version: str
) -> tuple[dict[str, tuple[bytes, bytes]], tuple[str, str]]:
    """What a switch from ``live`` to ``version`` does to the live version's deltas: those
    that began after ``version`` did carry over to it (their data is newer than its), the
    rest go with ``live``. (entry changes, the deltas as read and what they become)."""
    _, ids, was = read(v.client, v.dataset)
    kept = [i for i in ids if i > version]
    changes = {}
    for delta in kept:
        raw = v.raw(delta)
        info = VersionInfo.from_bytes(raw)
        changes[delta] = (raw, info.replace(extra={**info.extra, DELTA_OF: version}).to_bytes())
    return changes, (was, _text(version, kept))


def attach(
    v: DatasetVersions, version: str, expected_rows: int, figures: Mapping[str, Any]
) -> VersionInfo:
    """Verify the count of a delta this writer wrote, then attach it to its base while
    that base is still live; a base replaced meanwhile fails the delta (PublishError
    ``base_replaced``), whose keys then go: the next full version holds its keys anyway."""
    found = v.verify(version, expected_rows)
    made: list[VersionInfo] = []
    moved: list[Any] = []  # (base, live) when the base had left

    def decide() -> Change:
        raw, info = v.writing(version)
        live, ids, was = read(v.client, v.dataset)
        if live is None or live != info.extra.get(DELTA_OF):
            moved[:] = [info.extra.get(DELTA_OF), live]
            raise _BaseReplaced()
        now = utcnow_iso()
        entry = info.replace(
            status=DELTA,
            rows=found,
            finished_at=now,
            published_at=now,
            extra={**info.extra, **figures},
        )
        base = VersionInfo.from_bytes(v.raw(live))
        _check(v.dataset, live, base, (info.model, info.model_version), len(ids))
        made[:] = [entry]
        ranked = sorted((*ids, version), reverse=True)
        return Change(
            live,
            {version: (raw, entry.to_bytes())},
            lease=v.held(version),
            deltas=(was, _text(live, ranked)),
        )

    try:
        change = v.apply(decide, version)
    except PublishError as exc:
        if exc.code in ("too_many_deltas", "model_mismatch"):
            v.fail(version, exc.message)
        raise
    except _BaseReplaced:
        why = f"its base {moved[0]} is no longer live (live: {moved[1] or 'none'})"
        v.fail(version, why)
        raise PublishError(
            f"{v.dataset} delta {version}: {why}; not attached (publish it again, or let the "
            "next full version carry it)",
            code="base_replaced",
        ) from None
    v.finish(version, change)
    return made[0]


def drop(v: DatasetVersions, version: str, *, dry_run: bool = False) -> VersionInfo:
    """Roll back one delta of the live version: readers get the base's (or an older
    delta's) answer for its keys again, and its keys go. Its entry as left (``dry_run``:
    as it would be)."""
    found: list[VersionInfo] = []

    def decide() -> Change:
        live, ids, was = read(v.client, v.dataset)
        if live is not None and version not in ids and _gone(v, version):
            raise NotFound(
                f"{v.dataset} delta {version} was already taken off ({_gone(v, version)})",
                code="unknown_delta",
            )
        if live is None or version not in ids:
            raise NotFound(
                f"{v.dataset} {version} is not a delta of the live version {live} "
                f"(its deltas: {', '.join(ids) or 'none'})",
                code="unknown_delta",
            )
        raw = v.raw(version)
        info = VersionInfo.from_bytes(raw)
        left = info.replace(status="retired", note=f"rolled back at {utcnow_iso()}; {info.note}")
        found[:] = [left]
        rest = [i for i in ids if i != version]
        return Change(live, {version: (raw, left.to_bytes())}, deltas=(was, _text(live, rest)))

    if dry_run:
        decide()
        return found[0]
    v.apply(decide, version)
    v.forget(version)
    return found[0]


def _gone(v: DatasetVersions, version: str) -> str:
    """Why a delta entry is no longer attached ('' when it is not one, or is)."""
    raw = v.client.hget(keys.registry_key(v.dataset), version)
    info = VersionInfo.from_bytes(raw) if raw is not None else None
    if info is None or DELTA_OF not in info.extra or info.status == DELTA:
        return ""
    return f"{info.status}: {info.note[:80]}"


def retire_unlisted(v: DatasetVersions) -> list[str]:
    """Retire every ``delta`` entry that is not one of the live version's listed deltas
    and whose base is no longer kept (retired, failed or gone), and remove its keys; the
    deltas retired. A base that was replaced or rolled back is kept published for a
    while, and so are its deltas' keys: a lookup still caching the base with its deltas
    reads complete data, as it would a version. Each is a compare-and-set over the
    deltas key too, so a delta attached meanwhile stays."""
    retired = []
    infos = v.all()
    kept = {i.version for i in infos if i.status in ("published", "writing", "gated")}
    for info in infos:
        if info.status != DELTA or info.extra.get(DELTA_OF) in kept:
            continue

        def decide(version: str = info.version) -> Change:
            live, ids, was = read(v.client, v.dataset)
            raw = v.raw(version)
            entry = VersionInfo.from_bytes(raw)
            if version in ids or entry.status != DELTA:
                raise _Kept()
            left = entry.replace(status="retired", note=f"its base left; {entry.note}")
            return Change(live, {version: (raw, left.to_bytes())}, deltas=(was, was))

        try:
            v.apply(decide, info.version)
        except _Kept:
            continue
        v.forget(info.version)
        retired.append(info.version)
    return retired


def unlisted(v: DatasetVersions, gone: set[str] | None = None) -> list[str]:
    """The ``delta`` entries :func:`retire_unlisted` would retire now (changing nothing),
    or once the versions ``gone`` are retired."""
    ids = read(v.client, v.dataset)[1]
    infos = v.all()
    kept = {i.version for i in infos if i.status in ("published", "writing", "gated")}
    kept -= gone or set()
    return [
        i.version
        for i in infos
        if i.status == DELTA and i.version not in ids and i.extra.get(DELTA_OF) not in kept
    ]


class _Kept(Exception):
    """A delta is listed (or no longer a delta) after all: gc leaves it."""


class _BaseReplaced(Exception):
    """The delta's base is no longer live (decided inside a transition)."""
