"""Publish, verify, roll back and retire versions against a real redis-server."""

from __future__ import annotations

import pytest
import redis

from prescore import keys
from prescore.errors import NotFound, PublishError
from prescore.settings import StoreSettings
from prescore.versions import Versions, read_current, write_payloads


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
    assert v.get(second).status == "rolled_back"
    with pytest.raises(NotFound):
        v.rollback()  # nothing older than the first
    third = _write(v, 3, "3")
    v.publish(third, 3)
    fourth = _write(v, 3, "4")
    v.publish(fourth, 3)
    statuses = {i.version: i.status for i in v.all()}
    assert statuses[fourth] == "published" and statuses[third] == "published"
    assert statuses[first] == "retired" and statuses[second] == "retired"
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


def test_killed_writer_is_cleaned_once_stale(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings(stale_writing_s=0))
    killed = _write(v, 4, "k")
    v.retire_old()
    assert v.get(killed).status == "failed"
    assert v.count_keys(killed) == 0


def test_registry_history_is_bounded(rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    import prescore.versions as versions

    monkeypatch.setattr(versions, "HISTORY", 2)
    v = Versions(rclient, "reco", StoreSettings(keep_versions=1))
    made = []
    for i in range(6):
        made.append(_write(v, 1, str(i)))
        v.publish(made[-1], 1)
    statuses = {i.version: i.status for i in v.all()}
    assert statuses == {made[5]: "published", made[4]: "retired", made[3]: "retired"}
