"""Compact payloads of a whole batch of Arrow list rows at once (no I/O).

A table whose list column holds structs (a top-K as Spark and pandas write one) need not
become Python rows to be published: each distinct entry's text is made once, every
entry's index and score tick is gathered with numpy, and each row's payload is a slice
of one buffer. The bytes are those prescore.encoding.published_lists.ListCompactor
stores for the same row's JSON, in the same tables, so a batch packed here is served as
the row by row path would serve it. A batch holding anything that path would treat
otherwise (a null list or entry, a score that is null or no 4-decimal tick, a float
that is not finite, a nested or unserialisable value, a repeated field name, a column
besides the key and the list, a key the bulk check refuses) is left to it:
:func:`pack_batch` returns None. A null inside an entry is packed, as the ``null`` the row
path writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from prescore.encoding import compact
from prescore.encoding.keys import KeyForm
from prescore.encoding.published_lists import ListCompactor

_SCORE = "score"


@dataclass(frozen=True)
class Packing:
    """What a batch of rows is packed for: the dataset's ``shape`` (its key field, list
    field and entry field), the ``stamp`` a row gets where it has none, the dataset's key
    ``form``, and the version's entry table and frames so far (``lists``)."""

    shape: tuple[str, str, str]
    stamp: Mapping[str, str]
    form: KeyForm
    lists: ListCompactor


def pack_batch(batch: Any, key_column: str, packing: Packing) -> list[tuple[str, bytes]] | None:
    """(key, compact payload) of every row of the Arrow ``batch`` (its key column and
    the list column of ``packing``'s shape), or None where the batch goes row by row."""
    import pyarrow as pa

    key_field, list_field, entry_field = packing.shape
    stamp, form, lists = packing.stamp, packing.form, packing.lists
    if batch.schema.names != [key_column, list_field] or not batch.num_rows:
        return None
    column = batch.column(list_field)
    if not pa.types.is_list(column.type) or not pa.types.is_struct(column.type.value_type):
        return None
    keys = key_texts(batch.column(key_column), form)
    entries = column.flatten()
    if keys is None or column.null_count or entries.null_count:
        return None
    parts = entry_parts(entries, entry_field)
    if parts is None:
        return None
    heads, ticks = parts
    empty = orjson.dumps({key_field: keys[0], list_field: [], **stamp})
    fid = lists.frame_around(keys[0], empty)
    if fid is None:
        return None
    offsets = column.offsets.to_numpy()
    return packed_rows(keys, np.full(len(keys), fid), heads, ticks, offsets - offsets[0], lists)


def packed_rows(
    keys: list[str],
    fids: np.ndarray,
    heads: Heads,
    ticks: np.ndarray,
    offsets: np.ndarray,
    lists: ListCompactor,
) -> list[tuple[str, bytes]] | None:
    """(key, compact payload) of each row from its frame id, the entries' distinct texts
    before their score and which each entry is (``heads``, added to ``lists``' table
    where new), their ticks, and the rows' offsets into the entries (from 0); None where
    the version's entry table is full."""
    distinct, which = heads
    made = lists.indices(distinct, cut=False)  # orjson's flat objects (_heads)
    index = np.array(made, np.int64)[which] if distinct else which
    if (index < 0).any():
        return None
    rows = _payloads(fids, index, ticks, offsets)
    lists.packed += len(rows)
    return list(zip(keys, rows, strict=True))


def key_texts(column: Any, form: KeyForm) -> list[str] | None:
    """The key texts of a string or integer key column, all checked at once."""
    import pyarrow as pa

    if column.null_count:
        return None
    if pa.types.is_integer(column.type):
        column = column.cast(pa.string())
    elif not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return None
    keys: list[str] = column.to_pylist()
    return keys if form.all_valid(keys) else None


Heads = tuple[list[bytes], np.ndarray]  # distinct entry texts, and each entry's of them


def entry_parts(entries: Any, entry_field: str) -> tuple[Heads, np.ndarray] | None:
    """(the entries' distinct texts before their score and each entry's position among
    them, each entry's score tick) of the Arrow struct array ``entries``, or None when the
    batch goes row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = [f.name for f in entries.type]
    if len(set(names)) != len(names):  # a struct may repeat a name; a JSON object may not
        return None
    if entry_field:
        if entry_field not in names:
            return None
        names = [entry_field, *(n for n in names if n != entry_field)]
    if names[-1] != _SCORE or len(names) < 2:
        return None
    children = {
        f.name: c.dictionary_decode() if pa.types.is_dictionary(c.type) else c
        for f, c in zip(entries.type, entries.flatten(), strict=True)
    }  # a categorical as its values: dictionary_encode hands a dictionary back unchanged
    score = children[_SCORE]
    if not pa.types.is_floating(score.type) or score.null_count:
        return None
    ticks = _ticks(score.cast(pa.float64()).to_numpy())
    try:
        coded = [pc.dictionary_encode(children[n], null_encoding="encode") for n in names[:-1]]
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a nested value: row by row
    heads = _heads(names[:-1], coded)
    return None if heads is None or ticks is None else (heads, ticks)


def _ticks(scores: np.ndarray) -> np.ndarray | None:
    """Each score's 4-decimal tick, None unless every score is exactly one in [0, 1]."""
    ticks = np.rint(scores * compact.TICKS)
    exact = (scores >= 0) & (scores <= 1) & (ticks / compact.TICKS == scores)
    if not (exact & ~np.signbit(scores)).all():  # "-0.0" is no tick's text
        return None
    return ticks.astype(np.int64)


