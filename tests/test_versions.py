"""Publish, verify, roll back and retire versions against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from prescore.encoding import keys
from prescore.errors import NotFound, PublishError
from prescore.settings import StoreSettings
from prescore.store import values, version_gc, writers
from prescore.store.versions import Versions, read_current, write_payloads


def _write(v: Versions, n: int, tag: str) -> str:
    info = v.begin("reco", "1")
    rows = ((f"u{i}", f'{{"v":"{tag}"}}'.encode()) for i in range(n))
    assert write_payloads(v.client, "reco", info.version, rows, batch=7) == n
    return info.version


def test_publish_switches_pointer_and_registry(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=2))
    assert v.current() is None
    version = _write(v, 20, "a")
    assert v.current() is None  # written but not yet visible
    done = v.publish(version, expected_rows=20)
    assert done.status == "published" and done.rows == 20
    assert v.current() == version
    got_version, values = read_current(rclient, "reco", ["u3", "nope"])
    assert got_version == version
    assert values == [b'{"v":"a"}', None]


def test_count_mismatch_never_moves_the_pointer(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings())
    live = _write(v, 5, "a")
    v.publish(live, 5)
    broken = _write(v, 4, "b")
    with pytest.raises(PublishError):
        v.publish(broken, expected_rows=5)
    assert v.current() == live
    assert v.get(broken).status == "failed"
    assert v.count_keys(broken) == 0  # its partial keys were removed


def test_rollback_and_retirement(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=2))
    first = _write(v, 3, "1")
    v.publish(first, 3)
    second = _write(v, 3, "2")
    v.publish(second, 3)
    target = v.rollback()
    assert target.version == first and v.current() == first
    left = v.get(second)
    assert left.status == "published" and f"rolled back to {first}" in left.note
    with pytest.raises(NotFound):
        v.rollback()  # nothing older than the first
    third = _write(v, 3, "3")
    v.publish(third, 3)
    fourth = _write(v, 3, "4")
    v.publish(fourth, 3)
    statuses = {i.version: i.status for i in v.all()}
    assert statuses[fourth] == "published" and statuses[third] == "published"
    assert statuses[first] == "retired" and statuses[second] == "retired"
    retired = v.get(second).note  # says it was retired, then what came before
    assert retired.startswith("retired at ") and retired.endswith(f"; {left.note}")
    assert v.get(first).note.startswith("retired at ") and ";" not in v.get(first).note
    assert v.count_keys(first) == 0 and v.count_keys(second) == 0
    assert v.count_keys(third) == 3


def test_rollback_to_a_named_version(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=3))
    versions = []
    for tag in "abc":
        versions.append(_write(v, 2, tag))
        v.publish(versions[-1], 2)
    assert v.rollback(to=versions[0]).version == versions[0]
    assert rclient.get(keys.pointer_key("reco")) == versions[0].encode()


def test_a_killed_writer_is_dead_within_its_lease_and_removed_by_the_next_job(
    rclient: redis.Redis,
) -> None:
    v = Versions(rclient, "reco", StoreSettings(writer_lease_s=1.0))  # room for a busy machine
    live = _write(v, 3, "a")
    v.publish(live, 3)
    killed = _write(v, 40, "k")  # begun, written, and its writer never renews the lease
    assert {i.version: (i.status, i.rows) for i in v.all()}[killed] == ("writing", 40)
    time.sleep(1.2)
    assert {i.version: (i.status, i.rows) for i in v.all()}[killed] == ("dead", 40)
    assert v.count_keys(killed) == 40
    nxt = v.begin("reco", "1")  # the next job removes it at once
    assert v.get(killed).status == "failed" and "lease" in v.get(killed).note
    assert v.count_keys(killed) == 0 and v.current() == live
    assert rclient.exists(keys.written_key("reco", killed)) == 0
    with v.lease(nxt.version):  # a live writer renews: never dead, however long it runs
        time.sleep(2.0)
        assert {i.version: i.status for i in v.all()}[nxt.version] == "writing"
        assert v.retire_old() == []


def test_gc_removes_a_dead_writer_at_once(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(writer_lease_s=0.2))
    killed = _write(v, 5, "k")
    time.sleep(0.3)
    assert v.retire_old() == [killed] and v.count_keys(killed) == 0


def test_a_publish_only_moves_forward_unless_forced(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=3))
    late = _write(v, 2, "late")  # begun first, finishes last (an orphaned driver)
    newer = _write(v, 2, "new")
    v.publish(newer, 2)
    with pytest.raises(PublishError) as info:
        v.publish(late, 2)
    assert info.value.code == "stale_publish" and v.current() == newer
    assert v.get(late).status == "failed" and v.count_keys(late) == 0
    late_again = _write(v, 2, "late2")
    newest = _write(v, 2, "newest")
    v.publish(newest, 2)
    done = v.publish(late_again, 2, force=True)  # an operator's deliberate choice
    assert v.current() == late_again and f"forced over the newer live version {newest}" in done.note


def test_rollback_is_reversible_and_kept_by_gc(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=3))
    a, b = _write(v, 2, "a"), None
    v.publish(a, 2)
    b = _write(v, 2, "b")
    v.publish(b, 2)
    assert v.rollback().version == a
    assert v.retire_old() == []  # b is one of the newest 3: kept
    assert v.count_keys(b) == 2
    assert v.rollback(to=b).version == b  # and rolled forward to again
    assert v.current() == b


def test_registry_history_is_bounded(rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(version_gc, "HISTORY", 2)
    v = Versions(rclient, "reco", StoreSettings(keep_versions=1))
    made = []
    for i in range(6):
        made.append(_write(v, 1, str(i)))
        v.publish(made[-1], 1)
    statuses = {i.version: i.status for i in v.all()}
    assert statuses == {made[5]: "published", made[4]: "retired", made[3]: "retired"}


def test_gc_leaves_exactly_the_live_and_kept_versions_whatever_debris_there_is(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The debris of every failure: a failed version whose removal an outage cut short, a
    dead writer's, retired ones, an entry trimmed from the history with its keys; after
    gc, only the live and kept versions hold keys, and the failed version's fenced
    writer lands nothing."""
    monkeypatch.setattr(version_gc, "HISTORY", 1)
    v = Versions(rclient, "reco", StoreSettings(keep_versions=2, writer_lease_s=1.0))
    failed = _write(v, 30, "f")
    where, fence = v.placed(failed), v.fence(failed)
    with monkeypatch.context() as cut:  # the outage comes as fail removes the keys
        cut.setattr(values, "delete", _outage)
        with pytest.raises(redis.ConnectionError):
            v.fail(failed, "a bad run")
    assert v.get(failed).status == "failed" and v.count_keys(failed) == 30
    dead = _write(v, 30, "d")  # its writer never renews: dead in 1 s
    orphan = _write(v, 30, "o")  # its entry lost (trimmed by an older gc) with its keys
    rclient.hdel(keys.registry_key("reco"), orphan)
    published = []
    for tag in "abcd":
        published.append(_write(v, 30, tag))
        v.publish(published[-1], 30)
    time.sleep(1.2)
    v.retire_old()  # reaps the dead writer, retires a and b, trims the history, sweeps
    rows = [(f"u{i}", b'{"v":1}') for i in range(30)]
    with pytest.raises(PublishError) as refused:  # its fenced writer lands nothing now
        values.write(rclient, where, rows, fence=fence)
    assert refused.value.code == "lease_lost"
    kept = {published[-1], published[-2]}
    assert {i.version for i in v.all() if i.status == "published"} == kept
    left = {k.decode() for k in rclient.scan_iter(match="ps:reco:*")}
    owners = {k.split(":")[2] for k in left}
    assert owners == kept, (sorted(owners - kept), failed, dead, published)
    assert all(v.count_keys(k) == 30 for k in kept)
    assert dead not in owners and failed not in owners and orphan not in owners
    own = {k.decode() for k in rclient.scan_iter(match="ps:{reco}:*")}
    assert own == {keys.pointer_key("reco"), keys.registry_key("reco"), keys.owned_key("reco")}
    assert set(rclient.hkeys(keys.owned_key("reco"))) == {k.encode() for k in kept}


