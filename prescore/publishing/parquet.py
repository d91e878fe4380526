"""Publishing scores computed elsewhere: ``prescore publish NAME PATH`` over parquet.

Each row is one key: its key column, and either one column holding the payload as a
JSON object (``--json-column``) or the columns that make the payload (``--columns``,
default: every other column). The payload served is ``{key_field: key, ...}`` with
``model``, ``model_version`` and ``scored_at`` added where the row has none, and, for a
dataset that declares its list's ``entry_field``, each list entry's first field put first
(the lookup counts entries by it). A row whose list allows it is stored as a compact
payload, served byte for byte as its JSON (prescore.encoding.published_lists). Rows are
written as a new version with the same verify-and-switch as the bulk jobs
(prescore.store.versions). A row with a bad key or payload is counted and reported, never
published: with more than ``max_bad`` of them the version is marked failed and the live
one stays.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, TextIO

import numpy as np
import orjson

from prescore.data.datasets import Dataset, Table
from prescore.data.local_tables import files
from prescore.data.storage import remote
from prescore.encoding.arrow_lists import Packing, pack_batch
from prescore.encoding.json_lists import pack_json_batch
from prescore.encoding.published_lists import MAX_ENTRIES, ListCompactor
from prescore.encoding.registry_entry import VersionInfo
from prescore.errors import InvalidInput, PublishError
from prescore.progress import Progress
from prescore.publishing import gates
from prescore.publishing.lifecycle import Written, publish_new
from prescore.settings import StoreSettings
from prescore.store import values
from prescore.store.deltas import DELTA_OF, base_for
from prescore.store.redis_client import Client
from prescore.store.values import Placed
from prescore.store.versions import Versions

# rows read, packed and written at once: a batch packed at once makes each distinct entry
# once, and written at once puts more of its rows in each bucket's HSET
BATCH_ROWS = 100_000
ROW_SLICE = 10_000  # rows turned into Python objects at once on the row by row path


@dataclass
class PublishReport:
    dataset: str
    version: str = ""
    rows: int = 0
    compact: int = 0  # rows stored as compact payloads, the rest as JSON
    bad: int = 0
    bad_sample: list[str] = field(default_factory=list)
    seconds: float = 0.0
    published: bool = False
    gated: bool = False
    dry_run: bool = False
    delta_of: str = ""  # the live version an incremental publish added this delta to
    staged: bool = False  # kept ``staged`` for a canary, not switched to (stage=True)
    error: str = ""  # why it was not published: the error's code ...
    message: str = ""  # ... and its message
    repeated: int = 0  # good rows whose key an earlier row had (a dry run counts them)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict | str | bytes):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class _Rows:
    """Turns parquet rows of one dataset into (key, payload) pairs, or raises InvalidInput."""

    def __init__(
        self,
        dataset: Dataset,
        key_column: str,
        json_column: str | None,
        columns: Sequence[str],
        stamp: Mapping[str, str],
        compact: bool = True,
    ) -> None:
        self.dataset = dataset
        self.key_column = key_column
        self.json_column = json_column
        self.columns = columns
        self.stamp = stamp
        self.form = dataset.key_form
        self.compact = compact
        self.compactor = ListCompactor(
            dataset.key_field, dataset.list_field, MAX_ENTRIES if compact else 0
        )
        shape = (dataset.key_field, dataset.list_field, dataset.entry_field)
        self.packing = Packing(shape, stamp, self.form, self.compactor)

    def payload(self, raw_key: Any, source: Any) -> tuple[str, bytes]:
        """(key, payload bytes) of one row: its key and its JSON text (or column values);
        the bytes are a compact payload where the row's list allows one."""
        key = self.form.check_given(raw_key)
        if self.json_column:
            try:
                body = orjson.loads(source or "")
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise InvalidInput("payload is not JSON", code="invalid_payload") from exc
            if not isinstance(body, dict):
                raise InvalidInput("payload is not a JSON object", code="invalid_payload")
        else:
            body = {c: _plain(v) for c, v in source.items()}
            _finite(body)  # orjson writes NaN as null: refuse it, as json would
        doc = {self.dataset.key_field: key, **body}
        self._entries_first(doc)
        for name, value in self.stamp.items():
            doc.setdefault(name, value)
        try:
            text = orjson.dumps(doc)
        except (TypeError, orjson.JSONEncodeError) as exc:  # a type JSON lacks
            raise InvalidInput(f"payload cannot be JSON: {exc}", code="invalid_payload") from exc
        return key, self.compactor.pack(key, text)

    def _entries_first(self, doc: dict[str, Any]) -> None:
        entries = doc.get(self.dataset.list_field)
        if entries is None:  # the lookup reads none without its list (the decode gate)
            texts = [c for c, v in doc.items() if isinstance(v, str) and v.startswith("{")]
            hint = f" (column {texts[0]!r} holds JSON text: --json-column)" if texts else ""
            raise InvalidInput(f"no list {self.dataset.list_field!r}{hint}", code="invalid_payload")
        if not isinstance(entries, list):
            raise InvalidInput(f"{self.dataset.list_field} is not a list", code="invalid_payload")
        first = self.dataset.entry_field
        if not first:
            return
        for i, entry in enumerate(entries):
            if type(entry) is not dict or first not in entry:
                raise InvalidInput(
                    f"{self.dataset.list_field}[{i}] has no {first!r}", code="invalid_payload"
                )
            if next(iter(entry)) != first:  # most rows already have it first
                entries[i] = {first: entry[first], **entry}

    def batches(self, source: Source) -> Iterator[Any]:
        """Each Arrow batch of ``source``, of the key column and the payload's; PublishError
        naming the columns a part lacks, before anything of that part is written."""
        for name, have, read in _parts(source):
            yield from read(self.wanted(name, have))

    def wanted(self, name: str, have: list[str]) -> list[str]:
        """The columns read of a part ``name`` that has ``have``; PublishError naming those
        it lacks (a publish checks every part's before it begins a version)."""
        body = (
            [self.json_column]
            if self.json_column
            else list(self.columns) or [c for c in have if c != self.key_column]
        )
        missing = [c for c in [self.key_column, *body] if c not in have]
        if missing:
            hint = " (--key names the key column)" if self.key_column in missing else ""
            raise PublishError(
                f"{name}: no column {', '.join(missing)}; it has {', '.join(have)}{hint}",
                code="missing_column",
            )
        return [self.key_column, *body]

    def packed(self, batch: Any) -> list[tuple[str, bytes]] | None:
        """(key, compact payload) of every row of ``batch`` packed at once, or None where
        the batch goes row by row (prescore.encoding.arrow_lists, and json_lists for a
        JSON column)."""
        if not self.compact:
            return None
        if self.json_column:
            keys, texts = batch.column(self.key_column), batch.column(self.json_column)
            return pack_json_batch(keys, texts, self.packing)
        columns = [self.key_column, self.dataset.list_field]
        if sorted(batch.schema.names) != sorted(columns):
            return None
        ordered = batch.select(columns)
        return pack_batch(ordered, self.key_column, self.packing)

    def sources(self, batch: Any) -> tuple[list[Any], list[Any]]:
        """(keys, JSON texts or column values) of ``batch``'s rows."""
        keys = batch.column(self.key_column).to_pylist()
        if self.json_column:
            return keys, batch.column(self.json_column).to_pylist()
        body = list(self.columns) or [c for c in batch.schema.names if c != self.key_column]
        return keys, batch.select(body).to_pylist()


