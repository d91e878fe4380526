"""Tables as their writers write them, read by the bulk job (jobs.spark_tables.read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs import spark_tables
from prescore.data import local_tables
from prescore.data.datasets import Table
from prescore.errors import ConfigError
from tests.frames import write_frame


def test_a_pandas_table_with_nanosecond_timestamps_is_read(spark: Any, tmp_path: Path) -> None:
    """pandas writes timestamps in nanoseconds, a Parquet type Spark refuses by default
    ([PARQUET_TYPE_ILLEGAL] for the whole file, even when no model input uses the column).
    The job reads them as int64 nanoseconds, and so do registration and the fallback."""
    path = tmp_path / "readers.parquet"
    signed_up = ["2024-01-02 03:04:05.123456789", "2025-06-01 00:00:00", "2026-12-06 00:00:00"]
    write_frame(
        pd.DataFrame(
            {
                "reader_id": [1, 2, 3],
                "country": ["nl", "de", "fr"],
                "signed_up": pd.to_datetime(signed_up, format="ISO8601"),
            }
        ),
        path,
    )
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
    from prescore.encoding.keys import KeyForm

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
        "a\\|b|1": 0.5,
        "x\\\\y|2": 0.25,
        "plain|3": 1.0,
    }


def test_orc_tables_read_alike_by_the_job_registration_and_live_inference(
    spark: Any, tmp_path: Path
) -> None:
    """ORC, written by Spark and by pyarrow: the job's columns, registration's and live
    inference's rows agree."""
    import pyarrow as pa
    import pyarrow.orc as orc

    from fallback.keyed_rows import KeyedRows
    from prescore.encoding.keys import KeyForm

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
    avro = Table(path=str(by_arrow), key=("reader_id",), format="avro")
    with pytest.raises(ConfigError, match="avro tables are read by the bulk jobs only"):
        KeyedRows(avro, KeyForm())


_CSV = """reader_id,country,age,score,subscribed,signed_up,born,note
1,nl,30,0.5,true,2024-01-02T03:04:05,1990-05-01,hello
2,de,41,1.25,false,2024-02-03 00:00:00,1983-01-02,
17,,,2.0,true,2025-06-01T00:00:00,2001-12-31,"a, quoted"
"""
_JSON = "\n".join(
    [
        '{"reader_id": 1, "country": "nl", "age": 30, "score": 0.5, "tags": ["a", "b"],'
        ' "signed_up": "2024-01-02T03:04:05", "born": "1990-05-01"}',
        '{"reader_id": 2, "country": "de", "age": null, "score": 1.25, "tags": [],'
        ' "signed_up": "2024-02-03 00:00:00", "born": "1983-01-02"}',
        '{"reader_id": 17, "country": null, "age": 7, "score": 2.0, "tags": ["c"],'
        ' "signed_up": "2025-06-01T00:00:00", "born": "2001-12-31"}',
    ]
)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_tables_read_alike_by_the_job_registration_and_live_inference(
    spark: Any, tmp_path: Path, fmt: str
) -> None:
    """A CSV (header, quoted field, empty fields, ISO timestamps and dates) and a JSON
    table (one object per line, nulls, lists, timestamp-like text), as a team exports them
    and as Spark writes them: registration's column types are the job's (Spark infers
    timestamps in CSV, not in JSON), and live inference finds each row by key with the
    values the job reads."""
    from fallback.keyed_rows import KeyedRows
    from prescore.encoding.keys import KeyForm

    by_hand = tmp_path / f"readers.{fmt}"
    by_hand.write_text(_CSV if fmt == "csv" else _JSON)
    hand = Table(path=str(by_hand), key=("reader_id",), format=fmt)
    by_spark = tmp_path / f"spark-{fmt}"
    written = spark_tables.read(spark, hand).repartition(2)
    (written.write.option("header", "true") if fmt == "csv" else written.write).format(fmt).save(
        str(by_spark)
    )
    for table in (hand, Table(path=str(by_spark), key=("reader_id",), format=fmt)):
        frame = spark_tables.read(spark, table)
        assert local_tables.schema(table) == spark_tables.columns(frame), table.path
        kinds = {n: c.kind for n, c in spark_tables.columns(frame).items()}
        assert kinds["signed_up"] == ("timestamp" if fmt == "csv" else "string")
        by_job = {str(r["reader_id"]): r.asDict() for r in frame.collect()}
        live = KeyedRows(table, KeyForm()).get(["1", "2", "17", "3"])
        assert sorted(live) == ["1", "17", "2"]
        for key, row in live.items():
            both = ["country", "score", "age", "note" if fmt == "csv" else "tags"]
            for column in both + ([] if fmt == "csv" else ["signed_up", "born"]):
                got, want = row[column], by_job[key][column]
                got = list(got) if hasattr(got, "tolist") else got
                assert (got, want) == (want, want) or (pd.isna(got) and want is None), (
                    table.path,
                    key,
                    column,
                    got,
                    want,
                )
        assert sorted(local_tables.read(table)["reader_id"].tolist()) == [1, 2, 17]


