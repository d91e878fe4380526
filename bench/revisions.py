"""Another revision of the project, for a bench's ``--before``: its files, apart."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def before_tree(rev: str, work: Path) -> Path:
    """The files of git revision ``rev`` (``git archive``) in a folder of their own."""
    tree = work / f"before-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree
