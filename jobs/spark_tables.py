"""Reading a declared table with Spark, and what its columns are to the model contract."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prescore.datasets import Table
from prescore.errors import ConfigError
from prescore.signature import Column, Columns


def read(spark: Any, table: Table) -> Any:
    """The table as a DataFrame (any path Spark reads: file://, hdfs://, globs)."""
    reader = spark.read.format(table.format)
    if table.format == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true")
    return reader.load(table.path)


def _column(data_type: Any) -> Column:
    from pyspark.sql import types as T

    if isinstance(data_type, T.ArrayType):
        return Column(_column(data_type.elementType).kind, True)
    if isinstance(data_type, T.StringType):
        return Column("string")
    if isinstance(data_type, T.BooleanType):
        return Column("bool")
    if isinstance(data_type, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return Column("int")
    if isinstance(data_type, T.FloatType | T.DoubleType | T.DecimalType):
        return Column("float")
    if isinstance(data_type, T.BinaryType):
        return Column("binary")
    return Column(data_type.simpleString())


def columns(frame: Any) -> Columns:
    """Each column of ``frame`` as the model contract sees it."""
    return {f.name: _column(f.dataType) for f in frame.schema.fields}


def require(frame: Any, names: Iterable[str], where: str) -> None:
    """ConfigError naming the declared columns that ``frame`` lacks, and what it has."""
    have = set(frame.columns)
    missing = [n for n in names if n and n not in have]
    if missing:
        raise ConfigError(
            f"{where}: no column {', '.join(repr(m) for m in missing)}; "
            f"the table has {', '.join(sorted(have))}"
        )
