"""Many ranking payloads of one model run, byte for byte what prescore.encoding.codec writes.

A bulk job encodes tens of thousands of payloads a second; ``json.dumps`` of one dict per
entity (and ``round`` of each score) cost it more than the model call. Here what is the
same for the whole run is encoded once: each item's ``{"item_id":"p7",<payload
columns>,"score":`` fragment and the trailing model fields. Scores are cut to their
4-decimal "tick" (an int, vectorised) and their text comes from a table. A whole chunk of
entities is then joined column by column with numpy's bytes concatenation (``np.add`` on
``S`` arrays), so Python touches each entity once, for the key. No I/O; numpy only (the
lookup never imports this module). Golden tests pin the bytes against
:func:`prescore.encoding.codec.encode_payload`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prescore.encoding import compact
from prescore.encoding.codec import SCORE_DECIMALS, PayloadShape, dumps

_SCALE = 10**SCORE_DECIMALS
_TICK_TEXT = np.array(compact.TICK_TEXT)  # round(k / 10**4, 4) of every tick, as codec writes
_NEAR_TIE = 1e-6  # float64 error of score * 10**4 is ~1e-12: farther than this is safe


def score_ticks(scores: np.ndarray) -> np.ndarray:
    """``round(s, 4) * 10**4`` of each score as an int, or -1 where Python must round it.

    Exact for scores in [0, 1] away from a rounding tie; a tie (or a score outside
    [0, 1]) is left to ``round`` itself, whose decimal rounding numpy does not copy.
    """
    x = np.asarray(scores, np.float64) * _SCALE
    frac = x - np.floor(x)
    safe = (x >= 0) & (x <= _SCALE) & (np.abs(frac - 0.5) > _NEAR_TIE)
    return np.where(safe, np.rint(x), -1).astype(np.int64)


def json_strings(values: Sequence[str]) -> np.ndarray:
    """``dumps`` of each string, as an ``S`` array; at C speed when none needs escaping.

    Ids are plain ASCII tokens (prescore.encoding.keys), whose JSON text is the id in quotes; any
    other string (non-ASCII, a quote, a backslash, a control character) goes to dumps.
    """
    try:
        raw = np.array(values, "S")  # ASCII only, else UnicodeEncodeError
    except UnicodeEncodeError:
        raw = None
    if raw is not None and raw.size and "\x00" not in "".join(values):
        octets = raw.view(np.uint8)  # NUL here is only the padding of shorter strings
        if not (((octets < 0x20) & (octets != 0)) | (octets == 0x22) | (octets == 0x5C)).any():
            return np.add(np.add(b'"', raw), b'"')
    return np.array([dumps(v) for v in values], "S")


def _extra(fields: Mapping[str, Any]) -> bytes:
    """``,"name":"X","price":12.5`` of an item's payload columns (as codec writes them)."""
    return b"," + dumps(dict(fields))[1:-1] if fields else b""


class RankingPayloads:
    """Encodes the payloads of one scoring run: one model, one item table, one context."""

    def __init__(
        self,
        shape: PayloadShape,
        item_ids: Sequence[str],
        *,
        model: str,
        model_version: str,
        scored_at: str,
        context: str | None = None,
        item_extras: Sequence[Mapping[str, Any]] | None = None,
        frame_id: int = 0,
    ) -> None:
        self.context = context
        self.frame_id = frame_id
        head = b'{"' + shape.entry_field.encode() + b'":'
        extras = item_extras if item_extras is not None else [{}] * len(item_ids)
        # "S" arrays drop trailing NUL bytes, which JSON text never ends with
        self._entries = np.array(
            [
                head + dumps(str(i)) + _extra(x) + b',"score":'
                for i, x in zip(item_ids, extras, strict=True)
            ],
            dtype="S",
        )
        self._key_head = b"{" + dumps(shape.key_field) + b":"
        self._head_end = (
            (b',"context":' + dumps(context) if context else b"")
            + b","
            + dumps(shape.list_field)
            + b":["
        )
        self._tail = (
            b'],"model":'
            + dumps(model)
            + b',"model_version":'
            + dumps(model_version)
            + b',"scored_at":'
            + dumps(scored_at)
            + b"}"
        )

    def frame(self) -> compact.Frame:
        """The text this run's compact payloads share (prescore.encoding.compact)."""
        return compact.Frame(
            self._key_head,
            self._head_end,
            tuple(self._entries.tolist()),
            self._tail,
            self.context,
        )

    def encode_compact(
        self, keys: Sequence[str], items: np.ndarray, scores: np.ndarray, found: np.ndarray
    ) -> list[bytes]:
        """As :meth:`encode_grid`, as compact payloads (prescore.encoding.compact) where every score
        is a plain tick; JSON for an entity with a score only Python can round."""
        found = np.asarray(found)
        ticks = score_ticks(scores)
        present = np.arange(items.shape[1]) < found[:, None]
        odd = np.asarray((present & (ticks < 0)).any(axis=1))
        if self.frame_id >= compact.MAX_FRAMES:  # a frame id is one byte: JSON beyond
            odd = np.ones(len(found), bool)
        wide = len(self._entries) > compact.MAX_NARROW + 1
        head = bytes((compact.WIDE if wide else compact.NARROW, self.frame_id % 256))
        index = np.ascontiguousarray(items, "<u4" if wide else "<u2")
        tick = np.ascontiguousarray(np.maximum(ticks, 0), "<u2")
        out = [
            head + index[u, :n].tobytes() + tick[u, :n].tobytes()
            for u, n in enumerate(found.tolist())
        ]
        for u in np.flatnonzero(odd).tolist():
            out[u] = self.encode_grid(
                [keys[u]], items[u : u + 1], scores[u : u + 1], found[u : u + 1]
            )[0]
        return out

    def encode_grid(
        self, keys: Sequence[str], items: np.ndarray, scores: np.ndarray, found: np.ndarray
    ) -> list[bytes]:
        """One payload per entity (row): its first ``found[u]`` item indices and scores.

        ``items`` and ``scores`` are entities x slots, best first; a slot past ``found[u]``
        is left out, whatever it holds (its item index must still be a valid one).
        """
        slot = np.arange(items.shape[1])
        present = slot < np.asarray(found)[:, None]
        ticks = score_ticks(scores)
        text = _TICK_TEXT[np.maximum(ticks, 0)]
        odd = np.nonzero(present & (ticks < 0))
        if len(odd[0]):  # near-ties and scores outside [0, 1]: Python's round decides
            fixes = [dumps(round(s, SCORE_DECIMALS)) for s in scores[odd].tolist()]
            text = text.astype(f"S{max(text.itemsize, *map(len, fixes))}")
            text[odd] = fixes
        entries = np.where(present, np.add(self._entries[items], text), b"")
        last = slot == np.asarray(found)[:, None] - 1
        ends = np.where(last, b"}", np.where(present, b"},", b""))
        joined = np.zeros(len(keys), "S1")  # b"" each
        for j in slot:
            joined = np.add(np.add(joined, entries[:, j]), ends[:, j])
        heads = np.add(np.add(self._key_head, json_strings(keys)), self._head_end)
        return np.add(np.add(heads, joined), self._tail).tolist()
