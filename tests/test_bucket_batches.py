"""A batch grouped by bucket (no I/O, bytes pinned), and the packed commands a bulk
writer sends, against a real redis-server."""

from __future__ import annotations

import hiredis
import pytest
import redis

from prescore.encoding import keys
from prescore.store import values
from prescore.store.bucket_batches import group
from prescore.store.redis_client import run_packed


def test_rows_grouped_by_bucket_in_a_stable_order() -> None:
    rows = [("u1", b"a"), ("u2", b"b"), ("u3", b"c"), ("u1", b"d")]
    grouped = group("shop", "V", 8, rows)
    by_bucket = sorted(range(len(rows)), key=lambda i: keys.bucket_of(rows[i][0], 8))
    assert grouped.keys == [rows[i][0] for i in by_bucket]
    assert grouped.payloads == [rows[i][1] for i in by_bucket]
    assert grouped.names == [
        keys.bucket_key("shop", "V", b) for b in sorted({keys.bucket_of(k, 8) for k, _ in rows})
    ]
    # u1 given twice keeps its last payload last, so the last is what is stored
    assert (
        dict(grouped.mappings())[keys.bucket_key("shop", "V", keys.bucket_of("u1", 8))]["u1"]
        == b"d"
    )
    assert sum(len(m) for _, m in grouped.mappings()) == 3


def test_a_batch_laid_out_as_the_write_script_reads_it() -> None:
    # CRC-32 % 3: u1 -> 2, u2 -> 0, u3 -> 2
    assert [keys.bucket_of(k, 3) for k in ("u1", "u2", "u3")] == [2, 0, 2]
    grouped = group("shop", "V", 3, [("u1", b"a"), ("u2", b"b"), ("u3", b"c")])
    assert grouped.names == ["ps:shop:V:#0", "ps:shop:V:#2"]
    assert grouped.counts == [1, 2]
    assert grouped.pairs() == ["u2", b"b", "u1", b"a", "u3", b"c"]
    empty = group("shop", "V", 3, [])
    assert (empty.names, empty.counts, empty.pairs()) == ([], [], [])


def test_packed_commands_error_reply_raised_after_all_replies(rclient: redis.Redis) -> None:
    rclient.set("s", "1")
    packed = [
        hiredis.pack_command(("SET", "a", "1")),
        hiredis.pack_command(("HSET", "s", "f", "v")),  # WRONGTYPE
        hiredis.pack_command(("SET", "b", "2")),
    ]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        run_packed(rclient, iter(packed))
    assert rclient.mget("a", "b") == [b"1", b"2"]  # the command after the error ran
    assert rclient.ping() is True  # and the pooled connection is still in step
    assert run_packed(rclient, [hiredis.pack_command(("GET", "b"))]) == [b"2"]


def test_fenced_batch_lands_every_key_once(rclient: redis.Redis) -> None:
    from prescore.settings import StoreSettings
    from prescore.store.versions import Versions

    v = Versions(rclient, "shop", StoreSettings())
    info = v.begin("m", "1", "", expected_keys=2_000)
    rows = [(f"c{i}", f'{{"i":{i}}}'.encode()) for i in range(2_000)] + [("c7", b'{"i":"last"}')]
    where = v.placed(info.version)
    assert values.write(rclient, where, rows, batch=700, fence=v.fence(info.version)) == 2_001
    assert values.count(rclient, where) == 2_000
    read = ["c7", "c1999"]
    assert values.fetch(lambda c: values.execute(rclient, c), where, read) == [
        b'{"i":"last"}',
        b'{"i":1999}',
    ]
