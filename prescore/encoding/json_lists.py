"""Compact payloads of a whole batch of JSON texts at once (no I/O).

A list published from elsewhere often comes as one JSON object a row (``prescore publish
--json-column``): a top-K and, around it, the row's key and its model's stamp. The row by
row path parses each text, writes it again as compact JSON and cuts that into a compact
payload (prescore.encoding.published_lists). Here a batch's texts are parsed at once by
Arrow's JSON reader, the list packed as a list column of structs is
(prescore.encoding.arrow_lists), and every row's text written again from what was parsed:
the batch is packed here only where each row's text is exactly that text, byte for byte,
so that what is served is what the row by row path serves for it. Any other batch goes
row by row (:func:`pack_json_batch` returns None): a text that is not compact JSON as
orjson writes it (spaces, escapes it would not write, ``1`` where a score is ``1.0``),
fields in another order than the batch's first rows or missing, a field between the key
and the list, a key field that is not the row's key, a text the reader refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from prescore.encoding import arrow_lists, compact
from prescore.encoding.keys import KeyForm
from prescore.encoding.published_lists import ListCompactor

_CLOSING = [t + b"}" for t in compact.TICK_TEXT]  # a score's text, closing its entry
_SAMPLE = 64  # rows whose fields' types are read first (Arrow's inference, dates aside)


def pack_json_batch(
    key_column: Any,
    texts: Any,
    shape: tuple[str, str, str],
    stamp: Mapping[str, str],
    form: KeyForm,
    lists: ListCompactor,
) -> list[tuple[str, bytes]] | None:
    """(key, compact payload) of every row of the Arrow ``key_column`` and ``texts`` (each
    row's JSON object), or None where the batch goes row by row. ``shape``: the key field,
    list field and entry field; ``stamp``: the fields a row gets where it has none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key_field, list_field, entry_field = shape
    keys = arrow_lists.key_texts(key_column, form)
    parsed = _parsed(texts) if keys is not None else None
    if keys is None or parsed is None:
        return None
    names = parsed.column_names
    keyed = names[:1] == [key_field]
    rest = names[2:] if keyed else names[1:]
    if names[int(keyed) : int(keyed) + 1] != [list_field] or key_field in rest:
        return None  # the list not right after the key: such a row is stored as JSON
    listed = _lists(parsed.column(list_field).combine_chunks(), entry_field)
    lead = _lead(parsed, key_field, keys) if keyed else b"{"
    around = _fields(parsed, rest)
    if listed is None or lead is None or around is None:
        return None
    texts_of, (heads, which), ticks, offsets = listed
    opening = orjson.dumps(list_field) + b":["
    written = pc.binary_join_element_wise(lead, opening, texts_of, b"]", around, b"}", b"")
    if not pc.all(pc.equal(written, texts.cast(pa.binary()))).as_py():
        return None
    stamped = b"".join(
        b"," + orjson.dumps(name) + b":" + orjson.dumps(value)
        for name, value in stamp.items()
        if name not in rest
    )  # as the row by row path adds them, after the row's own fields
    fids = _frames(_each(b"]", around, stamped + b"}", rows=len(texts)), shape, lists)
    made = lists.indices(heads, cut=False)
    index = np.array(made, np.int64)[which] if heads else which
    if fids is None or (index < 0).any():
        return None
    payloads = arrow_lists.payloads(fids, index, ticks, offsets)
    lists.packed += len(payloads)
    return list(zip(keys, payloads, strict=True))


def _parsed(texts: Any) -> Any:
    """The Arrow table of the JSON objects ``texts`` (a string array), one row each, or
    None. Text that looks like a date is kept text, as JSON has it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    if not pa.types.is_string(texts.type) or texts.null_count or not len(texts):
        return None
    if not arrow_lists.valid_utf8(texts):
        return None
    longest = pc.max(pc.binary_length(texts)).as_py()
    read = pj.ReadOptions(block_size=max(1 << 20, 2 * longest + 2))
    try:
        first = pj.read_json(_lines(texts.slice(0, _SAMPLE)), read_options=read)
        parse = pj.ParseOptions(
            explicit_schema=_text_dates(first.schema), unexpected_field_behavior="infer"
        )
        table = pj.read_json(_lines(texts), read_options=read, parse_options=parse)
    except pa.ArrowException:  # not JSON objects, or a type other than the first rows'
        return None
    return table if table.num_rows == len(texts) else None


def _lines(texts: Any) -> Any:
    """A reader of ``texts`` as one buffer, a text a line. A text holding a line break
    of its own is read as two rows or fails to parse; either way the batch goes row by
    row (the row count, or the text written back, differs)."""
    import pyarrow as pa

    return pa.BufferReader(b"\n".join([*texts.cast(pa.binary()).to_pylist(), b""]))


def _text_dates(schema: Any) -> Any:
    """``schema`` with every date or time Arrow inferred from a JSON string as a string."""
    import pyarrow as pa

    def text(kind: Any) -> Any:
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
            return pa.string()
        if pa.types.is_struct(kind):
            return pa.struct([f.with_type(text(f.type)) for f in kind])
        if pa.types.is_list(kind):
            return pa.list_(kind.value_field.with_type(text(kind.value_type)))
        return kind

    return pa.schema([f.with_type(text(f.type)) for f in schema])


def _lists(column: Any, entry_field: str) -> Any:
    """(each row's list as its JSON text, the entries' distinct texts before their score
    and which each is, their score ticks, the rows' offsets into the entries), or None."""
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
    # each entry two pieces from one table: its text up to the score (after a comma but
    # in a row's first entry) and its score's text closing it; a row's pieces joined
    n = len(heads)
    pieces = pa.array(
        [h + b',"score":' for h in heads] + [b"," + h + b',"score":' for h in heads] + _CLOSING,
        pa.binary(),
    )
    later = np.ones(len(which), np.int64)
    later[offsets[:-1][np.diff(offsets) > 0]] = 0
    taken = np.empty(2 * len(which), np.int64)
    taken[0::2], taken[1::2] = which + n * later, 2 * n + ticks
    listed = pa.ListArray.from_arrays(pa.array(2 * offsets, pa.int32()), pieces.take(taken))
    return pc.binary_join(listed, b""), (heads, which), ticks, offsets


def _lead(parsed: Any, key_field: str, keys: list[str]) -> Any:
    """Each row's ``{"key_field":"key",``, where the row's key field is its key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    own = parsed.column(key_field).combine_chunks()
    if not pa.types.is_string(own.type) or own.null_count:
        return None
    if not pc.all(pc.equal(own, pa.array(keys, pa.string()))).as_py():
        return None  # a key field that is not the row's key: the row by row path says so
    texts = arrow_lists.value_texts(own)
    if texts is None:
        return None
    return pc.binary_join_element_wise(b"{" + orjson.dumps(key_field) + b":", texts, b",", b"")


def _fields(parsed: Any, names: list[str]) -> Any:
    """Each row's fields ``names`` as JSON text, each ``,"name":value``; None where a value
    has none."""
    import pyarrow.compute as pc

    parts: list[Any] = []
    for name in names:
        texts = arrow_lists.value_texts(parsed.column(name).combine_chunks())
        if texts is None:
            return None
        parts += [b"," + orjson.dumps(name) + b":", texts]
    return pc.binary_join_element_wise(*parts, b"") if parts else b""


def _each(*parts: Any, rows: int) -> Any:
    """The texts ``parts`` (arrays of ``rows`` texts, or one text for every row) joined
    row by row, as an array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if all(isinstance(p, bytes) for p in parts):
        return pa.array([b"".join(parts)] * rows, pa.binary())
    return pc.binary_join_element_wise(*parts, b"")


def _frames(tails: Any, shape: tuple[str, str, str], lists: ListCompactor) -> Any:
    """Each row's frame id, from its text after the list; None where one has none."""
    import pyarrow.compute as pc

    key_field, list_field, _ = shape
    coded = pc.dictionary_encode(tails)
    head = orjson.dumps({key_field: "k", list_field: []})[:-2]  # {"key":"k","list":[
    fids = []
    for tail in coded.dictionary.to_pylist():
        fid = lists.frame_around("k", head + tail)
        if fid is None:
            return None
        fids.append(fid)
    return np.array(fids, np.int64)[coded.indices.to_numpy()]
