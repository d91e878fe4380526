"""Compact ranking payloads (no I/O). Golden tests pin these bytes against the JSON.

A bulk run's payloads repeat the same text: each entry's ``{"item_id":"h7",<payload
columns>,"score":`` and the trailing model fields. A compact payload stores only what
differs per key, the entries' indices and 4-decimal score ticks; the shared text is the
run's *frame*, written once per version and context. Decoding gives the exact bytes
:func:`prescore.encoding.codec.encode_payload` writes, so readers serve JSON as before.

    byte 0       0x01: entry indices are uint16; 0x02: uint32 (JSON always starts '{')
    byte 1       the frame id (a run's contexts are numbered from 0)
    n indices    little-endian, then n score ticks as uint16 (score * 10**4)

The key's own text comes from the key the payload is stored under (with ``|context``
cut off where the frame has a context), so it is not stored either.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring as _string  # dumps' own, for a str

import orjson

from prescore.encoding.codec import SCORE_DECIMALS, dumps
from prescore.encoding.keys import escape

NARROW, WIDE = 0x01, 0x02
MAX_NARROW = 0xFFFF  # entry indices that fit uint16
MAX_FRAMES = 256
TICKS = 10**SCORE_DECIMALS
# The JSON text of every tick's score, as codec writes round(score, 4): b"0.0", b"0.0001", ...
TICK_TEXT: tuple[bytes, ...] = tuple(
    dumps(round(k / TICKS, SCORE_DECIMALS)) for k in range(TICKS + 1)
)


@dataclass(frozen=True)
class Frame:
    """The text one run's payloads share: ``key_head`` + key + ``head_end`` + entries
    (``entries[i]`` + score text + ``}``, comma-joined) + ``tail``."""

    key_head: bytes
    head_end: bytes
    entries: Sequence[bytes]  # a tuple once stored; a list while a publish builds it
    tail: bytes
    context: str | None = None


ENTRIES_PER_FIELD = 10_000  # entry texts a stored field holds: no field grows with the items
HEADS = "heads"


def frames_to_fields(frames: Mapping[int, Frame]) -> dict[str, bytes]:
    """The hash fields that store ``frames``: their heads in one, and each distinct entry
    list once (contexts of a run share their items'), in fields of ENTRIES_PER_FIELD."""
    lists: dict[tuple[bytes, ...], int] = {}
    fields: dict[str, bytes] = {}
    heads: dict[str, dict[str, object]] = {}
    for fid, frame in frames.items():
        entries = tuple(frame.entries)
        at = lists.get(entries)
        if at is None:  # a list not stored yet
            at = lists[entries] = len(lists)
            for n, start in enumerate(range(0, max(len(frame.entries), 1), ENTRIES_PER_FIELD)):
                part = frame.entries[start : start + ENTRIES_PER_FIELD]
                fields[f"entries:{at}:{n}"] = orjson.dumps([e.decode() for e in part])
        heads[str(fid)] = {
            "key_head": frame.key_head.decode(),
            "head_end": frame.head_end.decode(),
            "tail": frame.tail.decode(),
            "context": frame.context,
            "entries": at,
            "fields": -(-len(frame.entries) // ENTRIES_PER_FIELD) or 1,
        }
    fields[HEADS] = dumps(heads)
    return fields


def entry_fields(heads: bytes) -> list[str]:
    """The fields holding the entry lists the frames of ``heads`` name."""
    doc = json.loads(heads)
    wanted = {(h["entries"], h["fields"]) for h in doc.values()}
    return [f"entries:{at}:{n}" for at, count in sorted(wanted) for n in range(count)]


def frames_from_fields(heads: bytes, fields: Mapping[str, bytes]) -> dict[int, Frame]:
    """The frames stored as ``heads`` and their entry ``fields`` (KeyError if one lacks)."""
    lists: dict[int, tuple[bytes, ...]] = {}
    out = {}
    for fid, h in json.loads(heads).items():
        at = h["entries"]
        if at not in lists:
            parts = [orjson.loads(fields[f"entries:{at}:{n}"]) for n in range(h["fields"])]
            lists[at] = tuple(e.encode() for part in parts for e in part)
        out[int(fid)] = Frame(
            h["key_head"].encode(),
            h["head_end"].encode(),
            lists[at],
            h["tail"].encode(),
            h["context"],
        )
    return out


def is_compact(raw: bytes) -> bool:
    """Whether ``raw`` has a compact payload's header (a kind and a frame id)."""
    return len(raw) > 1 and raw[0] in (NARROW, WIDE)


def encode(frame_id: int, indices: Sequence[int], ticks: Sequence[int]) -> bytes:
    """One compact payload (the bulk path builds the same bytes with numpy)."""
    n = len(indices)
    kind = WIDE if n and max(indices) > MAX_NARROW else NARROW
    packer = _PACKERS.get((kind, n)) or _packer(kind, n)
    return packer.pack(kind, frame_id, *indices, *ticks)


_PACKERS: dict[tuple[int, int], struct.Struct] = {}  # (kind, n) -> its layout, header included


def _packer(kind: int, n: int) -> struct.Struct:
    found = struct.Struct(f"<BB{n}{'I' if kind == WIDE else 'H'}{n}H")
    if len(_PACKERS) < 1024:
        _PACKERS[(kind, n)] = found
    return found


def decode(
    raw: bytes,
    key: str,
    frames: Mapping[int, Frame],
    opening: bytes = b"{",
    limit: int | None = None,
) -> bytes:
    """The JSON payload of the compact ``raw`` stored under ``key``, with ``opening`` in
    place of its opening brace (a reader's own fields spliced in front, as
    prescore.encoding.codec.envelope does) and at most ``limit`` entries, best first. ValueError
    if ``raw`` is no compact payload of ``frames`` (its frame missing, cut short, an
    item or a score tick out of range)."""
    frame = frames.get(raw[1]) if len(raw) > 1 else None
    if frame is None:
        raise ValueError(f"the compact payload of {key!r} names no frame this version has")
    return decode_many(frame, [(raw, key)], opening, limit)[0]


def decode_many(
    frame: Frame,
    stored: Iterable[tuple[bytes, str]],
    opening: bytes = b"{",
    limit: int | None = None,
) -> list[bytes]:
    """:func:`decode` of each (raw, key) of ``frame``'s payloads, in one loop (a batch's)."""
    try:
        return _decode_many(frame, stored, opening, limit)
    except (IndexError, struct.error) as exc:  # an item or tick the frame does not have
        raise ValueError(f"a compact payload does not fit its frame: {exc}") from exc


def _decode_many(
    frame: Frame, stored: Iterable[tuple[bytes, str]], opening: bytes, limit: int | None
) -> list[bytes]:
    head, head_end, tail = opening + frame.key_head[1:], frame.head_end, frame.tail
    entries = frame.entries
    cut = -len(escape(frame.context)) - 1 if frame.context else None
    closing, layouts = _CLOSING, _LAYOUTS
    most = -1 if limit is None else max(limit, 0)
    out = []
    for raw, key in stored:
        n, layout = layouts.get((raw[0], len(raw))) or _layout(raw)
        numbers = layout.unpack_from(raw, 2)
        shown = n if most < 0 or most > n else most
        parts = [head, _string(key[:cut]).encode(), head_end]
        for i in range(shown):  # one join of the pieces: no entry is built on its own
            parts += (entries[numbers[i]], closing[numbers[n + i]])
        if shown:
            parts[-1] = parts[-1][:-1]  # the last entry's comma
        parts.append(tail)
        out.append(b"".join(parts))
    return out


_CLOSING = tuple(t + b"}," for t in TICK_TEXT)  # a tick's score text, closing its entry
_LAYOUTS: dict[tuple[int, int], tuple[int, struct.Struct]] = {}  # (kind, bytes) -> n, layout


def _layout(raw: bytes) -> tuple[int, struct.Struct]:
    """(n, the layout of the n indices then the n ticks) of a compact payload of its kind
    and size; the few sizes there are (top K and fewer) are kept for the process."""
    if raw[0] not in (NARROW, WIDE):
        raise ValueError(f"not a compact payload: kind {raw[0]}")
    width = 4 if raw[0] == WIDE else 2
    n, extra = divmod(len(raw) - 2, width + 2)
    if extra:
        raise ValueError(f"a compact payload of {len(raw)} bytes is cut short")
    found = n, struct.Struct(f"<{n}{'I' if width == 4 else 'H'}{n}H")
    if len(_LAYOUTS) < 1024:
        _LAYOUTS[(raw[0], len(raw))] = found
    return found
