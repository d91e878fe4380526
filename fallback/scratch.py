"""The fallback's scratch folders under the temporary folder (key indexes, copies of
``hdfs://`` tables), named with the process id, so that those a killed worker left behind
(an OOM kill, a respawned granian worker: the pod's ``/tmp`` outlives them) are told
apart from live ones and removed when a fallback starts."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"prescore-(index|table)-(\d+)-.+")


def folder(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A new scratch folder of ``kind`` (index, table), removed with its object."""
    return tempfile.TemporaryDirectory(prefix=f"prescore-{kind}-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def remove_orphans(root: str | None = None) -> list[str]:
    """Remove the scratch folders of processes that are gone; the names removed."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob("prescore-*"):
        found = _NAME.fullmatch(path.name)
        if found and path.is_dir() and not _alive(int(found.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if removed:
        log.info("removed %d scratch folder(s) of gone processes", len(removed))
    return removed
