"""Recommendation features (numpy only): users x hotels x context -> one float32 matrix.

The schema (vocabularies, scaling) is learnt from training data and stored in model.json,
so the bulk job and the live fallback build exactly the matrix the model was trained on.
Every vocabulary has slot 0 for "unknown", so an unseen country, hotel region or a
missing context still encodes; the model is trained with some contexts blanked out, so
scoring without a context is meaningful.

Layout of a row: user block | hotel block | context block | region match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

UNKNOWN = "?"


@dataclass(frozen=True)
class Schema:
    countries: tuple[str, ...]
    languages: tuple[str, ...]
    devices: tuple[str, ...]
    regions: tuple[str, ...]
    amenities: tuple[str, ...]
    seasons: tuple[str, ...]
    days: tuple[str, ...]
    log_price_mean: float
    log_price_std: float

    @property
    def width(self) -> int:
        vocab = (
            self.countries,
            self.languages,
            self.devices,
            self.regions,
            self.regions,
            self.seasons,
            self.days,
        )
        return sum(len(v) + 1 for v in vocab) + len(self.amenities) + 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Schema:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        return cls(**fields)

    @classmethod
    def fit(cls, users: pd.DataFrame, hotels: pd.DataFrame, contexts: pd.DataFrame) -> Schema:
        """Learn vocabularies and scaling from the training tables."""
        log_price = np.log(hotels["price"].to_numpy(dtype=np.float64))
        regions = sorted(set(hotels["region"]) | {r for rs in users["regions"] for r in rs})
        return cls(
            countries=tuple(sorted(set(users["country"]))),
            languages=tuple(sorted(set(users["language"]))),
            devices=tuple(sorted(set(users["device"]))),
            regions=tuple(regions),
            amenities=tuple(sorted({a for lst in hotels["amenities"] for a in lst})),
            seasons=tuple(sorted(set(contexts["season"]))),
            days=tuple(sorted(set(contexts["day"]))),
            log_price_mean=float(log_price.mean()),
            log_price_std=float(log_price.std() or 1.0),
        )


def _slots(values: Iterable[Any], vocab: Sequence[str], offset: int) -> np.ndarray:
    """Column of each value in a block whose vocabulary starts at ``offset``; -1: unknown."""
    index = {v: i + offset for i, v in enumerate(vocab)}
    return np.fromiter((index.get(v, -1) for v in values), np.intp)


def _one_hot(values: Sequence[Any], vocab: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(values), len(vocab) + 1), np.float32)
    out[np.arange(len(values)), np.maximum(_slots(values, vocab, 1), 0)] = 1.0  # unknown: 0
    return out


def _multi_hot(lists: Sequence[Sequence[str]], vocab: Sequence[str], unknown: bool) -> np.ndarray:
    """Flags of the items of each list; an unknown item sets slot 0 if there is one."""
    offset = 1 if unknown else 0
    out = np.zeros((len(lists), len(vocab) + offset), np.float32)
    rows = np.repeat(np.arange(len(lists)), np.fromiter(map(len, lists), np.intp, len(lists)))
    cols = _slots(chain.from_iterable(lists), vocab, offset)
    if unknown:
        cols = np.maximum(cols, 0)
    known = cols >= 0  # without an unknown slot, an unknown item sets nothing
    out[rows[known], cols[known]] = 1.0
    return out


def user_block(users: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Per-user features; ``users`` has country, language, device, regions."""
    return np.hstack(
        [
            _one_hot(list(users["country"]), schema.countries),
            _one_hot(list(users["language"]), schema.languages),
            _one_hot(list(users["device"]), schema.devices),
            _multi_hot(list(users["regions"]), schema.regions, unknown=True),
        ]
    )


def hotel_block(hotels: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Per-hotel features; ``hotels`` has region, price, stars, amenities."""
    log_price = np.log(hotels["price"].to_numpy(dtype=np.float64))
    scaled = ((log_price - schema.log_price_mean) / schema.log_price_std).astype(np.float32)
    stars = ((hotels["stars"].to_numpy(dtype=np.float32) - 3.0) / 2.0).astype(np.float32)
    return np.hstack(
        [
            _one_hot(list(hotels["region"]), schema.regions),
            _multi_hot([list(a) for a in hotels["amenities"]], schema.amenities, unknown=False),
            scaled[:, None],
            stars[:, None],
        ]
    )


def context_block(contexts: Sequence[str | None], schema: Schema) -> np.ndarray:
    """``"summer-sat"`` -> season and day one-hots; None or unknown -> the unknown slots."""
    seasons, days = [], []
    for ctx in contexts:
        season, _, day = (ctx or "").partition("-")
        seasons.append(season or UNKNOWN)
        days.append(day or UNKNOWN)
    return np.hstack([_one_hot(seasons, schema.seasons), _one_hot(days, schema.days)])


def region_match(users: pd.DataFrame, hotels: pd.DataFrame) -> np.ndarray:
    """1.0 where the hotel's region is one of the user's regions (pairwise rows)."""
    return np.array(
        [r in set(rs) for rs, r in zip(users["regions"], hotels["region"], strict=True)],
        np.float32,
    )[:, None]


def assemble(
    users: np.ndarray, hotels: np.ndarray, contexts: np.ndarray, match: np.ndarray
) -> np.ndarray:
    """Rows of already-encoded blocks, aligned pair by pair, as the model's input."""
    return np.ascontiguousarray(np.hstack([users, hotels, contexts, match]), dtype=np.float32)


def encode(
    users: pd.DataFrame,
    hotels: pd.DataFrame,
    contexts: Sequence[str | None],
    schema: Schema,
) -> np.ndarray:
    """Pairwise rows: ``users``, ``hotels`` and ``contexts`` are aligned, one row a pair."""
    return assemble(
        user_block(users, schema),
        hotel_block(hotels, schema),
        context_block(contexts, schema),
        region_match(users, hotels),
    )
