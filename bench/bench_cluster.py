"""The scoring job on a Spark standalone cluster beside local mode, same data, one run.

    python -m bench.bench_cluster [--users 20000] [--hotels 600] [--rounds 3]

Both run ``jobs/score.py --dataset reco`` through spark-submit with jobs.submit's
arguments, over the demo's data and model (built as bench.bench_scoring builds them):

- *local[2]*: one JVM with two task slots, its Python workers beside it;
- *spark://, two one-core workers* (jobs.standalone): a master and two workers on this
  machine, one executor JVM each, with its own Python worker, model load and broadcast
  items, writing to Redis from each.

Wall seconds are spark-submit's, from start to exit (JVMs, executors and model loads
included); pairs/s is the job's own figure, recorded in the registry: pairs scored over
the time from registering the version to the pointer switch. The two take turns going
first each round; figures are medians of the rounds, a ratio the median of the rounds'.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.bench_scoring import CONFIG, demo_model
from jobs.standalone import StandaloneCluster
from jobs.submit import local_args, spark_submit_bin
from prescore.settings import StoreSettings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.versions import Versions

Run = tuple[float, float, int]  # wall seconds, the job's seconds, pairs scored


def run_once(master: str, env: dict[str, str], client: redis.Redis) -> Run:
    """One spark-submit of the scoring job on ``master``: its wall time and figures."""
    argv = local_args(
        "score", master=master, driver_memory="2g", executor_memory="1g", dataset="reco"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [spark_submit_bin(), *argv], env=env, capture_output=True, text=True, timeout=1800
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the job on {master} failed:\n{done.stderr[-3000:]}")
    versions = Versions(client, "reco", StoreSettings())
    figures = versions.get(versions.current() or "").extra
    return wall, float(figures["seconds"]), int(figures["scored"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--hotels", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _, store = demo_model(tmp, args.users, args.hotels)
        server = RedisProcess(tmp / "redis").start()
        cluster = StandaloneCluster(tmp / "standalone", workers=2, cores=1, memory="2g")
        try:
            cluster.start()
            env = cluster.env(os.environ) | {
                "REDIS_URL": server.url,
                "PRESCORE_MODEL_STORE": store.settings.root,
                "PRESCORE_CONFIG": str(CONFIG),
                "PRESCORE_VAR": str(tmp),
            }
            client = redis.Redis.from_url(server.url)
            masters = {"local[2]": "local[2]", "spark://, two one-core workers": cluster.master_url}
            runs: dict[str, list[Run]] = {name: [] for name in masters}
            for i in range(args.rounds):
                order = list(masters) if i % 2 == 0 else list(reversed(masters))
                for name in order:  # taking turns: neither always runs on a warmer machine
                    runs[name].append(run_once(masters[name], env, client))
        finally:
            cluster.stop()
            server.stop()
    _print(runs, args)
    return 0


def _print(runs: dict[str, list[Run]], args: argparse.Namespace) -> None:
    med = statistics.median
    pairs = runs["local[2]"][-1][2]
    print(
        f"\n{args.users} users, {args.hotels} hotels, {pairs} pairs a run, {args.rounds} rounds\n"
    )
    print("| master | wall s | job s | pairs/s (job) | pairs/s (wall) | pairs/s vs local[2] |")
    print("|---|---:|---:|---:|---:|---:|")
    local = runs["local[2]"]
    for name, rs in runs.items():
        ratio = med(r[2] / r[1] / (lr[2] / lr[1]) for r, lr in zip(rs, local, strict=True))
        print(
            f"| {name} | {med(r[0] for r in rs):.1f} | {med(r[1] for r in rs):.1f} "
            f"| {med(r[2] / r[1] for r in rs):,.0f} | {med(r[2] / r[0] for r in rs):,.0f} "
            f"| {ratio:.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
