"""The feature matrix, pinned column by column on a tiny schema (no I/O, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prescore.reco_features import Schema, encode

SCHEMA = Schema(
    countries=("de", "nl"),
    languages=("en",),
    devices=("app", "web"),
    regions=("r0", "r1"),
    amenities=("pool", "spa"),
    seasons=("summer",),
    days=("sat", "sun"),
    log_price_mean=float(np.log(100.0)),
    log_price_std=1.0,
)


def test_rows_pin_every_slot_including_unknowns() -> None:
    users = pd.DataFrame(
        {
            "country": ["nl", "zz"],
            "language": ["en", "fr"],
            "device": ["web", "app"],
            "regions": [["r1"], ["r0", "r9"]],
        }
    )
    hotels = pd.DataFrame(
        {
            "region": ["r1", "r7"],
            "price": [100.0, 100.0 * np.e],
            "stars": [5, 3],
            "amenities": [["spa", "pool"], ["sauna"]],  # sauna: no slot, sets nothing
        }
    )
    x = encode(users, hotels, ["summer-sun", None], SCHEMA)
    # user: country ?,de,nl | language ?,en | device ?,app,web | regions ?,r0,r1
    # hotel: region ?,r0,r1 | pool,spa | log price | stars; then season ?,summer |
    # day ?,sat,sun | region match
    expected = np.array(
        [
            [0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0.0, 1.0, 0, 1, 0, 0, 1, 1],
            [1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1.0, 0.0, 1, 0, 1, 0, 0, 0],
        ],
        np.float32,
    )
    assert x.shape == (2, SCHEMA.width) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, atol=1e-6)
