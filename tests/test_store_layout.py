"""The store layout on a real redis-server: buckets, their cost, their memory, retirement.

Command counts come from INFO commandstats, so a SCAN of the keyspace coming back into
publish or retirement fails here whatever the machine's speed.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from prescore.encoding import compact, keys
from prescore.encoding.codec import PayloadShape
from prescore.encoding.ranking_payloads import RankingPayloads
from prescore.settings import StoreSettings
from prescore.store import bucket_encodings, values
from prescore.store.values import Placed
from prescore.store.versions import Versions, read_current, write_payloads


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def _publish(v: Versions, n: int, tag: str, expected: int = 0) -> str:
    info = v.begin("reco", tag, expected_keys=expected or n)
    rows = [(f"u{i}", f'{{"v":"{tag}{i}"}}'.encode()) for i in range(n)]
    assert write_payloads(v.client, "reco", info.version, rows) == n
    v.publish(info.version, n)
    return info.version


def test_publish_and_retire_never_scan_the_keyspace(rclient: redis.Redis) -> None:
    for start in range(0, 50_000, 5000):  # another tenant's keys in the same db
        rclient.mset({f"other:{i}": b"x" for i in range(start, start + 5000)})
    v = Versions(rclient, "reco", StoreSettings(keep_versions=1))
    first = _publish(v, 2000, "a")
    rclient.config_resetstat()
    second = _publish(v, 2000, "b")  # publishes, then retires the first
    calls = _calls(rclient)
    assert "scan" not in calls and "keys" not in calls
    buckets = keys.bucket_count(2000)
    assert calls["hlen"] == buckets  # the count reads the new version's buckets only
    assert v.get(first).status == "retired"
    assert rclient.exists(*[keys.bucket_key("reco", first, b) for b in range(buckets)]) == 0
    assert read_current(rclient, "reco", ["u7"]) == (second, [b'{"v":"b7"}'])
    # the live buckets, pointer, registry and the record of versions that hold keys
    assert rclient.dbsize() == 50_000 + buckets + 3


def test_rewriting_a_task_counts_once_and_a_lost_write_fails(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1", expected_keys=300)
    rows = [(f"u{i}", b'{"v":1}') for i in range(300)]
    write_payloads(rclient, "reco", info.version, rows)
    write_payloads(rclient, "reco", info.version, rows[:120])  # a retried task attempt
    assert v.count_keys(info.version) == 300
    where = v.placed(info.version)
    rclient.hdel(where.bucket("u5"), "u5")  # a write that never landed
    assert v.count_keys(info.version) == 299
    try:
        v.publish(info.version, 300)
        raise AssertionError("published with a key missing")
    except Exception as exc:
        assert "expected 300 keys, found 299" in str(exc)
    assert v.current() is None


def test_write_backs_are_read_after_the_buckets_and_retired_from_their_record(
    rclient: redis.Redis,
) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=1))
    live = _publish(v, 10, "a")
    where = v.placed(live)
    pipe = rclient.pipeline(transaction=False)
    ttl = v.settings.live_ttl_s  # the lookup's and the jobs' PRESCORE_LIVE_TTL_S
    pipe.set(where.write_back("new1"), b'{"v":"live"}', ex=ttl)
    values.record_write_backs(pipe, where, [where.write_back("new1")], ttl)
    pipe.execute()
    assert values.read(rclient, where, ["u1", "new1", "ghost"]) == [
        b'{"v":"a1"}',
        b'{"v":"live"}',
        None,
    ]
    assert values.held(rclient, where, ["u1", "new1"]) == ["u1"]  # precomputed only
    _publish(v, 10, "b")  # retires the first version, with its write-back
    assert rclient.exists(where.write_back("new1")) == 0
    assert not rclient.keys(f"ps:{{reco}}:wb:{live}:*")  # its record too


def test_a_version_written_before_buckets_is_still_served_and_removed(
    rclient: redis.Redis,
) -> None:
    v = Versions(rclient, "reco", StoreSettings(keep_versions=1))
    begun = v.begin("reco", "0")
    rclient.delete(*v.placed(begun.version).bucket_names())  # an older release made none
    old = begun.replace(buckets=0)  # as an older release registered it
    rclient.hset(keys.registry_key("reco"), old.version, old.to_bytes())
    rclient.mset({keys.value_key("reco", old.version, f"u{i}"): b'{"v":0}' for i in range(5)})
    v.publish(old.version, 5)
    assert read_current(rclient, "reco", ["u3"]) == (old.version, [b'{"v":0}'])
    _publish(v, 5, "new")
    assert v.get(old.version).status == "retired" and v.count_keys(old.version) == 0


def test_top_10_payloads_take_under_250_bytes_a_user(rclient: redis.Redis) -> None:
    """The demo's shape: top 10 of 2,000 items; MEMORY USAGE of the version's keys."""
    users, n_items = 5000, 2000
    enc = RankingPayloads(
        PayloadShape("user_id", "items", "hotel_id"),
        [f"h{i:05d}" for i in range(n_items)],
        model="reco",
        model_version="20261201T100000.000Z-abcdef",
        scored_at="2026-12-01T10:00:00Z",
    )
    rng = np.random.default_rng(0)
    user_ids = [f"u{i:07d}" for i in range(users)]
    scores = np.sort(rng.random((users, 10)), axis=1)[:, ::-1]
    items = rng.integers(0, n_items, (users, 10))
    stored = enc.encode_compact(user_ids, items, scores, np.full(users, 10))
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1", expected_keys=users)
    where = v.placed(info.version)
    values.write_frames(rclient, where, {0: enc.frame()})
    values.write(rclient, where, zip(user_ids, stored, strict=True))
    used = sum(int(rclient.memory_usage(n) or 0) for n in where.bucket_names())
    assert used / users < 250
    assert rclient.object("encoding", where.bucket_names()[0]) in (b"ziplist", b"listpack")
    json = enc.encode_grid(user_ids[:1], items[:1], scores[:1], np.array([10]))[0]
    assert values.read(rclient, where, user_ids[:1]) == [json]
    assert compact.is_compact(values.read_raw(rclient, where, user_ids[:1])[0] or b"")


def test_placed_reads_name_one_bucket_a_key() -> None:
    where = Placed("reco", "V", 8)
    (cmd,) = where.reads(["u1"])
    assert cmd == ("HGET", f"ps:reco:V:#{keys.bucket_of('u1', 8)}", "u1")
    assert Placed("reco", "V", 0).reads(["u1"]) == [("GET", "ps:reco:V:u1")]


def test_a_version_whose_frames_are_lost_is_a_clean_503_not_a_crash(rclient: redis.Redis) -> None:
    from lookup.store import StoreReader
    from prescore.errors import StoreUnavailable

    enc = RankingPayloads(
        PayloadShape("user_id", "items", "hotel_id"),
        ["h0", "h1"],
        model="reco",
        model_version="1",
        scored_at="2026-12-01T10:00:00Z",
    )
    grid = (np.array([[1, 0]]), np.array([[0.9, 0.2]]), np.array([2]))
    stored = enc.encode_compact(["u1"], *grid)
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1", expected_keys=1)
    where = v.placed(info.version)
    values.write_frames(rclient, where, {0: enc.frame()})
    values.write(rclient, where, [("u1", stored[0])])
    v.publish(info.version, 1)
    errors: list[str] = []
    reader = StoreReader(rclient, pointer_cache_s=0, on_error=errors.append)
    resolved, served = reader.read("reco", ["u1"])
    assert served[0] is not None
    assert [resolved.as_json(served[0], "u1")] == enc.encode_grid(["u1"], *grid)
    values.write(rclient, where, [("u2", compact.encode(0, [7], [1]))])  # no item 7
    corrupt = reader.read("reco", ["u2"])[1][0]
    assert corrupt is not None
    try:
        resolved.decode(corrupt, "u2")
        raise AssertionError("decoded a payload naming an item its frame lacks")
    except StoreUnavailable as exc:
        assert exc.code == "undecodable_payload" and errors == ["decode"]
    rclient.hdel(keys.frames_key("reco", info.version), "entries:0:0")
    try:
        StoreReader(rclient, pointer_cache_s=0).read("reco", ["u1"])
        raise AssertionError("read a payload whose frame is gone")
    except StoreUnavailable as exc:
        assert exc.code == "undecodable_payload" and exc.http_status == 503


def test_write_back_records_are_per_ttl_window_and_expire(rclient: redis.Redis) -> None:
    where = Placed("reco", "V", 4)
    pipe = rclient.pipeline(transaction=False)
    values.record_write_backs(pipe, where, ["ps:reco:V:a", "ps:reco:V:b"], 60)
    pipe.execute()
    (record,) = rclient.keys("ps:{reco}:wb:V:*")
    assert int(record.rsplit(b":", 1)[1]) in (int(time.time()) // 60, int(time.time()) // 60 - 1)
    assert rclient.smembers(record) == {b"ps:reco:V:a", b"ps:reco:V:b"}
    assert 0 < rclient.ttl(record) <= 120  # gone once its members' window has passed


def test_a_writer_from_before_the_upgrade_is_listed_not_a_crash(rclient: redis.Redis) -> None:
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1")
    rclient.delete(keys.written_key("reco", info.version))
    rclient.incrby(keys.written_key("reco", info.version), 7)  # the counter it kept
    (writing,) = v.all()
    assert (writing.status, writing.rows) == ("writing", 7)


def test_a_bucket_that_left_the_compact_encoding_is_found(rclient: redis.Redis) -> None:
    """One payload over the server's hash-max-listpack-value turns its whole bucket into
    a hashtable, which Redis does not say: the sample of the version's buckets does."""
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1", expected_keys=200)  # 4 buckets: all of them sampled
    where = v.placed(info.version)
    values.write(rclient, where, [(f"u{i}", b'{"v":1}') for i in range(200)])
    found = bucket_encodings.sample(rclient, where)
    assert (found.sampled, found.hashtables, found.line()) == (where.buckets, 0, None)
    bound = found.limits["hash-max-listpack-value"]  # the test server tells it
    values.write(rclient, where, [("u7", b'{"v":"' + b"x" * bound + b'"}')])
    found = bucket_encodings.sample(rclient, where)
    assert found.hashtables == 1
    assert f"1 of {where.buckets} sampled are hashtables" in (found.line() or "")
    assert f"a payload over {bound} bytes" in (found.line() or "")
