"""Answering lookups: read one version, hand misses to the miss seam, render bytes."""

from __future__ import annotations

from lookup import render
from lookup.datasets import RECO, DatasetSpec
from lookup.metrics import Metrics
from lookup.misses import Miss, MissHandler
from lookup.params import BatchRequest, Shape
from lookup.store import StoreReader
from prescore import keys
from prescore.errors import FallbackUnavailable


def _candidates(spec: DatasetSpec, entity_id: str, context: str | None) -> list[str]:
    """Store keys to try, best first: with a context, ``user|context`` then plain ``user``."""
    if spec is RECO and context:
        return [keys.reco_key(entity_id, context), entity_id]
    return [entity_id]


class Lookup:
    """Single and batch lookups of one dataset version per request."""

    def __init__(self, reader: StoreReader, on_miss: MissHandler, metrics: Metrics) -> None:
        self.reader = reader
        self.on_miss = on_miss
        self.metrics = metrics

    def one(
        self, spec: DatasetSpec, entity_id: str, context: str | None, shape: Shape
    ) -> tuple[int, bytes]:
        """(status, body) of a single lookup: 200 with the payload or 404 not_found; a
        miss with live inference down or slow raises FallbackUnavailable / FallbackTimeout."""
        if context is None or spec is not RECO:  # the hot path: one key, one GET
            resolved, values = self.reader.read(spec.name, [entity_id])
            payload = values[0]
        else:
            resolved, values = self.reader.read(spec.name, _candidates(spec, entity_id, context))
            payload = next((v for v in values if v is not None), None)
        if payload is not None:
            self.metrics.count_keys(spec.name, hits=1, misses=0)
            return 200, render.hit(payload, spec, shape, resolved)
        self.metrics.count_keys(spec.name, hits=0, misses=1)
        live = self.on_miss([Miss(spec.name, entity_id, context)], resolved)[0]
        if isinstance(live, FallbackUnavailable):
            raise live
        if live is not None:
            return 200, render.hit(live, spec, shape, resolved)
        return 404, render.miss(spec, entity_id, context, resolved)

    def many(self, spec: DatasetSpec, req: BatchRequest) -> bytes:
        """A batch answer in request order; duplicates are read once and answered each time.

        With live inference down or too slow, the hits are served and each missing id gets
        a ``fallback_unavailable`` / ``fallback_timeout`` entry; the answer stays whole."""
        unique = list(dict.fromkeys(req.ids))
        per_id = [_candidates(spec, i, req.context) for i in unique]
        flat = [k for cands in per_id for k in cands]
        resolved, values = self.reader.read(spec.name, flat)
        found: dict[str, bytes] = {}
        at = 0
        for entity_id, cands in zip(unique, per_id, strict=True):
            payload = next((v for v in values[at : at + len(cands)] if v is not None), None)
            at += len(cands)
            if payload is not None:
                found[entity_id] = payload
        missing = [i for i in unique if i not in found]
        hits = sum(1 for i in req.ids if i in found)
        self.metrics.count_keys(spec.name, hits=hits, misses=len(req.ids) - hits)
        failed: dict[str, FallbackUnavailable] = {}
        if missing:
            misses = [Miss(spec.name, i, req.context) for i in missing]
            try:
                answers = self.on_miss(misses, resolved)
            except FallbackUnavailable as exc:  # the hits are still served
                answers = [exc] * len(missing)
            for entity_id, live in zip(missing, answers, strict=True):
                if isinstance(live, FallbackUnavailable):
                    failed[entity_id] = live
                elif live is not None:
                    found[entity_id] = live
        rendered = {i: render.hit(p, spec, req.shape, resolved) for i, p in found.items()}
        parts = [
            rendered.get(i) or _unanswered(spec, i, req.context, failed.get(i)) for i in req.ids
        ]
        return render.batch(spec, resolved, parts, sum(1 for i in req.ids if i in rendered))


def _unanswered(
    spec: DatasetSpec, entity_id: str, context: str | None, error: FallbackUnavailable | None
) -> bytes:
    """A batch entry for an id with no payload: not_found, or why live inference gave none."""
    if error is None:
        return render.miss_item(spec, entity_id, context)
    return render.error_item(spec, entity_id, error.code, error.message)
