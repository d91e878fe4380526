"""What the pre-switch data gates cost a publish, measured side by side.

    python -m bench.bench_gates [--rows 200000] [--rounds 5]

Writes a parquet of ``--rows`` users' payloads in the demo's ``reco`` shape (the rows of
bench_publish) for a dataset of kind ``external``, starts its own redis-server, and per
round, for the dataset declared with its gates on (the defaults) and off
(``gates.enabled = false``): flushes the server, publishes a first version (untimed: it
is what the gates compare with), then times the publish of a second one with
prescore.publishing.parquet.publish_file, the ``prescore publish`` path. With gates on, the second
publish checks rows, key coverage, score drift, payload sizes and a decode of its sample
against the first; the time the check itself took is the ``gate_seconds`` the publish
records with the version. Each round measures both back to back, in turn first; the
table holds the medians of the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_publish import CONFIG, DATASET, JSON_COLUMN, MODEL, payload, write_parquet
from prescore.data.datasets import load
from prescore.publishing.parquet import publish_file
from prescore.settings import RedisSettings, StoreSettings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.redis_client import connect
from prescore.store.versions import Versions


def _publish(url: str, config: Path, path: Path, version: str) -> tuple[float, float]:
    """Seconds of one publish_file, and the gate seconds it recorded (0 without gates)."""
    dataset = load(config, {}).get(DATASET)
    client = connect(RedisSettings(url=url))
    started = time.perf_counter()
    report = publish_file(
        client,
        StoreSettings(),
        dataset,
        str(path),
        json_column=JSON_COLUMN,
        model=MODEL,
        model_version=version,
        say=lambda _: None,
    )
    took = time.perf_counter() - started
    if not report.published:
        raise RuntimeError(f"the publish of {version} did not go live")
    extra = Versions(client, DATASET, StoreSettings()).get(report.version).extra
    return took, float(extra.get("gate_seconds", 0.0))


def _round(
    url: str, configs: dict[str, Path], path: Path, flip: bool
) -> dict[str, tuple[float, float]]:
    out = {}
    for mode, config in reversed(configs.items()) if flip else configs.items():
        connect(RedisSettings(url=url)).flushall()
        _publish(url, config, path, "1")
        out[mode] = _publish(url, config, path, "2")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        work = Path(tmp)
        path = work / "scores.parquet"
        write_parquet(path, [payload(i) for i in range(args.rows)])
        configs = {"gates on (defaults)": work / "on.toml", "gates off": work / "off.toml"}
        configs["gates on (defaults)"].write_text(CONFIG)
        configs["gates off"].write_text(CONFIG + f"\n[datasets.{DATASET}.gates]\nenabled = false\n")
        redis_proc = RedisProcess(work / "redis").start()
        try:
            rounds = [_round(redis_proc.url, configs, path, n % 2 == 1) for n in range(args.rounds)]
        finally:
            redis_proc.stop()
    print(f"\nbench_gates: {args.rows:,} rows, {args.rounds} rounds, {os.cpu_count()} CPUs\n")
    print("| publish of a second version | seconds (median) | of which the gates |")
    print("|---|---:|---:|")
    medians = {}
    for mode in configs:
        medians[mode] = statistics.median(r[mode][0] for r in rounds)
        gate = statistics.median(r[mode][1] for r in rounds)
        print(f"| {mode} | {medians[mode]:.2f} | {gate:.3f} |")
    added = statistics.median(r["gates on (defaults)"][0] - r["gates off"][0] for r in rounds)
    print(f"\nSeconds the gates add (median of the rounds' differences): {added:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
