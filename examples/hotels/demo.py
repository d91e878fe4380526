"""``make demo``: the whole of prescore on one machine, end to end, on embedded defaults.

The hotel demo uses only prescore's public contract, as a team with its own tables and
models would: its datasets are declared in examples/hotels/prescore.toml; it generates
users, hotels, events and photos, trains both models (Keras, preprocessing inside) into
folders, registers them with ``prescore models register``, runs the one bulk job
(``jobs/score.py --dataset``) through spark-submit in local mode, starts the fallback and
lookup services under their production servers, prints real lookups, and stops what it
started. A real redis-server is started unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prescore.settings import Settings
from prescore.store.embedded_redis import RedisProcess, free_port

PY = sys.executable
CONFIG = Path(__file__).resolve().parent / "prescore.toml"


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


@contextmanager
def service(cmd: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[str]:
    """Start a server process, wait until ``url``/readyz answers 200, stop it after."""
    print("$ " + " ".join(cmd) + f"   (log: {log})", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[2]} exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        else:
            raise SystemExit(f"{url} did not become ready; see {log}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def show(method: str, url: str, body: dict[str, object] | None = None) -> None:
    """Print one request and its JSON answer, as a user would see it with curl."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    print(f"\n{method} {url} -> {status}")
    print(json.dumps(json.loads(raw), indent=2)[:1500])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--hotels", type=int, default=600)
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the services up until Ctrl-C"
    )
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("PRESCORE_CONFIG", str(CONFIG))
    settings = Settings.from_env(env)
    var = Path(settings.var_dir)
    env["PRESCORE_VAR"] = str(var)
    data, images, logs, train = var / "data", var / "images", var / "logs", var / "train"
    logs.mkdir(parents=True, exist_ok=True)
    env.setdefault("PYSPARK_PYTHON", PY)
    env.setdefault("PYSPARK_DRIVER_PYTHON", PY)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PRESCORE_MODEL_STORE"] = settings.models.root
    spark_submit = str(Path(PY).parent / "spark-submit")

    with ExitStack() as stack:
        if not env.get("REDIS_URL"):
            step("starting an embedded redis-server")
            redis = RedisProcess(var / "redis", appendonly=True).start()  # AOF: survives restarts
            stack.callback(redis.stop)
            env["REDIS_URL"] = redis.url
            print(f"redis-server on {redis.url}")

        step("generating demo data: users, hotels, contexts, booking events")
        run(
            [
                PY,
                "-m",
                "examples.hotels.datagen",
                "--out",
                str(data),
                "--users",
                str(args.users),
                "--hotels",
                str(args.hotels),
                "--seed",
                "7",
            ],
            env,
        )
        step("training the booking model (Keras, preprocessing inside), registering it")
        run(
            [
                PY,
                "-m",
                "examples.hotels.train_reco",
                "--data",
                str(data),
                "--out",
                str(train / "reco"),
            ],
            env,
        )
        register("reco", train / "reco", env)
        step("bulk scoring every user with spark-submit (local mode), publishing to Redis")
        run([spark_submit, *submit_args(dataset="reco")], env)

        step("generating demo hotel photos with tags")
        run(
            [
                PY,
                "-m",
                "examples.hotels.imagegen",
                "--out",
                str(images),
                "--count",
                str(args.images),
                "--seed",
                "7",
                "--bad-files",
            ],
            env,
        )
        step("training the photo tagger (Keras CNN), registering it")
        run(
            [
                PY,
                "-m",
                "examples.hotels.train_tagger",
                "--images",
                str(images),
                "--out",
                str(train / "tagger"),
            ],
            env,
        )
        register("tagger", train / "tagger", env)
        step("bulk tagging every photo with spark-submit, publishing to Redis")
        run([spark_submit, *submit_args(dataset="tags")], env)

        step("published versions")
        run([PY, "-m", "prescore.cli", "versions", "reco"], env)
        run([PY, "-m", "prescore.cli", "versions", "tags"], env)

        step("starting the fallback and lookup services")
        fb_port, lk_port = free_port(), free_port()
        fallback = stack.enter_context(
            service(
                [PY, "-m", "fallback.serve", "--bind", f"127.0.0.1:{fb_port}"],
                env,  # reads a photo added after the bulk run from the dataset's folder
                f"http://127.0.0.1:{fb_port}",
                logs / "fallback.log",
            )
        )
        env["PRESCORE_FALLBACK_URL"] = fallback
        base = stack.enter_context(
            service(
                [PY, "-m", "lookup.serve", "--bind", f"127.0.0.1:{lk_port}"],
                env,
                f"http://127.0.0.1:{lk_port}",
                logs / "lookup.log",
            )
        )

        step("real lookups")
        show("GET", f"{base}/v1/recommendations/u1?k=5")
        show(
            "POST",
            f"{base}/v1/recommendations:batchGet",
            {"user_ids": ["u2", "u3", "nobody"], "k": 3},
        )
        with open(images / "labels.jsonl") as labels:
            first = json.loads(labels.readline())
        print(f"\n(photo {first['image_id']} was drawn with tags {first['tags']})")
        show("GET", f"{base}/v1/image-tags/{first['image_id']}")
        show(
            "POST",
            f"{base}/v1/image-tags:batchGet",
            {"image_ids": [first["image_id"], "img-000001", "corrupt-1"]},
        )
        new = f"new-photo-{int(time.time())}"  # added after the bulk run: not in Redis
        new_photo = images / f"{new}.jpg"
        shutil.copyfile(images / f"{first['image_id']}.jpg", new_photo)
        print(f"\n({new} is a copy of {first['image_id']}, added after the bulk run)")
        try:
            show("GET", f"{base}/v1/image-tags/{new}")  # a miss: tagged live, written back
            show("GET", f"{base}/v1/image-tags/{new}")  # now a hit
        finally:
            new_photo.unlink()  # the next demo's bulk run must not tag it
        show("GET", f"{base}/v1/recommendations/bad%00id")  # a control character: 400
        print(f"\nlookup API: {base}   (OpenAPI: {base}/openapi.json, metrics: {base}/metrics)")
        if args.keep_running:
            print("services are up; Ctrl-C stops them")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print("\ndemo finished")
    return 0


def register(name: str, folder: Path, env: dict[str, str]) -> None:
    """Register a trained model and promote it, as a user does."""
    run([PY, "-m", "prescore.cli", "models", "register", name, str(folder), "--promote"], env)


def submit_args(**params: str) -> list[str]:
    """spark-submit arguments for a local run, from the one table the CronJobs use too."""
    from jobs.submit import local_args

    return local_args("score", master="local[2]", **params)


if __name__ == "__main__":
    sys.exit(main())
