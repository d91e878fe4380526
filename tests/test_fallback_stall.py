"""What a one-second fallback stall costs: a real lookup and fallback, the fallback
stopped (SIGSTOP) for a second while clients keep asking for keys the store lacks.

With the default breaker (a failure ratio over a window, with a minimum of calls) the
stall costs the misses of that second and nothing after; the old rule, a few failures
in a row opening the circuit for seconds, is still expressible and keeps refusing well
after the fallback is back (bench/bench_misses.py measures both side by side)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import redis
import requests

from prescore.settings import Settings
from tests.fallback_lookup_helpers import fallback_server, lookup_server, publish_data

pytest_plugins = ["tests.fallback_lookup_fixtures"]
# The rule before: a few failures in a row open the circuit for 5 s (pybreaker's
# fail_max and reset_timeout); "in a row" is a short window holding only failures.
OLD_RULE = {
    "PRESCORE_FALLBACK_BREAKER_MIN_CALLS": "3",
    "PRESCORE_FALLBACK_BREAKER_RATIO": "1.0",
    "PRESCORE_FALLBACK_BREAKER_WINDOW_S": "0.4",
    "PRESCORE_FALLBACK_BREAKER_RESET_S": "5",
}


# How long after the fallback resumes its backlog of stalled calls may still fail: the
# 0.5 s deadline and the backlog's clearing, with room for a loaded machine; the old rule
# refuses for its 5 s reset time, well past it.
AFTER_S = 1.5


def _asking(url: str, stop: threading.Event, out: list[tuple[float, int, str]], n: int) -> None:
    """Ask distinct missing keys one after another; (when, status, message) of each."""
    i = 0
    with requests.Session() as s:
        while not stop.is_set():
            reply = s.get(f"{url}/v1/picks/c{3 + (n * 1000 + i) % 40}", timeout=5)
            out.append((time.monotonic(), reply.status_code, reply.json().get("message", "")))
            i += 1


def _stall(world: dict[str, Any], redis_url: str, log_dir: Path, **env: str) -> dict[str, Any]:
    fb = fallback_server(world, log_dir / "fb.log").start()
    lk = None
    try:
        # every miss asks live inference: one write-back only, no answers shared by
        # single-flight (this measures the breaker alone)
        lk = lookup_server(
            world,
            redis_url,
            fb.url,
            log_dir / "lk.log",
            LOOKUP_THREADS="8",
            PRESCORE_LIVE_MAX_KEYS="1",
            LOOKUP_SINGLE_FLIGHT="0",
            **env,
        )
        assert requests.get(lk.url + "/v1/picks/c299", timeout=5).status_code == 200  # warm
        stop, seen = threading.Event(), []  # type: ignore[var-annotated]
        threads = [threading.Thread(target=_asking, args=(lk.url, stop, seen, n)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        fb.pause()
        paused = time.monotonic()
        time.sleep(1.0)
        fb.resume()
        resumed = time.monotonic()
        time.sleep(AFTER_S + 2.5)
        stop.set()
        for t in threads:
            t.join(10)
        after = [(w, st) for w, st, _ in seen if w > resumed + AFTER_S]  # answers begun after
        return {
            "asked": len(seen),
            "statuses": sorted({st for _, st, _ in seen}),
            "during": sum(1 for w, st, _ in seen if paused <= w <= resumed + AFTER_S and st != 200),
            "errors_after": sum(1 for _, st in after if st != 200),
            "answered_after": sum(1 for _, st in after if st == 200),
            "circuit_open": sum(1 for *_, m in seen if "circuit open" in m),
        }
    finally:
        if lk is not None:
            lk.stop()
        fb.stop()


def test_a_one_second_stall_costs_that_second_not_the_reset_time_after(
    world: dict[str, Any],
    redis_url: str,
    rclient: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    publish_data(rclient, settings)
    now = _stall(world, redis_url, tmp_path)
    assert now["during"] > 0, now  # the stall itself is felt: misses past their deadline
    assert now["errors_after"] == 0 and now["answered_after"] > 10, now
    assert now["circuit_open"] == 0, now
    (tmp_path / "old").mkdir()
    old = _stall(world, redis_url, tmp_path / "old", **OLD_RULE)
    assert old["circuit_open"] > 0 and old["errors_after"] > 10, old  # seconds of refusals
