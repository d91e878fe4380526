"""The images, built and run for real (``make test-images``; .ci/run runs it).

docker/build-images.sh builds the four images from a wheel folder on a Debian base; then,
as containers on the host network with only the volumes and settings the dev overlay of
k8s/ gives them (its users, read-only roots, emptyDirs as tmpfs): a Redis; the seed Job's
steps in the demo image (data, photos, the tagger trained and registered); retraining in
the trainer (demo) image, which trains, gates, bulk-scores and promotes the recommender;
the jobs image's bulk runs of both datasets in local mode; and the lookup and fallback
services, healthy by their own HEALTHCHECK. Pinned: the answers (a hit, a batch, a photo's
tags, a miss answered live and written back), the values the containers published against
the same jobs run outside containers on the same data and models, and a SIGTERM that
lets an in-flight request finish.

``make test`` skips this module with its reason (one line in the summary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from prescore.ports import free_port
from prescore.settings import StoreSettings
from prescore.store.embedded_redis import RedisProcess
from prescore.store.versions import Versions
from tests.containers import (
    DATASETS,
    REDIS_IMAGE,
    ROOT,
    TAG,
    VAR,
    Containers,
    base_image,
    build_all,
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
from tests.frames import read_frame
from tests.helpers import stored_payload

# The first test's setup bootstraps a base, downloads the wheels and builds everything on
# a fresh machine: longer than the suite's per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

GRACE_S = 30  # the Deployments' terminationGracePeriodSeconds


# Outside `make test-images` the whole module is one skip, its reason one line of the
# summary; asked for where no engine answers, the run fails (in the fixture) instead.
if os.environ.get("PRESCORE_IMAGE_TEST") != "1":
    _why = engine_problem() or "it builds and runs the four images"
    pytest.skip(
        f"image test not run: {_why}; `make test-images` runs it (.ci/run does)",
        allow_module_level=True,
    )


def _gate() -> None:
    if problem := engine_problem():
        pytest.fail(f"PRESCORE_IMAGE_TEST=1 but {problem}")


def _say(msg: str) -> None:  # progress on a long run (make test-images runs pytest -s)
    print(f"[images] {msg}", flush=True)


@dataclass
class Stack:
    base: str  # the image the four were built on
    work: Path
    var: Path
    containers: Containers
    store: redis.Redis
    host_store: redis.Redis
    lookup: str
    lookup_name: str
    fallback_name: str
    fallback_port: int
    times: dict[str, float] = field(default_factory=dict)

    def users(self) -> list[str]:

        return [str(u) for u in read_frame(self.var / "data" / "users.parquet")["user_id"]]

    def photos(self) -> list[str]:
        return sorted(p.stem for p in (self.var / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _gate()
    work = tmp_path_factory.mktemp("images")
    times: dict[str, float] = {}
    _say(f"base image and builds (log {work / 'build.log'})")
    base = base_image(work / "build.log")
    times["build the images (docker/build-images.sh)"] = build_all(base, work / "build.log")

    var, state, seed_tmp = (owned(work / n) for n in ("var", "state", "seed-tmp"))
    password = uuid.uuid4().hex
    ports = {n: free_port() for n in ("redis", "fallback", "lookup", "fb_metrics", "lk_metrics")}
    settings = dev_settings(
        f"redis://:{password}@127.0.0.1:{ports['redis']}/0", f"http://127.0.0.1:{ports['fallback']}"
    )
    c = Containers(work, settings)
    host_redis = RedisProcess(work / "host-redis").start()
    try:
        start_redis(c, ports["redis"], password, work / "redis-data")
        store = redis.Redis.from_url(settings["REDIS_URL"], socket_timeout=5)
        _wait(lambda: store.ping(), "the redis container")
        _seed_and_train(c, var, state, seed_tmp, times)
        _score(c, var, times)
        _score_outside(var, host_redis.url, work, times)
        lk, lk_name, fb = _serve(c, var, ports, times)
        yield Stack(
            base,
            work,
            var,
            c,
            store,
            redis.Redis.from_url(host_redis.url),
            lk,
            lk_name,
            fb,
            ports["fallback"],
            times,
        )
    finally:
        c.remove_all()
        host_redis.stop()
        if times:
            _say("seconds: " + json.dumps({k: round(v, 1) for k, v in times.items()}))


def _wait(ok: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ok():
                return
        except (redis.RedisError, requests.RequestException, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up in {timeout_s} s")
        time.sleep(0.2)


def _seed_and_train(
    c: Containers, var: Path, state: Path, seed_tmp: Path, times: dict[str, float]
) -> None:
    """The dev seed Job's steps (its init containers share one emptyDir /tmp), then
    prescore-retrain's run: train, register, gate, bulk-score, promote."""
    demo = f"prescore-demo:{TAG}"
    seed = {"mounts": [f"{var}:{VAR}", DATASETS, f"{seed_tmp}:/tmp"], "tmpfs": ()}
    _say("seed: demo data, photos, the tagger (demo image)")
    py = ["python", "-m"]
    times["seed: data"] = c.run(
        "datagen",
        demo,
        [
            *py,
            "examples.hotels.datagen",
            "--out",
            f"{VAR}/data",
            "--users",
            "300",
            "--hotels",
            "100",
            "--regions",
            "6",
            "--impressions",
            "40",
            "--seed",
            "7",
        ],
        **seed,
    )  # type: ignore[arg-type]
    times["seed: photos"] = c.run(
        "imagegen",
        demo,
        [
            *py,
            "examples.hotels.imagegen",
            "--out",
            f"{VAR}/images",
            "--count",
            "160",
            "--seed",
            "7",
        ],
        **seed,
    )  # type: ignore[arg-type]
    times["train tagger in a container"] = c.run(
        "train-tagger",
        demo,
        [
            *py,
            "examples.hotels.train_tagger",
            "--images",
            f"{VAR}/images",
            "--out",
            "/tmp/train/tagger",
            "--epochs",
            "8",
        ],
        **seed,
    )  # type: ignore[arg-type]
    times["register tagger (int8 variant)"] = c.run(
        "register-tagger",
        demo,
        [*py, "prescore.cli", "models", "register", "tagger", "/tmp/train/tagger", "--promote"],
        **seed,
    )  # type: ignore[arg-type]
    _say("train: jobs.retrain --dataset reco in the trainer (demo) image")
    times["retrain reco in a container (train, gate, score, promote)"] = c.run(
        "train",
        demo,
        [
            *py,
            "jobs.retrain",
            "--dataset",
            "reco",
            "--target",
            "local",
            "--master",
            "local[2]",
            "--run-id",
            "images-1",
            "--state-dir",
            "/var/lib/prescore-state/retrain",
        ],
        mounts=[f"{var}:{VAR}", DATASETS, f"{state}:/var/lib/prescore-state"],
    )
    report = json.loads((state / "retrain" / "images-1" / "report.json").read_text())
    _say(f"train: {report['decision']} ({report['reason']}), version {report['published_version']}")


