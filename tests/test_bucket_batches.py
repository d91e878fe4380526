"""A batch grouped by bucket (no I/O, bytes pinned), and the packed commands a bulk
writer sends, against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import hiredis
import pytest
import redis

from prescore.encoding import keys
from prescore.settings import RedisSettings
from prescore.store import values
from prescore.store.bucket_batches import group
from prescore.store.redis_client import connect, run_packed


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


def test_a_connection_broken_mid_batch_is_made_again_and_no_command_lost(
    rclient: redis.Redis, redis_url: str
) -> None:
    """The writer's connection is killed by another client while its batch is being
    packed and sent: the client's retry makes a new one and sends every command again,
    each once, and none is left out (commands of 40 kB: each send holds one or two)."""
    writer = connect(RedisSettings(url=redis_url), client_name="bulk-writer")
    value = b"v" * 40_000

    def packed() -> Iterator[bytes]:
        for i in range(40):
            if i == 20:
                (me,) = [c for c in rclient.client_list() if c["name"] == "bulk-writer"]
                assert rclient.client_kill_filter(_id=me["id"]) == 1
            yield hiredis.pack_command(("SET", f"big{i}", value + str(i).encode()))

    replies = run_packed(writer, packed())  # type: ignore[arg-type]
    assert len(replies) == 40
    stored = rclient.mget([f"big{i}" for i in range(40)])
    assert stored == [value + str(i).encode() for i in range(40)]
    assert writer.ping() is True


def test_a_batch_that_fails_while_packed_leaves_no_reply_for_the_next_command(
    rclient: redis.Redis,
) -> None:
    """Two commands were sent when packing the third failed: their replies are not read
    by the next user of the pooled connection (it is closed, and made again)."""
    rclient.set("after", "mine")

    def packed() -> Iterator[bytes]:
        for i in range(2):
            yield hiredis.pack_command(("SET", f"sent{i}", b"v" * 40_000))
        raise ValueError("a value that cannot be packed")

    with pytest.raises(ValueError, match="cannot be packed"):
        run_packed(rclient, packed())
    assert rclient.get("after") == b"mine"  # not the "OK" of a SET sent before
