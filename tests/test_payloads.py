"""Golden tests: the bulk job's payload encoder writes exactly what prescore.encoding.codec
writes."""

from __future__ import annotations

import numpy as np

from prescore.encoding import codec
from prescore.encoding.ranking_payloads import RankingPayloads, json_strings, score_ticks

RUN = {"model": "reco", "model_version": "3", "scored_at": "2026-11-24T12:00:00Z"}
RECO = codec.PayloadShape("user_id", "items", "hotel_id")  # the demo's


def _both(hotels: list[str], picked: list[int], scores: np.ndarray, ctx: str | None) -> tuple:
    grid = np.asarray([picked], np.int64).reshape(1, len(picked))
    (fast,) = RankingPayloads(RECO, hotels, **RUN, context=ctx).encode_grid(
        ["u42"], grid, np.asarray(scores).reshape(1, -1), np.array([len(picked)])
    )
    slow = codec.encode_payload(
        RECO,
        "u42",
        [(hotels[h], s) for h, s in zip(picked, scores.tolist(), strict=True)],
        **RUN,
        context=ctx,
    )
    return fast, slow


def test_bytes_are_pinned() -> None:
    fast, slow = _both(["h3", "h7"], [1, 0], np.array([0.912345, 0.5]), None)
    assert (
        fast
        == slow
        == (
            b'{"user_id":"u42","items":[{"hotel_id":"h7","score":0.9123},'
            b'{"hotel_id":"h3","score":0.5}],"model":"reco","model_version":"3",'
            b'"scored_at":"2026-11-24T12:00:00Z"}'
        )
    )


def test_context_and_empty_lists_match_the_codec() -> None:
    assert _both(["h1"], [0], np.array([0.25]), "summer-sat")[0].count(b'"context":"summer-sat"')
    fast, slow = _both(["h1"], [], np.array([]), "summer-sat")
    assert fast == slow


def test_every_score_matches_pythons_round() -> None:
    rng = np.random.default_rng(7)
    scores = np.concatenate(
        [
            rng.random(20_000).astype(np.float32).astype(np.float64),
            np.arange(0, 10_001) / 10_000,  # every tick
            np.arange(0, 10_000) / 10_000 + 0.00005,  # every near-tie
            [
                0.03125,
                0.0,
                1.0,
                1.5,
                -0.25,
                1e-9,
                0.99995,
                0.00005,
                123.456789,
            ],  # exact ties, out of range
        ]
    )
    ticks = score_ticks(scores)
    assert (ticks == -1).any() and (ticks >= 0).mean() > 0.5  # both paths are taken
    hotels = [f"h{i}" for i in range(len(scores))]
    for start in range(0, len(scores), 997):
        picked = list(range(start, min(start + 997, len(scores))))
        fast, slow = _both(hotels, picked, scores[picked], None)
        assert fast == slow


def test_a_grid_with_ragged_rows_matches_the_codec_per_user() -> None:
    rng = np.random.default_rng(3)
    hotels = [f"h{i}" for i in range(50)]
    grid = rng.integers(0, 50, (6, 4))
    scores = np.sort(rng.random((6, 4)).astype(np.float32), axis=1)[:, ::-1]
    scores[2, 1] = 0.00005  # a near-tie, decided by Python's round
    found = np.array([4, 0, 2, 4, 1, 3])
    users = [f"u{i}" for i in range(6)]
    fast = RankingPayloads(RECO, hotels, **RUN, context="winter").encode_grid(
        users, grid, scores, found
    )
    slow = [
        codec.encode_payload(
            RECO,
            users[u],
            [(hotels[h], s) for h, s in zip(grid[u][:n], scores[u][:n].tolist(), strict=True)],
            **RUN,
            context="winter",
        )
        for u, n in enumerate(found)
    ]
    assert fast == slow and b'"items":[]' in fast[1]


def test_json_strings_match_the_codec_for_plain_and_odd_strings() -> None:
    plain = ["u1", "user_7.a-b", "x" * 128, "9"]
    odd = ['say "hi"', "back\\slash", "caf\u00e9", "nul\x00in", "\x01", "tab\t", "a/b", "\x7f"]
    for values in (plain, odd, plain + odd[:1], [], [""], ["a", ""]):
        assert json_strings(values).tolist() == [codec.dumps(v) for v in values]


def test_item_payload_columns_and_other_field_names_match_the_codec() -> None:
    shape = codec.PayloadShape("customer_id", "products", "sku")
    items = ["p1", "p2", "p3"]
    extras = [{"name": "Mug", "price": 7.5}, {"name": 'Tea "Gold"', "price": 3}, {}]
    grid = np.array([[2, 0, 1]])
    scores = np.array([[0.9, 0.4, 0.1]])
    (fast,) = RankingPayloads(shape, items, **RUN, item_extras=extras).encode_grid(
        ["c9"], grid, scores, np.array([3])
    )
    slow = codec.encode_payload(
        shape,
        "c9",
        [("p3", 0.9), ("p1", 0.4), ("p2", 0.1)],
        **RUN,
        extras=[extras[2], extras[0], extras[1]],
    )
    assert fast == slow
    assert fast.startswith(b'{"customer_id":"c9","products":[{"sku":"p3","score":0.9},')
    assert b'{"sku":"p1","name":"Mug","price":7.5,"score":0.4}' in fast
