"""Publishing scores computed elsewhere: ``prescore publish NAME PATH`` over parquet.

Each row is one key: its key column, and either one column holding the payload as a
JSON object (``--json-column``) or the columns that make the payload (``--columns``,
default: every other column). The payload served is ``{key_field: key, ...}`` with
``model``, ``model_version`` and ``scored_at`` added where the row has none, and, for a
dataset that declares its list's ``entry_field``, each list entry's first field put first
(the lookup counts entries by it). Rows are written as a new version with the same
verify-and-switch as the bulk jobs (prescore.versions). A row with a bad key or payload
is counted and reported, never published: with more than ``max_bad`` of them the version
is marked failed and the live one stays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prescore import keys
from prescore.codec import dumps
from prescore.datasets import Dataset, Table
from prescore.errors import InvalidInput, PublishError
from prescore.local_tables import _files
from prescore.redis_client import Client
from prescore.settings import StoreSettings
from prescore.versions import Versions, write_payloads

BATCH_ROWS = 10_000


@dataclass
class PublishReport:
    dataset: str
    version: str = ""
    rows: int = 0
    bad: int = 0
    bad_sample: list[str] = field(default_factory=list)
    seconds: float = 0.0
    published: bool = False


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict | str | bytes):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class _Rows:
    """Turns parquet rows of one dataset into (key, payload) pairs, or raises InvalidInput."""

    def __init__(
        self, dataset: Dataset, key_column: str, json_column: str | None,
        columns: Sequence[str], stamp: Mapping[str, str],
    ) -> None:  # fmt: skip
        self.dataset = dataset
        self.key_column = key_column
        self.json_column = json_column
        self.columns = columns
        self.stamp = stamp
        self.parts = len(dataset.key_columns)

    def payload(self, row: Mapping[str, Any]) -> tuple[str, bytes]:
        raw_key = row.get(self.key_column)
        if not isinstance(raw_key, str):
            raise InvalidInput(f"key {raw_key!r} is not a string", code="invalid_id")
        key = keys.check_key(raw_key, self.parts, what="key")
        if self.json_column:
            try:
                body = json.loads(row[self.json_column] or "")
            except (ValueError, TypeError) as exc:
                raise InvalidInput("payload is not JSON", code="invalid_payload") from exc
            if not isinstance(body, dict):
                raise InvalidInput("payload is not a JSON object", code="invalid_payload")
        else:
            names = self.columns or [c for c in row if c != self.key_column]
            body = {c: _plain(row[c]) for c in names}
        doc = {self.dataset.key_field: key, **body}
        self._entries_first(doc)
        for name, value in self.stamp.items():
            doc.setdefault(name, value)
        try:
            return key, dumps(doc)
        except (TypeError, ValueError) as exc:  # NaN, infinity, a type JSON lacks
            raise InvalidInput(f"payload cannot be JSON: {exc}", code="invalid_payload") from exc

    def _entries_first(self, doc: dict[str, Any]) -> None:
        entries = doc.get(self.dataset.list_field)
        if entries is None:
            return
        if not isinstance(entries, list):
            raise InvalidInput(f"{self.dataset.list_field} is not a list", code="invalid_payload")
        first = self.dataset.entry_field
        if not first:
            return
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or first not in entry:
                raise InvalidInput(
                    f"{self.dataset.list_field}[{i}] has no {first!r}", code="invalid_payload"
                )
            entries[i] = {first: entry[first], **entry}


def _batches(path: str) -> Iterator[list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    for name in _files(Table(path, ()), "", ""):
        for batch in pq.ParquetFile(name).iter_batches(batch_size=BATCH_ROWS):
            yield batch.to_pylist()


def _write_all(
    client: Client, dataset: Dataset, version: str, path: str, rows: _Rows, report: PublishReport
) -> None:
    """Write every good row of the parquet at ``path``; count and sample the bad ones."""
    from prescore.datasets import absolute_uri

    for batch in _batches(absolute_uri(path)):
        good = []
        for row in batch:
            try:
                good.append(rows.payload(row))
            except (InvalidInput, KeyError) as exc:
                report.bad += 1
                if len(report.bad_sample) < 20:
                    reason = exc.code if isinstance(exc, InvalidInput) else "missing_column"
                    shown = str(row.get(rows.key_column))[:80]
                    report.bad_sample.append(f"key {shown!r}: {reason}: {exc}")
        report.rows += write_payloads(client, dataset.name, version, good)


def publish_file(
    client: Client, store: StoreSettings, dataset: Dataset, path: str, *,
    key_column: str | None = None, json_column: str | None = None, columns: Sequence[str] = (),
    model: str = "external", model_version: str = "", max_bad: int = 0, force: bool = False,
    say: Callable[[str], None] = print,
) -> PublishReport:  # fmt: skip
    """Publish the rows of the parquet at ``path`` as a new version of ``dataset``."""
    stamp = {
        "model": model,
        "model_version": model_version,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    rows = _Rows(dataset, key_column or dataset.key_field, json_column, columns, stamp)
    versions = Versions(client, dataset.name, store)
    info = versions.begin(model, model_version, note=f"published from {path}")
    report = PublishReport(dataset.name, info.version)
    say(f"{dataset.name}: writing version {info.version} from {path}")
    started = time.perf_counter()
    try:
        with versions.lease(info.version):
            _write_all(client, dataset, info.version, path, rows, report)
        if report.bad > max_bad:
            raise PublishError(
                f"{report.bad} bad row(s), more than the {max_bad} allowed (--max-bad); "
                "nothing was published"
            )
        versions.publish(info.version, report.rows, force=force)
        report.published = True
    except BaseException as exc:
        if versions.get(info.version).status == "writing":
            versions.fail(info.version, f"{type(exc).__name__}: {str(exc)[:200]}")
        say(f"{dataset.name}: version {info.version} failed; the live version is unchanged")
        for line in report.bad_sample:
            say(f"  bad row: {line}")
        if isinstance(exc, PublishError):
            say(f"{dataset.name}: {exc.message}")
            return report
        raise
    report.seconds = time.perf_counter() - started
    rate = report.rows / report.seconds if report.seconds else 0.0
    say(
        f"{dataset.name}: published version {info.version}: {report.rows} keys "
        f"({rate:,.0f} keys/s), {report.bad} bad row(s) skipped"
    )
    for line in report.bad_sample:
        say(f"  bad row: {line}")
    return report
