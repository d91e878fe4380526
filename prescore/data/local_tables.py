"""Reading a declared table outside Spark (pyarrow): for registration, the fallback and
retraining's evaluation.

``file://`` paths (a file, a folder of files, or a glob) are read in place; ``hdfs://``
``s3://`` and ``gs://`` ones are fetched (prescore.data.storage) into a temporary folder first.
Parquet, ORC, CSV and JSON are read here (LOCAL_FORMATS), typed as the bulk jobs' Spark
reads them (jobs.spark_tables.read): a CSV table has a header row, its types inferred
(timestamps and dates included) and an empty field is null; a JSON table has one object
per line, and text that looks like a timestamp stays text. Unlike Spark, pyarrow infers
a CSV or JSON table's types from each file's first block (a megabyte): a column whose
later rows need another type fails to read, where Spark widens it.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prescore.data.columns import Column, Columns
from prescore.data.datasets import Table
from prescore.data.storage import SCHEMES, open_root, remote
from prescore.errors import ConfigError


def listed(relative: str) -> bool:
    """Whether a file at ``relative`` (a path inside a table's folder) is part of the
    table, as Spark lists a folder: no hidden file, none under a hidden folder (a writer's
    _temporary/ holds its unfinished part files)."""
    return not any(n.startswith((".", "_")) for n in Path(relative).parts)


def _local_files(path: str) -> list[str]:
    if any(c in path for c in "*?["):
        return sorted(glob.glob(path))
    if os.path.isdir(path):
        root = Path(path)
        return sorted(
            str(p) for p in root.rglob("*") if p.is_file() and listed(str(p.relative_to(root)))
        )
    return [path] if os.path.exists(path) else []


def files(table: Table, webhdfs_url: str, workdir: str, timeout_s: float = 30.0) -> list[str]:
    parsed = urlparse(table.path)
    if parsed.scheme in ("", "file"):
        found = _local_files(parsed.path if parsed.scheme else table.path)
    elif remote(table.path):
        try:
            root = open_root(table.path, webhdfs_url=webhdfs_url, timeout_s=timeout_s)
        except ValueError as exc:  # no bucket
            raise ConfigError(str(exc)) from exc
        local = Path(workdir) / "t"
        root.backend.download_dir(root.path, local)
        found = _local_files(str(local))
    else:
        raise ConfigError(
            f"{table.path}: only file://, hdfs://, s3:// and gs:// tables are read outside Spark"
        )
    if not found:
        raise ConfigError(f"{table.path}: no such table (no file matches)")
    return found


LOCAL_FORMATS = ("parquet", "orc", "csv", "json")  # read as Spark reads them


def readable(table: Table) -> bool:
    """Whether this module can read ``table`` (LOCAL_FORMATS, in storage's SCHEMES)."""
    return table.format in LOCAL_FORMATS and urlparse(table.path).scheme in SCHEMES


def dataset(found: Sequence[str], fmt: str) -> Any:
    """A pyarrow dataset of the files ``found`` of a table in format ``fmt``."""
    import pyarrow as pa
    import pyarrow.csv as csv
    import pyarrow.dataset as ds

    if fmt not in LOCAL_FORMATS:
        raise ConfigError(
            f"{fmt} tables are read by the bulk jobs only ({', '.join(LOCAL_FORMATS)} here)"
        )
    if fmt not in ("csv", "json"):
        return ds.dataset(list(found), format=fmt)
    text: Any = fmt
    if fmt == "csv":  # Spark's: only an empty field is null, a string's too
        nulls = csv.ConvertOptions(null_values=[""], strings_can_be_null=True)
        text = ds.CsvFileFormat(convert_options=nulls)
    # each file's types (pyarrow reads only the first's), widened as Spark's inference does
    inferred = [ds.dataset([f], format=text).schema for f in found]
    merged = _merged(inferred, fmt, found)
    return ds.dataset(list(found), format=text, schema=pa.schema(map(_as_spark(fmt), merged)))


def _merged(schemas: Sequence[Any], fmt: str, found: Sequence[str]) -> Any:
    """One schema for files whose inferred types differ: widened where pyarrow can (an
    integer column with floats is a float column); a CSV column of numbers in one file
    and text in another is text, as Spark reads it. pyarrow's JSON reader cannot read a
    number as text: such a JSON table is a ConfigError naming the column."""
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    fields = []
    for name in dict.fromkeys(n for schema in schemas for n in schema.names):
        kinds = [(f, s.field(name)) for f, s in zip(found, schemas, strict=True) if name in s.names]
        try:
            one = [pa.schema([field]) for _, field in kinds]
            fields.append(pa.unify_schemas(one, promote_options="permissive").field(0))
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            if fmt != "csv":
                seen = ", ".join(f"{field.type} in {Path(f).name}" for f, field in kinds[:3])
                raise ConfigError(
                    f"column {name!r} holds values of different types ({seen}): outside "
                    "Spark a JSON table needs one type per column"
                ) from None
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _as_spark(fmt: str) -> Any:
    """A CSV or JSON column's inferred type as Spark infers it: a column with no value
    is text; in JSON a timestamp or date is text too; in CSV a timestamp has Spark's
    microseconds."""
    import pyarrow as pa

    def spark_type(kind: Any) -> Any:
        if pa.types.is_null(kind) or (fmt == "json" and _is_time(kind)):
            return pa.string()
        if pa.types.is_timestamp(kind):
            return pa.timestamp("us", kind.tz)
        if pa.types.is_list(kind):  # an empty list's items: text
            return pa.list_(spark_type(kind.value_type))
        return kind

    return lambda field: field.with_type(spark_type(field.type))


def _is_time(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type))


def read_typed(
    table: Table, columns: Sequence[str] | None = None, webhdfs_url: str = ""
) -> tuple[Any, Columns]:
    """The table (or some of its columns) as a pandas DataFrame, and its column types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        found = files(table, webhdfs_url, tmp)
        wanted = list(columns) if columns else None
        try:
            if table.format == "parquet":
                arrow = pa.concat_tables([pq.read_table(f, columns=wanted) for f in found])
            else:
                arrow = dataset(found, table.format).to_table(columns=wanted)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            raise ConfigError(f"{table.path}: cannot read the table: {exc}") from exc
    return to_pandas(arrow), {f.name: _column(f.type) for f in arrow.schema}


def to_pandas(arrow: Any) -> Any:
    """An Arrow table as pandas, its columns as the bulk job reads them: nanosecond
    timestamps as int64 nanoseconds since the epoch (Spark has no such type;
    jobs.spark_tables.read), dictionary-encoded columns as their values (no categoricals)."""
    import pyarrow as pa

    for i, f in enumerate(arrow.schema):
        if _is_nanos(f.type):
            arrow = arrow.set_column(i, f.name, arrow.column(i).cast(pa.int64()))
        elif pa.types.is_dictionary(f.type):
            arrow = arrow.set_column(i, f.name, arrow.column(i).cast(f.type.value_type))
    return arrow.to_pandas()


def _is_nanos(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns")


def read(table: Table, columns: Sequence[str] | None = None, webhdfs_url: str = "") -> Any:
    """The table (or some of its columns) as a pandas DataFrame."""
    return read_typed(table, columns, webhdfs_url)[0]


def _column(arrow_type: Any) -> Column:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):  # pandas' categoricals: the values' type
        return _column(arrow_type.value_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return Column(_column(arrow_type.value_type).kind, True)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return Column("string")
    if pa.types.is_boolean(arrow_type):
        return Column("bool")
    if pa.types.is_integer(arrow_type) or _is_nanos(arrow_type):
        return Column("int")
    if pa.types.is_timestamp(arrow_type):  # Spark's names for them
        return Column("timestamp")
    if pa.types.is_date(arrow_type):
        return Column("date")
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return Column("float")
    if pa.types.is_binary(arrow_type):
        return Column("binary")
    return Column(str(arrow_type))


def schema(table: Table, webhdfs_url: str = "") -> Columns:
    """Each column of ``table`` as the model contract sees it (reads one file's footer;
    every file's first block of a CSV or JSON table, whose types are inferred)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        found = files(table, webhdfs_url, tmp)
        try:
            if table.format == "parquet":
                arrow = pq.read_schema(found[0])
            else:
                arrow = dataset(
                    found if table.format in ("csv", "json") else found[:1], table.format
                ).schema
        except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors are among these
            raise ConfigError(f"{table.path}: cannot read the table: {exc}") from exc
    return {f.name: _column(f.type) for f in arrow}
