"""HTTP load for bench_lookup: wrk (with --latency) when on PATH, else a Python generator.

Requests go to random user ids ``u0..u{N-1}``: single GETs, or batchGet POSTs.
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

_SINGLE_LUA = """
local users = {users}
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + os.clock() * 1e6); seeded = true end
  return wrk.format("GET", "/v1/recommendations/u" .. math.random(0, users - 1))
end
"""
_BATCH_LUA = """
local users, size = {users}, {size}
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + os.clock() * 1e6); seeded = true end
  local ids = {{}}
  for i = 1, size do ids[i] = '"u' .. math.random(0, users - 1) .. '"' end
  local body = '{{"user_ids":[' .. table.concat(ids, ",") .. ']}}'
  return wrk.format("POST", "/v1/recommendations:batchGet",
                    {{["Content-Type"] = "application/json"}}, body)
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
    kind: str,
    users: int,
    connections: int,
    duration: float,
    generator: str,
    work: Path,
    batch_size: int = 100,
) -> Result:
    """One measurement of ``kind`` ('single' or 'batch') against ``base``."""
    wrk = shutil.which("wrk")
    if generator == "wrk" and not wrk:
        raise RuntimeError("wrk is not on PATH")
    if wrk and generator != "python":
        return _wrk(wrk, base, kind, users, connections, duration, work, batch_size)
    return _python(base, kind, users, connections, duration, batch_size)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _wrk(
    wrk: str, base: str, kind: str, users: int, conns: int, duration: float, work: Path, size: int
) -> Result:
    lua = _SINGLE_LUA if kind == "single" else _BATCH_LUA
    script = work / f"{kind}.lua"
    script.write_text(lua.format(users=users, size=size))
    threads = max(1, min(conns, 2))
    out = subprocess.run(
        [wrk, "--latency", "-t", str(threads), "-c", str(conns), "-d", f"{duration:g}s",
         "--timeout", "5s", "-s", str(script), base],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout  # fmt: skip
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


def _python(base: str, kind: str, users: int, conns: int, duration: float, size: int) -> Result:
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
                method, path, body = "GET", f"/v1/recommendations/u{rng.randrange(users)}", None
                headers = {}
            else:
                ids = [f"u{rng.randrange(users)}" for _ in range(size)]
                method, path = "POST", "/v1/recommendations:batchGet"
                body = json.dumps({"user_ids": ids}).encode()
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
