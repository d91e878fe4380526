"""Demo data: users, hotels, contexts and booking events from a hidden preference model.

Bookings are drawn from a preference model that the generated files never show: each
user's taste for price, stars and amenities follows their (visible) country, language and
device plus personal noise; each hotel has a hidden quality; seasons and weekends shift
the taste for pools, beaches and spas. A model that learns those links from the visible
features beats a popularity ranking on held-out events, which is the point of the demo.

    python -m examples.hotels.datagen --out var/data --users 3000 --hotels 600 --seed 7

Writes users.parquet, hotels.parquet, contexts.parquet, events_train.parquet and
events_test.parquet (split by event date: the last ``test_days`` are held out).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

COUNTRIES = ("nl", "de", "gb", "fr", "es", "it", "us", "jp")
LANGUAGES = ("nl", "de", "en", "fr", "es", "it", "ja")
DEVICES = ("desktop", "mobile", "tablet")
AMENITIES = ("pool", "beach", "spa", "gym", "wifi", "parking", "breakfast", "pets")
SEASONS = ("winter", "spring", "summer", "autumn")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
START = date(2026, 6, 1)


@dataclass(frozen=True)
class Sizes:
    users: int = 3000
    hotels: int = 600
    regions: int = 20
    impressions_per_user: int = 50
    days: int = 60
    test_days: int = 12


def _users(rng: np.random.Generator, n: int, regions: int) -> pd.DataFrame:
    country = rng.integers(0, len(COUNTRIES), n)
    # language mostly follows country, so both carry signal
    lang_of_country = np.array([0, 1, 2, 3, 4, 5, 2, 6])
    language = np.where(
        rng.random(n) < 0.8, lang_of_country[country], rng.integers(0, len(LANGUAGES), n)
    )
    n_regions = rng.integers(1, 4, n)
    home = rng.integers(0, regions, n)
    regions_of_interest = [
        sorted({f"r{(h + k * 7) % regions}" for k in range(m)})
        for h, m in zip(home, n_regions, strict=True)
    ]
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "country": [COUNTRIES[c] for c in country],
            "language": [LANGUAGES[x] for x in language],
            "device": [DEVICES[d] for d in rng.choice(len(DEVICES), n, p=[0.45, 0.45, 0.10])],
            "regions": regions_of_interest,
        }
    )


def _hotels(rng: np.random.Generator, n: int, regions: int) -> pd.DataFrame:
    stars = rng.integers(1, 6, n)
    price = np.round(np.exp(rng.normal(3.6 + 0.35 * stars, 0.3)), 2)
    amenities = rng.random((n, len(AMENITIES))) < np.array(
        [0.3, 0.25, 0.2, 0.4, 0.9, 0.6, 0.5, 0.2]
    )
    return pd.DataFrame(
        {
            "hotel_id": [f"h{i}" for i in range(n)],
            "region": [f"r{r}" for r in rng.integers(0, regions, n)],
            "price": price,
            "stars": stars,
            "amenities": [
                [a for a, on in zip(AMENITIES, row, strict=True) if on] for row in amenities
            ],
        }
    )


def _contexts() -> pd.DataFrame:
    rows = [(f"{s}-{d}", s, d) for s in SEASONS for d in DAYS]
    return pd.DataFrame(rows, columns=["context", "season", "day"])


class HiddenTaste:
    """The preference model bookings are drawn from; never written out."""

    def __init__(self, rng: np.random.Generator, users: pd.DataFrame, hotels: pd.DataFrame) -> None:
        n_users, n_am = len(users), len(AMENITIES)
        country = users["country"].map({c: i for i, c in enumerate(COUNTRIES)}).to_numpy()
        language = users["language"].map({c: i for i, c in enumerate(LANGUAGES)}).to_numpy()
        mobile = (users["device"] == "mobile").to_numpy()
        price_base = rng.normal(1.0, 0.6, len(COUNTRIES))
        self.price_sens = price_base[country] + 0.5 * mobile + rng.normal(0, 0.2, n_users)
        self.star_pref = rng.normal(0.3, 0.3, len(COUNTRIES))[country] - 0.2 * mobile
        amenity_by_lang = rng.normal(0, 0.8, (len(LANGUAGES), n_am))
        self.amenity_pref = amenity_by_lang[language] + rng.normal(0, 0.3, (n_users, n_am))
        self.quality = rng.normal(0, 0.5, len(hotels))
        self.log_price = np.log(hotels["price"].to_numpy())
        self.stars = hotels["stars"].to_numpy()
        self.amen = np.array(
            [[a in set(lst) for a in AMENITIES] for lst in hotels["amenities"]], float
        )

    def utility(
        self, u: np.ndarray, h: np.ndarray, season: np.ndarray, day: np.ndarray
    ) -> np.ndarray:
        summer = (season == 2).astype(float)
        winter = (season == 0).astype(float)
        weekend = (day >= 5).astype(float)
        amen = self.amen[h]
        seasonal = (
            1.2 * summer * (amen[:, 0] + amen[:, 1])
            + 1.0 * winter * amen[:, 2]
            + 0.6 * weekend * amen[:, 2]
        )
        return (
            self.quality[h]
            + self.star_pref[u] * (self.stars[h] - 3)
            - self.price_sens[u] * (self.log_price[h] - 4.6)
            + (self.amenity_pref[u] * amen).sum(axis=1) * 0.6
            + seasonal
        )


def _events(
    rng: np.random.Generator, users: pd.DataFrame, hotels: pd.DataFrame, sizes: Sizes
) -> pd.DataFrame:
    taste = HiddenTaste(rng, users, hotels)
    by_region = hotels.groupby("region").indices
    per_user = sizes.impressions_per_user
    u = np.repeat(np.arange(len(users)), per_user)
    h = np.empty_like(u)
    for i, regions in enumerate(users["regions"]):
        pool = np.concatenate([by_region.get(r, np.array([], int)) for r in regions])
        if len(pool) == 0:
            pool = np.arange(len(hotels))
        h[i * per_user : (i + 1) * per_user] = rng.choice(pool, per_user)
    day_offset = rng.integers(0, sizes.days, len(u))
    dates = np.array([START + timedelta(days=int(d)) for d in range(sizes.days)])[day_offset]
    day = np.array([d.weekday() for d in dates])
    season = rng.integers(0, len(SEASONS), len(u))  # the trip's season, not the search date's
    p = 1.0 / (1.0 + np.exp(-(taste.utility(u, h, season, day) - 2.0)))
    booked = rng.random(len(u)) < p
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[u],
            "hotel_id": hotels["hotel_id"].to_numpy()[h],
            "context": [f"{SEASONS[s]}-{DAYS[d]}" for s, d in zip(season, day, strict=True)],
            "date": dates,
            "booked": booked.astype("int8"),
        }
    )


def generate(out: Path, sizes: Sizes = Sizes(), seed: int = 7) -> dict[str, int]:
    """Write the demo data set under ``out``; returns row counts."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    users = _users(rng, sizes.users, sizes.regions)
    hotels = _hotels(rng, sizes.hotels, sizes.regions)
    events = _events(rng, users, hotels, sizes)
    split = START + timedelta(days=sizes.days - sizes.test_days)
    train, test = events[events["date"] < split], events[events["date"] >= split]
    frames = {
        "users": users,
        "hotels": hotels,
        "contexts": _contexts(),
        "events_train": train,
        "events_test": test,
    }
    for name, frame in frames.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / f"{name}.parquet")
    return {name: len(frame) for name, frame in frames.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/data"))
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--hotels", type=int, default=Sizes.hotels)
    parser.add_argument("--regions", type=int, default=Sizes.regions)
    parser.add_argument("--impressions", type=int, default=Sizes.impressions_per_user)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = generate(
        args.out, Sizes(args.users, args.hotels, args.regions, args.impressions), args.seed
    )
    booked = pq.read_table(args.out / "events_train.parquet").column("booked").to_numpy().mean()
    print(
        f"wrote {args.out}: "
        + ", ".join(f"{k}={v}" for k, v in counts.items())
        + f"; train booking rate {booked:.3f}; {time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
