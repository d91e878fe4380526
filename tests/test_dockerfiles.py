"""The images: hadolint and shellcheck pass, bases are pinned, users are not root, every
image has a health check, each copies only its own code (the demo's examples/ only into
the demo image), the lookup and fallback images install exactly the packages their code
imports (the lookup without TensorFlow), and the jobs image's entrypoint starts Spark
pods the way apache/spark's does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs import submit

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
DEPLOYED = [p for p in DOCKERFILES if p.name != "demo.Dockerfile"]  # what clusters run
SERVICES = {"lookup": 8080, "fallback": 8081}
PACKAGES = ("prescore", "jobs", "lookup", "fallback")


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not found: `pip install -e '.[dev]'` installs it"
    return found


def test_the_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "jobs.Dockerfile",
        "lookup.Dockerfile",
        "fallback.Dockerfile",
        "demo.Dockerfile",
    }


def _copied(text: str) -> set[str]:
    """The sources a Dockerfile COPYs from the build context."""
    return {
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
        for src in line.split()[:-1]
    }


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_copies_only_its_own_code(path: Path) -> None:
    copied = {c.rstrip("/") for c in _copied(path.read_text())}
    own = {
        "jobs.Dockerfile": {"prescore", "jobs"},
        "lookup.Dockerfile": {"prescore", "lookup"},
        "fallback.Dockerfile": {"prescore", "fallback"},
        "demo.Dockerfile": {"examples"},  # on top of the jobs image
    }[path.name]
    code = {
        c
        for c in copied
        if not c.startswith("docker/") and c not in ("pyproject.toml", "README.md")
    }
    assert code == own, path.name
    assert set(PACKAGES) | {"examples"} >= code


def test_the_demo_code_reaches_no_deployed_image() -> None:
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "**" in ignore and not any(ln.startswith("!examples") for ln in ignore)
    for path in DEPLOYED:
        assert "examples" not in _copied(path.read_text()), path.name
    demo = (DOCKER / "demo.Dockerfile").read_text()
    assert re.search(r"^FROM \$\{JOBS_IMAGE\}$", demo, re.M)
    # BuildKit's per-Dockerfile ignore file: the demo build's context is examples/ alone
    own_ignore = (DOCKER / "demo.Dockerfile.dockerignore").read_text().split()
    assert "**" in own_ignore and "!examples/" in own_ignore


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    out = subprocess.run(
        [_tool("hadolint"), "--format", "json", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, json.loads(out.stdout or "[]")


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [DOCKER / "spark-entrypoint.sh", ROOT / "k8s" / "tools" / "install-checkov.sh"]
    out = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_non_root_and_health_checked(path: Path) -> None:
    text = path.read_text()
    base_arg = "JOBS_IMAGE" if path.name == "demo.Dockerfile" else "PYTHON_IMAGE"
    if base_arg == "PYTHON_IMAGE":  # the demo builds on the jobs image of the same build
        base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
        assert base and re.fullmatch(
            r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base[1]
        )
    assert all(
        line.split()[1] == f"${{{base_arg}}}" for line in re.findall(r"^FROM .*", text, re.M)
    )
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0") and int(user[-1]) >= 10000
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.M | re.S)
    for pip in re.findall(r"pip install[^\n]*", text):
        assert "--no-cache-dir" in pip, pip
    if "apt-get install" in text:
        assert "rm -rf /var/lib/apt/lists/*" in text


@pytest.mark.parametrize("service", SERVICES)
def test_services_start_their_entry_point_on_their_port(service: str) -> None:
    text = (DOCKER / f"{service}.Dockerfile").read_text()
    port = SERVICES[service]
    assert f"EXPOSE {port}" in text
    assert f'CMD ["python", "-m", "{service}.serve", "--bind", "0.0.0.0:{port}"]' in text
    assert f"http://127.0.0.1:{port}/healthz" in text
    other = {"lookup", "fallback", "jobs", "examples"} - {service}
    for name in other:  # only the core and the service itself go into the image
        assert f"COPY {name} " not in text


def test_jobs_image_spark_version_is_the_one_jobs_submit_names() -> None:
    text = (DOCKER / "jobs.Dockerfile").read_text()
    assert re.search(r"^ARG PYSPARK_VERSION=(\S+)$", text, re.M)[1] == submit.SPARK_VERSION  # type: ignore[index]
    assert f"WORKDIR {submit.IMAGE_ROOT}" in text
    assert "COPY jobs jobs" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/opt/prescore/docker/spark-entrypoint.sh"]' in text


def _requirements(service: str) -> list[str]:
    lines = (DOCKER / f"requirements-{service}.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize("service", SERVICES)
def test_requirements_are_verbatim_pyproject_dependencies(service: str) -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in _requirements(service):
        assert line in deps, f"{line!r} is not in pyproject.toml's dependencies"


def _closure(reqs: list[str]) -> set[str]:
    """The distributions ``reqs`` install here, with their own requirements."""
    from importlib import metadata

    seen: set[str] = set()
    todo = [Requirement(r) for r in reqs]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            extras = req.extras or {""}
            if sub_req.marker is None or any(sub_req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(Requirement(str(sub_req).split(";")[0]))
    return seen


IMPORT_ALL = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
for mod in pkgutil.walk_packages(pkg.__path__, sys.argv[1] + "."):
    importlib.import_module(mod.name)
from importlib.metadata import packages_distributions
dists = packages_distributions()
tops = {m.split(".")[0] for m in sys.modules}
third = sorted({d for t in tops if t not in sys.stdlib_module_names for d in dists.get(t, [])})
print(json.dumps({"dists": third, "tensorflow": "tensorflow" in sys.modules,
                  "pyspark": "pyspark" in sys.modules}))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_image_requirements_cover_every_import_of_the_service(service: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, service],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # python -m venv (3.11) seeds pip and setuptools; site imports setuptools' distutils shim.
    allowed = _closure(_requirements(service)) | {"prescore", "pip", "setuptools"}
    missing = {canonicalize_name(d) for d in found["dists"]} - allowed
    assert not missing, f"{service} imports {missing}, not installed in its image"
    assert not found["pyspark"]
    if service == "lookup":
        assert not found["tensorflow"], "the lookup must never import TensorFlow"
        assert not any("tensorflow" in r for r in _requirements(service))


def _spark_env(tmp_path: Path) -> dict[str, str]:
    import pyspark

    return {
        **os.environ,
        "SPARK_HOME": os.path.dirname(pyspark.__file__),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def test_entrypoint_runs_a_driver_with_hadoop_conf_dir_and_passes_other_commands_through(
    tmp_path: Path,
) -> None:
    """docker/spark-entrypoint.sh in 'driver' mode is what a Spark driver pod runs; the
    Hadoop client configuration in HADOOP_CONF_DIR reaches it, as in apache/spark's image."""
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text(
        "<configuration><property><name>prescore.test.hadoop.conf</name>"
        "<value>from-HADOOP_CONF_DIR</value></property></configuration>"
    )
    app = tmp_path / "app.py"
    app.write_text(
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\n"
        "hadoop = s.sparkContext._jsc.hadoopConfiguration().get('prescore.test.hadoop.conf')\n"
        "print('DRIVER', s.range(7).count(), s.conf.get('spark.submit.deployMode'), hadoop)\n"
    )
    env = {**_spark_env(tmp_path), "HADOOP_CONF_DIR": str(conf)}
    entry = str(DOCKER / "spark-entrypoint.sh")
    out = subprocess.run(
        [entry, "driver", "--master", "local[1]", "--driver-memory", "1g", str(app)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "DRIVER 7 client from-HADOOP_CONF_DIR" in out.stdout, out.stderr[-3000:]
    echo = subprocess.run([entry, "echo", "as", "given"], capture_output=True, text=True, env=env)
    assert echo.stdout == "as given\n"


def test_entrypoint_starts_an_executor_with_apache_sparks_classpath(tmp_path: Path) -> None:
    """'executor' mode: the java line of apache/spark's entrypoint (a stand-in java prints it)."""
    java_home = tmp_path / "java"
    (java_home / "bin").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    java.chmod(0o755)
    env = {
        **_spark_env(tmp_path),
        "JAVA_HOME": str(java_home),
        "HADOOP_CONF_DIR": "/etc/hadoop/conf",
        "SPARK_EXTRA_CLASSPATH": "/opt/extra/*",
        "SPARK_DIST_CLASSPATH": "/opt/hadoop/jars/*",
        "SPARK_EXECUTOR_MEMORY": "3g",
        "SPARK_DRIVER_URL": "spark://driver:7078",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "exec-1",
        **{f"SPARK_JAVA_OPT_{i}": f"-Dopt{i}=x" for i in range(12)},
    }
    env.pop("SPARK_CONF_DIR", None)
    out = subprocess.run(
        [str(DOCKER / "spark-entrypoint.sh"), "executor"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    assert args[:12] == [f"-Dopt{i}=x" for i in range(12)]  # in the driver's order
    assert args[12:14] == ["-Xms3g", "-Xmx3g"]
    classpath = args[args.index("-cp") + 1].split(":")
    spark_home = env["SPARK_HOME"]
    assert classpath == [
        f"{spark_home}/conf",
        "/etc/hadoop/conf",
        f"{spark_home}/jars/*",
        "/opt/extra/*",
        str(tmp_path),
        "/opt/hadoop/jars/*",
    ]
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in args
    assert args[args.index("--podName") + 1] == "exec-1"


def test_lookup_image_python_layer_installs_and_serves_without_tensorflow(tmp_path: Path) -> None:
    """The lookup image's install steps, run in a fresh virtualenv: it imports and starts."""
    src = tmp_path / "src"
    src.mkdir()
    text = (DOCKER / "lookup.Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", text, re.M)
    for item in (p for line in copied for p in line.split()):  # what the Dockerfile COPYs
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif not item.startswith("docker/"):
            shutil.copy(path, src / item)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    subprocess.run([*pip, "-r", str(DOCKER / "requirements-lookup.txt")], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(src)], check=True, timeout=600)
    probe = (
        "import sys, lookup.serve, lookup.app, prescore.cli; "
        "assert 'tensorflow' not in sys.modules and 'pyspark' not in sys.modules; "
        "import importlib.util as u; "
        "print('NO-TF', u.find_spec('tensorflow') is None, u.find_spec('pyspark') is None)"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "NO-TF True True", out.stderr[-3000:]
    cli = subprocess.run([str(venv / "bin" / "prescore"), "--help"], capture_output=True, text=True)
    assert "rollback" in cli.stdout
