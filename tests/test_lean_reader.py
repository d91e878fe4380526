"""The lookup's own reply loop on a real redis-server: replies, errors, restarts, auth."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from lookup.lean_reader import LeanReader
from prescore.settings import RedisSettings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.redis_client import connect


def _lean(url: str) -> LeanReader:
    client = connect(RedisSettings(url=url))
    assert isinstance(client, redis.Redis)
    return LeanReader(client)


def test_replies_in_order_across_many_socket_reads(redis_url: str, rclient: redis.Redis) -> None:
    big = {f"k{i}": bytes([i % 251]) * 70_000 for i in range(20)}  # 1.4 MB of replies
    rclient.hset("h", mapping=big)
    lean = _lean(redis_url)
    commands = [("HGET", "h", f"k{i}") for i in [*range(20), 99]]
    replies = lean.run(commands)  # type: ignore[arg-type]
    assert replies[:20] == [big[f"k{i}"] for i in range(20)]
    assert replies[20] is None
    assert lean.run([("GET", "nothing")]) == [None]


def test_an_error_reply_raises_redis_pys_error_and_the_next_read_is_clean(
    redis_url: str, rclient: redis.Redis
) -> None:
    rclient.set("plain", b"v")
    rclient.hset("h", "f", b"x")
    lean = _lean(redis_url)
    rclient.set("other", b"y")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        lean.run([("HGET", "h", "f"), ("HGET", "plain", "f"), ("HGET", "h", "f")])
    assert lean.run([("GET", "other")]) == [b"y"]  # not the failed read's unread b"x"


def test_a_restarted_redis_is_reconnected_and_a_dead_one_fails_fast(
    redis_proc: RedisProcess, redis_url: str, rclient: redis.Redis
) -> None:
    rclient.set("k", b"1")
    lean = _lean(redis_url)
    assert lean.run([("GET", "k")]) == [b"1"]
    redis_proc.stop()
    with pytest.raises(redis.ConnectionError):
        lean.run([("GET", "k")])
    redis_proc.start()
    assert lean.run([("GET", "k")]) == [None]  # a fresh connection; the server came back empty


def test_a_redis_restarted_while_idle_is_read_again_at_once(
    redis_proc: RedisProcess, redis_url: str
) -> None:
    lean = _lean(redis_url)
    assert lean.run([("SET", "k", "1"), ("GET", "k")]) == [b"OK", b"1"]
    redis_proc.stop()
    redis_proc.start()
    assert lean.run([("GET", "k")]) == [None]  # the dead socket is found, and made again


def test_a_stalled_redis_is_a_timeout_and_the_next_read_is_clean(
    redis_url: str, rclient: redis.Redis
) -> None:
    lean = LeanReader(connect(RedisSettings(url=redis_url, socket_timeout_s=0.2)))  # type: ignore[arg-type]
    rclient.set("k", b"v")
    assert lean.run([("GET", "k")]) == [b"v"]
    rclient.execute_command("CLIENT", "PAUSE", "600")
    with pytest.raises(redis.TimeoutError):
        lean.run([("GET", "k")])
    time.sleep(0.7)
    assert lean.run([("GET", "k")]) == [b"v"]


def test_a_connection_idle_past_the_health_check_interval_is_made_again(redis_url: str) -> None:
    lean = LeanReader(connect(RedisSettings(url=redis_url), health_check_interval=0.2))  # type: ignore[arg-type]
    first = lean.run([("CLIENT", "ID")])[0]
    assert lean.run([("CLIENT", "ID")])[0] == first  # in use: the same connection
    time.sleep(0.3)
    assert lean.run([("CLIENT", "ID")])[0] != first


def test_a_client_speaking_resp3_is_read_by_redis_py(redis_url: str, rclient: redis.Redis) -> None:
    from lookup.store import StoreReader

    resp3 = connect(RedisSettings(url=redis_url), protocol=3)
    with pytest.raises(ValueError, match="RESP2"):
        LeanReader(resp3)  # type: ignore[arg-type]
    rclient.set("ps:{reco}:current", b"20260101T000000.000Z-abcdef")
    assert StoreReader(resp3, 0).resolve("reco").version == "20260101T000000.000Z-abcdef"


def test_the_connection_is_made_by_redis_py_with_auth(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path, password="s3cret").start()
    try:
        redis.Redis.from_url(proc.url).set("k", b"v")
        assert _lean(proc.url).run([("GET", "k")]) == [b"v"]
        wrong = proc.url.replace("s3cret", "wrong")
        with pytest.raises(redis.AuthenticationError):
            _lean(wrong).run([("GET", "k")])
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "reply",
    [
        "LOADING Redis is loading",
        "READONLY You can't write against a read only replica.",
        "NOPERM no permissions",
        "MASTERDOWN link down",
        "TRYAGAIN multiple keys",
        "NOSCRIPT no script",
        "WRONGTYPE Operation against a key",
        "ERR something else",
    ],
)
def test_an_error_reply_raises_what_redis_pys_own_parser_raises(
    redis_url: str, rclient: redis.Redis, reply: str
) -> None:
    """The same error reply read by redis-py and by the lean reader: the same exception."""
    script = "return redis.error_reply(ARGV[1])"
    with pytest.raises(redis.RedisError) as by_redis_py:
        rclient.eval(script, 0, reply)
    with pytest.raises(redis.RedisError) as by_lean:
        _lean(redis_url).run([("EVAL", script, "0", reply)])
    assert type(by_lean.value) is type(by_redis_py.value)
    assert str(by_lean.value) == str(by_redis_py.value)


def test_the_locked_redis_py_is_one_pyproject_allows_and_the_lean_reader_reads_it() -> None:
    """The dev lock and pyproject.toml name the same redis-py releases, and on the locked
    one the lean reader is in use (a lock moved past the tested range fails here)."""
    import tomllib

    from packaging.requirements import Requirement

    from tests.helpers import ROOT

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    allowed = next(Requirement(d) for d in deps if Requirement(d).name == "redis")
    assert redis.__version__ in allowed.specifier, (redis.__version__, str(allowed.specifier))
    assert hasattr(redis.Connection(), "_sock")
