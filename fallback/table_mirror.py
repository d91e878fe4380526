"""A local copy of a remote table, kept up to date file by file.

Live inference reads a table's rows by key from local files (fallback.keyed_rows), so an
``hdfs://``, ``s3://`` or ``gs://`` table is mirrored to local disk: at start whole, then
at each sync (the fallback's upkeep, every ``FALLBACK_WATCH_INTERVAL_S``) only the files
added or changed
(by modification time and length) are downloaded, and removed ones removed. A new
entity in an ``hdfs://`` table is then answered within one sync, where copying the whole
table again took minutes at scale. Hidden files and folders (a writer's ``_temporary/``)
are skipped as Spark skips them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path, PurePosixPath

from fallback import scratch
from prescore.data import local_tables
from prescore.data.datasets import Table
from prescore.data.storage import open_root
from prescore.errors import ConfigError

log = logging.getLogger(__name__)


class TableMirror:
    """The files of one remote table (prescore.data.storage.remote), copied to local disk."""

    def __init__(self, table: Table, webhdfs_url: str = "", timeout_s: float = 30.0) -> None:
        self.table = table
        try:
            self._remote = open_root(table.path, webhdfs_url=webhdfs_url, timeout_s=timeout_s)
        except ValueError as exc:  # an s3:// or gs:// path without its bucket
            raise ConfigError(str(exc)) from exc
        self._folder = scratch.folder("table")
        self._copied: dict[str, tuple[int, int]] = {}  # relative path -> (mtime ms, length)
        self._lock = threading.Lock()
        self.files: list[str] = []  # the local copies, in the table's order
        self.sync()

    def _local(self, relative: str) -> Path:
        name = relative or PurePosixPath(self._remote.path).name  # "": the table is a file
        return Path(self._folder.name) / "t" / name

    def sync(self) -> bool:
        """Download the files added or changed since the last sync, remove those gone
        (True when any was); OSError when the store cannot be read, ConfigError when the
        table has no file."""
        with self._lock:
            remote = self._remote.backend.files(self._remote.path)
            wanted = {r: s for r, s in remote.items() if local_tables.listed(r)}
            if not wanted:
                raise ConfigError(f"{self.table.path}: no such table (no file matches)")
            changed = [r for r, s in wanted.items() if self._copied.get(r) != s]
            for relative in changed:
                source = self._remote.join(relative) if relative else self._remote.path
                self._remote.backend.download_file(source, self._local(relative))
                self._copied[relative] = wanted[relative]
            gone = set(self._copied) - set(wanted)
            self.files = sorted(str(self._local(r)) for r in wanted)
            for relative in gone:
                self._local(relative).unlink(missing_ok=True)
                del self._copied[relative]
            if changed or gone:
                log.info(
                    "%s: %d files copied, %d removed", self.table.path, len(changed), len(gone)
                )
            return bool(changed or gone)

    def close(self) -> None:
        self._folder.cleanup()
