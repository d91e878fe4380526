"""Canaries: a candidate version served to a stable share of keys beside the live one.

A candidate is a version that passed its gates without going live (``staged``: published
with ``--stage``) or a published version that is not live. ``ps:{dataset}:canary`` holds
the live version's id, the candidate's and the candidate's share in basis points
(prescore.encoding.routing); it counts only while its first id is the pointer's. Readers
take it with the pointer and the deltas, in one round trip, and send each key whose slot
is below the share to the candidate, every other key to the live version (with its
deltas; a candidate has none).

Starting, changing, promoting and aborting a canary are compare-and-sets of the one
registry script (prescore.store.transitions): a start checks the candidate's entry as
read, so gc cannot retire it in between, and gc's retirement checks the canary as read,
so a canary started in between keeps its version. Every switch of the pointer removes the
canary in the switch's own script (it ran beside the version that left): a publish, a
rollback or a release ends it, a promotion by switching to it. An abort removes it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from prescore.encoding import keys, routing
from prescore.encoding.registry_entry import VersionInfo, utcnow_iso
from prescore.errors import NotFound, PublishError
from prescore.store import deltas
from prescore.store.dataset_versions import DatasetVersions
from prescore.store.redis_client import Client, as_text
from prescore.store.transitions import Change

STAGED = "staged"  # a version that passed its gates and was not switched to
CANDIDATES = (STAGED, "published")  # what a canary may serve (not the live version)


@dataclass(frozen=True)
class Canary:
    """A candidate served beside ``live`` to ``share`` basis points of keys."""

    live: str
    version: str
    share: int

    @property
    def percent(self) -> float:
        return routing.percent_of(self.share)

    def text(self) -> str:
        return f"{self.live} {self.version} {self.share}"

    def to_json(self) -> dict[str, object]:
        return {"live": self.live, "version": self.version, "percent": self.percent}


def parsed(raw: bytes | str | None, live: str | None) -> Canary | None:
    """The canary beside ``live`` from the canary key's value (None where there is none,
    or it names another live version: it was left by one that is no longer live)."""
    parts = as_text(raw).split() if raw else []
    if len(parts) != 3 or live is None or parts[0] != live or not parts[2].isdigit():
        return None
    return Canary(parts[0], parts[1], int(parts[2]))


def read(client: Client, dataset: str) -> tuple[str | None, Canary | None, str]:
    """(live version, its canary, the canary key as read) now."""
    live, raw = deltas.with_pointer(client, dataset, keys.canary_key(dataset))
    return live, parsed(raw, live), raw


def served_by_canary(client: Client, dataset: str, texts: list[str]) -> tuple[str, set[str]]:
    """(the canary's version, which of the keys' ``texts`` it answers, as the lookup
    routes them); ("", none) while no canary runs."""
    running = read(client, dataset)[1]
    if running is None:
        return "", set()
    return running.version, routing.canary_keys(texts, running.version, running.share)


def start(v: DatasetVersions, version: str, percent: float, *, dry_run: bool = False) -> Canary:
    """Serve ``version`` to ``percent`` of keys beside the live version, or change the
    share of the canary it already is. PublishError ``not_a_candidate`` (live, or not
    staged or published), ``canary_running`` (another is), ``invalid_percent``."""
    try:
        share = routing.share_of(percent)
    except ValueError as exc:
        raise PublishError(str(exc), code="invalid_percent") from None
    made: list[Canary] = []

    def decide() -> Change:
        live, running, was = read(v.client, v.dataset)
        if live is None:
            raise NotFound(f"{v.dataset} has no live version to canary beside", code="no_version")
        if running is not None and running.version != version:
            raise PublishError(
                f"{v.dataset} already serves {running.version} to {running.percent:g}% of keys "
                f"(prescore abort {v.dataset} first)",
                code="canary_running",
            )
        raw = _candidate(v, version, live)
        made[:] = [Canary(live, version, share)]
        return Change(live, {version: (raw, raw)}, canary=(was, made[0].text()))

    if dry_run:
        decide()
    else:
        v.apply(decide, version)
    return made[0]


def _candidate(v: DatasetVersions, version: str, live: str) -> bytes:
    """The registry entry of a version a canary may serve, as read."""
    if version == live:
        raise PublishError(f"{version} is the live version of {v.dataset}", code="not_a_candidate")
    raw = v.raw(version)
    status = VersionInfo.from_bytes(raw).status
    if status not in CANDIDATES:
        raise PublishError(
            f"{v.dataset} {version} is {status}: a canary serves a staged or published "
            "version (publish with --stage)",
            code="not_a_candidate",
        )
    return raw


def promote(
    v: DatasetVersions, version: str, by: str = "", *, force: bool = False, dry_run: bool = False
) -> VersionInfo:
    """Switch readers to ``version``, the canary's, ending the canary in the same script;
    the live version's deltas newer than it carry over (prescore.store.deltas.carried).
    Refused (PublishError) where ``version`` is not the canary's (``not_the_canary``), and,
    unless ``force``, where it is older than the live version (``stale_publish``) or its
    gates ran against another live version than the one it replaces
    (``gated_against_another``). Its entry as published (``dry_run``: as it would be)."""
    made: list[VersionInfo] = []

    def decide() -> Change:
        live, canary, was = _running(v)
        if canary.version != version:
            raise PublishError(
                f"{v.dataset}: the canary serves {canary.version}, not {version}; nothing "
                "was changed",
                code="not_the_canary",
            )
        raw = _candidate(v, canary.version, live)
        info = VersionInfo.from_bytes(raw)
        if not force:
            _check_promotable(v.dataset, info, live)
        now = utcnow_iso()
        note = f"promoted from a {canary.percent:g}% canary beside {live}" + (
            f" by {by}" if by else ""
        )
        if force:
            note += " (forced)"
        done = info.replace(
            status="published",
            published_at=now if info.status == STAGED else info.published_at,
            note=note,
        )
        made[:] = [done]
        carry, listed = deltas.carried(v, live, canary.version)
        entries = {canary.version: (raw, done.to_bytes()), **carry}
        return Change(live, entries, canary.version, deltas=listed, canary=(was, ""))

    if dry_run:
        decide()
    else:
        v.apply(decide, "promote")
    return made[0]


def _check_promotable(dataset: str, info: VersionInfo, live: str) -> None:
    """Refuse what a publish would refuse: a version older than the live one (a late or
    orphaned run), or one gated against another live version than this one."""
    if info.version < live:
        raise PublishError(
            f"{dataset} {info.version} is older than the live version {live}: its data is "
            "too (--force to promote it anyway)",
            code="stale_publish",
        )
    gates = info.extra.get("gates")
    against = gates.get("against") if isinstance(gates, dict) else live
    if against != live:
        raise PublishError(
            f"{dataset} {info.version} was gated against {against}, and {live} is live now: "
            "stage a new run (gated against it), or --force to promote it anyway",
            code="gated_against_another",
        )


def abort(v: DatasetVersions, *, dry_run: bool = False) -> Canary:
    """End the canary: every key is the live version's again. Its version is left as it
    was (staged, to be canaried again or retired by gc)."""
    made: list[Canary] = []

    def decide() -> Change:
        live, canary, was = _running(v)
        made[:] = [canary]
        return Change(live, {}, canary=(was, ""))

    if dry_run:
        decide()
    else:
        v.apply(decide, "abort")
    return made[0]


def _running(v: DatasetVersions) -> tuple[str, Canary, str]:
    live, canary, was = read(v.client, v.dataset)
    if live is None or canary is None:
        raise NotFound(f"{v.dataset} has no canary running", code="no_canary")
    return live, canary, was