def _score(c: Containers, var: Path, times: dict[str, float]) -> None:
    """The jobs image's bulk runs (spark-submit jobs/score.py, local mode), the data read-only."""
    for dataset in ("reco", "tags"):
        _say(f"score: spark-submit jobs/score.py --dataset {dataset} (jobs image)")
        times[f"score {dataset} in a container"] = c.run(
            f"score-{dataset}",
            f"prescore-jobs:{TAG}",
            score_cmd(dataset),
            mounts=[f"{var}:{VAR}:ro", DATASETS],
        )
        summary = (c.folder / f"score-{dataset}.log").read_text().splitlines()
        for line in summary[-8:]:
            if "published version" in line or "keys written" in line:
                _say(f"score: {line.strip()}")


def _score_outside(var: Path, redis_url: str, work: Path, times: dict[str, float]) -> None:
    """The same bulk runs outside containers: this checkout, the same data and models."""
    env = outside_env(var, redis_url, work)
    for dataset in ("reco", "tags"):
        _say(f"score outside containers: --dataset {dataset}")
        times[f"score {dataset} outside"] = run_logged(
            score_cmd(dataset, sys.executable),
            work / f"outside-{dataset}.log",
            env=env,
            timeout=900,
        )


def _serve(
    c: Containers, var: Path, ports: dict[str, int], times: dict[str, float]
) -> tuple[str, str, str]:
    """The fallback and the lookup as the Deployments run them, both healthy: the lookup's
    URL, its container and the fallback's."""
    _say("serve: fallback and lookup containers")
    fb = c.start(
        "fallback",
        f"prescore-fallback:{TAG}",
        mounts=[f"{var}:{VAR}:ro", DATASETS],
        tmpfs=("/tmp", "/var/run/prescore"),
        env={
            "FALLBACK_BIND": f"127.0.0.1:{ports['fallback']}",
            "FALLBACK_METRICS_BIND": f"127.0.0.1:{ports['fb_metrics']}",
            "PROMETHEUS_MULTIPROC_DIR": "/var/run/prescore/metrics",
            "FALLBACK_INFERENCE_THREADS": "2",
        },
    )
    lk = _start_lookup(c, "lookup", ports["lookup"], ports["lk_metrics"])
    times["lookup: start to healthy"] = c.wait_healthy(lk)
    times["fallback: start to healthy"] = c.wait_healthy(fb)
    return f"http://127.0.0.1:{ports['lookup']}", lk, fb


