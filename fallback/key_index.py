"""A table's rows spread by key over small files on local disk, so that a miss on a large
table reads one small row group per key, not every row group's key column
(fallback.keyed_rows).

Built in the background from the table's files (fallback.inputs.Upkeep): each row goes,
by a hash of its key text, to one of up to MAX_BUCKETS files, a batch of rows at a time;
each file is then sorted by key into small row groups of parquet. So building holds one
batch, or one bucket (a 512th of the table, past 16M rows), in memory, and the index
costs disk, not memory: about the table's own size (every column is kept, so a read
needs nothing else), twice that while the next one is built. The sort is stable: the
rows of a key the table repeats keep the table's order. The index records the files it
was made from (path, mtime, size): files added since are scanned beside it, and a file
rewritten or removed makes it unusable until it is built again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fallback import scratch
from prescore.encoding.keys import KeyForm
from prescore.encoding.table_keys import key_text_array

KEY = "__prescore_key__"  # the key text, beside the table's own columns
BUCKET_ROWS = 32_768  # rows per bucket file aimed at: a read decodes about this many
MAX_BUCKETS = 512  # files open at once while building
BATCH_ROWS = 65_536  # rows read at once while building (none read ahead)
GROUP_ROWS = 2_048  # rows per row group of a bucket file, sorted: a read decodes one

Stamps = Mapping[str, tuple[int, int]]  # a file's path -> (mtime in ns, size)


def buckets_of(texts: Any, buckets: int) -> Any:
    """The bucket of each key text (a stable hash: the same in every process)."""
    hashes = pd.util.hash_array(np.asarray(texts, dtype=object), categorize=False)
    return (hashes % np.uint64(buckets)).astype(np.int64)


class KeyIndex:
    """The rows of some files of a table, by key text, in bucket files under ``folder``."""

    def __init__(
        self,
        folder: tempfile.TemporaryDirectory[str],
        stamps: Stamps,
        buckets: int,
        filled: Iterable[int],
    ) -> None:
        self._folder = folder
        self.stamps = dict(stamps)
        self.buckets = buckets
        self.filled = frozenset(filled)  # the buckets some row hashed to

    @classmethod
    def build(
        cls,
        data: Any,
        parts: Sequence[Any],
        stamps: Stamps,
        key: Sequence[str],
        form: KeyForm,
        rows: int,
    ) -> KeyIndex:
        """Index the rows of ``parts`` (fragments of the pyarrow dataset ``data``, in the
        table's order) by the key text of their columns ``key``; ``rows``: about how many
        they hold."""
        buckets = int(min(MAX_BUCKETS, max(1, -(-rows // BUCKET_ROWS))))
        folder = scratch.folder("index")
        spread = _Spread(Path(folder.name), data.schema.append(pa.field(KEY, pa.string())))
        try:
            for part in parts:
                batches = part.to_batches(
                    schema=data.schema,
                    batch_size=BATCH_ROWS,
                    batch_readahead=0,
                    fragment_readahead=0,
                    use_threads=False,
                    fragment_scan_options=_unbuffered(part),
                )
                for batch in batches:
                    spread.add(pa.Table.from_batches([batch]), key, form, buckets)
            spread.close()
            for bucket in spread.streams:
                _sort(Path(folder.name), bucket)
        except BaseException:
            spread.close()
            folder.cleanup()
            raise
        pa.default_memory_pool().release_unused()  # the build's buffers, back to the system
        return cls(folder, stamps, buckets, spread.streams)

    def covers(self, stamps: Stamps) -> bool:
        """Whether every file indexed is still there, unchanged, among ``stamps``."""
        return all(stamps.get(path) == stamp for path, stamp in self.stamps.items())

    def get(self, wanted: Iterable[str], schema: Any) -> Any:
        """The indexed rows of the keys ``wanted`` (an Arrow table of ``schema``)."""
        keys = sorted(set(wanted))
        found = []
        if keys:
            of = buckets_of(keys, self.buckets)
            for bucket in set(of.tolist()) & self.filled:
                asked = [k for k, b in zip(keys, of, strict=True) if b == bucket]
                found.append(_read(Path(self._folder.name) / f"{bucket}.parquet", asked))
        if not found:
            return schema.empty_table()
        return pa.concat_tables(found).drop_columns([KEY]).cast(schema)

    def close(self) -> None:
        self._folder.cleanup()


def _unbuffered(part: Any) -> Any:
    """A parquet file read a batch at a time: not its next row groups ahead as well."""
    import pyarrow.dataset as ds

    if isinstance(part, ds.ParquetFileFragment):
        return ds.ParquetFragmentScanOptions(pre_buffer=False)
    return None


def _read(path: Path, asked: list[str]) -> Any:
    """The rows of the keys ``asked`` in one bucket file: only the row groups whose key
    range holds one of them are decoded."""
    file = pq.ParquetFile(path)
    at = file.schema_arrow.get_field_index(KEY)
    groups = []
    for g in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(g).column(at).statistics
        if (
            stats is None
            or not stats.has_min_max
            or any(stats.min <= key <= stats.max for key in asked)
        ):
            groups.append(g)
    if not groups:
        return file.schema_arrow.empty_table()
    rows = file.read_row_groups(groups, use_threads=False)
    return rows.filter(pc.is_in(rows.column(KEY), value_set=pa.array(asked)))


def _sort(folder: Path, bucket: int) -> None:
    """Write a bucket's rows sorted by key (stably: a repeated key's rows keep the table's
    order) into its parquet file, in small row groups, so a read decodes only its keys'."""
    spread = folder / f"{bucket}.arrows"
    with pa.OSFile(str(spread), "rb") as source:
        rows = pa.ipc.open_stream(source).read_all()
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(KEY, "ascending")]))
    pq.write_table(
        rows, folder / f"{bucket}.parquet", row_group_size=GROUP_ROWS, compression="zstd"
    )
    spread.unlink()


