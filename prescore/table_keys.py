"""A table's key columns as key text (prescore.keys), the one rule for the bulk jobs and
live inference, so that both name a row by the same key (pandas; no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from prescore.errors import InvalidInput
from prescore.keys import KeyForm


def key_cells(column: pd.Series) -> list[Any]:
    """A key column's values as key text takes them: strings, and integers as integers,
    a float column's whole numbers too (a nullable integer column with gaps reads as
    floats); a gap is None (no key)."""
    if column.dtype.kind == "f":
        return [int(v) if v.is_integer() else None for v in column.tolist()]
    return [None if v is pd.NA else v for v in column.tolist()]


def key_texts(
    frame: pd.DataFrame, columns: Sequence[str], form: KeyForm, what: str = "key"
) -> list[str]:
    """The key text of each row; InvalidInput names the first row without a valid key."""
    cells = zip(*(key_cells(frame[c]) for c in columns), strict=True)
    return [form.of_values(row, what=what) for row in cells]


def key_texts_or_none(
    frame: pd.DataFrame, columns: Sequence[str], form: KeyForm
) -> list[str | None]:
    """The key text of each row, None for a row without a valid key."""
    out: list[str | None] = []
    for row in zip(*(key_cells(frame[c]) for c in columns), strict=True):
        try:
            out.append(form.of_values(row))
        except InvalidInput:
            out.append(None)
    return out