def _start_lookup(c: Containers, role: str, port: int, metrics_port: int) -> str:
    return c.start(
        role,
        f"prescore-lookup:{TAG}",
        mounts=[DATASETS],
        tmpfs=("/tmp", "/var/run/prescore"),
        env={
            "LOOKUP_BIND": f"127.0.0.1:{port}",
            "LOOKUP_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "LOOKUP_WORKERS": "2",
            "LOOKUP_THREADS": "4",
            "PROMETHEUS_MULTIPROC_DIR": "/var/run/prescore/metrics",
        },
    )


# -- what users get ------------------------------------------------------------------------


def _ask(method: str, url: str, **kwargs: Any) -> requests.Response:
    """A request to a container, shown on the run's output as the answer it got."""
    reply = requests.request(method, url, timeout=20, **kwargs)
    body = json.dumps(kwargs["json"]) + " " if "json" in kwargs else ""
    _say(f"{method} {url.split('/', 3)[-1]} {body}-> {reply.status_code} {reply.text[:240]}")
    return reply


def test_a_hit_and_a_batch_of_recommendations(stack: Stack) -> None:
    users = stack.users()
    hit = _ask("GET", f"{stack.lookup}/v1/recommendations/{users[0]}?k=5")
    assert hit.status_code == 200, hit.text
    doc = hit.json()
    assert doc["source"] == "precomputed" and len(doc["items"]) == 5, doc
    batch = _ask(
        "POST",
        f"{stack.lookup}/v1/recommendations:batchGet",
        json={"user_ids": [users[1], users[2]], "k": 3},
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["user_id"] for r in results] == [users[1], users[2]]
    assert all(r["source"] == "precomputed" and len(r["items"]) == 3 for r in results)


def test_a_photos_tags_and_a_new_photo_tagged_live_then_written_back(stack: Stack) -> None:
    first = stack.photos()[0]
    hit = _ask("GET", f"{stack.lookup}/v1/image-tags/{first}")
    assert hit.status_code == 200 and hit.json()["source"] == "precomputed", hit.text
    new = f"new-photo-{uuid.uuid4().hex[:8]}"  # added after the bulk runs: not in Redis
    shutil.copyfile(stack.var / "images" / f"{first}.jpg", stack.var / "images" / f"{new}.jpg")
    try:
        live = _ask("GET", f"{stack.lookup}/v1/image-tags/{new}")
        assert live.status_code == 200 and live.json()["source"] == "live", live.text
        again = _ask("GET", f"{stack.lookup}/v1/image-tags/{new}")
        assert again.status_code == 200 and again.json()["source"] == "written_back", again.text
        # the live answer is the fallback's (the tagger's int8 variant), kept as it was
        assert again.json()["tags"] == live.json()["tags"]
        assert {"tag", "score"} >= {k for tag in live.json()["tags"] for k in tag}
    finally:
        (stack.var / "images" / f"{new}.jpg").unlink()


def test_retraining_in_its_container_trained_gated_scored_and_promoted(stack: Stack) -> None:
    report = json.loads((stack.work / "state" / "retrain" / "images-1" / "report.json").read_text())
    assert report["steps_done"] == ["train", "evaluate", "gate", "score", "promote"], report
    assert report["decision"] == "promote" and report["promoted"] == report["candidate"]["version"]
    published = Versions(stack.store, "reco", StoreSettings()).get(report["published_version"])
    assert published.status == "published", published
    models = stack.var / "models" / "reco"  # the model store volume, written as 10001
    assert (models / report["promoted"]).is_dir() and models.stat().st_uid == 10001
    assert (models / "PROMOTED").read_text().strip() == report["promoted"]


def _served(client: redis.Redis, dataset: str, keys: list[str]) -> dict[str, Any]:
    """Each key's payload in the dataset's live version, less when and where it was made."""
    version = Versions(client, dataset, StoreSettings()).current()
    assert version, f"{dataset}: nothing published"
    out = {}
    for key in keys:
        raw = stored_payload(client, dataset, version, key)
        doc = json.loads(raw) if raw is not None else None
        if isinstance(doc, dict):
            doc.pop("dataset_version", None)
            doc.pop("scored_at", None)
        out[key] = doc
    return out


