"""Compact ranking payloads: pinned bytes, and decoded to exactly the JSON codec writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prescore.encoding import codec, compact
from prescore.encoding.codec import PayloadShape, encode_payload
from prescore.encoding.keys import entity_key
from prescore.encoding.ranking_payloads import RankingPayloads

SHAPE = PayloadShape("user_id", "items", "hotel_id")
RUN = dict(model="reco", model_version="7", scored_at="2026-12-01T10:00:00Z")


def _encoder(n_items: int, context: str | None = None, frame_id: int = 0) -> RankingPayloads:
    ids = [f"h{i}" for i in range(n_items)]
    extras = [{"name": f'Hôtel "{i}"', "stars": i % 5} for i in range(n_items)]
    return RankingPayloads(
        SHAPE, ids, **RUN, context=context, item_extras=extras, frame_id=frame_id
    )


def test_pinned_bytes() -> None:
    assert compact.encode(0, [1, 2], [5000, 1]) == bytes.fromhex("01000100020088130100")
    assert compact.encode(3, [70000], [10000]) == bytes.fromhex("0203701101001027")


def _grid(rng: np.random.Generator, users: int, n_items: int, k: int) -> tuple:
    items = rng.integers(0, n_items, (users, k))
    scores = np.sort(rng.random((users, k)), axis=1)[:, ::-1]
    found = rng.integers(1, k + 1, users)
    return items, scores, found


@pytest.mark.parametrize(
    "n_items,context", [(50, None), (50, "summer-sat"), (50, "a|b\\c"), (70_000, None)]
)
def test_decoded_compact_equals_the_json(n_items: int, context: str | None) -> None:
    rng = np.random.default_rng(n_items)
    enc = _encoder(n_items, context, frame_id=2)
    keys = [f"u{i}" if i % 2 else f"ü\\|{i}" for i in range(40)]  # key texts, escapes and all
    items, scores, found = _grid(rng, len(keys), n_items, 10)
    stored = enc.encode_compact(keys, items, scores, found)
    fields = compact.frames_to_fields({2: enc.frame()})  # as stored, and loaded
    frames = compact.frames_from_fields(fields[compact.HEADS], fields)
    for u, key in enumerate(keys):
        assert compact.is_compact(stored[u])
        n = int(found[u])
        mine = items[u, :n].tolist()
        want = encode_payload(
            SHAPE,
            key,
            zip([f"h{i}" for i in mine], scores[u, :n].tolist(), strict=True),
            **RUN,
            context=context,
            extras=[{"name": f'Hôtel "{i}"', "stars": i % 5} for i in mine],
        )
        store_key = entity_key(key, context)  # a context's own "|" is escaped in it
        assert compact.decode(stored[u], store_key, frames) == want
    assert max(map(len, stored)) <= 2 + 10 * (4 + 2)


def test_a_score_only_python_rounds_stays_json() -> None:
    enc = _encoder(5)
    items = np.array([[1, 2], [3, 4]])
    scores = np.array([[0.9, 0.00005], [0.7, 0.6]])  # a rounding tie; and plain ticks
    stored = enc.encode_compact(["a", "b"], items, scores, np.array([2, 2]))
    assert stored[0] == enc.encode_grid(["a"], items[:1], scores[:1], np.array([2]))[0]
    assert stored[0][:1] == b"{" and compact.is_compact(stored[1])
    over_one = enc.encode_compact(["c"], np.array([[0]]), np.array([[1.5]]), np.array([1]))
    assert over_one[0][:1] == b"{"


def test_a_missing_frame_is_an_error_not_a_wrong_answer() -> None:
    raw = compact.encode(1, [0], [1])
    with pytest.raises(ValueError, match="no frame"):
        compact.decode(raw, "u1", {0: _encoder(3).frame()})


def test_frames_store_a_runs_shared_items_once_in_bounded_fields() -> None:
    n_items = 2 * compact.ENTRIES_PER_FIELD + 5
    plain, summer = _encoder(n_items, None, 0), _encoder(n_items, "summer-sat", 1)
    fields = compact.frames_to_fields({0: plain.frame(), 1: summer.frame()})
    assert sorted(fields) == ["entries:0:0", "entries:0:1", "entries:0:2", "heads"]
    assert compact.entry_fields(fields["heads"]) == ["entries:0:0", "entries:0:1", "entries:0:2"]
    loaded = compact.frames_from_fields(fields["heads"], fields)
    assert loaded == {0: plain.frame(), 1: summer.frame()}
    assert loaded[0].entries is loaded[1].entries  # one copy in the lookup's memory too
    with pytest.raises(KeyError):
        compact.frames_from_fields(fields["heads"], {"entries:0:0": fields["entries:0:0"]})


@pytest.mark.parametrize("limit", [None, 1, 3, 10, 50])
def test_decoded_into_an_answer_equals_the_json_cut_and_enveloped(limit: int | None) -> None:
    """The lookup decodes straight into its answer: the same bytes as cutting the JSON
    (as lookup.render.cut does, by decoding and dumping) and splicing the fields in front."""
    rng = np.random.default_rng(7)
    enc = _encoder(50)
    keys = [f"u{i}" for i in range(30)] + ['u-"quoted"\\', "ü-1"]
    items, scores, found = _grid(rng, len(keys), 50, 10)
    found[0] = 0  # a user with no entries
    frames = {0: enc.frame()}
    opening = codec.opening("precomputed", "20261201T100000.000Z-abcdef") + b'"age_s":3,'
    for u, (key, stored) in enumerate(
        zip(keys, enc.encode_compact(keys, items, scores, found), strict=True)
    ):
        doc = json.loads(compact.decode(stored, key, frames))
        if limit is not None:
            doc["items"] = doc["items"][:limit]
        want = codec.envelope(
            codec.dumps(doc), dataset_version="20261201T100000.000Z-abcdef", fields=b'"age_s":3,'
        )
        assert compact.decode(stored, key, frames, opening, limit) == want, u
