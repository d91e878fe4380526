"""The images: hadolint and shellcheck pass, bases are pinned, users are not root, every
image has a health check, and the lookup and fallback images install exactly the
packages their code imports (the lookup without TensorFlow)."""

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
SERVICES = {"lookup": 8080, "fallback": 8081}


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not found: `pip install -e '.[dev]'` installs it"
    return found


def test_all_three_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "jobs.Dockerfile",
        "lookup.Dockerfile",
        "fallback.Dockerfile",
    }


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
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base[1])
    assert all(
        line.split()[1] in ("${PYTHON_IMAGE}",) for line in re.findall(r"^FROM .*", text, re.M)
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
    other = {"lookup", "fallback", "jobs"} - {service}
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


def test_entrypoint_runs_a_driver_and_passes_other_commands_through(tmp_path: Path) -> None:
    """docker/spark-entrypoint.sh in 'driver' mode is what a Spark driver pod runs."""
    import pyspark

    app = tmp_path / "app.py"
    app.write_text(
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\n"
        "print('DRIVER', s.range(7).count(), s.conf.get('spark.submit.deployMode'))\n"
    )
    env = {
        **os.environ,
        "SPARK_HOME": os.path.dirname(pyspark.__file__),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    entry = str(DOCKER / "spark-entrypoint.sh")
    out = subprocess.run(
        [entry, "driver", "--master", "local[1]", "--driver-memory", "1g", str(app)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "DRIVER 7 client" in out.stdout, out.stderr[-3000:]
    echo = subprocess.run([entry, "echo", "as", "given"], capture_output=True, text=True, env=env)
    assert echo.stdout == "as given\n"


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
