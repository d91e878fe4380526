"""lookup.live.answers: which of the fallback's predictions the lookup serves and writes
back (no I/O: the payload bytes, no answer, or why not)."""

from __future__ import annotations

from typing import Any

import pytest

from lookup.live.answers import MAX_LIVE_PAYLOAD_BYTES, Unusable, live_payload
from prescore.encoding.codec import PayloadShape
from prescore.errors import Unscorable

SHAPE = PayloadShape("customer_id", "items", "product_id")
INSTANCE = {"key": "c1", "context": "app"}


def _pred(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "customer_id": "c1",
        "context": "app",
        "items": [{"product_id": "p1", "score": 0.5}],
        "model": "shop",
        "model_version": "3",
        "scored_at": "2026-01-01T00:00:00Z",
    }
    doc.update(changes)
    return {**doc, "source": doc.pop("source", "live")}


def test_the_payload_asked_for_is_served_as_the_fallback_wrote_it() -> None:
    got = live_payload("shop", _pred(), INSTANCE, SHAPE, "3")
    assert got == (
        b'{"customer_id":"c1","context":"app","items":[{"product_id":"p1","score":0.5}],'
        b'"model":"shop","model_version":"3","scored_at":"2026-01-01T00:00:00Z","source":"live"}'
    )
    assert isinstance(live_payload("shop", _pred(model_version="7"), INSTANCE, SHAPE, ""), bytes)


@pytest.mark.parametrize(
    "pred",
    [
        [1, 2],
        _pred(customer_id="c2"),
        _pred(context="web"),
        _pred(model_version="999"),
        _pred(items="p1"),
        _pred(items=[1, 2]),
        _pred(dataset_version="FAKE"),
        _pred(age_s=-5),
        _pred(source="precomputed"),
        {**_pred(), "extra": 1},  # "source" not last: a hit on it would not say written_back
        _pred(items=[{"product_id": "p1", "score": float("nan")}]),
        _pred(items=[{"product_id": "x" * MAX_LIVE_PAYLOAD_BYTES, "score": 0.5}]),
        {"customer_id": "c1", "error": ["not", "a", "code"]},
        {"customer_id": "c1", "error": {"code": "x"}},
    ],
)
def test_what_the_fallback_should_not_answer_is_unusable_never_served(pred: Any) -> None:
    assert isinstance(live_payload("shop", pred, INSTANCE, SHAPE, "3"), Unusable)


def test_a_per_key_error_is_no_answer_or_an_input_that_cannot_be_used() -> None:
    missing = {"customer_id": "c1", "error": "not_found", "message": "no row"}
    assert live_payload("shop", missing, INSTANCE, SHAPE, "3") is None
    broken = {"customer_id": "c1", "error": "bad_image", "message": "not an image"}
    assert isinstance(live_payload("shop", broken, INSTANCE, SHAPE, "3"), Unscorable)
    unfed = {"customer_id": "c1", "error": "invalid_features", "message": "input 'r': ..."}
    assert isinstance(live_payload("shop", unfed, INSTANCE, SHAPE, "3"), Unscorable)