def _heads(names: list[str], coded: list[Any]) -> Heads | None:
    """The distinct combinations of the entries' fields before the score, as the text
    orjson writes for them, and each entry's combination. Each field's distinct values
    are written once and the combinations joined by Arrow: orjson writes an object as
    its members' texts, each as it writes the value alone."""
    import pyarrow as pa
    import pyarrow.compute as pc

    combined = np.zeros(len(coded[0]), np.int64)
    sizes = [len(c.dictionary) for c in coded]
    if math.prod(sizes) >= 2**62:
        return None
    for c, size in zip(coded, sizes, strict=True):
        combined = combined * size + c.indices.to_numpy(zero_copy_only=False)
    # hashed, not sorted: the combinations in the order they first come, as the row by
    # row path adds entries to the table
    found = pc.dictionary_encode(pa.array(combined))
    distinct = found.dictionary.to_numpy()
    which = found.indices.to_numpy().astype(np.int64)
    if not len(distinct):
        return [], which
    parts: list[Any] = []  # {"name":value,"name":value... of each combination
    for name, c, size in reversed(list(zip(names, coded, sizes, strict=True))):
        texts = value_texts(c.dictionary)
        if texts is None:
            return None
        parts[:0] = [b"," + orjson.dumps(name) + b":", pc.take(texts, pa.array(distinct % size))]
        distinct = distinct // size
    parts[0] = b"{" + parts[0][1:]
    return pc.binary_join_element_wise(*parts, b"").to_pylist(), which


_ESCAPED = r'["\\\x00-\x1f]'  # what a JSON string writes escaped


def value_texts(values: Any) -> Any:
    """The JSON text of each value of the Arrow array ``values`` as orjson writes it, as
    an Arrow binary array; None where one has none (a value JSON lacks, or a float that
    is not finite: the row by row path says which). Strings that need no escape and
    integers are written by Arrow (orjson called once per value keeps each short output
    in a buffer of its own, the most of a small batch's packing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_integer(kind):
        texts = values.cast(pa.string())
    elif pa.types.is_string(kind) and valid_utf8(values) and not _escaped(values):
        texts = pc.binary_join_element_wise('"', values, '"', "")
    else:
        found = values.to_pylist()
        if any(type(v) is float and not math.isfinite(v) for v in found):
            return None  # JSON has no NaN: the row by row path refuses the row
        try:
            return pa.array([orjson.dumps(v) for v in found], pa.binary())
        except TypeError:
            return None
    return pc.fill_null(texts, "null").cast(pa.binary())


def valid_utf8(strings: Any) -> bool:
    """Whether the Arrow ``strings`` are valid UTF-8 (a parquet file's need not be: made
    Python text instead, they fail as they always did, before anything is written)."""
    import pyarrow as pa

    try:
        strings.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _escaped(strings: Any) -> bool:
    """Whether any of the Arrow ``strings`` is written with an escape in JSON."""
    import pyarrow.compute as pc

    return bool(pc.any(pc.match_substring_regex(strings, _ESCAPED)).as_py())


def _payloads(
    fids: np.ndarray, index: np.ndarray, ticks: np.ndarray, starts: np.ndarray
) -> list[bytes]:
    """Each row's compact payload (compact.encode's bytes) from its frame id, its
    entries' indices and score ticks (``starts``: the rows' offsets into them), rows
    grouped by their entries' count and width and laid out in one buffer a group."""
    lengths = np.diff(starts)
    out: list[bytes] = [b""] * len(lengths)
    for n in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == n)
        at = starts[rows][:, None] + np.arange(n)
        idx, tick = index[at], ticks[at]
        wide = idx.max(axis=1) > compact.MAX_NARROW if n else np.zeros(len(rows), bool)
        for is_wide in (False, True):
            part = np.flatnonzero(wide == is_wide)
            if len(part):
                blob = _layout(fids[rows[part]], idx[part], tick[part], is_wide)
                width = len(blob) // len(part)
                for r, i in zip(rows[part].tolist(), range(0, len(blob), width), strict=True):
                    out[r] = blob[i : i + width]
    return out


def _layout(fids: np.ndarray, idx: np.ndarray, tick: np.ndarray, wide: bool) -> bytes:
    rows = len(idx)
    head = np.empty((rows, 2), np.uint8)
    head[:, 0], head[:, 1] = (compact.WIDE if wide else compact.NARROW), fids
    indices = np.ascontiguousarray(idx, "<u4" if wide else "<u2").view(np.uint8)
    scores = np.ascontiguousarray(tick, "<u2").view(np.uint8)
    return np.hstack([head, indices.reshape(rows, -1), scores.reshape(rows, -1)]).tobytes()
