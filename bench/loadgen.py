"""HTTP load for bench_lookup: wrk (with --latency) when on PATH, else a Python generator.

Requests go to random keys ``{prefix}0..{prefix}{N-1}`` of one :class:`Target`: single
GETs at ``Target.single`` + key, or batchGet POSTs of ``batch_size`` keys to
``Target.batch`` with the keys in the body's ``Target.field`` list.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """What one load hits: the keys ``key_prefix + 0 .. key_prefix + (keys - 1)``."""

    keys: int
    single: str = "/v1/recommendations/"  # a GET is this + a key
    batch: str = "/v1/recommendations:batchGet"  # a batchGet POSTs here ...
    field: str = "user_ids"  # ... {field: [key, ...]}
    key_prefix: str = "u"


_SINGLE_LUA = """
local keys, path, prefix = {keys}, "{single}", "{key_prefix}"
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + os.clock() * 1e6); seeded = true end
  return wrk.format("GET", path .. prefix .. math.random(0, keys - 1))
end
"""
_BATCH_LUA = """
local keys, size, path, prefix = {keys}, {size}, "{batch}", "{key_prefix}"
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + os.clock() * 1e6); seeded = true end
  local ids = {{}}
  for i = 1, size do ids[i] = '"' .. prefix .. math.random(0, keys - 1) .. '"' end
  local body = '{{"{field}":[' .. table.concat(ids, ",") .. ']}}'
  return wrk.format("POST", path, {{["Content-Type"] = "application/json"}}, body)
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors (timeouts included)
    generator: str

    def line(self) -> str:
        return (
            f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"errors {self.errors}"
        )


def run_load(
    base: str,
    target: Target,
    kind: str,
    connections: int,
    duration: float,
    generator: str,
    work: Path,
    batch_size: int = 100,
) -> Result:
    """One measurement of ``kind`` ('single' or 'batch') of ``target`` against ``base``."""
    wrk = shutil.which("wrk")
    if generator == "wrk" and not wrk:
        raise RuntimeError("wrk is not on PATH")
    if wrk and generator != "python":
        return _wrk(wrk, base, target, kind, connections, duration, work, batch_size)
    return _python(base, target, kind, connections, duration, batch_size)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _lua_string(text: str) -> str:
    """``text`` safe inside a double-quoted Lua string (paths and key prefixes)."""
    if not re.fullmatch(r"[A-Za-z0-9_./:|-]*", text):
        raise ValueError(f"not a plain path or key prefix: {text!r}")
    return text


def _wrk(
    wrk: str,
    base: str,
    target: Target,
    kind: str,
    conns: int,
    duration: float,
    work: Path,
    size: int,
) -> Result:
    lua = _SINGLE_LUA if kind == "single" else _BATCH_LUA
    script = work / f"{kind}.lua"
    text = lua.format(
        keys=target.keys,
        size=size,
        single=_lua_string(target.single),
        batch=_lua_string(target.batch),
        field=_lua_string(target.field),
        key_prefix=_lua_string(target.key_prefix),
    )
    script.write_text(text)
    threads = max(1, min(conns, 2))
    out = subprocess.run(
        [
            wrk,
            "--latency",
            "-t",
            str(threads),
            "-c",
            str(conns),
            "-d",
            f"{duration:g}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if rps is None or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:  # a read error is a peer closing a connection; the sync worker does that always
        errors += int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return Result(float(rps.group(1)), _ms(pct["50"]), _ms(pct["99"]), errors, "wrk")


def run_threads(target: Callable[[int], None], count: int) -> float:
    """Run ``target(0) .. target(count - 1)`` on as many threads at once; seconds taken."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def _python(base: str, target: Target, kind: str, conns: int, duration: float, size: int) -> Result:
    """Threads with keep-alive connections; much slower than wrk, so figures are a floor."""
    host = urlsplit(base)
    latencies: list[list[float]] = [[] for _ in range(conns)]
    errors = [0] * conns
    stop = time.perf_counter() + duration

    def worker(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection(host.hostname or "127.0.0.1", host.port, timeout=5)
        while time.perf_counter() < stop:
            if kind == "single":
                key = f"{target.key_prefix}{rng.randrange(target.keys)}"
                method, path, body = "GET", target.single + key, None
                headers = {}
            else:
                ids = [f"{target.key_prefix}{rng.randrange(target.keys)}" for _ in range(size)]
                method, path = "POST", target.batch
                body = json.dumps({target.field: ids}).encode()
                headers = {"Content-Type": "application/json"}
            t = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = resp_ = conn.getresponse()
                resp_.read()
                if resp.status != 200:
                    errors[i] += 1
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                continue
            latencies[i].append((time.perf_counter() - t) * 1000)
        conn.close()

    elapsed = run_threads(worker, conns)
    flat = sorted(x for per in latencies for x in per)
    if len(flat) < 2:
        raise RuntimeError("the Python load generator got no answers")
    q = statistics.quantiles(flat, n=100)
    return Result(len(flat) / elapsed, q[49], q[98], sum(errors), "python threads")
