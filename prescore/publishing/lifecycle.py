"""The one lifecycle of a new version, for the scoring job and ``prescore publish`` alike.

Begin (the registry entry and the writer's lease), write under the lease, check the data
gates against the live version, switch; on any failure the version is failed and what it
wrote removed, with one error contract (PublishError: ``gated``, ``lease_lost``,
``store_full``, ``stale_publish``, ...; anything else as raised); after the switch, the
versions beyond the kept ones are retired. The writer is the caller's: Spark tasks for
the job (jobs.bulk), parquet batches for ``prescore publish`` (prescore.publishing.parquet).
An incremental publish runs the same lifecycle for a delta of the live version: written,
counted and gated the same way, then attached to it instead of switched to
(prescore.store.deltas).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prescore.data.datasets import Dataset
from prescore.encoding.registry_entry import VersionInfo
from prescore.errors import PublishError, one_line
from prescore.publishing import gates
from prescore.store import bucket_encodings, canaries, deltas
from prescore.store.redis_client import OUTAGES, Client, full_message, is_full
from prescore.store.values import Placed
from prescore.store.versions import ANY_LIVE, LiveChanged, Versions


@dataclass
class Written:
    """What a writer reports: the keys it wrote, a sample of them for the gates, and the
    figures to record with the version (scored, unit, bad, ...)."""

    rows: int
    sample: list[str]
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """A version switched in, with what it took."""

    info: VersionInfo
    written: Written
    seconds: float  # from registering the version to the switch
    retired: list[str]
    retire_seconds: float


def publish_new(
    versions: Versions,
    dataset: Dataset,
    model: tuple[str, str],
    write: Callable[[Versions, VersionInfo], Written],
    *,
    note: str = "",
    expected_keys: int = 0,
    force: bool = False,
    incremental: bool = False,
    stage: bool = False,
    on_failure: Callable[[], None] | None = None,
    say: Callable[[str], None] = print,
) -> Published:
    """Write a new version of ``dataset`` with ``write(versions, info)`` under its lease,
    gate and publish it (``force``: even over a newer live version; ``incremental``: as
    a delta of the live version; ``stage``: gated, then kept ``staged`` for a canary
    instead of switched to: prescore.store.canaries). ``on_failure`` runs first when
    anything fails (stop the writers); a writer still running then lands nothing: its
    batches are fenced (prescore.store.writers). ``versions`` are the dataset's, on the
    caller's client."""
    if versions.dataset != dataset.name:
        raise ValueError(f"versions of {versions.dataset} given to publish {dataset.name}")
    client = versions.client
    if stage and versions.current() is None:  # a canary runs beside a live version
        raise PublishError(
            f"{dataset.name} has no live version to stage beside: publish it without --stage first",
            code="no_version",
        )
    base = deltas.base_for(versions, model).version if incremental else None
    extra = {deltas.DELTA_OF: base} if base else None
    info = versions.begin(model[0], model[1], note, expected_keys=expected_keys, extra=extra)
    name = dataset.name
    what = f"delta {info.version} of {base}" if base else f"version {info.version}"
    say(f"{name}: writing {what} (model {model[0]}/{model[1]})")
    started = time.perf_counter()
    try:
        # held until the switch: the gates and the count take a while on a large version
        with versions.lease(info.version, say) as lost:
            try:
                written = write(versions, info)
            except Exception as exc:
                if lost.is_set():  # its writes were refused: say why, not their trace
                    raise PublishError(
                        f"{name} {info.version}: the writer's lease was lost (paused or cut "
                        "off past PRESCORE_WRITER_LEASE_S); its writes were refused",
                        code="lease_lost",
                    ) from exc
                raise
            figures = {
                **written.figures,
                "seconds": round(time.perf_counter() - started, 3),
                "sample": written.sample,
            }
            figures["buckets"] = _buckets(versions, info, say)
            if base:
                _gate(client, versions, dataset, info, written, figures, say, whole=False)
                done = versions.attach(info.version, written.rows, figures)
            else:
                had = deltas.read(client, dataset.name)[1]
                running = canaries.read(client, dataset.name)[1]
                done = _gate_and_switch(
                    client, versions, dataset, info, written, figures, force, say, stage
                )
                if not stage:  # a switch: what it did to the deltas and the canary
                    _say_deltas(versions, had, say)
                    if running is not None:
                        say(f"  the canary of {running.version} ({running.percent:g}%) ended")
    except BaseException as exc:
        if on_failure is not None:
            on_failure()
        status = _status(versions, info.version)
        if status == "writing":  # not gated: it failed
            versions.fail(info.version, one_line(exc))
        # "": Redis could not tell; the version stays writing until its lease lapses
        fate = {"gated": "kept as gated", "": "not published"}.get(status, "failed")
        say(f"{name}: {what} {fate}; what readers get is unchanged")
        if is_full(exc):  # one line with the figures, not redis-py's trace
            raise PublishError(full_message(client), code="store_full") from exc
        raise
    seconds = time.perf_counter() - started
    # the new version already serves; removing the ones beyond the newest N is housekeeping
    retired = versions.retire_old()
    return Published(done, written, seconds, retired, time.perf_counter() - started - seconds)