class _Spread:
    """Rows appended to their buckets' files as they are read: Arrow IPC streams, which
    hold no more than the batch being written (a parquet writer per bucket would keep
    its encoders' buffers, hundreds of them at once)."""

    def __init__(self, folder: Path, schema: Any) -> None:
        self.folder = folder
        self.schema = schema
        self.streams: dict[int, Any] = {}  # bucket -> its IPC stream writer
        self._sinks: list[Any] = []
        self._options = pa.ipc.IpcWriteOptions(compression="lz4")

    def add(self, rows: Any, key: Sequence[str], form: KeyForm, buckets: int) -> None:
        """Append each of ``rows`` with a key to its bucket, in the rows' order."""
        texts = key_text_array(rows, key, form)
        keep = texts.is_valid()
        rows, texts = rows.filter(keep), texts.filter(keep)
        if not len(rows):
            return
        of = buckets_of(texts.to_numpy(zero_copy_only=False), buckets)
        order = np.argsort(of, kind="stable")  # by bucket, in the table's order within one
        rows = rows.append_column(KEY, texts).take(pa.array(order))
        counts = np.bincount(of, minlength=buckets)
        start = 0
        for bucket in np.flatnonzero(counts).tolist():
            if bucket not in self.streams:
                sink = pa.OSFile(str(self.folder / f"{bucket}.arrows"), "wb")
                self._sinks.append(sink)
                self.streams[bucket] = pa.ipc.new_stream(sink, self.schema, options=self._options)
            self.streams[bucket].write_table(rows.slice(start, int(counts[bucket])))
            start += int(counts[bucket])

    def close(self) -> None:
        """End every stream and close its file (again: nothing)."""
        if self._sinks:
            for stream in self.streams.values():
                stream.close()
            for sink in self._sinks:
                sink.close()
            self._sinks = []
