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
import pandas as pd

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


def _hotel_rows(meta: dict[str, Any], schema: Any) -> tuple[dict[str, int], np.ndarray]:
    """Every hotel's encoded block, once per table and schema (most of a row's width)."""
    from prescore.reco_features import hotel_block

    hotels = _table(meta, "hotels")
    key = f"{_data_dir(meta)}#{id(hotels)}#{hash(schema)}"
    found = _tables.get(key)
    if found is None:
        index = {str(h): i for i, h in enumerate(hotels.index)}
        found = _tables[key] = (index, hotel_block(hotels, schema))
    return found


def request_matrix(
    meta: dict[str, Any], user: dict[str, Any], context: str | None, hotel_ids: list[str]
) -> np.ndarray:
    """The model's input rows for one user and context over ``hotel_ids``."""
    from prescore.reco_features import Schema, assemble, context_block, user_block

    schema = Schema.from_dict(meta["schema"])
    index, hotel_rows = _hotel_rows(meta, schema)
    unknown = [h for h in hotel_ids if h not in index]
    if unknown:
        raise InvalidInput(f"unknown hotel ids: {', '.join(unknown[:5])}", code="invalid_id")
    info = _user(meta, user)
    picked = [index[h] for h in hotel_ids]
    n = len(picked)
    regions = _table(meta, "hotels")["region"].to_numpy()[picked]
    match = np.isin(regions, info["regions"]).astype(np.float32)[:, None]
    users = np.repeat(user_block(pd.DataFrame([info]), schema), n, axis=0)
    contexts = np.repeat(context_block([context], schema), n, axis=0)
    return assemble(users, hotel_rows[picked], contexts, match)


def warm(meta: dict[str, Any]) -> None:
    """Read the tables and encode the hotels now, at load time, not on the first request."""
    from prescore.reco_features import Schema

    _table(meta, "users")
    _hotel_rows(meta, Schema.from_dict(meta["schema"]))
