"""prescore.models.feeds: list columns padded for a model, the same whether the rows come
as Spark's Arrow hands them (1-D numpy arrays, padded at once) or as Python lists (row
by row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prescore.errors import InvalidInput
from prescore.models import feeds
from prescore.models.signature import Tensor

ROWS = {
    "strings": [
        np.array(["eu", "us"], object),
        np.array([], object),
        np.array(["asia", None, ""], object),
    ],
    "ints": [np.array([3, 1], np.int64), np.array([], np.int64), np.array([7, 8, 9], np.int64)],
    "floats": [np.array([0.1, np.nan], np.float32), np.array([2.5], np.float32)],
    "empty": [np.array([], object), np.array([], object)],
}


@pytest.mark.parametrize("width", [None, 2, 5])
@pytest.mark.parametrize(
    ("rows", "dtype"),
    [
        ("strings", "string"),
        ("ints", "int64"),
        ("ints", "float32"),
        ("ints", "string"),  # numbers given to a string input: their text
        ("floats", "float32"),
        ("floats", "string"),
        ("empty", "string"),
        ("empty", "int32"),
    ],
)
def test_arrays_are_padded_as_lists_are(rows: str, dtype: str, width: int | None) -> None:
    tensor = Tensor(dtype, (None, width))
    arrays = ROWS[rows]
    at_once = feeds.column_feed(arrays, tensor)
    row_by_row = feeds.column_feed([list(a) for a in arrays], tensor)
    assert at_once.dtype == row_by_row.dtype and at_once.shape == row_by_row.shape
    assert at_once.shape[1] == (width or max(max(len(a) for a in arrays), 1))
    np.testing.assert_array_equal(at_once, row_by_row)  # NaN in the same places


def test_a_list_column_from_arrow_is_padded_with_blanks() -> None:
    column = pa.table({"regions": [["eu", "us"], None, ["asia"]]}).to_pandas()["regions"]
    got = feeds.column_feed(column, Tensor("string", (None, None)))
    assert got.tolist() == [["eu", "us"], ["", ""], ["asia", ""]]


def test_rows_of_mixed_kinds_go_row_by_row() -> None:
    rows = [np.array([1, 2], np.int64), np.array(["a"], object), None]
    got = feeds.column_feed(rows, Tensor("string", (None, None)))
    assert got.tolist() == [["1", "2"], ["a", ""], ["", ""]]


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([1.0, np.nan]), "int64"),  # a null in an int list, as pandas gives it
        (np.array([np.inf]), "int32"),
        (np.array([300], np.int64), "int8"),
        (np.array([2**64 - 1], np.uint64), "int64"),
    ],
)
def test_a_number_an_integer_input_cannot_hold_is_refused_as_row_by_row(
    values: np.ndarray, dtype: str
) -> None:
    tensor = Tensor(dtype, (None, None))
    with pytest.raises(InvalidInput, match="cannot take"):  # one line, not numpy's error
        feeds.column_feed([list(values)], tensor)
    with pytest.raises(InvalidInput, match="cannot take"):
        feeds.column_feed([values], tensor)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([1, 2**31 + 5], np.int64), "int32"),
        (np.array([300], np.int64), "int8"),
        (np.array([-1], np.int64), "uint8"),
        (np.array([2**64 - 1], np.uint64), "int64"),
        (np.array([1.0, np.inf]), "int32"),
        (np.array([2.0**63]), "int64"),  # a float that int64's max rounds up to
        (np.array([1, 2**70], object), "int64"),  # a JSON integer past int64
    ],
)
def test_a_value_per_row_an_integer_input_cannot_hold_is_refused_not_wrapped(
    values: np.ndarray, dtype: str
) -> None:
    """A cast would wrap it (2**31 + 5 as int32 is -2147483643) and the model would
    score another row than the table holds; refused, naming the input and its range."""
    with pytest.raises(InvalidInput, match=rf"^input 'stock': .*(range of|input of) {dtype}"):
        feeds.feeds({"stock": values}, {"stock": Tensor(dtype, (None,))})


def test_values_per_row_that_fit_are_cast_and_a_missing_one_is_zero() -> None:
    int32 = Tensor("int32", (None,))
    assert feeds.column_feed(np.array([1, 2**31 - 1], np.int64), int32).tolist() == [1, 2**31 - 1]
    assert feeds.column_feed(np.array([1.0, np.nan]), int32).tolist() == [1, 0]  # Arrow's null
    assert feeds.column_feed(np.array([3, None], object), int32).tolist() == [3, 0]
