"""Docker for the image test (tests/test_images.py): the engine, a base image, the images
built by docker/build-images.sh, and containers started the way the Kubernetes manifests
start them (their users, read-only roots, volumes, settings), on the host network with
every service bound to 127.0.0.1.

Settings: PRESCORE_IMAGE_BASE names a base image to build on (default: a local Debian
bookworm made once by docker/local-base.sh, for machines that cannot pull one);
PRESCORE_WHEELS a folder of wheels kept between runs (default var/wheelhouse)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TAG = "dev"
# The datasets ConfigMap's mount, and the dev volume's (k8s/overlays/dev).
DEMO_DATASETS = ROOT / "k8s" / "components" / "hotels-demo" / "datasets.toml"
DATASETS = f"{DEMO_DATASETS}:/etc/prescore/prescore.toml:ro"
VAR = "/var/lib/prescore"
LOCAL_BASE = "prescore-base:bookworm"
REDIS_IMAGE = f"prescore-test-redis:{TAG}"
UID = "10001:10001"  # the manifests' runAsUser/runAsGroup
# What every container gets, as the manifests' securityContext says.
RESTRICTED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"docker {' '.join(args[:3])} ...: {out.stderr.strip()[-2000:]}")
    return out


def engine_problem() -> str | None:
    """Why no image can be built here (one line), or None when an engine answers."""
    if not shutil.which("docker"):
        return "no docker command on PATH"
    try:
        out = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer docker info within 30 s"
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (docker info: {last})"
    return None


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def base_image(log: Path) -> str:
    """PRESCORE_IMAGE_BASE, else the local Debian base, made once (root and debootstrap)."""
    named = os.environ.get("PRESCORE_IMAGE_BASE")
    if named:
        return named
    if not image_exists(LOCAL_BASE):
        run_logged([str(ROOT / "docker" / "local-base.sh"), LOCAL_BASE], log, timeout=900)
    return LOCAL_BASE


def run_logged(
    cmd: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, timeout: float
) -> float:
    """Run ``cmd`` with its output appended to ``log``; its seconds. Fails with the log's tail."""
    start = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=ROOT
        )
    took = time.monotonic() - start
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"{cmd[0]} ... exited {proc.returncode} (log {log}):\n{tail}")
    return took


def wheel_folder() -> Path:
    return Path(os.environ.get("PRESCORE_WHEELS", ROOT / "var" / "wheelhouse"))


def build_all(base: str, log: Path) -> float:
    """The four images (docker/build-images.sh from the wheel folder) and the test's Redis."""
    wheels = wheel_folder()
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    took = run_logged(
        [
            str(ROOT / "docker" / "build-images.sh"),
            "--tag",
            TAG,
            "--base",
            base,
            "--wheels",
            str(wheels),
        ],
        log,
        env=env,
        timeout=2400,
    )
    took += run_logged(
        [
            "docker",
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-f",
            "tests/images/redis.Dockerfile",
            "-t",
            REDIS_IMAGE,
            "tests/images",
        ],
        log,
        env=env,
        timeout=900,
    )
    return took


def env_file(path: Path) -> dict[str, str]:
    """A kustomize env file (KEY=value lines, # comments) as a dict."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _timestamp(rfc3339: str) -> float:
    """Docker's RFC 3339 time (UTC, up to nanoseconds) as seconds since the epoch."""
    whole, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


