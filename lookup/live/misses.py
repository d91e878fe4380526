"""The one seam that a miss goes through, for single lookups and batches alike.

A miss is a key the published version does not hold. The app hands every miss of a
request, in one call, to a ``MissHandler``. The default answers none of them, which the
routes turn into 404 ``not_found`` (per key in a batch). Live inference plugs in here
(lookup.live.client): a handler returns payload bytes (``"source": "live"``, the
shape the bulk job stores) for the keys it could answer and None for the others; the
app then cuts (k / min_score) and envelopes them like a hit.

A handler reports failure one way: as values, never by raising. Where live inference
is down or too slow it returns FallbackUnavailable (503 ``fallback_unavailable``) or
FallbackTimeout (504 ``fallback_timeout``) in a key's place (InvalidInput, 400, is for
``:predict``, whose caller sent the features). A single lookup answers with that error,
or with its stale answer when it has one; a batch still serves its hits, and each key
without an answer gets a per-item entry carrying that code instead of ``not_found``
(lookup.service), so one key's failure never fails the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lookup.store import Resolved
from prescore.errors import FallbackUnavailable, InvalidInput, Unscorable

Failure = FallbackUnavailable | InvalidInput | Unscorable  # why a key got no live answer
FAILURES = (FallbackUnavailable, InvalidInput, Unscorable)
Answer = bytes | Failure | None  # a payload, no answer, or why there is none


@dataclass(frozen=True)
class Miss:
    """One key the store did not hold."""

    dataset: str
    key: str  # as asked (without the context)
    context: str | None = None


class MissHandler(Protocol):
    def __call__(self, misses: Sequence[Miss], version: Resolved) -> list[Answer]:
        """Payload bytes for each miss (same order), None where there is no answer, or the
        error that kept a miss from its answer."""
        ...


def not_found(misses: Sequence[Miss], version: Resolved) -> list[Answer]:
    """The default: no live inference, so every miss is answered 404 not_found."""
    return [None] * len(misses)