def _say_deltas(versions: Versions, had: tuple[str, ...], say: Callable[[str], None]) -> None:
    """Which of the deltas of the version switched from went with it, and which began
    after the new version did and were carried over to it (prescore.store.deltas)."""
    if not had:
        return
    kept = deltas.read(versions.client, versions.dataset)[1]
    gone = [d for d in had if d not in kept]
    if kept:
        say(f"  {len(kept)} delta(s) newer than this version carried over: {', '.join(kept)}")
    if gone:
        say(f"  {len(gone)} delta(s) went with the version it replaced: {', '.join(gone)}")


def _buckets(versions: Versions, info: VersionInfo, say: Callable[[str], None]) -> Any:
    """How many of a sample of the version's buckets left Redis' compact encoding, said
    when any did (prescore.store.bucket_encodings); None for a version without buckets."""
    if not info.buckets:
        return None
    found = bucket_encodings.sample(versions.client, Placed.of(versions.dataset, info))
    if line := found.line():
        say(line)
    return found.to_json()


def _status(versions: Versions, version: str) -> str:
    """The version's status for the cleanup, '' when Redis cannot tell (its lease then
    lapses, and the next job or gc removes it)."""
    try:
        return versions.get(version).status
    except OUTAGES:
        return ""


REGATES = 3  # gate runs a version gets when the live version keeps changing under them


def _gate_and_switch(
    client: Client,
    versions: Versions,
    dataset: Dataset,
    info: VersionInfo,
    written: Written,
    figures: dict[str, Any],
    force: bool,
    say: Callable[[str], None],
    stage: bool = False,
) -> VersionInfo:
    """Gate the version against the live one, then switch to it (``stage``: record it
    staged) while that one is still live; when another became live in between (a
    publish or a rollback), gate again."""
    for _ in range(REGATES):
        against = _gate(client, versions, dataset, info, written, figures, say)
        try:
            return versions.publish(
                info.version,
                written.rows,
                retire=False,
                force=force,
                figures=figures,
                gated_against=against,
                stage=stage,
            )
        except LiveChanged as exc:
            say(f"{dataset.name}: {exc.message}; gating again")
    raise PublishError(
        f"{dataset.name} {info.version}: the live version changed during each of {REGATES} "
        "gate runs; not published",
        code="conflict",
    )


def _gate(
    client: Client,
    versions: Versions,
    dataset: Dataset,
    info: VersionInfo,
    written: Written,
    figures: dict[str, Any],
    say: Callable[[str], None],
    whole: bool = True,
) -> str | None:
    """Run the data gates; keep the version ``gated`` and raise if any fails. The live
    version they ran against (None: there was none; ANY_LIVE: the dataset's gates are
    off, so any live version will do). A delta (not ``whole``) skips the gates that
    compare whole versions, and one that fails is failed, not kept: releasing it would
    switch readers to it alone."""
    if not dataset.gates.enabled:
        return ANY_LIVE
    started = time.perf_counter()
    live = versions.current()
    report = gates.check(
        client,
        dataset,
        info,
        written.rows,
        written.sample,
        versions.get(live) if live else None,
        dataset.gates,
        whole=whole,
    )
    figures["gate_seconds"] = round(time.perf_counter() - started, 3)
    figures["gates"] = {**report.to_json(), "against": live}
    for c in report.checks:
        mark = "ok " if c.passed else "FAILED"
        say(f"  gate {c.name}: {mark} {c.value} (limit {c.limit}) {c.detail}".rstrip())
    if report.unordered:
        say(
            f"  lists: {report.unordered} of the sampled payloads are not best first; "
            "k and limit take a list's first entries as stored"
        )
    if not report.passed and not whole:
        raise PublishError(
            f"{dataset.name} delta {info.version} failed its gates ({report.summary()}); "
            "not attached",
            code="gated",
        )
    if not report.passed:
        versions.gate(
            info.version,
            written.rows,
            {**report.to_json(), "figures": figures},
            report.summary(),
        )
        raise PublishError(
            f"{dataset.name} {info.version} failed its gates ({report.summary()}); kept as "
            f"gated, the live version is unchanged (prescore release to publish it anyway)",
            code="gated",
        )
    return live