@dataclass
class Containers:
    """The containers of one test run, labelled with its id and removed together."""

    folder: Path  # env files and logs
    env: dict[str, str]  # every container's settings (the ConfigMap and Secret)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    names: list[str] = field(default_factory=list)

    def _args(
        self,
        role: str,
        image: str,
        mounts: Sequence[str],
        tmpfs: Sequence[str],
        env: Mapping[str, str],
        user: str,
    ) -> list[str]:
        name = f"prescore-it-{self.run_id}-{role}"
        self.names.append(name)
        envs = self.folder / f"{role}.env"
        envs.write_text("".join(f"{k}={v}\n" for k, v in {**self.env, **env}.items()))
        args = [
            "--name",
            name,
            "--network",
            "host",
            "--user",
            user,
            *RESTRICTED,
            "--label",
            f"io.prescore.test={self.run_id}",
            "--env-file",
            str(envs),
        ]
        for m in mounts:
            args += ["-v", m]
        for t in tmpfs:  # emptyDirs; exec, as an emptyDir is (Spark loads native code from /tmp)
            args += ["--tmpfs", f"{t}:rw,exec,mode=1777"]
        return [*args, image]

    def run(
        self,
        role: str,
        image: str,
        cmd: Sequence[str],
        *,
        mounts: Sequence[str] = (),
        tmpfs: Sequence[str] = ("/tmp",),
        env: Mapping[str, str] | None = None,
        user: str = UID,
        timeout: float = 900,
    ) -> float:
        """Run a one-shot container to its end (its output in FOLDER/ROLE.log); its seconds."""
        args = self._args(role, image, mounts, tmpfs, env or {}, user)
        return run_logged(
            ["docker", "run", "--rm", *args, *cmd], self.folder / f"{role}.log", timeout=timeout
        )

    def start(
        self,
        role: str,
        image: str,
        cmd: Sequence[str] = (),
        *,
        mounts: Sequence[str] = (),
        tmpfs: Sequence[str] = ("/tmp",),
        env: Mapping[str, str] | None = None,
        user: str = UID,
        health_interval_s: float = 1.0,
    ) -> str:
        """Start a service container (the image's own HEALTHCHECK, checked every
        ``health_interval_s``); its name."""
        args = self._args(role, image, mounts, tmpfs, env or {}, user)
        docker("run", "-d", "--health-interval", f"{health_interval_s}s", *args, *cmd)
        return self.names[-1]

    def wait_healthy(self, name: str, timeout_s: float = 180) -> float:
        """Seconds from the container's start until its HEALTHCHECK reports healthy (as
        seen by polling every 0.2 s)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            state = self.inspect(name)["State"]
            if not state["Running"]:
                raise AssertionError(f"{name} exited {state['ExitCode']}:\n{self.logs(name)}")
            if state.get("Health", {}).get("Status") == "healthy":
                return time.time() - _timestamp(state["StartedAt"])
            time.sleep(0.2)
        raise AssertionError(f"{name} not healthy in {timeout_s} s:\n{self.logs(name)}")

    def inspect(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(docker("inspect", name).stdout)
        return found[0]

    def logs(self, name: str) -> str:
        out = docker("logs", "--tail", "60", name, check=False)
        return out.stdout + out.stderr

    def remove_all(self) -> None:
        label = f"label=io.prescore.test={self.run_id}"
        ids = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)


def owned(path: Path, uid: int = 10001) -> Path:
    """A folder the user ``uid`` may write, as fsGroup makes a volume."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    else:
        path.chmod(0o777)
    return path


def dev_settings(redis_url: str, fallback_url: str) -> dict[str, str]:
    """Every container's settings: the dev overlay's ConfigMap and Secret, the Services'
    addresses on loopback, HOME as the pods'."""
    settings = env_file(ROOT / "k8s" / "base" / "config.env")
    settings.update(env_file(ROOT / "k8s" / "overlays" / "dev" / "config.env"))
    settings.update(
        REDIS_URL=redis_url,
        PRESCORE_FALLBACK_TOKEN=f"fallback-token-{uuid.uuid4().hex}",
        PRESCORE_FALLBACK_URL=fallback_url,
        # a live answer on a loaded test machine may take longer than production's 0.1 s
        PRESCORE_FALLBACK_TIMEOUT_S="10",
        HOME="/tmp",
    )
    return settings


def start_redis(c: Containers, port: int, password: str, data: Path) -> None:
    """The dev overlay's Redis: a password, an append-only file, noeviction."""
    c.start(
        "redis",
        REDIS_IMAGE,
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            password,
            "--appendonly",
            "yes",
            "--dir",
            "/data",
            "--maxmemory-policy",
            "noeviction",
        ],
        mounts=[f"{owned(data, 10999)}:/data"],
        tmpfs=(),
        user="10999:10999",
    )


def score_cmd(dataset: str, python: str = "python") -> list[str]:
    """The bulk run of ``dataset`` in local mode, as in the jobs image."""
    return [
        python,
        "-m",
        "jobs.submit",
        "score",
        "--target",
        "local",
        "--master",
        "local[2]",
        "--exec",
        "--",
        "--dataset",
        dataset,
    ]


def outside_env(var: Path, redis_url: str, work: Path) -> dict[str, str]:
    """This checkout's settings for the same jobs outside containers, on the same data."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "PRESCORE_CONFIG": str(DEMO_DATASETS),
        "PRESCORE_DATA_URI": f"{var}/data",
        "PRESCORE_IMAGES_URI": f"{var}/images/*.jpg",
        "PRESCORE_TRAIN_DATA": f"{var}/data",
        "PRESCORE_MODEL_STORE": f"file://{var}/models",
        "PRESCORE_MODEL_CACHE": str(work / "host-cache"),
        "PRESCORE_VAR": str(work / "host-var"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
