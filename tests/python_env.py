"""A packed virtualenv with prescore in it, as a team ships one to a Spark cluster's
executors (``--archives env.tar.gz#environment``): made from the running virtualenv, the
project installed into it as a package (not the editable install development uses, whose
finder points at this checkout), then packed by venv-pack, as Spark's docs do.

The copy is hard-linked where it can be (the same file system), so making it copies no
library; pip only adds and removes files in it, so the original's files are never
written. Spark itself is left out of the archive: an executor's Python imports pyspark
from its own Spark installation, as Spark's own recipe for venv-pack has it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PACK_VERSION = "0.2.0"  # requirements/tools/venv-pack.txt pins it (requirements/compile.sh)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "prescore", "jobs", "lookup", "fallback")
LEFT_OUT = ("pyspark", "pyspark-*.dist-info")


def venv_pack() -> str:
    """venv-pack, in a virtualenv of its own (requirements/tools/install.sh)."""
    pin = f"venv-pack=={VENV_PACK_VERSION}"
    out = subprocess.run(
        [str(ROOT / "requirements" / "tools" / "install.sh"), "venv-pack", pin],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"installing venv-pack failed:\n{out.stderr[-3000:]}")
    return str(Path(out.stdout.strip()) / "venv-pack")


def _copy_venv(dest: Path) -> None:
    """The running virtualenv at ``dest``, hard-linked (copied across file systems)."""
    linked = subprocess.run(["cp", "-al", sys.prefix, str(dest)], capture_output=True)
    if linked.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["cp", "-a", sys.prefix, str(dest)], check=True)


def _install_project(venv: Path, scratch: Path) -> None:
    """prescore installed into ``venv`` from a copy of its sources, in place of the
    editable install (a build writes beside its sources: not into this checkout)."""
    src = scratch / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "uninstall", "-y", "prescore"], check=True, timeout=300)
    install = ["install", "--no-deps", "--no-build-isolation", "--no-index", str(src)]
    subprocess.run([*pip, *install], check=True, timeout=600)


def pack(out: Path) -> Path:
    """A ``.tar.gz`` of the running virtualenv with prescore installed as a package, at
    ``out`` (a folder); returns the archive's path."""
    out.mkdir(parents=True, exist_ok=True)
    # beside the virtualenv, so the copy can be hard-linked on the same file system
    near = Path(sys.prefix).parent / "var"
    near.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="packed-env-", dir=near))
    try:
        venv = scratch / "env"
        _copy_venv(venv)
        _install_project(venv, scratch)
        archive = out / "env.tar.gz"  # unpacked by tar: a .tar by Java, which drops links
        site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
        excludes = [a for name in LEFT_OUT for a in ("--exclude", f"{site}/{name}/*")]
        cmd = [venv_pack(), "-p", str(venv), "-o", str(archive), "--compress-level", "1", "-q"]
        cmd += excludes
        subprocess.run(cmd, check=True, timeout=900)
        return archive
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
