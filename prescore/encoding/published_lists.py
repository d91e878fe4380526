"""Compact payloads for lists published from elsewhere (no I/O).

``prescore publish`` turns each row into one JSON payload. A top-K list repeats the same
few texts in every row: each entry's ``{"item_id":"h7","price":120,"score":`` and the
fields around the list (the model stamp). Stored as JSON, a top 10 passes Redis' 64-byte
listpack bound and turns its whole bucket into a hashtable. Where a row allows it, it is
stored as a compact payload instead (prescore.encoding.compact, as the scoring job's):
its entries' indices into the version's entry table, built here from the rows as they
come, and their 4-decimal score ticks; the text around the list is one of the version's
frames.

The row's own JSON text is cut into those pieces, so the payload decodes to exactly that
text: every cut is at a separator a JSON string cannot hold unescaped (``,"score":``), a
score is kept only where its text is a tick's as the decoder writes it, and the pieces
join back into the text they came from; each entry's text is checked to be one whole
object (so a lookup's cut at ``k`` entries is JSON too) and each frame's to be an object
with the list right after the key. A row is stored as JSON, as before, where its list
does not cut cleanly into one object per entry with ``score`` last, where a field comes
between its key and its list or it holds ``source``, where its key's text is not the
decoder's, or where the version has no room left: compact.MAX_FRAMES texts around the
list, ``max_entries`` distinct entries.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from typing import Any

from prescore.encoding import compact
from prescore.encoding.codec import dumps

MAX_ENTRIES = 250_000  # distinct entry texts a version keeps (every lookup holds them)
_SCORE = b',"score":'
# an entry's end: its score and closing brace, and the comma before the next entry
_CUT = re.compile(rb',"score":([-+.eE0-9]+)\}(,?)(?=[{\]])')
_REFUSALS_KEPT = 4096
_TICKS = {text: tick for tick, text in enumerate(compact.TICK_TEXT)}


class ListCompactor:
    """Packs the JSON payloads of one publish where their list allows it; :meth:`frames`
    are stored with the version."""

    def __init__(self, key_field: str, list_field: str, max_entries: int = MAX_ENTRIES) -> None:
        self._key_head = b"{" + dumps(key_field) + b":"
        self._list_field = list_field
        self._head_end = b"," + dumps(list_field) + b":["  # the list right after the key
        self._max_entries = max_entries
        self._index: dict[bytes, int] = {}
        self._entries: list[bytes] = []  # shared by every frame: stored once
        self._frame_ids: dict[bytes, int] = {}  # the text after the list -> its frame
        self._refused: set[bytes] = set()  # texts after a list that no frame holds
        self.packed = 0  # rows stored compactly (a caller packing rows itself adds its own)

    def pack(self, key: str, text: bytes) -> bytes:
        """What to store for the payload ``text`` of ``key``: its compact payload where
        its list allows one, else ``text`` (always with ``max_entries`` 0)."""
        packed = self._encode(key, text) if self._max_entries else None
        if packed is None:
            return text
        self.packed += 1
        return packed

    def frame_around(self, key: str, text: bytes) -> int | None:
        """The frame id of the payload ``text`` of ``key`` whose list is empty (the text
        around every list of a batch packed at once), None when it has none."""
        packed = self._encode(key, text)
        return packed[1] if packed is not None else None

    def indices(self, heads: list[bytes], cut: bool = True) -> list[int]:
        """The entry table's index of each entry text before its score (added where new;
        -1 where the table is full). ``cut``: texts cut from a row's JSON, each parsed
        once as it is added; otherwise texts orjson wrote for flat objects
        (prescore.encoding.arrow_lists), whole objects as made."""
        index = self._index
        if not cut:  # whole objects: the new ones added at once, no check each
            self._add_whole([h for h in dict.fromkeys(heads) if h not in index])
            return [index.get(h, -1) for h in heads]
        return [index[h] if h in index else self._add(h) for h in heads]

    def frames(self) -> dict[int, compact.Frame]:
        """The frames of the rows packed so far (none when no row was)."""
        if not self.packed:
            return {}
        entries = tuple(self._entries)
        return {
            fid: compact.Frame(self._key_head, self._head_end, entries, tail)
            for tail, fid in self._frame_ids.items()
        }

    def _encode(self, key: str, text: bytes) -> bytes | None:
        head = self._key_head + encode_basestring(key).encode() + self._head_end
        if not text.startswith(head):  # a field between the key and the list: JSON
            return None
        cut = len(head)
        pieces = _CUT.split(text[cut:])
        heads, scores, commas, tail = pieces[0:-1:3], pieces[1::3], pieces[2::3], pieces[-1]
        ticks = list(map(_TICKS.get, scores))
        # every score cut, each entry one object ("},{" only between entries), a comma
        # after each but the last
        if (
            tail[:1] != b"]"
            or None in ticks
            or text.count(_SCORE, cut) != len(scores)
            or text.count(b"},{", cut) != max(len(heads) - 1, 0)
            or commas.count(b",") != max(len(heads) - 1, 0)
            or (heads and heads[0][:1] != b"{")
        ):
            return None
        fid = self._frame(tail)
        if fid is None:
            return None
        found = list(map(self._index.get, heads))
        indices = self.indices(heads) if None in found else found
        if -1 in indices:
            return None
        return compact.encode(fid, indices, ticks)  # type: ignore[arg-type]

    def _frame(self, tail: bytes) -> int | None:
        """The id of the frame of this text after the list, made if new; None where the
        version has no room or the text is not what the lookup reads from a frame."""
        found = self._frame_ids.get(tail)
        if found is not None or len(self._frame_ids) >= compact.MAX_FRAMES:
            return found
        if tail in self._refused:
            return None
        if not self._sound(tail):
            if len(self._refused) < _REFUSALS_KEPT:
                self._refused.add(tail)
            return None
        fid = self._frame_ids[tail] = len(self._frame_ids)
        return fid

    def _sound(self, tail: bytes) -> bool:
        """Whether a frame of this text after the list makes an object whose list is the
        one that was cut (the lookup reads ``scored_at`` from the tail) and that holds no
        ``source`` (the lookup says that itself)."""
        doc = _object(self._key_head + b'""' + self._head_end + tail)
        return doc is not None and doc.get(self._list_field) == [] and "source" not in doc

    def _add_whole(self, heads: list[bytes]) -> None:
        """New entries (distinct texts before the score of whole objects), as many as the
        table has room for."""
        added = heads[: max(self._max_entries - len(self._entries), 0)]
        self._index.update((h, n) for n, h in enumerate(added, len(self._entries)))
        self._entries += [h + _SCORE for h in added]

    def _add(self, head: bytes) -> int:
        """A new entry's index (``head``: its text before the score, cut from a row), -1
        when the table is full or ``head`` is not one whole object's text up to its last
        field (a cut inside a nested list): a lookup cuts lists at entries."""
        if len(self._entries) >= self._max_entries:
            return -1
        if _object(head + b',"score":0}') is None:
            return -1
        self._entries.append(head + _SCORE)
        found = self._index[head] = len(self._entries) - 1
        return found


def _object(text: bytes) -> dict[str, Any] | None:
    """``text`` parsed, where it is one JSON object."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