def _outage(*_: object, **__: object) -> int:
    raise redis.ConnectionError("the connection dropped")


def test_a_lapsed_lease_stays_lapsed_its_writer_can_neither_renew_nor_publish(
    rclient: redis.Redis,
) -> None:
    """Once its deadline passed, another job may be failing the version: the writer that
    wakes cannot take it back."""
    v = Versions(rclient, "reco", StoreSettings(writer_lease_s=1.0))
    version = _write(v, 5, "w")
    assert v.renew(version)  # within its lease: renewed
    time.sleep(1.2)
    assert not v.renew(version)
    with pytest.raises(PublishError) as lost:
        v.publish(version, 5)
    assert lost.value.code == "lease_lost" and v.current() is None


def test_a_version_with_many_buckets_keeps_its_lease_while_begin_makes_them(
    rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100,000 buckets take begin longer than its lease (each of its 100 round trips is
    made to last 20 ms more, so on any machine): it renews the lease as it makes them, so
    the writer still holds it when begin returns."""
    renewing = writers._renewing

    def slowed(versions: Versions, version: str, token: str) -> Callable[[], None]:
        renew = renewing(versions, version, token)

        def step() -> None:
            time.sleep(0.02)
            renew()

        return step

    monkeypatch.setattr(writers, "_renewing", slowed)
    v = Versions(rclient, "reco", StoreSettings(writer_lease_s=1.0))
    started = time.monotonic()
    info = v.begin("reco", "1", expected_keys=6_400_000)
    assert time.monotonic() - started > 2 * v.settings.writer_lease_s  # it outlasted it
    assert info.buckets == 100_000
    assert v.renew(info.version)  # still this writer's
    assert (
        rclient.hget(v.placed(info.version).bucket_names()[-1], "")
        == v.token(info.version).encode()
    )
