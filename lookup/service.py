"""Answering lookups: read one version, hand misses to the miss seam, render bytes."""

from __future__ import annotations

from lookup import render
from lookup.datasets import Served
from lookup.metrics import Metrics
from lookup.misses import Miss, MissHandler
from lookup.params import BatchRequest, Shape
from lookup.store import StoreReader
from prescore import keys
from prescore.errors import FallbackUnavailable


def _candidates(spec: Served, key: str, context: str | None) -> list[str]:
    """Store keys to try, best first: with a context, ``key|context`` then plain ``key``."""
    if context:
        return [keys.entity_key(key, context), key]
    return [key]


class Lookup:
    """Single and batch lookups of one dataset version per request."""

    def __init__(self, reader: StoreReader, on_miss: MissHandler, metrics: Metrics) -> None:
        self.reader = reader
        self.on_miss = on_miss
        self.metrics = metrics

    def one(self, spec: Served, key: str, context: str | None, shape: Shape) -> tuple[int, bytes]:
        """(status, body) of a single lookup: 200 with the payload or 404 not_found; a
        miss with live inference down or slow raises FallbackUnavailable / FallbackTimeout."""
        resolved, values = self.reader.read(spec.name, _candidates(spec, key, context))
        payload = next((v for v in values if v is not None), None)
        if payload is not None:
            self.metrics.count_keys(spec.name, hits=1, misses=0)
            fell_back = context is not None and values[0] is None
            return 200, render.hit(payload, spec, shape, resolved, fell_back=fell_back)
        self.metrics.count_keys(spec.name, hits=0, misses=1)
        live = self.on_miss([Miss(spec.name, key, context)], resolved)[0] if spec.live else None
        if isinstance(live, FallbackUnavailable):
            raise live
        if live is not None:
            return 200, render.hit(live, spec, shape, resolved, source="live")
        return 404, render.miss(spec, key, context, resolved)

    def many(self, spec: Served, req: BatchRequest) -> bytes:
        """A batch answer in request order; duplicates are read once and answered each time.

        With live inference down or too slow, the hits are served and each missing key gets
        a ``fallback_unavailable`` / ``fallback_timeout`` entry; the answer stays whole."""
        unique = list(dict.fromkeys(req.keys))
        per_key = [_candidates(spec, k, req.context) for k in unique]
        resolved, values = self.reader.read(spec.name, [c for cands in per_key for c in cands])
        rendered: dict[str, bytes] = {}
        at = 0
        for key, cands in zip(unique, per_key, strict=True):
            mine = values[at : at + len(cands)]
            at += len(cands)
            payload = next((v for v in mine if v is not None), None)
            if payload is not None:
                fell_back = req.context is not None and mine[0] is None
                rendered[key] = render.hit(payload, spec, req.shape, resolved, fell_back=fell_back)
        missing = [k for k in unique if k not in rendered]
        hits = sum(1 for k in req.keys if k in rendered)
        self.metrics.count_keys(spec.name, hits=hits, misses=len(req.keys) - hits)
        failed: dict[str, FallbackUnavailable] = {}
        if missing and spec.live:
            try:
                answers = self.on_miss([Miss(spec.name, k, req.context) for k in missing], resolved)
            except FallbackUnavailable as exc:  # the hits are still served
                answers = [exc] * len(missing)
            for key, live in zip(missing, answers, strict=True):
                if isinstance(live, FallbackUnavailable):
                    failed[key] = live
                elif live is not None:
                    rendered[key] = render.hit(live, spec, req.shape, resolved, source="live")
        parts = [
            rendered.get(k) or _unanswered(spec, k, req.context, failed.get(k)) for k in req.keys
        ]
        return render.batch(spec, resolved, parts, sum(1 for k in req.keys if k in rendered))


def _unanswered(
    spec: Served, key: str, context: str | None, error: FallbackUnavailable | None
) -> bytes:
    """A batch entry for a key with no payload: not_found, or why live inference gave none."""
    if error is None:
        return render.miss_item(spec, key, context)
    return render.error_item(spec, key, error.code, error.message)
