"""Single-flight misses over real processes: two lookup servers, one fallback, one Redis.
Concurrent misses of one key cost one live inference (counted by the fallback itself);
the leader's error reaches every waiter within the deadline; a key live inference has no
answer for is not asked again while it is remembered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from prescore.settings import Settings
from tests.fallback_lookup_helpers import (
    fallback_calls,
    fallback_server,
    lookup_server,
    publish_data,
)
from tests.fallback_procs import Server

pytest_plugins = ["tests.fallback_lookup_fixtures"]
CLIENTS = 50


def _storm(urls: list[str], path: str) -> list[tuple[int, dict[str, Any], float]]:
    """``CLIENTS`` requests for ``path`` released at once, spread over ``urls``."""
    start = threading.Barrier(CLIENTS)
    out: list[Any] = [None] * CLIENTS

    def ask(i: int) -> None:
        with requests.Session() as s:
            url = urls[i % len(urls)] + path
            s.get(urls[i % len(urls)] + "/healthz", timeout=5)  # connected before the storm
            start.wait()
            began = time.monotonic()
            reply = s.get(url, timeout=10)
            out[i] = (reply.status_code, reply.json(), time.monotonic() - began)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(o is not None for o in out)
    return out


@pytest.fixture()
def two_lookups(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    fallback: Server,
    tmp_path: Path,
) -> Iterator[list[Server]]:
    publish_data(rclient, settings)
    servers = [
        lookup_server(
            world,
            redis_url,
            fallback.url,
            tmp_path / f"lookup{i}.log",
            LOOKUP_THREADS="32",
            LOOKUP_NEGATIVE_TTL_S="1.5",
        )
        for i in range(2)
    ]
    yield servers
    for s in servers:
        s.stop()


def test_fifty_concurrent_misses_of_one_key_make_one_live_inference(
    two_lookups: list[Server], fallback: Server
) -> None:
    urls = [s.url for s in two_lookups]
    assert requests.get(urls[0] + "/v1/picks/c4", timeout=5).status_code == 200  # model warm
    before = fallback_calls(fallback)
    answers = _storm(urls, "/v1/picks/c7")
    assert fallback_calls(fallback) - before == 1  # the fallback's own count
    assert {status for status, _, _ in answers} == {200}
    items = {tuple(i["product_id"] for i in doc["items"]) for _, doc, _ in answers}
    assert len(items) == 1  # every client got the one answer
    assert {doc["source"] for _, doc, _ in answers} <= {"live", "written_back"}
    saved = 0.0
    for url in urls:
        text = requests.get(url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith('prescore_lookup_singleflight_saved_total{dataset="shop"}'):
                saved += float(line.rsplit(" ", 1)[1])
    # the requests that neither led nor came after the write-back waited for the leader
    live = sum(1 for _, doc, _ in answers if doc["source"] == "live")
    assert saved == live - 1


def test_a_key_with_no_live_answer_is_asked_once_while_remembered(
    two_lookups: list[Server], fallback: Server
) -> None:
    urls = [s.url for s in two_lookups]
    before = fallback_calls(fallback)
    for i in range(20):  # "nobody" is in no table: the model has no answer for it
        reply = requests.get(urls[i % 2] + "/v1/picks/nobody", timeout=5)
        assert (reply.status_code, reply.json()["error"]) == (404, "not_found")
    assert fallback_calls(fallback) - before == 1
    time.sleep(1.6)  # LOOKUP_NEGATIVE_TTL_S
    assert requests.get(urls[0] + "/v1/picks/nobody", timeout=5).status_code == 404
    assert fallback_calls(fallback) - before == 2


LONG_DEADLINE_S = 2.0  # long beside the delays of a loaded machine (0.5 s elsewhere)


def test_the_leaders_error_reaches_every_waiter_within_the_deadline(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    fb = fallback_server(world, tmp_path / "fb.log").start()
    lookups: list[Server] = []
    try:
        for i in range(2):
            lookups.append(
                lookup_server(
                    world,
                    redis_url,
                    fb.url,
                    tmp_path / f"lookup{i}.log",
                    LOOKUP_THREADS="32",
                    PRESCORE_FALLBACK_BREAKER_MIN_CALLS="1000",  # every storm reaches the fallback
                    PRESCORE_FALLBACK_TIMEOUT_S=str(LONG_DEADLINE_S),
                )
            )
        urls = [s.url for s in lookups]
        assert requests.get(urls[0] + "/v1/picks/c4", timeout=5).status_code == 200
        fb.pause()  # accepts connections, answers nothing: the leader's call times out
        hung = _storm(urls, "/v1/picks/c8")
        deadline = LONG_DEADLINE_S
        assert {(s, doc["error"]) for s, doc, _ in hung} == {(504, "fallback_timeout")}
        # answered at the deadline, not after a call of their own once the leader's failed
        # (twice the deadline): the gap between the two is what a loaded machine may take
        assert max(took for _, _, took in hung) < 1.5 * deadline, sorted(t for *_, t in hung)
        fb.resume()
        fb.kill()  # refused at once: every waiter gets the leader's unavailable
        down = _storm(urls, "/v1/picks/c9")
        assert {(s, doc["error"]) for s, doc, _ in down} == {(503, "fallback_unavailable")}
        assert max(took for _, _, took in down) < 1.5 * deadline
    finally:
        for s in lookups:
            s.stop()
        fb.stop()


def test_a_leader_whose_handler_breaks_hands_its_waiters_an_outage_and_frees_the_key(
    rclient: redis.Redis,
) -> None:
    """A fault inside the leader's live call (not one of the failures a handler returns)
    reaches the waiters as 503 ``fallback_unavailable``, not as no answer (a 404 that says
    the key does not exist); and the flight is settled, so the next miss asks at once
    instead of waiting out the lease."""
    from lookup.live.misses import Miss
    from lookup.live.singleflight import SingleFlight
    from lookup.store import Resolved
    from prescore.encoding import keys
    from prescore.errors import FallbackUnavailable

    asked, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def broken(misses: Any, version: Resolved) -> list[Any]:
        calls.append(len(misses))
        asked.set()
        release.wait(10)
        raise RuntimeError("a fault of the handler's own")

    flight = SingleFlight(broken, rclient, deadline_s=5.0, negative_ttl_s=60.0)
    version, miss = Resolved("shop", "v1", model_version="1"), Miss("shop", "c404")
    got: list[Any] = []
    leader = threading.Thread(target=lambda: got.append(("leader", flight([miss], version))))
    leader.start()
    assert asked.wait(10)
    waiter = threading.Thread(target=lambda: got.append(("waiter", flight([miss], version))))
    waiter.start()
    time.sleep(0.2)  # the waiter waits on the leader's flight
    release.set()
    leader.join(10)
    waiter.join(10)
    assert sorted(who for who, _ in got) == ["leader", "waiter"]
    for _, answers in got:
        assert len(answers) == 1 and isinstance(answers[0], FallbackUnavailable), got
    assert calls == [1]  # the waiter asked no second time
    lease = keys.flight_key("shop", "v1", keys.entity_key("c404", None))
    assert rclient.exists(lease) == 0  # the next miss leads at once
    assert rclient.exists(keys.negative_key("shop", "v1", keys.entity_key("c404", None))) == 0
