"""A version of compact payloads answers exactly what the same data stored as JSON does.

The lookup decodes compact payloads straight into a batch's answers where an answer needs
nothing but decoding, and through the general path otherwise (a score floor, a context it
fell back from, a stale answer). Both are checked here against the JSON layout, over
batches and single lookups, through the app on a real Redis."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.encoding.ranking_payloads import RankingPayloads
from prescore.settings import Settings
from prescore.store import values
from prescore.store.versions import Versions, write_payloads
from tests.lookup_helpers import SHOP, served_settings

USERS = [f"c{i}" for i in range(12)]
IN_CONTEXT = USERS[:5]  # the others have only their plain entry: a context falls back


def _publish(rclient, core: Settings, compact: bool, scored_at: str) -> str:
    """The same rankings as a new version of shop: compact payloads with their frames, or
    JSON; five users also scored in the context ``weekend``."""
    items = [f"p{i}" for i in range(40)]
    extras = [{"name": f"Hôtel {i}"} for i in range(40)]
    run = dict(model="shop", model_version="m1", scored_at=scored_at, item_extras=extras)
    plain = RankingPayloads(SHOP, items, **run)  # type: ignore[arg-type]
    weekend = RankingPayloads(SHOP, items, **run, context="weekend", frame_id=1)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    rows: list[tuple[str, bytes]] = []
    for enc, names, suffix in ((plain, USERS, ""), (weekend, IN_CONTEXT, "|weekend")):
        grid = rng.integers(0, 40, (len(names), 8))
        scores = np.sort(rng.random((len(names), 8)), axis=1)[:, ::-1]
        found = np.array([8, 0, *rng.integers(1, 9, len(names) - 2)])
        stored_keys = [n + suffix for n in names]
        made = (enc.encode_compact if compact else enc.encode_grid)(names, grid, scores, found)
        rows += zip(stored_keys, made, strict=True)
    versions = Versions(rclient, "shop", core.store)
    info = versions.begin("shop", "m1", expected_keys=len(rows))
    if compact:
        frames = {0: plain.frame(), 1: weekend.frame()}
        values.write_frames(rclient, versions.placed(info.version), frames)
    versions.publish(info.version, write_payloads(rclient, "shop", info.version, rows))
    return info.version


REQUESTS = [
    {},
    {"k": 3},
    {"k": 1, "limit": 2},
    {"min_score": 0.5},
    {"k": 2, "min_score": 0.3},
    {"context": "weekend"},
    {"context": "weekend", "k": 2},
    {"context": "weekend", "min_score": 0.4},
]


def _answers(api: FlaskClient, version: str) -> list[str]:
    """Every request's answers, batch and single, with the version and ages blanked."""
    out = []
    for params in REQUESTS:
        batch = api.post("/v1/picks:batchGet", json={"customer_ids": USERS, **params})
        assert batch.status_code == 200, batch.get_json()
        out.append(batch.get_data(as_text=True))
        for user in USERS[:3] + USERS[-2:]:
            query = "&".join(f"{k}={v}" for k, v in params.items())
            single = api.get(f"/v1/picks/{user}?{query}")
            assert single.status_code == 200
            out.append(single.get_data(as_text=True))
    return [re.sub(r'"age_s":\d+', '"age_s":N', a.replace(version, "V")) for a in out]


@pytest.mark.parametrize("max_age_s", [None, 60])  # 60: every answer is stale
def test_compact_versions_answer_what_json_versions_do(
    rclient, settings: Settings, tmp_path: Path, max_age_s: int | None
) -> None:
    core = served_settings(settings, tmp_path / "var")
    if max_age_s is not None:
        shop = dataclasses.replace(core.catalog.get("shop"), max_age_s=max_age_s)
        declared = {**core.catalog.datasets, "shop": shop}
        catalog = dataclasses.replace(core.catalog, datasets=declared)
        core = dataclasses.replace(core, catalog=catalog)
    app = create_app(LookupSettings(core=core, pointer_cache_s=0))
    api = app.test_client()
    scored_at = "2026-11-24T10:00:00Z"
    as_json = _publish(rclient, core, compact=False, scored_at=scored_at)
    want = _answers(api, as_json)
    as_compact = _publish(rclient, core, compact=True, scored_at=scored_at)
    got = _answers(api, as_compact)
    assert got == want
    assert ('"stale":true' in got[0]) == (max_age_s is not None)
    service = app.extensions["lookup"]
    served, general = [], service._served
    service._served = lambda spec, key, *rest: served.append(key) or general(spec, key, *rest)
    api.post("/v1/picks:batchGet", json={"customer_ids": USERS})
    # fresh compact hits are decoded straight into the answer; stale ones go the whole way
    assert served == ([] if max_age_s is None else USERS)
    in_context = got[REQUESTS.index({"context": "weekend"}) * 6]  # its batch
    assert '"context_fallback":true' in in_context  # the users scored only without it
    assert in_context.count('"items":[]') == 1 and '"customer_id":"c4"' in in_context


@pytest.mark.parametrize(
    "stored", [b"", b"\x01", b"\x01\x00\x09", b"\x01\x07\x00\x00\x01\x00", b"junk"]
)
def test_a_payload_not_as_written_is_a_503_never_a_500(
    rclient, settings: Settings, tmp_path: Path, stored: bytes
) -> None:
    """Bytes no encoder wrote (truncated, an unknown frame, neither JSON nor compact) are
    a clean 503 undecodable_payload on every path, and the other keys of a batch too."""
    core = served_settings(settings, tmp_path / "var")
    api = create_app(LookupSettings(core=core, pointer_cache_s=0)).test_client()
    version = _publish(rclient, core, compact=True, scored_at="2026-11-24T10:00:00Z")
    where = Versions(rclient, "shop", core.store).placed(version)
    values.write(rclient, where, [("c3", stored)])
    for r in (
        api.get("/v1/picks/c3"),
        api.get("/v1/picks/c3?min_score=0.2"),
        api.post("/v1/picks:batchGet", json={"customer_ids": ["c2", "c3"]}),
        api.post("/v1/picks:batchGet", json={"customer_ids": ["c3"], "min_score": 0.1}),
    ):
        assert r.status_code == 503, r.get_data()
        assert r.get_json()["error"] == "undecodable_payload"
    assert api.get("/v1/picks/c2").status_code == 200
