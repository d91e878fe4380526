"""Parquet files to and from pandas frames, by path, through pyarrow.

pandas' ``read_parquet`` and ``to_parquet`` hand pyarrow a Python file object for a local
path, and a process that did so may abort as it exits ("terminate called without an active
exception", apache/arrow#50482): the tests' own processes and every tool they start read and
write by path instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def read_frame(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The parquet file or folder at ``path`` as a frame."""
    return pq.read_table(str(path), **kwargs).to_pandas()


def write_frame(
    frame: pd.DataFrame, path: str | Path, *, index: bool | None = None, **kwargs: Any
) -> None:
    """``frame`` written to ``path`` (``index`` as pandas' ``to_parquet`` takes it)."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=index), str(path), **kwargs)
