"""Columns to model feeds (numpy only): what a signature's named inputs are given.

One conversion for the bulk jobs (pandas batches from Spark's Arrow), the live fallback
(table rows and request features) and retraining's evaluation, so a model sees the same
values everywhere. A value per row becomes a 1-D array of the input's dtype; a list per
row a 2-D array padded with "" (strings) or 0 (numbers) to the longest list, which the
model's preprocessing treats as padding (``StringLookup(mask_token="")``). A missing
value is "" or 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prescore.errors import InvalidInput
from prescore.models.signature import FLOATS, STRINGS, Tensor

_NUMPY = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "bfloat16": np.float32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "bool": np.bool_,
}


def _scalar_strings(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = ["" if v is None or v != v else str(v) for v in values]  # v != v: NaN
    return out


def _padded(values: Sequence[Any], tensor: Tensor) -> np.ndarray:
    arrays = values and all(type(v) is np.ndarray and v.ndim == 1 for v in values)
    kinds = {v.dtype for v in values} if arrays else set()
    if len(kinds) == 1 and _as_set(kinds.pop(), tensor):  # a list column from Spark's Arrow
        return _padded_arrays(values, tensor)
    lists = [[] if v is None or (isinstance(v, float) and v != v) else list(v) for v in values]
    width = max((len(x) for x in lists), default=0) or 1
    if tensor.shape[1] is not None:
        width = tensor.shape[1]
    if tensor.dtype in STRINGS:
        out = np.full((len(lists), width), "", object)
        for i, row in enumerate(lists):
            out[i, : len(row)] = [str(v) for v in row[:width]]
        return out
    out = np.zeros((len(lists), width), _NUMPY[tensor.dtype])
    for i, row in enumerate(lists):
        out[i, : len(row)] = row[:width]
    return out


def _as_set(dtype: np.dtype, tensor: Tensor) -> bool:
    """Whether values of ``dtype`` set at once into ``tensor``'s array come out as set one
    row at a time: always for text, floats and bools; for integers only where the cast is
    safe (one at a time, a NaN, an infinity or a number out of range is refused, where an
    array would wrap it)."""
    if tensor.dtype in STRINGS or tensor.dtype in FLOATS or tensor.dtype == "bool":
        return True
    return bool(np.can_cast(dtype, _NUMPY[tensor.dtype], casting="safe"))


def _padded_arrays(rows: Sequence[np.ndarray], tensor: Tensor) -> np.ndarray:
    """:func:`_padded` of rows that are 1-D arrays of one dtype: their values joined once
    and set in place at once, not row by row."""
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    width = max(int(lengths.max()), 1) if tensor.shape[1] is None else tensor.shape[1]
    flat = np.concatenate(rows)
    col = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = col < width
    at = (np.repeat(np.arange(len(rows)), lengths)[keep], col[keep])
    if tensor.dtype in STRINGS:
        out = np.full((len(rows), width), "", object)
        kept = flat[keep]
        if kept.dtype != object or not all(type(v) is str for v in kept):
            kept = np.array([str(v) for v in kept], object)
        out[at] = kept
        return out
    out = np.zeros((len(rows), width), _NUMPY[tensor.dtype])
    out[at] = flat[keep]
    return out


def column_feed(values: Any, tensor: Tensor) -> np.ndarray:
    """One column's values (a pandas Series, numpy array or list) as ``tensor`` takes them;
    InvalidInput for values it cannot hold (a number out of its range, in a list too)."""
    try:
        return _feed(values, tensor)
    except (OverflowError, ValueError, TypeError) as exc:  # numpy's refusals of a cast
        raise InvalidInput(
            f"holds values an input of {tensor.dtype} cannot take ({exc})"[:200],
            code="invalid_features",
        ) from None


def _feed(values: Any, tensor: Tensor) -> np.ndarray:
    if tensor.rank == 2:
        return _padded(list(values), tensor)
    if tensor.dtype in STRINGS:
        return _scalar_strings(list(values))
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = np.array([0 if v is None else v for v in arr])
    if tensor.dtype in FLOATS:
        return np.nan_to_num(arr.astype(_NUMPY[tensor.dtype], copy=False))
    if arr.dtype.kind == "f":  # a missing value of an integer column (Arrow's null: NaN)
        arr = np.where(np.isnan(arr), 0, arr)
    if tensor.dtype != "bool" and arr.size and not _as_set(arr.dtype, tensor):
        _check_range(arr, tensor)
    return arr.astype(_NUMPY[tensor.dtype], copy=False)


def _check_range(arr: np.ndarray, tensor: Tensor) -> None:
    """InvalidInput for a number an integer input cannot hold (a cast would wrap it, and
    the model would score another value without a word)."""
    bounds = np.iinfo(_NUMPY[tensor.dtype])
    if arr.dtype.kind in "iuf":
        for value in (arr.min(), arr.max()):
            if not bounds.min <= value < bounds.max + 1:  # as a float, max rounds up to it
                raise InvalidInput(
                    f"{value} is out of the range of an input of {tensor.dtype} "
                    f"({bounds.min} to {bounds.max})",
                    code="invalid_features",
                )


def feeds(columns: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Feeds of every input in ``inputs`` from ``columns`` (name -> values, e.g. a
    DataFrame); InvalidInput naming the input whose values it cannot hold."""
    out = {}
    for name, tensor in inputs.items():
        try:
            out[name] = column_feed(columns[name], tensor)
        except InvalidInput as exc:
            raise InvalidInput(f"input {name!r}: {exc.message}", code=exc.code) from None
    return out


def take(feed: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``index`` of every feed (pairs built from per-entity and per-item feeds)."""
    return {name: arr[index] for name, arr in feed.items()}


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Feeds of several requests as one batch; lists are padded to the longest."""
    out: dict[str, np.ndarray] = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if arrays[0].ndim == 2:
            width = max(a.shape[1] for a in arrays)
            fill: Any = "" if arrays[0].dtype == object else 0
            arrays = [
                a
                if a.shape[1] == width
                else np.concatenate([a, np.full((len(a), width - a.shape[1]), fill, a.dtype)], 1)
                for a in arrays
            ]
        out[name] = np.concatenate(arrays)
    return out


def rows(feed: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feed.values()))) if feed else 0


def blank(inputs: Mapping[str, Tensor], n: int = 1) -> dict[str, np.ndarray]:
    """``n`` rows of empty values: the features of "no context" (the plain key)."""
    return {name: column_feed([None] * n, tensor) for name, tensor in inputs.items()}
