"""A table's key columns as key text (prescore.encoding.keys), read from Arrow as live inference
reads a table: an integer column's values are their exact digits (pandas would hold a
nullable integer column as floats, rounded past 2**53). The bulk jobs make the same text
in Spark (jobs.spark_tables.key_column). No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prescore.encoding.keys import ESCAPE, SEPARATOR, KeyForm
from prescore.errors import InvalidInput


def key_cells(column: Any) -> list[Any]:
    """An Arrow column's values as key text takes them: strings and integers, a gap
    (or a column of another type: a key column holds strings or integers) as None."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return list(column.to_pylist())
    return [None] * len(column)


def key_texts(table: Any, columns: Sequence[str], form: KeyForm) -> list[str | None]:
    """The key text of each row of an Arrow table, None for a row without a valid key."""
    out: list[str | None] = []
    for row in zip(*(key_cells(table.column(c)) for c in columns), strict=True):
        try:
            out.append(form.of_values(row))
        except InvalidInput:
            out.append(None)
    return out


def key_text_array(table: Any, columns: Sequence[str], form: KeyForm) -> Any:
    """The key text of each row as one Arrow string array, made in Arrow (no Python object
    per row, for indexing a large table): the same text as :func:`key_texts` for a row
    with a valid key; unchecked, and null where a key column is null or of no key type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for name in columns:
        column = table.column(name)
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.cast(column, pa.string())  # an integer's exact decimal digits
        else:
            column = pa.nulls(len(column), pa.string())
        if form.joined:  # keys.escape, in Arrow
            column = pc.replace_substring(column, ESCAPE, ESCAPE * 2)
            column = pc.replace_substring(column, SEPARATOR, ESCAPE + SEPARATOR)
        parts.append(column)
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, SEPARATOR)
