"""Many recommendation payloads of one model run, byte for byte what prescore.codec writes.

A bulk job encodes tens of thousands of payloads a second; ``json.dumps`` of one dict per
user (and ``round`` of each score) cost it more than the model call. Here what is the
same for the whole run is encoded once: each hotel's ``{"hotel_id":"h7","score":``
fragment and the trailing model fields. Scores are cut to their 4-decimal "tick" (an
int, vectorised) and their text comes from a table, so a payload is a few joins. No I/O;
numpy only (the lookup never imports this module). Golden tests pin the bytes against
:func:`prescore.codec.encode_recommendations`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prescore.codec import SCORE_DECIMALS, dumps

_SCALE = 10**SCORE_DECIMALS
# round(k / 10**4, 4) for every tick of [0, 1], as codec writes it: b"0.0", b"0.0001", ...
_TICK_TEXT = [dumps(round(k / _SCALE, SCORE_DECIMALS)) for k in range(_SCALE + 1)]
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


class RecoPayloads:
    """Encodes the payloads of one scoring run: one model, one hotel table, one context."""

    def __init__(
        self,
        hotel_ids: Sequence[str],
        *,
        model: str,
        model_version: str,
        scored_at: str,
        context: str | None = None,
    ) -> None:
        self.context = context
        self._entries = [b'{"hotel_id":' + dumps(str(h)) + b',"score":' for h in hotel_ids]
        self._context = b',"context":' + dumps(context) if context else b""
        self._tail = (
            b'],"model":' + dumps(model) + b',"model_version":' + dumps(model_version)
            + b',"scored_at":' + dumps(scored_at) + b"}"
        )  # fmt: skip

    def encode(
        self, user_id: str, hotels: Sequence[int], ticks: Sequence[int], scores: Sequence[float]
    ) -> bytes:
        """One user's payload: hotel indices, their score ticks and scores, best first."""
        entries = self._entries
        items = [
            entries[h] + (_TICK_TEXT[t] if t >= 0 else dumps(round(s, SCORE_DECIMALS))) + b"}"
            for h, t, s in zip(hotels, ticks, scores, strict=True)
        ]
        return (
            b'{"user_id":' + dumps(user_id) + self._context + b',"items":['
            + b",".join(items) + self._tail
        )  # fmt: skip
