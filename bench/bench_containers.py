"""The images against this checkout: the bulk runs in the jobs image against the same runs
outside containers (same data, models, Redis and spark-submit line; alternating, medians),
the lookup's and fallback's start to ready, the images' sizes and, with --build, the time
of a build without cache from a warm wheel folder.

    python -m bench.bench_containers [--users 3000] [--photos 600] [--rounds 3] [--build]

Needs a Docker engine and the images (tag dev: `make test-images` or
docker/build-images.sh builds them). Works under var/bench-containers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from prescore.ports import free_port
from tests.containers import (
    DATASETS,
    ROOT,
    TAG,
    VAR,
    Containers,
    base_image,
    dev_settings,
    docker,
    engine_problem,
    outside_env,
    owned,
    run_logged,
    score_cmd,
    start_redis,
    wheel_folder,
)


def seed(c: Containers, var: Path, users: int, photos: int) -> None:
    """Demo data and photos, both models trained and promoted, in the demo image."""
    demo, py = f"prescore-demo:{TAG}", ["python", "-m"]
    tmp = owned(c.folder / "seed-tmp")
    opts = {"mounts": [f"{var}:{VAR}", DATASETS, f"{tmp}:/tmp"], "tmpfs": ()}
    steps = [
        ["examples.hotels.datagen", "--out", f"{VAR}/data", "--users", str(users), "--seed", "7"],
        ["examples.hotels.imagegen", "--out", f"{VAR}/images", "--count", str(photos)],
        ["examples.hotels.train_reco", "--data", f"{VAR}/data", "--out", "/tmp/reco"],
        ["prescore.cli", "models", "register", "reco", "/tmp/reco", "--promote"],
        [
            "examples.hotels.train_tagger",
            "--images",
            f"{VAR}/images",
            "--out",
            "/tmp/tagger",
            "--epochs",
            "8",
        ],
        ["prescore.cli", "models", "register", "tagger", "/tmp/tagger", "--promote"],
    ]
    for i, step in enumerate(steps):
        print(f"seed: {step[0]}", flush=True)
        c.run(f"seed-{i}", demo, [*py, *step], **opts)  # type: ignore[arg-type]


def wait_ready(url: str, timeout_s: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready in {timeout_s} s")


def start_to_ready(c: Containers, var: Path, role: str) -> float:
    """Seconds from `docker run` to the service's /readyz answering 200."""
    port = free_port()
    bind = {"lookup": "LOOKUP_BIND", "fallback": "FALLBACK_BIND"}[role]
    env = {bind: f"127.0.0.1:{port}", "FALLBACK_DATASETS": "tags"}  # reco needs TensorFlow
    mounts = [f"{var}:{VAR}:ro", DATASETS] if role == "fallback" else [DATASETS]
    start = time.monotonic()
    name = c.start(
        f"{role}-{uuid.uuid4().hex[:6]}", f"prescore-{role}:{TAG}", mounts=mounts, env=env
    )
    wait_ready(f"http://127.0.0.1:{port}/readyz")
    took = time.monotonic() - start
    docker("rm", "-f", name)
    return took


def score_round(
    c: Containers, var: Path, outside: dict[str, str], r: int, times: dict[str, list[float]]
) -> None:
    """Each dataset's bulk run in the jobs image and outside, which first alternating."""
    for dataset in ("reco", "tags"):
        for inside in (r % 2 == 0, r % 2 == 1):
            where = "inside" if inside else "outside"
            print(f"round {r + 1}: score {dataset} {where}", flush=True)
            if inside:
                mounts = [f"{var}:{VAR}:ro", DATASETS]
                took = c.run(
                    f"score-{dataset}-{r}",
                    f"prescore-jobs:{TAG}",
                    score_cmd(dataset),
                    mounts=mounts,
                )
            else:
                took = run_logged(
                    score_cmd(dataset, sys.executable),
                    c.folder / f"outside-{dataset}.log",
                    env=outside,
                    timeout=1800,
                )
            times.setdefault(f"{dataset} {where}", []).append(took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--build", action="store_true", help="also time builds without cache")
    args = parser.parse_args()
    if problem := engine_problem():
        raise SystemExit(f"bench_containers: {problem}")
    work = ROOT / "var" / "bench-containers"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    build_s = None
    if args.build:
        print("building without cache from the wheel folder", flush=True)
        build_s = run_logged(
            [
                str(ROOT / "docker" / "build-images.sh"),
                "--tag",
                TAG,
                "--no-cache",
                "--base",
                base_image(work / "build.log"),
                "--wheels",
                str(wheel_folder()),
            ],
            work / "build.log",
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            timeout=3600,
        )
    password, redis_port = uuid.uuid4().hex, free_port()
    redis_url = f"redis://:{password}@127.0.0.1:{redis_port}/0"
    c = Containers(work, dev_settings(redis_url, "http://127.0.0.1:9"))
    var = owned(work / "var")
    times: dict[str, list[float]] = {}
    try:
        start_redis(c, redis_port, password, work / "redis-data")
        time.sleep(1)
        seed(c, var, args.users, args.photos)
        outside = outside_env(var, redis_url, work)
        for r in range(args.rounds):
            score_round(c, var, outside, r, times)
            for role in ("lookup", "fallback"):
                times.setdefault(f"{role} ready", []).append(start_to_ready(c, var, role))
    finally:
        c.remove_all()
    report(times, build_s, args)
    return 0


def report(times: dict[str, list[float]], build_s: float | None, args: argparse.Namespace) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nbulk runs, {args.users} users / {args.photos} photos, medians of {args.rounds}"
        " alternating rounds (seconds, spark-submit to exit)"
    )
    print("| dataset | in the jobs image | outside (this checkout) | inside / outside |")
    print("|---|---|---|---|")
    for dataset in ("reco", "tags"):
        i, o = med[f"{dataset} inside"], med[f"{dataset} outside"]
        print(f"| {dataset} | {i:.1f} | {o:.1f} | {i / o:.2f} |")
    print("\n| service | docker run to /readyz 200 (median s) |\n|---|---|")
    for role in ("lookup", "fallback"):
        print(f"| {role} | {med[f'{role} ready']:.2f} |")
    print("\n| image | size (MB) |\n|---|---|")
    for image in ("lookup", "fallback", "jobs", "demo"):
        size = docker("image", "inspect", "--format", "{{.Size}}", f"prescore-{image}:{TAG}")
        print(f"| prescore-{image}:{TAG} | {int(size.stdout) // 1_000_000} |")
    if build_s is not None:
        print(f"\nfour images built without cache from a warm wheel folder: {build_s:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