# rows to publish: a parquet path (a file, a folder or a glob), or an Arrow table in memory
Source = Any  # str | pyarrow.Table (pyarrow is imported only where it is used)
Part = tuple[str, list[str], Callable[[list[str]], Iterator[Any]]]


def _parts(source: Source) -> Iterator[Part]:
    """(name, column names, read(columns) -> record batches) of each part of ``source``."""
    import pyarrow.parquet as pq

    if not isinstance(source, str):
        yield (
            "the table",
            source.schema.names,
            lambda cols: iter(source.select(cols).to_batches(max_chunksize=BATCH_ROWS)),
        )
        return
    for name in files(Table(source, ()), "", ""):
        parquet = pq.ParquetFile(name)
        yield name, parquet.schema_arrow.names, partial(_file_batches, parquet)


def _file_batches(parquet: Any, columns: list[str]) -> Iterator[Any]:
    return parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)


def count_rows(source: Source) -> int:
    """Rows of ``source``: a table's, or the parquet footers' (sizes the version's buckets)."""
    import pyarrow.parquet as pq

    if not isinstance(source, str):
        return int(source.num_rows)
    return sum(pq.ParquetFile(n).metadata.num_rows for n in files(Table(source, ()), "", ""))


def _finite(value: Any) -> None:
    """InvalidInput for a NaN or infinity anywhere in ``value`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput("payload holds a NaN or infinity", code="invalid_payload")
    if isinstance(value, dict):
        for v in value.values():
            _finite(v)
    elif isinstance(value, list):
        for v in value:
            _finite(v)


def _checked(rows: _Rows, batch: Any, report: PublishReport) -> list[tuple[str, bytes]]:
    """The good rows of one batch as (key, payload); the bad ones counted and sampled."""
    packed = rows.packed(batch)
    if packed is not None:
        return packed
    good = []
    for start in range(0, batch.num_rows, ROW_SLICE):  # bounded: a row is many objects
        batch_keys, sources = rows.sources(batch.slice(start, ROW_SLICE))
        for raw_key, source in zip(batch_keys, sources, strict=True):
            try:
                good.append(rows.payload(raw_key, source))
            except InvalidInput as exc:
                report.bad += 1
                if len(report.bad_sample) < 20:
                    report.bad_sample.append(
                        f"key {str(raw_key)[:80]!r}: {exc.code}: {exc.message}"
                    )
    return good


def _write_all(
    client: Client,
    where: Placed,
    source: Source,
    rows: _Rows,
    report: PublishReport,
    sample: gates.Reservoir,
    fence: values.Fence,
    progress: Progress,
) -> None:
    """Write every good row of ``source``; count and sample the bad ones. Each batch is
    written on one writing thread while the next is read and packed here, so that
    Redis stores one while this process makes the next. One is in flight at most: a
    write's failure (a lost lease, a full Redis) is raised before another is sent, and
    none is left running once this returns or raises."""
    with ThreadPoolExecutor(1, thread_name_prefix="publish-write") as writer:
        sending: tuple[Future[int], int] | None = None  # a batch's write, its rows read

        def landed() -> None:  # the batch in flight written: counted, its progress said
            if sending is not None:
                report.rows += sending[0].result()
                progress.add(sending[1])

        for batch in rows.batches(source):
            good = _checked(rows, batch, report)
            landed()
            write = writer.submit(values.write, client, where, good, BATCH_ROWS, fence=fence)
            sending = (write, batch.num_rows)
            sample.offer([k for k, _ in good])
        landed()


def _check_all(source: Source, rows: _Rows, report: PublishReport, progress: Progress) -> None:
    """Read and check every row as a publish would, and write nothing; the keys that
    repeat are counted from a 128-bit hash of each (not the keys themselves)."""
    report.dry_run = True
    seen = []  # two 64-bit hashes of each key: 16 bytes a row, no two keys alike
    for batch in rows.batches(source):
        good = [k for k, _ in _checked(rows, batch, report)]
        report.rows += len(good)
        seen.append(np.stack([gates.ranks(good), gates.ranks(good, "6543210987654321")], 1))
        progress.add(batch.num_rows)
    if seen:
        report.repeated = report.rows - len(np.unique(np.concatenate(seen), axis=0))


def _repeated(count: int, rows: int) -> str:
    return (
        f"{rows - count} row(s) repeat a key ({rows} good rows, {count} distinct keys): "
        "each key is one row"
    )


def _dry_run(
    versions: Versions,
    report: PublishReport,
    max_bad: int,
    say: Callable[[str], None],
    incremental: bool = False,
) -> PublishReport:
    """What a dry run found: the keys it would write, the bad rows, and the version it
    would replace or add a delta to (its gates need the written version, so they are
    checked by the real publish only)."""
    live = versions.current() or "none"
    verdict = f"would write {report.rows} keys, {report.bad} bad row(s) skipped"
    if report.repeated:
        verdict = f"would fail: {_repeated(report.rows - report.repeated, report.rows)}"
    if report.bad > max_bad:
        verdict = f"would fail: {report.bad} bad row(s), more than the {max_bad} allowed"
        verdict += " (--max-bad)"
    what = f"as a delta of the live version {live}" if incremental else f"live version now {live}"
    say(f"{report.dataset}: dry run, nothing written: {verdict}; {what}")
    for line in report.bad_sample:
        say(f"  bad row: {line}")
    return report


def _not_published(
    report: PublishReport, exc: PublishError, say: Callable[[str], None]
) -> PublishReport:
    """``report`` of a publish refused with ``exc``, said in one line."""
    report.error, report.message = exc.code, exc.message
    say(f"{report.dataset}: not published: {exc.code}: {exc.message}")
    return report


def _delta_model(
    versions: Versions, dataset: Dataset, model: str, model_version: str
) -> tuple[str, str]:
    """The model a delta is stamped with: the live version's, unless another is named (a
    model version, or a model other than the dataset's); the delta is checked against its
    base before anything is written (prescore.store.deltas.base_for)."""
    live = versions.current()
    if live is not None and not model_version:
        info = versions.get(live)
        if model in (info.model, dataset.model or "external"):
            model, model_version = info.model, info.model_version
    base_for(versions, (model, model_version))
    return model, model_version


def publish_file(
    client: Client,
    store: StoreSettings,
    dataset: Dataset,
    path: str,
    *,
    webhdfs_url: str = "",
    timeout_s: float = 30.0,
    **options: Any,
) -> PublishReport:
    """Publish the rows of the parquet at ``path`` (a local file, folder or glob; a
    file or folder on ``hdfs://``, ``s3://`` or ``gs://``, copied to a temporary folder
    first, each store call within ``timeout_s``): see publish_rows for ``options``."""
    from prescore.data.datasets import absolute_uri

    if not remote(path):
        return publish_rows(client, store, dataset, absolute_uri(path), f"from {path}", **options)
    with tempfile.TemporaryDirectory(prefix="prescore-publish-") as tmp:
        files(Table(path, ()), webhdfs_url, tmp, timeout_s)  # into tmp/t, as it was laid out
        return publish_rows(client, store, dataset, f"{tmp}/t", f"from {path}", **options)


def publish_rows(
    client: Client,
    store: StoreSettings,
    dataset: Dataset,
    source: Source,
    origin: str,
    *,
    key_column: str | None = None,
    json_column: str | None = None,
    columns: Sequence[str] = (),
    model: str = "external",
    model_version: str = "",
    max_bad: int = 0,
    force: bool = False,
    say: Callable[[str], None] = print,
    progress_s: float = 5.0,
    dry_run: bool = False,
    bar: TextIO | None = None,
    compact: bool = True,
    incremental: bool = False,
    stage: bool = False,
) -> PublishReport:
    """Publish the rows of ``source`` (a parquet URI or an Arrow table; ``origin`` says
    which in the registry's note) as a new version of ``dataset``, saying how far it got
    every ``progress_s`` (rows read of the source's, rate, time left), or drawing a bar on
    ``bar`` (a terminal's stream) instead. ``dry_run``: check every row and write
    nothing. ``compact`` False stores every row as JSON (see published_lists).
    ``incremental``: add the rows to the live version as a delta (prescore.store.deltas).
    ``stage``: gate it, then keep it ``staged`` beside the live one, for a canary
    (prescore.store.canaries)."""
    if incremental and stage:
        raise InvalidInput("a delta is added to the live version: it cannot be staged")
    versions = Versions(client, dataset.name, store)
    if incremental and not dry_run:
        model, model_version = _delta_model(versions, dataset, model, model_version)
    stamp = {
        "model": model,
        "model_version": model_version,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    rows = _Rows(dataset, key_column or dataset.key_field, json_column, columns, stamp, compact)
    report = PublishReport(dataset.name)
    reservoir = gates.Reservoir(dataset.gates.sample)
    try:  # every part's columns, before a version begins
        for name, have, _ in _parts(source):
            rows.wanted(name, have)
    except PublishError as exc:
        return _not_published(report, exc, say)
    total = count_rows(source)
    if dry_run:
        if incremental:
            model, model_version = _delta_model(versions, dataset, model, model_version)
        with Progress(
            f"{dataset.name} (dry run)", total, say, every_s=progress_s, bar=bar
        ) as progress:
            _check_all(source, rows, report, progress)
        return _dry_run(versions, report, max_bad, say, incremental)

    def write(versions: Versions, info: VersionInfo) -> Written:
        report.version = info.version
        report.delta_of = str(info.extra.get(DELTA_OF, ""))
        where, fence = Placed.of(dataset.name, info), versions.fence(info.version)
        with Progress(
            f"{dataset.name} {info.version}", total, say, every_s=progress_s, bar=bar
        ) as progress:
            _write_all(client, where, source, rows, report, reservoir, fence, progress)
        versions.write_frames(where, rows.compactor.frames())  # before any read
        report.compact = rows.compactor.packed
        if report.bad > max_bad:
            raise PublishError(
                f"{report.bad} bad row(s), more than the {max_bad} allowed (--max-bad); "
                "nothing was published"
            )
        found = values.count(client, where)  # before the gates: no gated version to release
        if found < report.rows:
            report.repeated = report.rows - found
            raise PublishError(
                f"{_repeated(found, report.rows)}; nothing was published", code="repeated_keys"
            )
        return Written(report.rows, reservoir.keys, {"scored": report.rows, "unit": "rows"})

    try:
        done = publish_new(
            versions,
            dataset,
            (model, model_version),
            write,
            note=f"written {origin}",  # true of it in every status
            expected_keys=total,
            force=force,
            incremental=incremental,
            stage=stage,
            say=say,
        )
    except BaseException as exc:
        for line in report.bad_sample:
            say(f"  bad row: {line}")
        if isinstance(exc, PublishError):
            report.gated = exc.code == "gated" and not incremental  # a delta is failed
            return _not_published(report, exc, say)
        raise
    report.seconds = done.seconds  # up to the switch, as the jobs time it
    report.published = not stage
    report.staged = stage
    report.delta_of = str(done.info.extra.get(DELTA_OF, ""))
    rate = report.rows / report.seconds if report.seconds else 0.0
    what = f"published version {report.version}"
    if incremental:
        what = f"published delta {report.version} of {report.delta_of}"
    elif stage:
        what = f"staged version {report.version} (readers stay on the live one)"
    say(
        f"{dataset.name}: {what}: "
        f"{report.rows} keys "
        f"({rate:,.0f} keys/s, {report.compact} of them compact), "
        f"{report.bad} bad row(s) skipped"
    )
    for line in report.bad_sample:
        say(f"  bad row: {line}")
    if done.retired:
        say(f"  retired {len(done.retired)} old version(s): {', '.join(done.retired)}")
    return report