def test_the_containers_publish_what_the_same_jobs_publish_outside(stack: Stack) -> None:
    for dataset, keys in (("reco", stack.users()), ("tags", stack.photos())):
        inside = _served(stack.store, dataset, keys)
        assert all(doc is not None for doc in inside.values()), dataset
        assert inside == _served(stack.host_store, dataset, keys), dataset


# -- how they run --------------------------------------------------------------------------


def test_services_run_as_their_user_on_a_read_only_root(stack: Stack) -> None:
    for name in (stack.fallback_name, stack.lookup_name):
        config = stack.containers.inspect(name)
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        wrote = docker("exec", name, "sh", "-c", "touch /opt/venv/x", check=False)
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr
        assert docker("exec", name, "sh", "-c", "touch /tmp/x").returncode == 0  # the emptyDir


def test_the_batch_images_health_checks_pass_as_their_user(stack: Stack) -> None:
    """The jobs and demo images run only one-shot containers (above); their HEALTHCHECK
    command, run as the manifests run them, passes."""
    for image in (f"prescore-jobs:{TAG}", f"prescore-demo:{TAG}"):
        found = docker("inspect", "--format", "{{json .Config.Healthcheck}}", image)
        check = json.loads(found.stdout)
        assert check["Test"][0] == "CMD", check
        out = docker(
            "run",
            "--rm",
            "--network",
            "host",
            "--user",
            "10001:10001",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--entrypoint",
            check["Test"][1],
            image,
            *check["Test"][2:],
            check=False,
            timeout=120,
        )
        assert out.returncode == 0, (image, out.stderr[-2000:])


