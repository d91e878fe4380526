"""The fallback answering a ranking dataset of a team's own (the shop, tests.domains) the
way the bulk job does: the same top k from the same model, plain or factored, in every
runtime that agrees with TensorFlow; any candidate rule, contexts, a composite key; its
entity table read again while it serves; a bounded cache of model versions. Real
TensorFlow, real local Spark for the bulk job, real Redis."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from fallback.app import create_app
from fallback.settings import FallbackSettings
from jobs.score import parse_args, run_job
from prescore.models.store import ModelStore
from prescore.settings import Settings
from tests import fallback_domains as fd
from tests.frames import read_frame, write_frame
from tests.helpers import registered, stored_payload

PREDICT = "/v1/datasets/shop:predict"
SAMPLE = [f"c{i}" for i in range(0, 300, 9)]


def _app(s: Settings, runtime: str = "tf") -> Any:
    return create_app(FallbackSettings(core=s, runtime=runtime), watch=False)


def _client(s: Settings, runtime: str = "tf") -> Any:
    return _app(s, runtime).test_client()


def _live(client: Any, keys_: list[str], dataset: str = "shop", **body: Any) -> list[dict]:
    reply = client.post(
        f"/v1/datasets/{dataset}:predict",
        json={"instances": [{"key": k} for k in keys_], **body},
    )
    assert reply.status_code == 200, reply.get_json()
    return list(reply.get_json()["predictions"])


@pytest.fixture()
def shop_settings(settings: Settings, shop: dict[str, Path], tmp_path: Path) -> Settings:
    config = fd.write_config(tmp_path / "prescore.toml", tables=shop["tables"], factored=True)
    return fd.store_settings(settings, config, tmp_path)


@pytest.mark.parametrize("export", ["plain", "factored"])
def test_live_answers_equal_the_bulk_jobs_scoring_of_the_same_model(
    spark: Any, shop_settings: Settings, shop: dict[str, Path], rclient: redis.Redis, export: str
) -> None:
    registered(shop_settings, "shop-model", shop[export])
    summary = run_job(spark, parse_args(["--dataset", "shop"]), shop_settings)
    live = _live(_client(shop_settings), SAMPLE)
    for key, payload in zip(SAMPLE, live, strict=True):
        stored = json.loads(stored_payload(rclient, "shop", summary.version, key) or b"")
        assert payload["source"] == "live" and "source" not in stored
        assert {k: v for k, v in payload.items() if k not in ("source", "scored_at", "items")} == {
            k: v for k, v in stored.items() if k not in ("scored_at", "items")
        }
        assert [i["product_id"] for i in payload["items"]] == [
            i["product_id"] for i in stored["items"]
        ]
        assert [i["score"] for i in payload["items"]] == pytest.approx(
            [i["score"] for i in stored["items"]], abs=1.5e-4
        )
        for a, b in zip(payload["items"], stored["items"], strict=True):
            assert list(a) == list(b) and (a["name"], a["price"]) == (b["name"], b["price"])


def test_registration_records_the_int8_variant_or_why_not(
    shop_settings: Settings, shop: dict[str, Path]
) -> None:
    """The shop model's StringLookup may or may not convert to TFLite: either way the
    record says so truthfully, and what the fallback serves agrees with TensorFlow."""
    result = registered(shop_settings, "shop-model", shop["plain"], int8=True)
    ref = ModelStore(shop_settings.models).resolve("shop-model", result.version)
    quant = ref.meta["quantization"]
    assert quant == result.quantization
    tflite = [ref.path / "model_int8.tflite", ref.path / "model_float32.tflite"]
    tf_answer = _live(_client(shop_settings, runtime="tf"), SAMPLE)
    auto = _app(shop_settings, runtime="auto").extensions["fallback_slots"].get("shop")
    if not quant["built"]:
        assert quant["reason"] and not any(p.exists() for p in tflite)
        assert auto.runtime == "tf"  # what does not convert is served by TensorFlow
        return
    assert auto.runtime == quant["fastest"]  # auto: the fastest measured at registration
    # each variant stands alone: one that did not build says why, and has no file
    built = set(quant["runtimes"]) - {"tf"}
    assert built | set(quant.get("not_built", {})) == {"float32", "int8"} and "float32" in built
    assert all((ref.path / f"model_{r}.tflite").stat().st_size > 0 for r in built)
    assert not any(p.exists() for p in tflite if p.stem.removeprefix("model_") not in built)
    assert quant["fastest"] in quant["runtimes"]
    assert quant["runtimes"]["float32"]["max_abs_diff_vs_tf"] < 1e-4
    f32 = _live(_client(shop_settings, runtime="float32"), SAMPLE)
    for a, b in zip(tf_answer, f32, strict=True):
        assert [i["product_id"] for i in a["items"]] == [i["product_id"] for i in b["items"]]
        assert [i["score"] for i in a["items"]] == pytest.approx(
            [i["score"] for i in b["items"]], abs=2e-4
        )


def test_contexts_are_answered_and_an_unknown_one_is_a_per_instance_not_found(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    extra = '[datasets.shop.contexts]\nvalues = ["weekday", "weekend"]\n'
    config = fd.write_config(tmp_path / "p.toml", tables=shop["tables"], shop_extra=extra)
    s = fd.store_settings(settings, config, tmp_path)
    registered(s, "shop-model", shop["plain"])
    client = _client(s)
    reply = client.post(
        PREDICT,
        json={
            "instances": [
                {"key": "c2", "context": "weekend"},
                {"key": "c2"},
                {"key": "c2", "context": "holiday"},
                {
                    "key": "new",
                    "context": "weekday",
                    "features": {"segment": "budget", "categories": ["toys"]},
                },
            ]
        },
    )
    assert reply.status_code == 200, reply.get_json()
    weekend, plain, holiday, new = reply.get_json()["predictions"]
    assert list(weekend)[:2] == ["customer_id", "context"] and weekend["context"] == "weekend"
    assert "context" not in plain
    # the model takes no context input: the context changes the key, not the ranking
    assert weekend["items"] == plain["items"]
    assert (holiday["error"], holiday["customer_id"]) == ("not_found", "c2")
    assert new["context"] == "weekday" and len(new["items"]) == 5
    bad = client.post(PREDICT, json={"instances": [{"key": "c2", "context": "a\tb"}]})
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_id")
    odd = client.post(PREDICT, json={"instances": [{"key": "c2", "context": "a|b"}]})
    assert odd.status_code == 200  # any text may be a context; this one is not declared
    assert odd.get_json()["predictions"][0]["error"] == "not_found"


def test_every_product_is_a_candidate_under_the_all_rule(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    config = fd.write_config(tmp_path / "p.toml", tables=shop["tables"])
    text = config.read_text().replace(
        'rule = "match"\nentity_column = "categories"\nitem_column = "category"', 'rule = "all"'
    )
    config.write_text(text)
    s = fd.store_settings(settings, config, tmp_path)
    registered(s, "shop-model", shop["plain"])
    customers = fd.customers(shop["tables"])
    every = sorted(fd.products(shop["tables"])["category"].unique())
    for payload in _live(_client(s), ["c4", "c8"], k=10):
        c = customers.loc[payload["customer_id"]]
        want = fd.expected_top(shop["tables"], shop["plain"], c["segment"], every, 10)
        assert [i["product_id"] for i in payload["items"]] == [p for p, _ in want]


def test_a_candidate_table_and_a_composite_key(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    customers = read_frame(tables / "customers.parquet").head(30)
    customers["market"] = ["nl" if i % 2 else "de" for i in range(len(customers))]
    write_frame(customers, tables / "customers.parquet", index=False)
    picks = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "market": customers["market"],
            "picked": [["p1", "p2", "p3", "unknown-product"]] * len(customers),
        }
    )
    write_frame(picks.iloc[:-1], tables / "picks.parquet", index=False)  # the last has none
    config = fd.write_config(tmp_path / "p.toml", tables=tables)
    text = config.read_text().replace('key = "customer_id"', 'key = ["customer_id", "market"]')
    text = text.replace(
        'rule = "match"\nentity_column = "categories"\nitem_column = "category"',
        f'rule = "table"\npath = "{tables}/picks.parquet"\nkey = ["customer_id", "market"]\n'
        'items_column = "picked"',
    )
    config.write_text(text.split("[datasets.shop.training]")[0])
    s = fd.store_settings(settings, config, tmp_path)
    registered(s, "shop-model", shop["plain"])
    last = customers.iloc[-1]
    asked = ["c0|de", "c1|nl", "c1|de", f"{last['customer_id']}|{last['market']}"]
    preds = _live(_client(s), asked)
    assert [p["key"] for p in preds] == asked  # a composite key's field is "key"
    c0 = customers.set_index("customer_id").loc["c0"]
    prices = fd.products(tables).loc[["p1", "p2", "p3"], "price"].tolist()
    from tests import domains

    scores = domains.shop_scores(shop["plain"], c0["segment"], prices)
    want = [["p1", "p2", "p3"][i] for i in np.argsort(-scores, kind="stable")]
    assert [i["product_id"] for i in preds[0]["items"]] == want  # unknown-product dropped
    assert len(preds[1]["items"]) == 3
    assert preds[2]["error"] == "not_found"  # c1 is in market nl, not de
    assert preds[3]["error"] == "not_found"  # no row in the candidate table: no candidates
    client = _client(s)
    one_part = client.post(PREDICT, json={"instances": [{"key": "c0"}]})
    assert (one_part.status_code, one_part.get_json()["error"]) == (400, "invalid_id")


def test_an_entity_added_to_the_table_is_answered_at_once_and_a_bad_table_is_a_503(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    """Entity rows are read per request (fallback.keyed_rows), never held: a row added
    to the table answers the very next request, with no refresh to wait for; a table
    that cannot be read is 503 inputs_unavailable (no stale copy is kept) until fixed."""
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    config = fd.write_config(tmp_path / "p.toml", tables=tables)
    s = fd.store_settings(settings, config, tmp_path)
    registered(s, "shop-model", shop["plain"])
    app = create_app(  # tables refreshed once an hour: nothing here waits for a refresh
        FallbackSettings(core=s, runtime="tf", watch_interval_s=0.1, tables_refresh_s=3600)
    )
    client = app.test_client()
    try:
        first = client.post(PREDICT, json={"instances": [{"key": "c-new"}]}).get_json()
        assert first["predictions"][0]["error"] == "not_found"
        good = (tables / "customers.parquet").read_bytes()
        frame = read_frame(tables / "customers.parquet")
        added = pd.DataFrame(
            {"customer_id": ["c-new"], "segment": ["premium"], "categories": [["kitchen"]]}
        )
        write_frame(pd.concat([frame, added]), tables / "customers.parquet", index=False)
        doc = client.post(PREDICT, json={"instances": [{"key": "c-new"}]}).get_json()
        want = fd.expected_top(tables, shop["plain"], "premium", ["kitchen"], 5)
        assert [i["product_id"] for i in doc["predictions"][0]["items"]] == [p for p, _ in want]
        (tables / "customers.parquet").write_bytes(b"not parquet any more")
        broken = client.post(PREDICT, json={"instances": [{"key": "c-new"}, {"key": "c1"}]})
        assert (broken.status_code, broken.get_json()["error"]) == (503, "inputs_unavailable")
        assert str(tables) not in broken.get_data(as_text=True)  # the path goes to the log only
        sent = {"key": "c-x", "features": {"segment": "budget", "categories": ["toys"]}}
        assert client.post(PREDICT, json={"instances": [sent]}).status_code == 200
        (tables / "customers.parquet").write_bytes(good)
        again = client.post(PREDICT, json={"instances": [{"key": "c1"}]})
        assert again.status_code == 200 and "items" in again.get_json()["predictions"][0]
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["fallback_watcher"].stop()


def test_loaded_versions_are_bounded_and_the_promoted_one_stays(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    config = fd.write_config(tmp_path / "p.toml", tables=shop["tables"])
    s = fd.store_settings(settings, config, tmp_path)
    for _ in range(3):
        registered(s, "shop-model", shop["plain"], promote=False)
    ModelStore(s.models).promote("shop-model", "1")
    app = create_app(FallbackSettings(core=s, runtime="tf", models_kept=2), watch=False)
    client, slots = app.test_client(), app.extensions["fallback_slots"]

    def ask(version: str) -> dict:
        body = {"instances": [{"key": "c1"}], "model_version": version}
        for _ in range(200):
            reply = client.post(PREDICT, json=body)
            if reply.status_code == 200:
                return dict(reply.get_json())
            assert (reply.status_code, reply.get_json()["error"]) == (503, "model_loading")
            time.sleep(0.05)
        raise AssertionError(f"version {version} never loaded")

    assert slots.loaded()["shop"] == ["1"]
    for version in ("2", "3", "2", "1", "3"):
        assert ask(version)["model_version"] == version
        loaded = slots.loaded()["shop"]
        assert len(loaded) <= 2 and "1" in loaded and version in loaded
    assert sorted(slots.loaded()["shop"]) == ["1", "3"]
    assert (
        client.post(PREDICT, json={"instances": [{"key": "c1"}]}).get_json()["model_version"] == "1"
    )
