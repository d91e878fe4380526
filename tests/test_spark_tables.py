"""Tables as their writers write them, read by the bulk job (jobs.spark_tables.read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs import spark_tables
from prescore import local_tables
from prescore.datasets import Table
from prescore.errors import ConfigError


def test_a_pandas_table_with_nanosecond_timestamps_is_read(spark: Any, tmp_path: Path) -> None:
    """pandas writes timestamps in nanoseconds, a Parquet type Spark refuses by default
    ([PARQUET_TYPE_ILLEGAL] for the whole file, even when no model input uses the column).
    The job reads them as int64 nanoseconds, and so do registration and the fallback."""
    path = tmp_path / "readers.parquet"
    signed_up = ["2024-01-02 03:04:05.123456789", "2025-06-01 00:00:00", "2026-12-06 00:00:00"]
    pd.DataFrame({
        "reader_id": [1, 2, 3],
        "country": ["nl", "de", "fr"],
        "signed_up": pd.to_datetime(signed_up, format="ISO8601"),
    }).to_parquet(path)  # fmt: skip
    frame = spark_tables.read(spark, Table(path=str(path), key=("reader_id",)))
    rows = frame.orderBy("reader_id").collect()
    assert [(r["reader_id"], r["country"]) for r in rows] == [(1, "nl"), (2, "de"), (3, "fr")]
    # nanoseconds since the epoch, exactly as written (no rounding to microseconds)
    expected = pd.to_datetime(["2024-01-02 03:04:05.123456789"]).asi8[0]
    assert rows[0]["signed_up"] == expected
    assert spark_tables.columns(frame)["signed_up"].kind == "int"
    # registration and the fallback (pyarrow) see the column as the job does
    table = Table(path=str(path), key=("reader_id",))
    assert local_tables.schema(table) == spark_tables.columns(frame)
    local = local_tables.read(table)
    assert local["signed_up"].tolist() == [r["signed_up"] for r in rows]


def test_a_table_written_by_spark_names_its_rows_alike_in_the_job_and_live(
    spark: Any, tmp_path: Path
) -> None:
    """The bulk job's key text (Spark: jobs.spark_tables.key_column) and live inference's
    (pandas: fallback.keyed_rows) of the same rows, written by Spark: composite keys with
    a separator or escape inside a part, an integer column with a null."""
    from fallback.keyed_rows import KeyedRows
    from prescore.keys import KeyForm

    rows = [("a|b", 1, 0.5), ("x\\y", 2, 0.25), ("ns:1 é", None, 0.125), ("plain", 3, 1.0)]
    path = tmp_path / "written-by-spark"
    spark.createDataFrame(rows, "who string, n long, v double").write.parquet(str(path))
    table = Table(path=str(path), key=("who", "n"))
    form = KeyForm(2)
    frame = spark_tables.read(spark, table)
    by_spark = {
        r["k"] for r in frame.select(spark_tables.key_column(table, form).alias("k")).collect()
    }
    assert None in by_spark  # a null part: no key
    by_live = KeyedRows(table, form).get(by_spark - {None})
    assert sorted(by_live) == sorted(by_spark - {None})
    assert {k: r["v"] for k, r in by_live.items()} == {
        "a\\|b|1": 0.5, "x\\\\y|2": 0.25, "plain|3": 1.0,
    }  # fmt: skip


def test_orc_tables_read_alike_by_the_job_registration_and_live_inference(
    spark: Any, tmp_path: Path
) -> None:
    """ORC, written by Spark and by pyarrow: the job's columns, registration's and live
    inference's rows agree (JSON and CSV are read by the job only: registration checks
    them when it runs, and live inference answers 503 inputs_unavailable, saying so)."""
    import pyarrow as pa
    import pyarrow.orc as orc

    from fallback.keyed_rows import KeyedRows
    from prescore.keys import KeyForm

    by_spark = tmp_path / "spark-orc"
    spark.createDataFrame(
        [(1, "nl", [0.5, 1.5]), (2, "de", [2.0])], "reader_id long, country string, w array<double>"
    ).write.orc(str(by_spark))
    by_arrow = tmp_path / "arrow.orc"
    orc.write_table(
        pa.table({"reader_id": [1, 2], "country": ["nl", "de"], "w": [[0.5, 1.5], [2.0]]}),
        str(by_arrow),
    )
    for path in (by_spark, by_arrow):
        table = Table(path=str(path), key=("reader_id",), format="orc")
        frame = spark_tables.read(spark, table)
        assert local_tables.schema(table) == spark_tables.columns(frame), path
        rows = KeyedRows(table, KeyForm()).get(["2", "3"])
        assert list(rows) == ["2"] and rows["2"]["country"] == "de"
        assert list(rows["2"]["w"]) == [2.0]
    json_table = tmp_path / "t.json"
    json_table.write_text('{"reader_id": 1}\n')
    with pytest.raises(ConfigError, match="json tables are read by the bulk jobs only"):
        KeyedRows(Table(path=str(json_table), key=("reader_id",), format="json"), KeyForm())


def test_the_jobs_key_text_is_exact_and_a_float_key_column_is_refused(
    spark: Any, tmp_path: Path
) -> None:
    """Spark makes the key text (pandas would round a nullable integer column's ids past
    2**53 onto their neighbours'); a row with a null part has none; a float key column
    is refused before anything runs, in one line naming it."""
    from prescore.keys import KeyForm

    big = 2**62 + 1
    frame = spark.createDataFrame(
        [(big, "a"), (big + 1, "b"), (None, "c")], "id long, v string"
    )  # fmt: skip
    table = Table(path="unused", key=("id",))
    chosen = spark_tables.rows_to_score(frame, table, KeyForm(), "dataset t: entities", [])
    texts = [r[spark_tables.KEY_TEXT] for r in chosen.frame.orderBy("v").collect()]
    assert texts == [str(big), str(big + 1), None]
    floats = spark.createDataFrame([(1.0, "a")], "id double, v string")
    with pytest.raises(ConfigError, match=r"dataset t: entities\.key: column id is double"):
        spark_tables.rows_to_score(floats, table, KeyForm(), "dataset t: entities", [])
