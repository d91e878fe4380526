"""A table's rows by key, read from its files when a request asks for them.

Live inference needs an entity's row only for a key the bulk run did not score, so it
holds none: each request reads the rows of its keys with one pyarrow dataset scan
filtered on the key columns (row groups whose statistics rule every key out are skipped,
the key columns of the others are scanned). The fallback's memory then does not grow
with the table, and a row added to a ``file://`` table is found by the next request. An
``hdfs://`` table is mirrored to local disk (fallback.table_mirror), its new files
copied at each :meth:`KeyedRows.maintain`, and read there.
The rows' keys are spelled as the bulk job spells them (prescore.encoding.table_keys), so a key
names the same row in both.

A table of INDEX_MIN_ROWS rows or more is also indexed on local disk (fallback.key_index),
in the background (:meth:`KeyedRows.maintain`): a read then looks its keys up there and
scans only the files added since the index was built. Until the index is built, and while
a file it was built from is rewritten or removed, reads scan the table.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from fallback.key_index import KeyIndex
from fallback.table_mirror import TableMirror
from prescore.data import local_tables, storage
from prescore.data.datasets import Table
from prescore.encoding.keys import KeyForm
from prescore.encoding.table_keys import key_texts
from prescore.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)

INDEX_MIN_ROWS = 200_000  # a smaller table is scanned within a miss' deadline
TEXT_ROW_BYTES = 64  # a CSV or JSON row's size, to judge a table's rows by its bytes
BUILD_SPACING = 4.0  # a build starts no sooner than this many build lengths after the last
RETRY_S = 60.0  # nor sooner than this after one that failed
MAX_FRESH_FILES = 16  # files added since the index: scanned on every miss, so not many
RETIRE_AFTER_S = 30.0  # a replaced index is removed this long after (reads take ms)
_INT_RE = re.compile(r"-?[0-9]{1,20}")
# a file unreadable, half-written or of another schema (a key column gone): all of these
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, NotImplementedError, pa.ArrowException)


class KeyedRows:
    """The rows of one declared table, by key text (prescore.encoding.keys.KeyForm)."""

    def __init__(
        self,
        table: Table,
        form: KeyForm,
        webhdfs_url: str = "",
        index_min_rows: int = INDEX_MIN_ROWS,
        build_spacing: float = BUILD_SPACING,
        timeout_s: float = 30.0,
    ) -> None:
        self.table = table
        self.form = form
        self.index_min_rows = index_min_rows
        self.build_spacing = build_spacing
        self._index: KeyIndex | None = None
        self.reads = {"indexed": 0, "scanned_files": 0}  # what reads used, for tests and ops
        self._mirror: TableMirror | None = None
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._next_build = 0.0  # monotonic time before which no build starts
        self._opened: tuple[tuple[Any, ...], Any, list[Any]] | None = None  # stamp, data, parts
        if storage.remote(table.path):
            self._mirror = TableMirror(table, webhdfs_url, timeout_s)
        if len(table.key) != form.parts:
            raise ConfigError(f"{table.path}: a key of {len(table.key)} columns, not {form.parts}")
        self.columns: list[str] = list(self._dataset().schema.names)
        missing = [c for c in table.key if c not in self.columns]
        if missing:
            raise ConfigError(f"{table.path}: no key column {', '.join(missing)}")

    def _dataset(self) -> Any:
        return self._open()[0]

    def _open(self) -> tuple[Any, list[Any], dict[str, tuple[int, int]]]:
        """The table's dataset and its files' fragments, footers read: opened again only
        when a file was added, removed or rewritten (a local table is listed at each read,
        so a file added is read at once; the footers of the others are not read again)."""
        files = self._mirror.files if self._mirror else local_tables.files(self.table, "", "")
        stamp = tuple((f, (s := os.stat(f)).st_mtime_ns, s.st_size) for f in files)
        with self._lock:
            if self._opened is None or self._opened[0] != stamp:
                data = local_tables.dataset(files, self.table.format)
                parts = list(data.get_fragments())
                if self.table.format == "parquet":
                    for part in parts:
                        part.ensure_complete_metadata()  # the row groups' statistics
                self._opened = (stamp, data, parts)
            stamps = {f: (mtime, size) for f, mtime, size in self._opened[0]}
            return self._opened[1], self._opened[2], stamps

    def get(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The row of each of ``keys`` the table has (one of its rows, for a key it
        repeats: which one may change when the index is built or the files change)."""
        wanted = set(keys)
        if not wanted:
            return {}
        try:
            data, parts, stamps = self._open()
            where = self._filter(data.schema, wanted)
            if where is None:
                return {}
            index = self._index
            found_first = []
            if index is not None and index.covers(stamps):
                found_first.append(index.get(wanted, data.schema))
                parts = [p for p in parts if p.path not in index.stamps]  # added since
            with self._lock:
                self.reads["indexed"] += bool(found_first)
                self.reads["scanned_files"] += len(parts)
            arrow = pa.concat_tables([*found_first, self._scan(data, parts, where)])
            texts = key_texts(arrow, self.table.key, self.form)
            frame = local_tables.to_pandas(arrow)
        except (*_READ_ERRORS, ConfigError) as exc:
            raise Unavailable(
                "the dataset's table cannot be read",
                code="inputs_unavailable",
                cause=f"{self.table.path}: {exc}"[:300],  # for the log, not the caller
            ) from exc
        found: dict[str, dict[str, Any]] = {}
        for text, row in zip(texts, frame.to_dict("records"), strict=True):
            if text in wanted:
                found.setdefault(text, row)
        return found

    def _scan(self, data: Any, parts: list[Any], where: Any) -> Any:
        """The rows ``where`` selects, a row group at a time (so memory is bounded by a
        row group, whatever the table's size): those whose statistics rule it out are
        skipped, the key columns of the others decoded, and only a row group holding a
        key is read whole."""
        found = []
        for fragment in parts:
            if self.table.format != "parquet":  # no row groups: the scanner's own batches
                found.append(fragment.to_table(filter=where, schema=data.schema))
                continue
            for group in fragment.split_by_row_group(filter=where, schema=data.schema):
                if group.count_rows(filter=where):  # reads the key columns only
                    found.append(group.to_table(filter=where, schema=data.schema))
        return pa.concat_tables(found) if found else data.schema.empty_table()

    def maintain(self, *, force: bool = False) -> bool:
        """Copy an ``hdfs://`` table's new files, then build the index again where it
        would spare reads (True when built): none yet, or one a file rewritten or removed
        made unusable, or the files added since hold more than a tenth of its rows or
        number more than MAX_FRESH_FILES. Only for a table of ``index_min_rows`` rows or
        more (even a table sorted by key has row groups of many rows to decode), and no
        sooner after the last attempt than ``build_spacing`` times its length (at least
        RETRY_S after one that failed), so that a table rewritten all the time, or a full
        disk, costs a bounded share of a core."""
        if self._mirror is not None:
            try:
                self._mirror.sync()
            except (OSError, ConfigError) as exc:  # the last copy is read meanwhile
                log.warning("%s: not copied again: %s", self.table.path, exc)
        if not force and time.monotonic() < self._next_build:
            return False
        if not self._building.acquire(blocking=False):
            return False  # another thread builds it now
        try:
            started = time.monotonic()
            try:
                built = self._build(force)
            except (*_READ_ERRORS, ConfigError) as exc:  # a disk full, a table gone
                log.warning("%s: not indexed: %s", self.table.path, exc)
                self._next_build = time.monotonic() + max(RETRY_S, self._spaced(started))
                return False
            if built is None:
                return False
            self._next_build = time.monotonic() + self._spaced(started)
            old, self._index = self._index, built
            if old is not None:  # once the reads that may hold it are done
                later = threading.Timer(RETIRE_AFTER_S, old.close)
                later.daemon = True
                later.start()
            return True
        finally:
            self._building.release()

    def _spaced(self, started: float) -> float:
        return self.build_spacing * (time.monotonic() - started)

    def _build(self, force: bool) -> KeyIndex | None:
        """A new index, or None when none is due."""
        data, parts, stamps = self._open()
        index = self._index
        indexed = index.stamps if index is not None and index.covers(stamps) else {}
        sizes = {p.path: self._rows(p, stamps) for p in parts}
        rows = sum(sizes.values())
        fresh = [n for path, n in sizes.items() if path not in indexed]
        due = sum(fresh) * 10 > rows or len(fresh) > MAX_FRESH_FILES
        if not force and (rows < self.index_min_rows or not due):
            return None
        return KeyIndex.build(data, parts, stamps, self.table.key, self.form, rows)

    def index_ready(self) -> bool:
        """Whether a miss reads this table as it should: through an index that covers
        its files, or by a scan of a table too small to need one (False: a large table
        is scanned on every miss, its index not built yet or made stale by a rewrite)."""
        index = self._index
        try:
            _, parts, stamps = self._open()
            if sum(self._rows(p, stamps) for p in parts) < self.index_min_rows:
                return True
            return index is not None and index.covers(stamps)
        except (*_READ_ERRORS, ConfigError):
            return False

    def _rows(self, part: Any, stamps: dict[str, tuple[int, int]]) -> int:
        """A file's rows: from its metadata (parquet, ORC), else estimated from its size
        (CSV and JSON would have to be read whole to count them)."""
        if self.table.format in ("parquet", "orc"):
            return int(part.count_rows())
        return stamps[part.path][1] // TEXT_ROW_BYTES

    def close(self) -> None:
        """Remove the index from disk (reads scan the table again)."""
        index, self._index = self._index, None
        if index is not None:
            index.close()

    def first(self) -> dict[str, Any] | None:
        """Some row of the table (a model's warm-up feed), or None if it has none or
        cannot be read now (a request then says why)."""
        try:
            head = local_tables.to_pandas(self._dataset().head(1))
        except (*_READ_ERRORS, ConfigError):
            return None
        return head.to_dict("records")[0] if len(head) else None

    def _filter(self, schema: Any, wanted: set[str]) -> Any:
        """Each key column among the values the keys give it, each value typed as the
        column is (an integer column's key text is its digits); None: no key can match."""
        parts = [p for p in map(self.form.split, wanted) if len(p) == self.form.parts]
        conditions = []
        for i, column in enumerate(self.table.key):
            kind = schema.field(column).type
            values = {v for p in parts if (v := _typed(p[i], kind)) is not None}
            if not values:
                return None
            conditions.append(ds.field(column).isin(sorted(values, key=str)))
        return functools.reduce(operator.and_, conditions)


def _typed(text: str, kind: Any) -> Any:
    """``text`` as a value of a key column of Arrow type ``kind`` (None: no value of that
    type is spelled so: digits out of its range, or a column of no key type)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return text
    if pa.types.is_integer(kind) and _INT_RE.fullmatch(text) and text == str(int(text)):
        try:
            return pa.scalar(int(text), kind).as_py()
        except (OverflowError, pa.ArrowException):
            return None
    return None
