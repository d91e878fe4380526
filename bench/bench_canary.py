"""Canaries: the share of keys a 5% canary serves, and the lookup's hit path with a
canary running against none, measured side by side.

``python -m bench.bench_canary [--users N] [--percent P] [--rounds R] [--duration S]``

Starts its own redis-server. The users' top-10 lists (bench_publish's, a parquet list
column) are published in full as dataset ``c``, then published again re-scored (every
list's scores lowered by 0.1%, bench_deltas.write_share of all users) with
``stage=True``: the candidate. Measured:

1. *Share*: with the canary at ``--percent`` (Prescore.canary), the share of the users
   routed to it as prescore.encoding.routing computes it, and as the lookup serves it
   (batchGets of 100 keys over every user, and single GETs of a sample, counting the
   answers whose dataset_version is the candidate's), with the keys on which the lookup
   and routing disagree.
2. *Lookup*: one ``lookup.serve`` (2 workers, the default 1 s pointer cache); each round
   measures single GETs and batchGets of 100 random users with the canary off
   (Prescore.abort) and on (Prescore.canary), in alternating order, waiting past the
   pointer cache after each switch and checking the lookup sees it; medians of the
   rounds, and the canary's ratio to none (the median of the rounds' ratios).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_deltas import write_share
from bench.bench_lookup import ROOT, Server
from bench.bench_publish import write_list_parquet
from bench.loadgen import Result, Target, run_load
from prescore.api import Prescore
from prescore.encoding import routing
from prescore.store.embedded_redis import RedisProcess, free_port

NAME = "c"
CONFIG = (
    f'[datasets.{NAME}]\nkind = "external"\nkey_field = "user_id"\nlist_field = "items"\n'
    'entry_field = "hotel_id"\n'
)
POINTER_CACHE_S = 1.0  # the lookup's default (LOOKUP_POINTER_CACHE_S)
BATCH = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--percent", type=float, default=5.0, help="the canary's share")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sample", type=int, default=2_000, help="single GETs of the share")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "prescore.toml"
        config.write_text(CONFIG)
        full, rescored = tmp / "full.parquet", tmp / "rescored.parquet"
        write_list_parquet(full, args.users)
        write_share(full, rescored, 1.0, 0)
        server = RedisProcess(tmp / "redis").start()
        ps = Prescore(redis_url=server.url, config=str(config))
        lookup: Server | None = None
        try:
            quiet: dict[str, Any] = {"say": lambda line: None}
            live = ps.publish(NAME, str(full), **quiet)
            staged = ps.publish(NAME, str(rescored), stage=True, **quiet)
            if not (live.published and staged.staged):
                raise RuntimeError(f"not published: {live.message} {staged.message}")
            candidate = staged.version
            print(f"{args.users:,} users; live {live.version}, staged {candidate}", flush=True)
            canary = ps.canary(NAME, candidate, args.percent)
            lookup = start_lookup(server.url, config, tmp)
            share_table(lookup.base, args, candidate, canary.share)
            switch = Switch(ps, lookup.base, candidate, args.percent, canary.share)
            lookup_rounds(lookup.base, args, tmp, switch)
        finally:
            if lookup is not None:
                lookup.stop()
            ps.close()
            server.stop()
    return 0


def start_lookup(redis_url: str, config: Path, tmp: Path) -> Server:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    for name in ("PRESCORE_FALLBACK_URL", "LOOKUP_THREADS", "LOOKUP_WORKERS"):
        env.pop(name, None)
    env.update({"PRESCORE_CONFIG": str(config), "PRESCORE_VAR": str(tmp)})
    env["LOOKUP_POINTER_CACHE_S"] = str(POINTER_CACHE_S)
    port = free_port()
    cmd = [sys.executable, "-m", "lookup.serve", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    return Server("lookup", cmd, env, port, probe=f"/v1/datasets/{NAME}/u0").start(tmp)


def ask(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request on a fresh connection (so that both workers get some); its JSON."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        found = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {found}")
        return found
    finally:
        conn.close()


def batch_versions(base: str, users: list[str]) -> tuple[dict[str, str], str | None]:
    """Each user's dataset_version in one batchGet, and the answer's canary_version."""
    found = ask(base, "POST", f"/v1/datasets/{NAME}:batchGet", {"keys": users})
    return {r["user_id"]: r["dataset_version"] for r in found["results"]}, found.get(
        "canary_version"
    )


def share_table(base: str, args: argparse.Namespace, candidate: str, share: int) -> None:
    users = [f"u{n}" for n in range(args.users)]
    routed = {u for u in users if routing.to_canary(u, candidate, share)}
    by_batch: dict[str, str] = {}
    for start in range(0, len(users), BATCH):
        by_batch.update(batch_versions(base, users[start : start + BATCH])[0])
    sample = users[:: max(1, len(users) // args.sample)]
    by_get = {u: ask(base, "GET", f"/v1/datasets/{NAME}/{u}")["dataset_version"] for u in sample}
    print(f"\n| {args.percent:g}% canary | keys | to the canary | share | points off |", end="")
    print(" disagree with routing |\n|---|---:|---:|---:|---:|---:|")
    rows = [("routing", users, {u: candidate if u in routed else "" for u in users})]
    rows += [(f"lookup, batchGet of {BATCH}", users, by_batch)]
    rows += [("lookup, single GET (sample)", sample, by_get)]
    for what, asked, versions in rows:
        hits = sum(1 for u in asked if versions[u] == candidate)
        wrong = sum(1 for u in asked if (versions[u] == candidate) != (u in routed))
        pct = 100 * hits / len(asked)
        print(
            f"| {what} | {len(asked):,} | {hits:,} | {pct:.3f}% | "
            f"{pct - args.percent:+.3f} | {wrong} |"
        )


class Switch:
    """Turns the canary on and off and waits until the lookup serves it so."""

    def __init__(self, ps: Prescore, base: str, candidate: str, percent: float, share: int):
        self.ps, self.base, self.candidate, self.percent = ps, base, candidate, percent
        self.on = True
        canary = [
            u for u in (f"u{n}" for n in range(10_000)) if routing.to_canary(u, candidate, share)
        ]
        live = [u for u in (f"u{n}" for n in range(50)) if u not in canary]
        self.probe = canary[:5] + live[:5]  # a batch both sides answer while it runs

    def set(self, on: bool) -> None:
        if on != self.on:
            if on:
                self.ps.canary(NAME, self.candidate, self.percent)
            else:
                self.ps.abort(NAME)
            self.on = on
        time.sleep(POINTER_CACHE_S + 0.5)
        for _ in range(4):  # fresh connections: both workers, most likely
            versions, canary = batch_versions(self.base, self.probe)
            served = [versions[u] == self.candidate for u in self.probe]
            if (canary == self.candidate) != on or served != [on] * 5 + [False] * 5:
                raise RuntimeError(f"canary {'on' if on else 'off'}, yet served {versions}")


def lookup_rounds(base: str, args: argparse.Namespace, tmp: Path, switch: Switch) -> None:
    target = Target(
        keys=args.users,
        single=f"/v1/datasets/{NAME}/",
        batch=f"/v1/datasets/{NAME}:batchGet",
        field="keys",
        key_prefix="u",
    )
    results: dict[tuple[str, bool], list[Result]] = {}
    for n in range(args.rounds):
        for kind in ("single", "batch"):
            for on in (False, True) if n % 2 == 0 else (True, False):
                switch.set(on)
                one = run_load(base, target, kind, args.connections, args.duration, "auto", tmp)
                results.setdefault((kind, on), []).append(one)
    generator = next(iter(results.values()))[0].generator
    print(f"\n{args.connections} connections, {args.duration:g} s a load, {generator}")
    print("\n| lookup | canary | req/s (median) | p50 ms | p99 ms | errors |", end="")
    print(" req/s on/off | p50 on/off | p99 on/off |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (kind, on), found in sorted(
        results.items(), key=lambda kv: (kv[0][0] != "single", kv[0][1])
    ):
        off = results[(kind, False)]
        ratios = [
            statistics.median(
                getattr(r, f) / getattr(o, f) for r, o in zip(found, off, strict=True)
            )
            for f in ("rps", "p50_ms", "p99_ms")
        ]
        print(
            f"| {kind} | {f'{args.percent:g}%' if on else 'off'} | "
            f"{statistics.median(r.rps for r in found):,.0f} | "
            f"{statistics.median(r.p50_ms for r in found):.2f} | "
            f"{statistics.median(r.p99_ms for r in found):.2f} | "
            f"{sum(r.errors for r in found)} | " + " | ".join(f"{x:.3f}" for x in ratios) + " |"
        )


if __name__ == "__main__":
    sys.exit(main())
