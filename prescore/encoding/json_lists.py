"""Compact payloads of a whole batch of JSON texts at once (no I/O).

A list published from elsewhere often comes as one JSON object a row (``prescore publish
--json-column``): a top-K and, around it, the row's key and its model's stamp. The row by
row path parses each text, writes it again as compact JSON and cuts that into a compact
payload (prescore.encoding.published_lists). Here a batch is done at once:

1. Arrow's JSON reader parses every text, into the fields of the batch's first rows;
2. the list column is packed as a list column of structs is (prescore.encoding.arrow_lists);
3. every row's text is written again from what was parsed, and compared with the row's
   own text. Only where each row's text is that text, byte for byte, is the batch packed
   here: then what the lookup serves is the row's text, as the row by row path serves
   it.

Any other batch goes row by row (:func:`pack_json_batch` returns None): a text that is
not compact JSON as orjson writes it (spaces, escapes orjson would not write, ``1``
where a score is ``1.0``), a field missing or in another order than in the batch's first
rows, a field those rows lack, a field between the key and the list, a key field that is
not the row's key, a text that is not one object on one line, or one the reader refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from prescore.encoding import arrow_lists, compact
from prescore.encoding.arrow_lists import Packing
from prescore.encoding.published_lists import ListCompactor

_SCORE_ENDS = [t + b"}" for t in compact.TICK_TEXT]  # a tick's score text, closing its entry
# The reader is given the fields of the first rows, read first on their own: a text that
# looks like a date is then kept a string (Arrow would make it a timestamp), and a field
# no first row has fails the read, so rows of ever new fields (a map as an object) do not
# make a table of them all.
_SAMPLE = 64
_MAX_FIELDS = 256  # fields, nested ones included, of the first rows
# Arrow's reader recurses into nested values: a text whose nesting could run its stack
# out (a text of n bytes nests at most n/2 deep) goes row by row.
_MAX_TEXT = 8_192


def pack_json_batch(
    key_column: Any, texts: Any, packing: Packing
) -> list[tuple[str, bytes]] | None:
    """(key, compact payload) of every row of the Arrow ``key_column`` and ``texts`` (each
    row's JSON object), or None where the batch goes row by row."""
    import pyarrow as pa

    try:
        return _pack(key_column, texts, packing)
    except pa.ArrowException:  # a text the reader refuses, or too large a batch to rebuild
        return None


def _pack(key_column: Any, texts: Any, packing: Packing) -> list[tuple[str, bytes]] | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    key_field, list_field, entry_field = shape = packing.shape
    stamp, form, lists = packing.stamp, packing.form, packing.lists
    keys = arrow_lists.key_texts(key_column, form)
    texts = _one_line_objects(texts)
    parsed = _parsed(texts) if keys is not None and texts is not None else None
    if keys is None or parsed is None:
        return None
    names = parsed.column_names
    if not names:
        return None
    keyed = names[0] == key_field
    around = names[2:] if keyed else names[1:]  # the fields after the list
    if names[1 if keyed else 0 : 2 if keyed else 1] != [list_field] or key_field in around:
        return None  # the list not right after the key: such a row is stored as JSON
    listed = _lists(parsed.column(list_field).combine_chunks(), entry_field)
    lead = _key_texts(parsed, key_field, keys) if keyed else b"{"
    after = _field_texts(parsed, around)
    if listed is None or lead is None or after is None:
        return None
    opening = orjson.dumps(list_field) + b":["
    written = pc.binary_join_element_wise(lead, opening, listed.texts, b"]", after, b"}", b"")
    # the whole argument: each row's own text is what was parsed, written as orjson does
    if not pc.all(pc.equal(written, texts.cast(pa.binary())), skip_nulls=False).as_py():
        return None
    added = b"".join(  # the stamp's fields a row lacks, after its own, as the row path adds
        b"," + orjson.dumps(name) + b":" + orjson.dumps(value)
        for name, value in stamp.items()
        if name not in (key_field, list_field, *around)
    )
    fids = _frame_ids(_per_row(b"]", after, added + b"}", rows=len(texts)), shape, lists)
    if fids is None:
        return None
    heads = (listed.heads, listed.which)
    return arrow_lists.packed_rows(keys, fids, heads, listed.ticks, listed.offsets, lists)


def _one_line_objects(texts: Any) -> Any:
    """``texts`` as an Arrow string array where each is one object on one line (it opens
    with ``{``, closes with ``}``, holds no line break) of at most _MAX_TEXT bytes, else
    None. A row that is not could never be written back as it is; the reader must not
    see it (a top-level ``null`` at the start of a block crashes pyarrow 26's reader)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_large_string(texts.type) or pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.string())
    if not pa.types.is_string(texts.type) or texts.null_count or not len(texts):
        return None
    if pc.max(pc.binary_length(texts)).as_py() > _MAX_TEXT:
        return None
    if not arrow_lists.valid_utf8(texts):
        return None
    data = np.frombuffer(texts.buffers()[2] or b"", np.uint8)
    at = np.frombuffer(texts.buffers()[1], np.int32, len(texts) + 1, texts.offset * 4)
    starts, ends = at[:-1], at[1:]
    if (ends <= starts).any() or (data[starts] != ord("{")).any():
        return None
    if (data[ends - 1] != ord("}")).any():
        return None
    used = data[at[0] : at[-1]]
    if (used == ord("\n")).any() or (used == ord("\r")).any():
        return None
    return texts


def _parsed(texts: Any) -> Any:
    """The Arrow table of the JSON objects ``texts``, a row each, in the fields of the
    first rows (date-like text kept text); None where the reader refuses one."""
    import pyarrow.json as pj

    read = pj.ReadOptions(block_size=1 << 20)
    first = pj.read_json(_lines(texts.slice(0, _SAMPLE)), read_options=read)
    schema = _dates_as_text(first.schema)
    if schema is None:
        return None
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    table = pj.read_json(_lines(texts), read_options=read, parse_options=parse)
    return table if table.num_rows == len(texts) and table.schema == schema else None


def _lines(texts: Any) -> Any:
    """A reader of ``texts`` (one line each) as one buffer, a text a line."""
    import pyarrow as pa

    return pa.BufferReader(b"\n".join([*texts.cast(pa.binary()).to_pylist(), b""]))


def _dates_as_text(schema: Any) -> Any:
    """``schema`` with every date or time Arrow inferred from a JSON string a string
    again; None where it has more than _MAX_FIELDS fields, nested ones included."""
    import pyarrow as pa

    fields = 0

    def text(kind: Any) -> Any:
        nonlocal fields
        fields += 1
        if fields > _MAX_FIELDS:
            raise OverflowError
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
            return pa.string()
        if pa.types.is_struct(kind):
            return pa.struct([f.with_type(text(f.type)) for f in kind])
        if pa.types.is_list(kind):
            return pa.list_(kind.value_field.with_type(text(kind.value_type)))
        return kind

    try:  # nesting is bounded by _MAX_TEXT, fields by _MAX_FIELDS: the recursion too
        return pa.schema([f.with_type(text(f.type)) for f in schema])
    except OverflowError:
        return None


@dataclass(frozen=True)
class _Lists:
    """A batch's lists: each row's entries as JSON text (without the brackets), the
    entries' distinct texts before their score (``heads``) and which each entry is
    (``which``), each entry's score tick, and each row's first entry (``offsets``)."""

    texts: Any
    heads: list[bytes]
    which: np.ndarray
    ticks: np.ndarray
    offsets: np.ndarray


def _lists(column: Any, entry_field: str) -> _Lists | None:
    """The lists of the Arrow list ``column``, None where it is no list of structs the
    row path would cut the same way (prescore.encoding.arrow_lists.entry_parts)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_list(column.type) or not pa.types.is_struct(column.type.value_type):
        return None
    entries = column.flatten()
    if column.null_count or entries.null_count:
        return None
    parts = arrow_lists.entry_parts(entries, entry_field)
    if parts is None:
        return None
    (heads, which), ticks = parts
    offsets = column.offsets.to_numpy()
    offsets = offsets - offsets[0]
    # Each entry is two pieces of one table: its text up to the score, with a comma
    # before it but in a row's first entry, and its score's text closing it. For heads
    # [A, B], the table is [A+S, B+S, ",A"+S, ",B"+S, tick 0 + "}", tick 1 + "}", ...]
    # (S: ',"score":'); a row [A 0.5, B 0.25] takes pieces 0, 4+5000, 3, 4+2500, and
    # its text is its pieces joined.
    n = len(heads)
    score = b',"score":'
    table = [h + score for h in heads] + [b"," + h + score for h in heads] + _SCORE_ENDS
    later = np.ones(len(which), np.int64)
    later[offsets[:-1][np.diff(offsets) > 0]] = 0  # each row's first entry
    taken = np.empty(2 * len(which), np.int64)
    taken[0::2], taken[1::2] = which + n * later, 2 * n + ticks
    pieces = pa.array(table, pa.binary()).take(taken)
    texts = pc.binary_join(pa.ListArray.from_arrays(pa.array(2 * offsets, pa.int32()), pieces), b"")
    return _Lists(texts, heads, which, ticks, offsets)


def _key_texts(parsed: Any, key_field: str, keys: list[str]) -> Any:
    """Each row's ``{"key_field":"key",``, None unless each row's key field is its key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    own = parsed.column(key_field).combine_chunks()
    if not pa.types.is_string(own.type) or own.null_count:
        return None
    if not pc.all(pc.equal(own, pa.array(keys, pa.string()))).as_py():
        return None  # another key in the row: the row by row path says what it makes
    texts = arrow_lists.value_texts(own)
    if texts is None:
        return None
    return pc.binary_join_element_wise(b"{" + orjson.dumps(key_field) + b":", texts, b",", b"")


def _field_texts(parsed: Any, names: list[str]) -> Any:
    """Each row's fields ``names`` as JSON text, each ``,"name":value``; None where a value
    has none."""
    parts: list[Any] = []
    for name in names:
        texts = arrow_lists.value_texts(parsed.column(name).combine_chunks())
        if texts is None:
            return None
        parts += [b"," + orjson.dumps(name) + b":", texts]
    return _per_row(*parts, rows=len(parsed)) if parts else b""


def _per_row(*parts: Any, rows: int) -> Any:
    """The texts ``parts`` (arrays of ``rows`` texts, or one text for every row) joined
    row by row, as an array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if all(isinstance(p, bytes) for p in parts):
        return pa.array([b"".join(parts)] * rows, pa.binary())
    return pc.binary_join_element_wise(*parts, b"")


def _frame_ids(tails: Any, shape: tuple[str, str, str], lists: ListCompactor) -> Any:
    """Each row's frame id, from its text after the list (``tails``), made where new;
    None where one has none (prescore.encoding.published_lists)."""
    import pyarrow.compute as pc

    key_field, list_field, _ = shape
    coded = pc.dictionary_encode(tails)
    # the frame of a tail is that of the text of any key with an empty list before it
    empty = orjson.dumps({key_field: "k", list_field: []})
    fids = []
    for tail in coded.dictionary.to_pylist():
        fid = lists.frame_around("k", empty.removesuffix(b"]}") + tail)
        if fid is None:
            return None
        fids.append(fid)
    return np.array(fids, np.int64)[coded.indices.to_numpy()]