def test_a_csv_column_of_numbers_in_one_file_and_text_in_another_is_text(
    spark: Any, tmp_path: Path
) -> None:
    """Spark widens such a column to text; so do registration and live inference. A JSON
    table like that is refused outside Spark, in one line naming the column."""
    from fallback.keyed_rows import KeyedRows
    from prescore.encoding.keys import KeyForm

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.csv").write_text("sku,price\n17,1.5\n")
    (folder / "b.csv").write_text("sku,price\nA7,2\n")
    table = Table(path=str(folder), key=("sku",), format="csv")
    frame = spark_tables.read(spark, table)
    assert local_tables.schema(table) == spark_tables.columns(frame)
    assert spark_tables.columns(frame)["sku"].kind == "string"
    assert KeyedRows(table, KeyForm()).get(["17", "A7"]) == {
        "17": {"sku": "17", "price": 1.5},
        "A7": {"sku": "A7", "price": 2.0},
    }
    (folder / "a.json").write_text('{"sku": 17}\n')
    (folder / "b.json").write_text('{"sku": "A7"}\n')
    as_json = Table(path=str(folder / "*.json"), key=("sku",), format="json")
    with pytest.raises(ConfigError, match="column 'sku' holds values of different types"):
        local_tables.schema(as_json)


def test_the_jobs_key_text_is_exact_and_a_float_key_column_is_refused(
    spark: Any, tmp_path: Path
) -> None:
    """Spark makes the key text (pandas would round a nullable integer column's ids past
    2**53 onto their neighbours'); a row with a null part has none; a float key column
    is refused before anything runs, in one line naming it."""
    from prescore.encoding.keys import KeyForm

    big = 2**62 + 1
    frame = spark.createDataFrame([(big, "a"), (big + 1, "b"), (None, "c")], "id long, v string")
    table = Table(path="unused", key=("id",))
    chosen = spark_tables.rows_to_score(frame, table, KeyForm(), "dataset t: entities", [])
    texts = [r[spark_tables.KEY_TEXT] for r in chosen.frame.orderBy("v").collect()]
    assert texts == [str(big), str(big + 1), None]
    floats = spark.createDataFrame([(1.0, "a")], "id double, v string")
    with pytest.raises(ConfigError, match=r"dataset t: entities\.key: column id is double"):
        spark_tables.rows_to_score(floats, table, KeyForm(), "dataset t: entities", [])


def test_a_pyarrow_table_with_dictionary_strings_nullable_ints_and_large_lists(
    spark: Any, tmp_path: Path
) -> None:
    """What pyarrow (and pandas through it) writes beyond Spark's own types: dictionary
    encoded strings, a nullable integer column, large lists, nanosecond timestamps. The
    job's columns are registration's, and its values live inference's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fallback.keyed_rows import KeyedRows
    from prescore.encoding.keys import KeyForm

    path = tmp_path / "readers.parquet"
    pq.write_table(
        pa.table(
            {
                "reader_id": pa.array([1, 2, 3], pa.int64()),
                "country": pa.array(["nl", "de", "nl"]).dictionary_encode(),
                "age": pa.array([30, None, 41], pa.int32()),
                "weights": pa.array([[0.5, 1.5], [], None], pa.large_list(pa.float64())),
                "seen": pa.array([10**18 + 1, 2, 3], pa.timestamp("ns")),
            }
        ),
        path,
    )
    table = Table(path=str(path), key=("reader_id",))
    frame = spark_tables.read(spark, table)
    assert local_tables.schema(table) == spark_tables.columns(frame)
    by_job = {str(r["reader_id"]): r.asDict() for r in frame.collect()}
    live = KeyedRows(table, KeyForm()).get(["1", "2", "3"])
    assert sorted(live) == ["1", "2", "3"]
    for key, row in live.items():
        want = by_job[key]
        assert row["country"] == want["country"] and row["seen"] == want["seen"]
        assert (pd.isna(row["age"]) and want["age"] is None) or row["age"] == want["age"]
        got = None if row["weights"] is None else list(row["weights"])
        assert got == want["weights"], (key, got, want["weights"])


def test_a_table_spark_cannot_read_is_one_line_naming_it(spark: Any, tmp_path: Path) -> None:
    """No such path, or a file that is not the declared format: a ConfigError naming the
    table (the job's one line, exit 2), not Spark's trace."""
    text = tmp_path / "rows.csv"
    text.write_text("a,b\n1,2\n")
    for table, said in (
        (Table(path=str(tmp_path / "nowhere"), key=("a",)), "[PATH_NOT_FOUND]"),
        (Table(path=str(text), key=("a",)), "[FAILED_READ_FILE"),
        (Table(path=str(text), key=("a",), format="orc"), "as orc"),
    ):
        with pytest.raises(ConfigError) as refused:
            spark_tables.read(spark, table)
        message = refused.value.message
        assert message.startswith(f"the table {table.path} cannot be read as {table.format}: ")
        assert said in message and "\n" not in message, message
