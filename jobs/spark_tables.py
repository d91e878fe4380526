"""Reading a declared table with Spark, and what its columns are to the model contract."""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from prescore.data.columns import Column, Columns
from prescore.data.datasets import Table
from prescore.encoding.keys import ESCAPE, SEPARATOR, KeyForm
from prescore.errors import ConfigError


def _missing_here(path: str) -> bool:
    """Whether ``path`` is a local file or folder (no glob) that does not exist."""
    parsed = urlparse(path)
    if parsed.scheme not in ("", "file") or any(c in path for c in "*?[{"):
        return False
    return not os.path.exists(unquote(parsed.path) if parsed.scheme else path)


def read(spark: Any, table: Table) -> Any:
    """The table as a DataFrame (any path Spark reads: file://, hdfs://, globs);
    ConfigError in one line when Spark cannot read it (no such path, not that format)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.sql.utils import AnalysisException

    if _missing_here(table.path):  # said before Spark logs a Java trace of its own
        raise ConfigError(
            f"the table {table.path} cannot be read as {table.format}: [PATH_NOT_FOUND] "
            "no such file or folder"
        )
    reader = spark.read.format(table.format)
    if table.format == "parquet":
        # pandas and pyarrow write timestamps in nanoseconds, a Parquet type Spark refuses
        # for the whole file unless told to read it as a long (nanoseconds since the epoch)
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    if table.format == "csv":
        reader = reader.option("header", "true").option("inferSchema", "true")
    try:
        return reader.load(table.path)
    except (AnalysisException, Py4JJavaError) as exc:  # no such path; not that format
        said = exc.java_exception.toString() if isinstance(exc, Py4JJavaError) else str(exc)
        first = str(said).strip().splitlines()[0][:300]
        raise ConfigError(
            f"the table {table.path} cannot be read as {table.format}: {first}"
        ) from None


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


KEY_TEXT = "_prescore_key"  # the column a run's rows carry their key text in


def key_column(table: Table, form: KeyForm) -> Any:
    """The table's key text, as prescore.encoding.keys.KeyForm.of_values writes it; null where a
    part is null. Made here, in the JVM, from the column as it is: an integer's digits
    exactly (pandas would see a nullable integer column as floats, rounded past 2**53)."""
    from pyspark.sql import functions as F

    parts = [F.col(c).cast("string") for c in table.key]
    if not form.joined:
        return parts[0]
    escaped = [
        F.replace(
            F.replace(p, F.lit(ESCAPE), F.lit(ESCAPE * 2)),
            F.lit(SEPARATOR),
            F.lit(ESCAPE + SEPARATOR),
        )
        for p in parts
    ]
    gap = functools.reduce(operator.or_, [p.isNull() for p in parts])
    return F.when(gap, F.lit(None)).otherwise(F.concat_ws(SEPARATOR, *escaped))


def check_key_types(frame: Any, table: Table, where: str) -> None:
    """A key column holds strings or integers (a float's text differs between Spark and
    pandas, and 0.1 + 0.2 is no key anyone could ask for)."""
    from pyspark.sql import types as T

    allowed = (T.StringType, T.ByteType, T.ShortType, T.IntegerType, T.LongType)
    for name in table.key:
        kind = frame.schema[name].dataType
        if not isinstance(kind, allowed):
            raise ConfigError(
                f"{where}.key: column {name} is {kind.simpleString()}; a key column holds "
                "strings or integers"
            )


@dataclass(frozen=True)
class Subset:
    """The rows an incremental run scores instead of its table's filter (its result is a
    delta of the live version, prescore.store.deltas): those whose key columns a table of
    keys holds (``keys``: a parquet path), those a Spark SQL condition selects
    (``where``), or those whose key the miss log holds (``missed``); all that are given."""

    keys: str = ""
    where: str = ""
    missed: bool = False

    def __bool__(self) -> bool:
        return bool(self.keys or self.where or self.missed)


WHOLE = Subset()  # a full run's: the table's filter and the miss log


def rows_to_score(
    frame: Any,
    table: Table,
    form: KeyForm,
    where: str,
    missed: Sequence[str],
    subset: Subset = WHOLE,
) -> Selection:
    """The rows a bulk run scores: those the table's ``filter`` selects (every row without
    one) and those whose key the miss log holds, or the ``subset`` of an incremental run;
    and which logged keys the table has."""
    from pyspark.sql import functions as F

    check_key_types(frame, table, where)
    key = key_column(table, form)
    frame = frame.withColumn(KEY_TEXT, key)
    key = F.col(KEY_TEXT)
    logged: list[str] = []
    if missed:
        found = frame.where(key.isin(list(missed))).select(key.alias("k")).distinct()
        logged = sorted(r["k"] for r in found.collect())
    if subset:
        chosen = _subset(frame, table, form, subset, logged)
        if logged and (subset.where or subset.keys):  # the logged keys it still holds
            found = chosen.where(key.isin(logged)).select(key.alias("k")).distinct()
            logged = sorted(r["k"] for r in found.collect())
        return Selection(chosen, logged, 0)
    if not table.filter:
        return Selection(frame, logged, 0)
    condition = _condition(frame, table.filter, f"{where}.filter")
    chosen = frame.where(condition | key.isin(logged) if logged else condition)
    added = frame.where(~condition & key.isin(logged)).count() if logged else 0
    return Selection(chosen, logged, added)


def _subset(frame: Any, table: Table, form: KeyForm, subset: Subset, logged: list[str]) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql.utils import AnalysisException

    if subset.missed:
        frame = frame.where(F.col(KEY_TEXT).isin(logged))
    if subset.where:
        frame = frame.where(_condition(frame, subset.where, "--where"))
    if subset.keys:
        where = f"--keys {subset.keys}"
        try:
            given = frame.sparkSession.read.parquet(subset.keys)
        except AnalysisException as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(f"{where}: not a parquet table: {first}") from None
        require(given, table.key, where)
        check_key_types(given, table, where)
        # matched by key text, as the lookup asks: "007" is not 7
        texts = given.select(key_column(table, form).alias(KEY_TEXT)).distinct()
        frame = frame.join(texts, [KEY_TEXT], "left_semi")
    return frame


def _condition(frame: Any, text: str, where: str) -> Any:
    """``text`` as a Spark SQL condition over ``frame`` (checked by Spark's analysis of
    it); ConfigError naming ``where`` if it is none."""
    from pyspark.sql import functions as F
    from pyspark.sql.utils import AnalysisException, ParseException

    try:
        condition = F.expr(text)
        frame.where(condition)
        return condition
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ConfigError(f"{where}: {text!r} is not a Spark SQL condition: {first}") from None


@dataclass(frozen=True)
class Selection:
    """What a run scores: ``frame``; ``logged``: the miss-log keys in it; ``added``: how
    many of those the filter alone would not have scored."""

    frame: Any
    logged: list[str]
    added: int


def counted_keys(frame: Any, where: str) -> int:
    """The rows of ``frame`` (a run's chosen rows, with their KEY_TEXT); ConfigError naming
    some of its keys that repeat: each key is one row, or the version's count check would
    fail once everything was written."""
    from pyspark.sql import functions as F

    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(KEY_TEXT).alias("keyed"),  # a null key is a bad row, told by the run
        F.countDistinct(KEY_TEXT).alias("keys"),
    ).first()
    if row["keys"] < row["keyed"]:
        repeats = frame.groupBy(KEY_TEXT).count().where(F.col("count") > 1)
        named = [repr(r[KEY_TEXT]) for r in repeats.limit(3).collect()]
        raise ConfigError(
            f"{where}: {row['keyed'] - row['keys']} key(s) repeat ({', '.join(named)}, ...); "
            "each key is one row"
        )
    return int(row["rows"])
