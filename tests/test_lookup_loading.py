"""One load of a version's frames and of a delta's keys per lookup process, however many
threads ask for them at once (lookup.loading)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lookup.loading import OneLoad
from lookup.store import StoreReader
from prescore.encoding import compact, keys
from prescore.settings import Settings
from tests.helpers import SIMILAR_CONFIG, publish_similar, with_catalog

THREADS = 8


def _waiting(one: OneLoad, threads: list[threading.Thread], load_started: threading.Event) -> None:
    """Start ``threads``, all asking for "k"; return once one loads it and the others wait."""
    for t in threads:
        t.start()
    assert load_started.wait(10)
    deadline = time.monotonic() + 10
    while one.waiting("k") < len(threads) - 1:
        assert time.monotonic() < deadline, f"{one.waiting('k')} threads waiting"
        time.sleep(0.001)


def test_threads_asking_for_a_key_being_loaded_wait_for_that_load() -> None:
    one, started, go = OneLoad(), threading.Event(), threading.Event()
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        started.set()
        assert go.wait(10)  # the load paused until every other thread has asked
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(one.run("k", load))) for _ in range(4)]
    _waiting(one, threads, started)
    assert len(one) == 1 and len(loads) == 1 and one.waiting("k") == 3
    go.set()
    for t in threads:
        t.join(10)
    assert len(loads) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert len(one) == 0  # done: the next ask loads again (its caller caches)
    assert one.run("k", lambda: "again") == "again"


def test_a_failed_load_is_each_waiting_threads_error_and_not_tried_again_in_turn() -> None:
    one, started, go = OneLoad(), threading.Event(), threading.Event()
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        started.set()
        assert go.wait(10)
        raise TimeoutError("the store timed out")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            one.run("k", load)
        except TimeoutError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    _waiting(one, threads, started)
    go.set()
    for t in threads:
        t.join(10)
    assert len(loads) == 1 and len(errors) == 4 and len(one) == 0


@pytest.fixture()
def slowlog(rclient: Any) -> Any:
    """Every command Redis runs from now on, with its arguments (SLOWLOG at 0 µs)."""
    was = rclient.config_get("slowlog-*")
    rclient.config_set("slowlog-log-slower-than", 0)
    rclient.config_set("slowlog-max-len", 100_000)
    rclient.slowlog_reset()
    yield lambda: [
        [a.decode() if isinstance(a, bytes) else str(a) for a in e["command"].split()]
        for e in rclient.slowlog_get(100_000)
    ]
    for name, value in was.items():
        rclient.config_set(name, value)


def test_threads_reading_a_new_version_at_once_load_its_frames_once(
    settings: Settings, rclient: Any, tmp_path: Path, slowlog: Any
) -> None:
    config = tmp_path / "prescore.toml"
    config.write_text(SIMILAR_CONFIG)
    s = with_catalog(settings, config)
    base = publish_similar(s, rclient, tmp_path, [f"s{i}" for i in range(20)], "base")
    delta = publish_similar(s, rclient, tmp_path, ["s1", "s2"], "new", incremental=True)
    reader = StoreReader(rclient, pointer_cache_s=0)
    rclient.slowlog_reset()
    barrier, answers = threading.Barrier(THREADS), []

    def read() -> None:
        barrier.wait(10)
        resolved, found = reader.read("similar", ["s1", "s3"])
        answers.append(
            [resolved.as_json(f or b"", k) for f, k in zip(found, ["s1", "s3"], strict=True)]
        )

    threads = [threading.Thread(target=read) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == THREADS and all(a == answers[0] for a in answers)
    assert b'"new"' in answers[0][0] and b'"base"' in answers[0][1]
    commands = slowlog()
    for version in (base.version, delta.version):  # each frames' heads read once
        name = keys.frames_key("similar", version)
        assert len([c for c in commands if c[:3] == ["HGET", name, compact.HEADS]]) == 1
    delta_buckets = [c for c in commands if c[0] == "HKEYS"]  # the delta's keys, loaded once
    assert len(delta_buckets) == len({c[1] for c in delta_buckets}) > 0
