"""The lookup when its peers fail, on real processes: a live-inference fallback that
refuses, answers a body it should not, or is down; a Redis that stalls (SIGSTOP); a Redis
that lost its data; and a fallback that would serve to the network without a token.

Each answer is honest and fast: a stale answer is served when its refresh fails, one
key's failure never fails a batch, no fallback answer becomes a 500, a stalled store is
a 503 within one timeout, and a declared dataset is never a 404."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from fallback.settings import FallbackSettings
from prescore.errors import ConfigError, FallbackUnavailable
from prescore.settings import Settings, StoreSettings
from prescore.store.embedded_redis import RedisProcess
from tests.fallback_procs import Server, free_port
from tests.helpers import ROOT, SERVED_CONFIG, read_until_closed, unanswered
from tests.lookup_helpers import publish_customers, served_settings

STALE_LIVE = '[datasets.shop]\nmax_age_s = 60\nstale = "live"\n'  # every test answer is stale


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "prescore.toml"
    path.write_text(SERVED_CONFIG.read_text().replace("[datasets.shop]\n", STALE_LIVE, 1))
    return path


def _lookup(tmp_path: Path, redis_url: str, ready: str = "/readyz", **env: str) -> Server:
    base = {
        "PRESCORE_CONFIG": str(_config(tmp_path)),
        "PRESCORE_VAR": str(tmp_path / "var"),
        "REDIS_URL": redis_url,
        "LOOKUP_WORKERS": "1",
        "LOOKUP_THREADS": "4",
        "PRESCORE_FALLBACK_TIMEOUT_S": "0.5",
    }
    return Server("lookup.serve", {**base, **env}, tmp_path / "lookup.log").start(ready)


@pytest.fixture()
def customers(rclient: redis.Redis, settings: Settings, tmp_path: Path) -> str:
    """Five customers published (c0..c4, scored long ago: stale under STALE_LIVE)."""
    return publish_customers(rclient, served_settings(settings, tmp_path / "var"), 5)


ODD = ["refuse", "list", "deep", "short", "nan", "foreign", "shapeless", "huge"]


@pytest.fixture(params=[*ODD, "down"])
def fallback(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(mode, url) of a fallback that fails every call in its own way."""
    if request.param == "down":
        yield "down", f"http://127.0.0.1:{free_port()}"  # nothing listens there
        return
    srv = Server(
        "tests.odd_fallback", {"ODD_FALLBACK_MODE": request.param}, tmp_path / "fallback.log"
    ).start()
    yield request.param, srv.url
    srv.stop()


# what a key with no answer gets, by how the fallback failed: the caller sent only a key,
# so a refusal is no fault of theirs, and a body it should not answer is not served
EXPECTED = {mode: (503, "fallback_unavailable") for mode in [*ODD, "down"]}
# the cause each is counted under (a refusal is the input's, not an outage: not counted)
CAUSE = {mode: "unavailable" for mode in ["list", "deep", "short", "huge", "down"]}
CAUSE |= {mode: "invalid_answer" for mode in ["nan", "foreign", "shapeless"]}


@pytest.mark.parametrize("single_flight", ["1", "0"])
def test_when_live_inference_fails_stale_answers_are_served_and_a_batch_stays_whole(
    customers: str, redis_url: str, fallback: tuple[str, str], single_flight: str, tmp_path: Path
) -> None:
    mode, url = fallback
    lookup = _lookup(
        tmp_path, redis_url, PRESCORE_FALLBACK_URL=url, LOOKUP_SINGLE_FLIGHT=single_flight
    )
    try:
        stale = requests.get(f"{lookup.url}/v1/picks/c1", timeout=10)
        assert stale.status_code == 200, stale.text  # its refresh failed: still an answer
        doc = stale.json()
        assert (
            doc["stale"] is True and doc["source"] == "precomputed" and doc["customer_id"] == "c1"
        )
        status, code = EXPECTED[mode]
        miss = requests.get(f"{lookup.url}/v1/picks/nobody", timeout=10)
        assert (miss.status_code, miss.json()["error"]) == (status, code), miss.text
        batch = requests.post(
            f"{lookup.url}/v1/picks:batchGet",
            json={"customer_ids": ["c1", "nobody", "c2"]},
            timeout=10,
        )
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r.get("customer_id") for r in results] == ["c1", "nobody", "c2"]
        assert results[0]["stale"] is True and results[2]["stale"] is True
        assert results[1]["error"] == code
        if mode in CAUSE:
            metrics = requests.get(f"{lookup.url}/metrics", timeout=5).text
            wanted = ('dataset="shop"', f'cause="{CAUSE[mode]}"')
            assert any(
                line.startswith("prescore_lookup_fallback_errors_total{")
                and all(label in line for label in wanted)
                for line in metrics.splitlines()
            ), metrics
    finally:
        lookup.stop()
    assert "Traceback" not in lookup.log.read_text()


