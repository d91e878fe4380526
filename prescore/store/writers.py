"""A writer's hold on the version it writes: begun, its lease kept alive, its batches fenced.

:func:`begin` registers the version and takes its lease. A job's driver (or ``prescore
publish``) renews it on a thread (:func:`keep_lease`); every batch of every writer, the
driver's and its tasks', goes through a fence (:func:`fence`) that lands it only while
that writer's token still holds the version. Once the lease is lost (lapsed and reaped,
or its version failed) the next batch is refused with ``lease_lost`` and the writer stops.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis

from prescore.encoding import keys
from prescore.encoding.compact import Frame
from prescore.encoding.registry_entry import VersionInfo, utcnow_iso
from prescore.errors import PublishError
from prescore.store import values
from prescore.store.bucket_batches import Grouped
from prescore.store.dataset_versions import DatasetVersions
from prescore.store.redis_client import (
    OUTAGES,
    Client,
    as_text,
    check_policy,
    full_message,
    is_full,
    memory,
)
from prescore.store.transitions import new_token

DEFAULT_KEYS = 100_000  # a first version's bucket count assumes this many keys

_REFUSED = {
    "lease": "its lease lapsed",
    "status": "it is not writing",
    "fence": "its version was failed or removed",
}


def fence(versions: DatasetVersions, version: str, token: str) -> values.Fence:
    """How a writer holding ``token`` sends each batch of ``version``: only while the
    version is 'writing' under that token (prescore.store.transitions.Registry.write, checked
    with the write itself); PublishError ``lease_lost`` otherwise, so that it stops."""

    def send(buckets: Grouped, progress: values.Reported) -> None:
        outcome = versions.registry.write(version, token, buckets, progress)
        if outcome != "ok":
            raise PublishError(
                f"{versions.dataset} {version} is no longer this writer's to write "
                f"({_REFUSED.get(outcome, outcome)}); stopping",
                code="lease_lost",
            )

    return send


def write_frames(
    versions: DatasetVersions, where: values.Placed, token: str, frames: Mapping[int, Frame]
) -> None:
    """Store the frames of a version's compact payloads (before any read of it), then make
    sure ``token`` still held its lease: a version reaped meanwhile has had its keys
    removed, so frames written after that would be left behind. They are removed again
    and the writer stops (PublishError ``lease_lost``)."""
    if not frames:
        return
    values.write_frames(versions.client, where, frames)
    if not versions.registry.alive([where.version], token)[0]:
        versions.client.unlink(keys.frames_key(where.dataset, where.version))
        raise PublishError(
            f"{where.dataset} {where.version} is no longer this writer's to write "
            "(its lease lapsed); stopping",
            code="lease_lost",
        )


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def keep_lease(
    versions: DatasetVersions, version: str, say: Callable[[str], None] = to_stderr
) -> Iterator[threading.Event]:
    """Renew the lease of ``version`` every third of ``writer_lease_s`` while inside;
    yields an event set once the lease is lost (its writes are refused from then on). A
    store outage is retried at the next beat and said once (``say``: on stderr, or beside
    a progress bar by the caller's own way)."""
    stop, lost = threading.Event(), threading.Event()
    where = f"{versions.dataset} {version}"

    def beat() -> None:
        failing = False
        while not stop.wait(versions.settings.writer_lease_s / 3):
            try:
                held = versions.renew(version)
            except OUTAGES as exc:
                if not failing:
                    say(f"{where}: lease not renewed ({exc}); retrying")
                failing = True
                continue
            failing = False
            if not held:
                say(f"{where}: the lease is lost; its writes stop")
                lost.set()
                return

    thread = threading.Thread(target=beat, name=f"lease-{version}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=1)


def begin(
    versions: DatasetVersions,
    model: str,
    model_version: str,
    note: str,
    expected_keys: int,
    extra: Mapping[str, Any] | None = None,
) -> tuple[VersionInfo, str]:
    """Reap dead writers, then register a new version as 'writing' with its lease, its
    line in the record of versions that hold keys, and its buckets fenced with its
    token; the version and the token. Its buckets are sized for ``expected_keys`` (else
    the live version's rows, else DEFAULT_KEYS). Refused before anything is written: a
    Redis that may evict published versions (ConfigError), and one without room for
    a version the size of the live one (``store_full``)."""
    client, dataset = versions.client, versions.dataset
    check_policy(client)
    versions.reap_dead()
    registry = keys.registry_key(dataset)
    newest = max((as_text(v) for v in client.hkeys(registry)), default=None)
    raw = client.hget(registry, versions.current() or "")
    live = VersionInfo.from_bytes(raw) if raw is not None else None
    rows = expected_keys or (live.rows if live else 0) or DEFAULT_KEYS
    if live is not None:
        _check_room(versions, live, rows)
    info = VersionInfo(
        version=keys.new_version_id(after=newest),
        status="writing",
        model=model,
        model_version=model_version,
        buckets=keys.bucket_count(rows),
        started_at=utcnow_iso(),
        note=note,
        extra=dict(extra or {}),
    )
    token, lease = new_token(), keys.lease_key(dataset, info.version)
    seconds, micros = _clock(client, lease)
    lease_ms = max(int(versions.settings.writer_lease_s * 1000), 1)
    deadline = seconds * 1000 + micros // 1000 + lease_ms
    pipe = client.pipeline(transaction=True)  # entry and lease at once (one slot)
    pipe.set(lease, f"{token}:{deadline}")
    pipe.hset(registry, info.version, info.to_bytes())
    pipe.hset(keys.owned_key(dataset), info.version, info.buckets)
    try:
        pipe.execute()
        values.fence_buckets(
            client,
            values.Placed.of(versions.dataset, info),
            token,
            _renewing(versions, info.version, token),
        )
    except redis.ResponseError as exc:
        if not is_full(exc):
            raise
        if client.hexists(registry, info.version):  # the MULTI went in: its buckets did not
            versions.fail(info.version, "Redis is full")
        raise PublishError(full_message(client), code="store_full") from None
    return info, token


def _renewing(versions: DatasetVersions, version: str, token: str) -> Callable[[], None]:
    """What renews the lease while ``begin`` makes the buckets (before the lease is kept
    alive on its thread): at most every tenth of the lease."""
    lease_s = versions.settings.writer_lease_s
    last = [time.monotonic()]

    def renew() -> None:
        if time.monotonic() - last[0] < lease_s / 10:
            return
        last[0] = time.monotonic()
        if not versions.registry.hold(version, token, lease_s):
            raise PublishError(
                f"{versions.dataset} {version}: the lease was lost while its buckets were made",
                code="lease_lost",
            )

    return renew


_ROOM_SAMPLE = 32  # buckets of the live version whose memory is measured


def _check_room(versions: DatasetVersions, live: VersionInfo, rows: int) -> None:
    """Refuse (``store_full``) a version of ``rows`` keys that would not fit in what the
    Redis' maxmemory leaves, at the live version's bytes a key (measured on a sample of
    its buckets: a live version of fewer buckets says too little, and is not used). Only
    under ``noeviction``: under ``volatile-*`` the keys with a TTL make room as needed."""
    if not live.rows or live.buckets < _ROOM_SAMPLE:
        return
    used, limit, policy = memory(versions.client)
    if not limit or policy != "noeviction":
        return
    names = values.Placed.of(versions.dataset, live).bucket_names()[:_ROOM_SAMPLE]
    sizes = [versions.client.memory_usage(n, samples=0) or 0 for n in names]
    need = int(sum(sizes) / len(sizes) * live.buckets / live.rows * rows)
    if used + need > limit:
        raise PublishError(
            f"Redis has no room for a new version of {versions.dataset}: about {_mib(need)} "
            f"needed ({rows} keys at the live version's size), {_mib(max(limit - used, 0))} "
            f"free of maxmemory {_mib(limit)}; nothing was written (make room: "
            "PRESCORE_KEEP_VERSIONS, prescore gc, or more maxmemory)",
            code="store_full",
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def _clock(client: Client, key: str) -> tuple[int, int]:
    """The clock of the node that holds ``key`` (a lease's deadline is read there)."""
    if isinstance(client, redis.RedisCluster):
        return client.time(target_nodes=client.get_node_from_key(key))
    return client.time()
