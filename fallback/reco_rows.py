"""The featurizer of the ``reco`` model: one user x candidate hotels x context -> rows.

Rows are built by prescore.reco_features from the model's schema, exactly as the bulk job
builds them. The hotels table (and, for users known by id, the users table) is read from
the model's data directory: ``FALLBACK_DATA_DIR`` when set, else model.json
``data.path`` (the data it was trained on); each table is read once per process.

A user is the features sent (``country``, ``language``, ``device``, ``regions``; a missing
field is encoded as unknown), or, with no features, the row of ``user_id`` in the users
table; neither -> NotFound (a clear 404). Default candidates: the hotels of the user's
regions, as the bulk job scores them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from prescore.errors import InvalidInput, ModelStoreError, NotFound

_tables: dict[str, Any] = {}
_lock = threading.Lock()
USER_FIELDS = ("country", "language", "device", "regions")


def _data_dir(meta: dict[str, Any]) -> Path:
    served = (meta.get("serving") or {}).get("data_dir")
    path = served or (meta.get("data") or {}).get("path")
    if not path:
        raise ModelStoreError("reco model.json names no data directory (FALLBACK_DATA_DIR)")
    return Path(path)


def _table(meta: dict[str, Any], name: str) -> Any:
    path = str(_data_dir(meta) / f"{name}.parquet")
    found = _tables.get(path)
    if found is None:
        import pandas as pd

        with _lock:
            found = _tables.get(path)
            if found is None:
                try:
                    frame = pd.read_parquet(path)
                except (OSError, ValueError) as exc:
                    raise ModelStoreError(f"cannot read {path}: {exc}") from exc
                id_col = "hotel_id" if name == "hotels" else "user_id"
                found = _tables[path] = frame.set_index(id_col, drop=False)
    return found


def _user(meta: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    given = {k: user[k] for k in USER_FIELDS if k in user}
    if not given:
        users = _table(meta, "users")
        user_id = user["user_id"]
        if user_id not in users.index:
            raise NotFound(f"unknown user {user_id!r} and no features given", code="not_found")
        row = users.loc[user_id]
        given = {k: row[k] for k in USER_FIELDS}
    regions = given.get("regions", [])
    if isinstance(regions, str) or not all(isinstance(r, str) for r in list(regions)):
        raise InvalidInput("features.regions must be a list of strings", code="invalid_features")
    out: dict[str, Any] = {k: str(given.get(k, "?")) for k in ("country", "language", "device")}
    out["regions"] = [str(r) for r in regions]
    return out


def candidates(meta: dict[str, Any], user: dict[str, Any], context: str | None) -> list[str]:
    """The hotels of the user's regions of interest."""
    wanted = set(_user(meta, user)["regions"])
    hotels = _table(meta, "hotels")
    return [str(h) for h in hotels.index[hotels["region"].isin(wanted)]]


def request_matrix(
    meta: dict[str, Any], user: dict[str, Any], context: str | None, hotel_ids: list[str]
) -> np.ndarray:
    """The model's input rows for one user and context over ``hotel_ids``."""
    import pandas as pd

    from prescore.reco_features import Schema, encode

    schema = Schema.from_dict(meta["schema"])
    hotels = _table(meta, "hotels")
    unknown = [h for h in hotel_ids if h not in hotels.index]
    if unknown:
        raise InvalidInput(f"unknown hotel ids: {', '.join(unknown[:5])}", code="invalid_id")
    info = _user(meta, user)
    users = pd.DataFrame([info] * len(hotel_ids))
    pairs = hotels.loc[hotel_ids].reset_index(drop=True)
    return encode(users, pairs, [context] * len(hotel_ids), schema)