def _connections_to(port: int) -> set[str]:
    """Local ends of the established TCP connections to 127.0.0.1:port (host network)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, st = line.split()[1:4]
        if st == "01" and remote == f"0100007F:{port:04X}":
            found.add(local)
    return found


def test_sigterm_lets_an_in_flight_request_finish_within_the_grace_period(stack: Stack) -> None:
    """A lookup waiting on a live answer (the fallback paused) when SIGTERM comes answers
    that request, then exits 0 before the grace period."""
    c = stack.containers
    port = free_port()
    name = _start_lookup(c, "lookup-stopped", port, free_port())
    c.wait_healthy(name)
    base = f"http://127.0.0.1:{port}"
    new = f"new-photo-{uuid.uuid4().hex[:8]}"
    shutil.copyfile(
        stack.var / "images" / f"{stack.photos()[0]}.jpg", stack.var / "images" / f"{new}.jpg"
    )
    before = _connections_to(stack.fallback_port)
    reply: dict[str, requests.Response] = {}
    docker("pause", stack.fallback_name)
    try:
        asking = threading.Thread(
            target=lambda: reply.update(r=requests.get(f"{base}/v1/image-tags/{new}", timeout=30))
        )
        asking.start()
        _wait(lambda: _connections_to(stack.fallback_port) - before, "the live call", 20)
        stopping = threading.Thread(
            target=docker, args=("stop", "-t", str(GRACE_S), name), kwargs={"timeout": GRACE_S + 30}
        )
        stopping.start()
        _wait(lambda: c.inspect(name)["State"]["Running"], "the container", 5)
        time.sleep(1.0)  # SIGTERM delivered while the request waits on the paused fallback
        assert c.inspect(name)["State"]["Running"], "stopped before its request was answered"
    finally:
        docker("unpause", stack.fallback_name)
        (stack.var / "images" / f"{new}.jpg").unlink()
    asking.join(30)
    stopping.join(GRACE_S + 30)
    assert reply["r"].status_code == 200 and reply["r"].json()["source"] == "live", reply["r"].text
    state = c.inspect(name)["State"]
    assert not state["Running"] and state["ExitCode"] == 0, (state, c.logs(name))


def test_the_fallback_stops_cleanly_on_sigterm(stack: Stack) -> None:
    c = stack.containers
    start = time.monotonic()
    docker("stop", "-t", str(GRACE_S), stack.fallback_name, timeout=GRACE_S + 30)
    state = c.inspect(stack.fallback_name)["State"]
    assert state["ExitCode"] == 0, (state, c.logs(stack.fallback_name))
    assert time.monotonic() - start < GRACE_S
    stack.times["fallback: SIGTERM to exit"] = time.monotonic() - start


def test_image_sizes_are_reported(stack: Stack) -> None:
    sizes = {}
    for image in ("lookup", "fallback", "jobs", "demo"):
        out = docker("image", "inspect", "--format", "{{.Size}}", f"prescore-{image}:{TAG}")
        sizes[image] = int(out.stdout) // 1_000_000
    _say("image sizes (MB): " + json.dumps(sizes))
    assert sizes["lookup"] < sizes["fallback"] < sizes["jobs"] <= sizes["demo"]


# -- compose.yaml and BuildKit -------------------------------------------------------------


def _compose() -> list[str] | None:
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_the_compose_stack_seeds_trains_scores_and_serves(stack: Stack) -> None:
    """compose.yaml as the README runs it (a smaller seed), on ports of its own."""
    compose = _compose()
    if compose is None:
        pytest.skip("compose.yaml not run: neither `docker compose` nor docker-compose is here")
    ports = {
        n: free_port()
        for n in ("REDIS", "LOOKUP", "FALLBACK", "LOOKUP_METRICS", "FALLBACK_METRICS")
    }
    env = {
        **os.environ,
        "PRESCORE_REDIS_IMAGE": REDIS_IMAGE,
        "PRESCORE_REDIS_PASSWORD": uuid.uuid4().hex,
        **{f"PRESCORE_{n}_PORT": str(port) for n, port in ports.items()},
        "DEMO_USERS": "300",
        "DEMO_PHOTOS": "120",
        "DEMO_EPOCHS": "4",
    }
    base = [*compose, "-p", f"prescore-it-{uuid.uuid4().hex[:8]}", "-f", str(ROOT / "compose.yaml")]
    log = stack.work / "compose.log"
    try:
        run_logged([*base, "up", "-d", "redis"], log, env=env, timeout=300)
        for job in ("seed", "train", "score-tags"):
            _say(f"compose: run {job}")
            stack.times[f"compose: {job}"] = run_logged(
                [*base, "run", "--rm", "-T", job], log, env=env, timeout=900
            )
        run_logged([*base, "up", "-d", "fallback", "lookup"], log, env=env, timeout=300)
        lookup = f"http://127.0.0.1:{ports['LOOKUP']}"
        _wait(lambda: requests.get(f"{lookup}/readyz", timeout=2).ok, "compose's lookup", 120)
        hit = _ask("GET", f"{lookup}/v1/recommendations/u1?k=3")
        assert hit.status_code == 200 and hit.json()["source"] == "precomputed", hit.text
        tags = _ask("GET", f"{lookup}/v1/image-tags/img-000001")
        assert tags.status_code == 200 and tags.json()["source"] == "precomputed", tags.text
    finally:
        subprocess.run(
            [*base, "down", "-v", "--remove-orphans"],
            env=env,
            capture_output=True,
            timeout=300,
            cwd=ROOT,
        )


def _buildkit_client() -> str | None:
    """A docker client on PATH that builds with BuildKit: with the buildx plugin, or one
    from before 23.0, which has BuildKit built in (DOCKER_BUILDKIT=1)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(folder) / "docker"
        if not exe.is_file():
            continue
        if subprocess.run([exe, "buildx", "version"], capture_output=True).returncode == 0:
            return str(exe)
        out = subprocess.run(
            [exe, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        )
        major = out.stdout.split(".")[0]
        if major.isdigit() and 19 <= int(major) < 23:
            return str(exe)
    return None


def test_the_lookup_image_builds_with_buildkit_too(stack: Stack) -> None:
    """BuildKit reads each Dockerfile's own ignore file: the image it builds serves too."""
    client = _buildkit_client()
    if client is None:
        pytest.skip("BuildKit build not run: no docker client here has BuildKit (docker buildx)")
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER": client}
    run_logged(
        [
            str(ROOT / "docker" / "build-images.sh"),
            "--tag",
            "buildkit",
            "--base",
            stack.base,
            "--wheels",
            str(wheel_folder()),
            "lookup",
        ],
        stack.work / "buildkit.log",
        env=env,
        timeout=900,
    )
    try:
        image = "prescore-lookup:buildkit"
        check = "import lookup.app, prescore.service.healthcheck; print('ok')"
        out = docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", image, "python", "-c", check)
        assert out.stdout.strip() == "ok"
        site = "/opt/venv/lib/python3.11/site-packages"
        files = docker("run", "--rm", image, "ls", site).stdout.split()
        assert "lookup" in files and "jobs" not in files and "examples" not in files
    finally:
        docker("image", "rm", "prescore-lookup:buildkit", check=False)