def test_a_stalled_store_is_a_503_within_one_timeout_and_recovery_needs_no_restart(
    settings: Settings, tmp_path: Path
) -> None:
    """Redis paused (SIGSTOP) under 8 readers: every request answers within about one
    PRESCORE_REDIS_TIMEOUT_S (1 s) instead of one per try; the lookup keeps answering
    (fast 503s), and serves again by itself once Redis resumes."""
    store = RedisProcess(tmp_path / "redis").start()
    lookup = None
    try:
        client = redis.Redis.from_url(store.url)
        publish_customers(client, served_settings(settings, tmp_path / "var"), 5)
        lookup = _lookup(tmp_path, store.url, LOOKUP_POINTER_CACHE_S="0.2")
        url = f"{lookup.url}/v1/datasets/shop/c1"
        assert requests.get(url, timeout=5).status_code == 200
        answers: list[tuple[float, int]] = []  # (seconds, status) of stalled-time requests
        stop = threading.Event()

        def reader() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    started = time.monotonic()
                    status = s.get(url, timeout=10).status_code
                    answers.append((time.monotonic() - started, status))

        assert store.proc is not None
        store.proc.send_signal(signal.SIGSTOP)
        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        store.proc.send_signal(signal.SIGCONT)
        slowest = max(s for s, _ in answers)
        assert {code for _, code in answers} == {503}
        # one timeout a request, not one a try (the four of before: 4 s each); fast 503s
        # while stalled, so far more answers than 8 readers x 4 s / 1 s
        assert slowest < 2.5, (slowest, len(answers))
        assert len(answers) > 40, (slowest, len(answers))
        deadline = time.monotonic() + 10
        while requests.get(url, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the lookup did not recover on its own"
            time.sleep(0.1)
        body = requests.get(f"{lookup.url}/metrics", timeout=5).text
        assert 'action="stalled"' in body  # the fast refusals are counted
    finally:
        if store.proc is not None:
            store.proc.send_signal(signal.SIGCONT)
        if lookup is not None:
            lookup.stop()
        store.stop()


def test_a_declared_dataset_is_never_a_404_even_in_a_lookup_started_after_its_loss(
    customers: str, rclient: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    first = _lookup(tmp_path, redis_url)
    try:
        assert requests.get(f"{first.url}/v1/picks/c1", timeout=5).status_code == 200
        rclient.flushall()  # Redis lost its data (restarted empty)
        lost = requests.get(f"{first.url}/v1/picks/c1", timeout=5)
        assert (lost.status_code, lost.json()["error"]) == (503, "dataset_lost")
    finally:
        first.stop()
    later = _lookup(tmp_path, redis_url, "/healthz")  # knows nothing of what was published
    try:
        for r in (
            requests.get(f"{later.url}/v1/picks/c1", timeout=5),
            requests.get(f"{later.url}/v1/datasets/colours/img1", timeout=5),
            requests.post(
                f"{later.url}/v1/picks:batchGet", json={"customer_ids": ["c1"]}, timeout=5
            ),
        ):
            assert r.status_code == 503 and r.json()["error"] in ("dataset_lost", "not_published")
            assert "publish" in r.json()["message"]
        assert requests.get(f"{later.url}/readyz", timeout=5).status_code == 503  # not ready
    finally:
        later.stop()


def test_clients_stalling_their_bodies_cannot_take_the_thread_others_are_answered_on(
    customers: str, redis_url: str, tmp_path: Path
) -> None:
    """More connections than the worker has threads send a batchGet's headers and part
    of its body, then stall: the GETs of other clients are answered all the same, a body
    beyond the slots is refused at once (503 too_busy), and batches are served again
    once the stalled clients go."""
    lookup = _lookup(tmp_path, redis_url)  # one worker, 4 threads: 3 may wait for bodies
    head = (
        b"POST /v1/picks:batchGet HTTP/1.1\r\nHost: lookup\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    batch = f"{lookup.url}/v1/picks:batchGet"
    stalled: list[socket.socket] = []
    try:
        for _ in range(6):
            conn = socket.create_connection(("127.0.0.1", lookup.port), timeout=10)
            conn.sendall(head + b'{"customer_ids"')  # 15 of its 100 bytes, then nothing
            stalled.append(conn)
        deadline = time.monotonic() + 5
        refused: list[bytes] = []  # those beyond the 3 slots, answered before their body
        while len(refused) < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select(stalled, [], [], 0.1)
            for conn in ready:
                refused.append(read_until_closed(conn))
                stalled.remove(conn)
                conn.close()
        assert len(refused) == 3 and len(stalled) == 3, refused
        assert all(r.startswith(b"HTTP/1.1 503") and b"too_busy" in r for r in refused), refused
        for i in range(3):
            r = requests.get(f"{lookup.url}/v1/picks/c{i}", timeout=5)
            assert r.status_code == 200 and r.json()["customer_id"] == f"c{i}"
        busy = requests.post(batch, json={"customer_ids": ["c1"]}, timeout=5)
        assert (busy.status_code, busy.json()["error"]) == (503, "too_busy")
    finally:
        for conn in stalled:
            conn.close()
    deadline = time.monotonic() + 10
    while requests.post(batch, json={"customer_ids": ["c1"]}, timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the body slots were not given back"
        time.sleep(0.1)
    statuses: list[int] = []  # clients that send their bodies at once: never too_busy

    def post() -> None:
        with requests.Session() as s:
            for _ in range(20):
                statuses.append(
                    s.post(batch, json={"customer_ids": ["c1", "c2"]}, timeout=10).status_code
                )

    posters = [threading.Thread(target=post) for _ in range(8)]
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    assert statuses == [200] * 160, sorted(set(statuses))
    lookup.stop()


def test_clients_stalling_their_headers_hold_no_thread_and_are_cut_off_at_the_timeout(
    customers: str, redis_url: str, tmp_path: Path
) -> None:
    """More connections than the worker has threads send half a request line and its
    headers, then stall: other clients are answered meanwhile (no app thread waits for
    headers), and the server closes each stalled connection once LOOKUP_HEADER_TIMEOUT_S
    has passed, without an answer to a request that never arrived whole."""
    lookup = _lookup(tmp_path, redis_url, LOOKUP_HEADER_TIMEOUT_S="1")
    stalled = []
    try:
        opened = time.monotonic()
        for _ in range(8):  # one worker, 4 threads
            conn = socket.create_connection(("127.0.0.1", lookup.port), timeout=10)
            conn.sendall(b"GET /v1/picks/c1 HTTP/1.1\r\nHost: lookup\r\nX-A: ")
            stalled.append(conn)
        for i in range(3):
            r = requests.get(f"{lookup.url}/v1/picks/c{i}", timeout=5)
            assert r.status_code == 200 and r.json()["customer_id"] == f"c{i}"
        answers = [read_until_closed(conn) for conn in stalled]  # returns once the server closes
        assert time.monotonic() - opened >= 0.9  # at the timeout, not at once
        assert all(b"200 OK" not in a for a in answers), answers
        r = requests.get(f"{lookup.url}/v1/picks/c1", timeout=5)
        assert r.status_code == 200
    finally:
        for conn in stalled:
            conn.close()
        lookup.stop()


def test_with_timed_bodies_a_stalled_body_is_answered_408_and_holds_no_thread(
    customers: str, redis_url: str, tmp_path: Path
) -> None:
    """LOOKUP_BODY_TIMEOUT_S: more connections than the worker has threads send a
    batchGet's headers and 14 of its 100 body bytes, then stall. Other clients' lookups
    and batches are answered while every stalled connection is still open; each stalled
    one is answered 408 and closed once the timeout has passed, and not before."""
    lookup = _lookup(tmp_path, redis_url, LOOKUP_BODY_TIMEOUT_S="3", LOOKUP_THREADS="2")
    stalled = []
    try:
        opened = time.monotonic()
        for _ in range(6):  # one worker, 2 threads
            conn = socket.create_connection(("127.0.0.1", lookup.port), timeout=10)
            conn.sendall(
                b"POST /v1/picks:batchGet HTTP/1.1\r\nHost: lookup\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"customer_ids'
            )
            stalled.append(conn)
        for i in range(3):
            r = requests.get(f"{lookup.url}/v1/picks/c{i}", timeout=5)
            assert r.status_code == 200 and r.json()["customer_id"] == f"c{i}"
        body = {"customer_ids": ["c1", "c2"]}
        r = requests.post(f"{lookup.url}/v1/picks:batchGet", json=body, timeout=5)
        assert r.status_code == 200 and r.json()["found"] == 2
        assert all(unanswered(conn) for conn in stalled)  # the others came first
        answers = [read_until_closed(conn) for conn in stalled]  # returns once the server closes
        assert time.monotonic() - opened >= 2.9  # at the timeout, not at once
        assert all(a.startswith(b"HTTP/1.1 408") and b"body_timeout" in a for a in answers)
    finally:
        for conn in stalled:
            conn.close()
        lookup.stop()


def test_with_timed_bodies_an_oversized_body_gets_its_413(
    customers: str, redis_url: str, tmp_path: Path
) -> None:
    """A body over LOOKUP_MAX_BODY_BYTES is answered 413 while its client still sends it,
    and the lookup reads no further than the bound."""
    lookup = _lookup(tmp_path, redis_url, LOOKUP_BODY_TIMEOUT_S="5")
    big = b'{"customer_ids": ["' + b"u" * (8 * 1024 * 1024) + b'"]}'
    conn = socket.create_connection(("127.0.0.1", lookup.port), timeout=10)

    def send() -> None:
        head = b"POST /v1/picks:batchGet HTTP/1.1\r\nHost: lookup\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(big)
        with contextlib.suppress(OSError):  # the server answered and closed meanwhile
            conn.sendall(head + big)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        answer = read_until_closed(conn)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"error":"too_large"' in answer, answer
    finally:
        conn.close()
        sender.join(10)
        lookup.stop()


def _fallback_start(env: dict[str, str], bind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fallback.serve", "--bind", bind],
        env={"PATH": os.environ["PATH"], **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_fallback_without_a_token_refuses_to_serve_beyond_loopback(tmp_path: Path) -> None:
    env = {"PRESCORE_CONFIG": str(SERVED_CONFIG), "PRESCORE_VAR": str(tmp_path)}
    refused = _fallback_start(env, f"0.0.0.0:{free_port()}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "PRESCORE_FALLBACK_TOKEN" in line, line
    assert "FALLBACK_BIND 0.0.0.0:" in line and "FALLBACK_BEHIND_NETWORK_POLICY=1" in line

    def checked(bind: str, **more: str) -> Any:
        settings = FallbackSettings.from_env({**env, **more}).with_changes(bind=bind)
        return settings.check_exposure()

    checked("127.0.0.1:8081")  # loopback: no token needed
    checked("[::1]:8081")
    checked("0.0.0.0:8081", PRESCORE_FALLBACK_TOKEN="a-token-of-sixteen-chars")
    checked("0.0.0.0:8081", FALLBACK_BEHIND_NETWORK_POLICY="1")
    with pytest.raises(ConfigError, match=r"FALLBACK_BIND fallback\.internal:8081"):
        checked("fallback.internal:8081")  # a name may resolve anywhere


def test_a_write_back_landing_after_its_version_was_retired_leaves_no_key(
    rclient: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """A live answer computed for version A is written back after A was retired and its
    keys removed (a fallback slower than a publish and its housekeeping): the answer is
    still served, but nothing of A stays in Redis, where no gc would find it again. A
    write-back that lands while its version serves goes with the version, its bound's
    counter included."""
    from lookup.live.client import FallbackClient
    from lookup.settings import LookupSettings
    from lookup.store import Resolved

    served = dataclasses.replace(
        served_settings(settings, tmp_path / "var"), store=StoreSettings(keep_versions=1)
    )
    srv = Server("tests.odd_fallback", {"ODD_FALLBACK_MODE": "echo"}, tmp_path / "fb.log").start()
    try:
        live = FallbackClient(LookupSettings(core=served, fallback_url=srv.url), rclient)
        first = publish_customers(rclient, served, 3)
        answered = live.answer("shop", [{"key": "early"}], Resolved("shop", first, "shop", "m1"))
        assert isinstance(answered[0], bytes)  # written back while the version serves
        assert any(first in k.decode() for k in rclient.scan_iter("*"))
        second = publish_customers(rclient, served, 3)  # retires the first, keys and all
        late = live.answer("shop", [{"key": "late"}], Resolved("shop", first, "shop", "m1"))
        assert isinstance(late[0], bytes) and b'"customer_id":"late"' in late[0]  # served
        left = sorted(k.decode() for k in rclient.scan_iter("*") if first in k.decode())
        assert left == [], left  # its write-backs, their record and their bound's counter
        assert any(second in k.decode() for k in rclient.scan_iter("*"))
    finally:
        srv.stop()


def test_a_reply_past_the_bound_leaves_no_unread_rest_for_the_next_call(
    rclient: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """A fallback reply over the lookup's bound is not read to its end: its connection is
    dropped, not kept for the thread's next call, which would read that rest as its
    answer (and fail a healthy call as an outage)."""
    from lookup.live.client import FallbackClient
    from lookup.settings import LookupSettings
    from lookup.store import Resolved

    served = served_settings(settings, tmp_path / "var")
    srv = Server("tests.odd_fallback", {"ODD_FALLBACK_MODE": "echo"}, tmp_path / "fb.log").start()
    try:
        live = FallbackClient(LookupSettings(core=served, fallback_url=srv.url), rclient)
        version = Resolved("shop", publish_customers(rclient, served, 3), "shop", "m1")
        too_big = live.answer("shop", [{"key": "huge-1"}], version)
        assert isinstance(too_big[0], FallbackUnavailable)
        for key in ("next-1", "next-2"):  # on the same thread, as a worker's next misses
            answered = live.answer("shop", [{"key": key}], version)
            assert isinstance(answered[0], bytes), answered
    finally:
        srv.stop()
