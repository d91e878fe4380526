"""Tables as their writers write them, read by the bulk job (jobs.spark_tables.read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from jobs import spark_tables
from prescore import local_tables
from prescore.datasets import Table


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
