"""A second domain, declared and modelled inside the tests (customers x products, other
column names than the demo's, a two-input Keras model with a StringLookup inside), run
through the bulk job, the lookup and rollback with no code but its own model and
config. Real local Spark, real Redis, real TensorFlow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.score import parse_args, run_job
from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.api import Prescore
from prescore.errors import ConfigError, ModelMismatch
from prescore.settings import Settings
from prescore.store import deltas, values
from prescore.store.misslog import MissLog
from prescore.store.versions import Versions
from tests import domains
from tests.frames import read_frame, write_frame
from tests.helpers import registered, stored_payload, with_catalog


def _score(spark, s: Settings, *extra: str):  # type: ignore[no-untyped-def]
    return run_job(spark, parse_args(["--dataset", "shop", *extra]), s)


@pytest.fixture()
def shop_settings(settings: Settings, shop: dict[str, Path], tmp_path: Path) -> Settings:
    return with_catalog(settings, domains.shop_config(shop["tables"], tmp_path / "prescore.toml"))


def test_every_customer_gets_its_top_products_of_its_categories(
    spark, shop_settings, shop, rclient
) -> None:  # type: ignore[no-untyped-def]
    registered(shop_settings, "shop-model", shop["plain"])
    summary = _score(spark, shop_settings)
    customers = read_frame(shop["tables"] / "customers.parquet")
    products = read_frame(shop["tables"] / "products.parquet").set_index("product_id")
    assert summary.rows == len(customers)  # every customer has candidates in its categories
    v = Versions(rclient, "shop", shop_settings.store)
    info = v.get(v.current() or "")
    assert (info.status, info.model, info.model_version, info.rows) == (
        "published",
        "shop-model",
        "1",
        len(customers),
    )
    for _, c in customers.sample(20, random_state=2).iterrows():
        doc = json.loads(stored_payload(rclient, "shop", info.version, c["customer_id"]))
        assert set(doc) == {"customer_id", "items", "model", "model_version", "scored_at"}
        assert doc["customer_id"] == c["customer_id"] and len(doc["items"]) == 5
        mine = products[products["category"].isin(list(c["categories"]))]
        assert {i["product_id"] for i in doc["items"]} <= set(mine.index)
        # the model's own ranking of this customer's candidates
        expected = domains.shop_scores(shop["plain"], c["segment"], mine["price"].tolist())
        best = mine.index[np.argsort(-expected, kind="stable")[:5]].tolist()
        assert [i["product_id"] for i in doc["items"]] == best
        for entry in doc["items"]:  # the declared item payload columns, then the score
            assert list(entry) == ["product_id", "name", "price", "score"]
            assert entry["name"] == products.loc[entry["product_id"], "name"]


def test_factored_signatures_score_the_same_pairs_as_serving_default(
    spark, shop_settings, shop, rclient
) -> None:  # type: ignore[no-untyped-def]
    registered(shop_settings, "shop-model", shop["factored"])
    factored = _score(spark, shop_settings)
    per_pair = _score(spark, shop_settings, "--per-pair")
    assert factored.rows == per_pair.rows > 0
    ids = [f"c{i}" for i in range(0, 300, 7)]
    for cid in ids:
        a = json.loads(stored_payload(rclient, "shop", factored.version, cid))["items"]
        b = json.loads(stored_payload(rclient, "shop", per_pair.version, cid))["items"]
        assert [x["product_id"] for x in a] == [x["product_id"] for x in b]
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=2e-4)


def test_lookup_serves_the_shop_by_its_own_names_and_rolls_back(
    spark, shop_settings, shop, rclient
) -> None:  # type: ignore[no-untyped-def]
    registered(shop_settings, "shop-model", shop["plain"])
    first = _score(spark, shop_settings)
    second = _score(spark, shop_settings)
    app = create_app(LookupSettings(core=shop_settings, pointer_cache_s=0))
    client = app.test_client()
    one = client.get("/v1/picks/c3?k=2").get_json()  # its declared route
    assert one["source"] == "precomputed" and one["dataset_version"] == second.version
    assert one["customer_id"] == "c3" and len(one["items"]) == 2
    same = client.get("/v1/datasets/shop/c3?limit=2").get_json()
    assert same["items"] == one["items"]
    floor = one["items"][1]["score"]
    cut = client.get(f"/v1/datasets/shop/c3?min_score={floor}").get_json()
    assert all(i["score"] >= floor for i in cut["items"]) and len(cut["items"]) >= 2
    batch = client.post(
        "/v1/picks:batchGet", json={"keys": ["c1", "nobody", "c1"], "k": 1}
    ).get_json()
    assert [r["customer_id"] for r in batch["results"]] == ["c1", "nobody", "c1"]
    assert (batch["found"], batch["missing"], batch["results"][1]["error"]) == (2, 1, "not_found")
    v = Versions(rclient, "shop", shop_settings.store)
    back = v.rollback()
    assert back.version == first.version
    again = client.get("/v1/picks/c3?k=2").get_json()
    assert again["dataset_version"] == first.version


def test_a_missing_column_is_refused_before_anything_is_written(
    spark, settings, shop, rclient, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    s = with_catalog(settings, domains.shop_config(tables, tmp_path / "ok.toml"))
    registered(s, "shop-model", shop["plain"])  # fits the tables as they were
    products = read_frame(tables / "products.parquet").drop(columns=["name"])
    write_frame(products, tables / "products.parquet", index=False)
    with pytest.raises(ConfigError, match="dataset shop: items: no column 'name'"):
        _score(spark, s)
    customers = read_frame(tables / "customers.parquet").drop(columns=["segment"])
    write_frame(customers, tables / "customers.parquet", index=False)
    with pytest.raises(ModelMismatch, match="input 'segment'"):
        _score(spark, s)
    v = Versions(rclient, "shop", s.store)
    assert v.all() == [] and v.current() is None  # nothing was even begun


def test_explicit_candidate_table_and_a_composite_key(
    spark, settings, shop, rclient, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    customers = read_frame(tables / "customers.parquet").head(30)
    customers["market"] = ["nl" if i % 2 else "de" for i in range(len(customers))]
    # awkward ids: a part holding the separator, its escape, a ':' and a space
    customers.loc[[1, 2, 3], "customer_id"] = ["a|b", "x\\y", "ns:1 é"]
    write_frame(customers, tables / "customers.parquet", index=False)
    picks = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "market": customers["market"],
            "picked": [["p1", "p2", "p3", "unknown-product"]] * len(customers),
        }
    )
    write_frame(picks.iloc[:-1], tables / "picks.parquet", index=False)  # the last has none
    config = domains.shop_config(tables, tmp_path / "p.toml")
    text = config.read_text().replace('key = "customer_id"', 'key = ["customer_id", "market"]')
    text = text.replace(
        'rule = "match"\nentity_column = "categories"\nitem_column = "category"',
        f'rule = "table"\npath = "{tables}/picks.parquet"\nkey = ["customer_id", "market"]\n'
        'items_column = "picked"',
    )
    config.write_text(
        text.replace("[datasets.shop.training]", "[datasets.unused.training]").split(
            "[datasets.unused"
        )[0]
    )
    s = with_catalog(settings, config)
    registered(s, "shop-model", shop["plain"])
    misses = MissLog(rclient)
    misses.record("shop", ["x\\\\y|de", "nobody|nl"])
    summary = _score(spark, s)
    assert summary.rows == len(customers) - 1  # no candidates, no payload
    assert misses.all_keys("shop") == ["nobody|nl"]  # Spark spelled the key as the log did
    doc = json.loads(stored_payload(rclient, "shop", summary.version, "c0|de"))
    assert doc["key"] == "c0|de" and {i["product_id"] for i in doc["items"]} == {"p1", "p2", "p3"}
    for key in ("a\\|b|nl", "x\\\\y|de", "ns:1 é|nl"):  # each part escaped, then joined
        doc = json.loads(stored_payload(rclient, "shop", summary.version, key))
        assert doc["key"] == key and len(doc["items"]) == 3


def test_an_incremental_run_scores_just_the_keys_asked_into_a_delta(
    spark, shop_settings, shop, rclient, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """``--keys``, ``--where`` and ``--from-miss-log`` score only those customers, with
    the live version's model, and publish them as deltas read before the full version."""
    registered(shop_settings, "shop-model", shop["plain"])
    base = _score(spark, shop_settings)
    registered(shop_settings, "shop-model", shop["plain"])  # version 2, promoted
    asked = tmp_path / "k.parquet"
    write_frame(pd.DataFrame({"customer_id": ["c1", "c2", "nobody"]}), asked, index=False)
    by_keys = _score(spark, shop_settings, "--keys", str(asked))
    assert by_keys.rows == 2 and by_keys.delta_of == base.version
    customers = read_frame(shop["tables"] / "customers.parquet")
    segment = dict(zip(customers["customer_id"], customers["segment"], strict=True))
    cheap = next(c for c in segment if segment[c] == "budget" and c not in ("c1", "c2"))
    dear = next(c for c in segment if segment[c] != "budget" and c not in ("c1", "c2"))
    MissLog(rclient).record("shop", [cheap, dear])
    where = ["--where", "segment = 'budget'", "--from-miss-log"]
    chosen = _score(spark, shop_settings, *where)  # both: the budget customers among the missed
    assert chosen.rows == 1 and MissLog(rclient).all_keys("shop") == [dear]
    v = Versions(rclient, "shop", shop_settings.store)
    assert v.current() == base.version
    assert deltas.read(rclient, "shop")[1] == (chosen.version, by_keys.version)
    entry = v.get(by_keys.version)
    assert (entry.status, entry.model_version, entry.extra["chosen"]) == (
        "delta",
        "1",  # the live version's model, not the one promoted since
        f"--keys {asked}",
    )
    held = {c: values.held(rclient, v.placed(by_keys.version), [c]) for c in ("c1", "c4")}
    assert held == {"c1": ["c1"], "c4": []}
    api = create_app(LookupSettings(core=shop_settings, pointer_cache_s=0)).test_client()
    answers = [api.get(f"/v1/datasets/shop/{c}").get_json() for c in ("c1", cheap, dear)]
    assert [a["source"] for a in answers] == ["precomputed"] * 3
    with pytest.raises(ConfigError, match="--where: 'no_such_column = 1'"):
        _score(spark, shop_settings, "--where", "no_such_column = 1")
    with pytest.raises(ConfigError, match=r"--keys .*: not a parquet table"):
        _score(spark, shop_settings, "--keys", str(tmp_path / "none.parquet"))
    assert _score(spark, shop_settings, "--where", "segment = 'nobody'").version == ""
    # a new model's full run staged beside the live version, served by a canary, promoted
    with pytest.raises(ConfigError, match="--stage: an incremental run adds a delta"):
        _score(spark, shop_settings, "--stage", "--keys", str(asked))
    staged = _score(spark, shop_settings, "--stage")
    assert staged.staged and v.current() == base.version
    assert (v.get(staged.version).status, v.get(staged.version).model_version) == ("staged", "2")
    Prescore(settings=shop_settings).canary("shop", staged.version, 100)
    answer = api.get("/v1/datasets/shop/c1").get_json()
    assert answer["dataset_version"] == staged.version
    assert (
        Prescore(settings=shop_settings).promote("shop", staged.version).version == staged.version
    )
    assert v.current() == staged.version and deltas.read(rclient, "shop")[1] == ()


def test_customers_with_no_candidate_items_are_counted_and_said(  # type: ignore[no-untyped-def]
    spark, settings, shop, rclient, tmp_path, capsys
) -> None:
    """A customer whose categories hold no product gets no key (nothing to rank): the
    summary says how many, and the version records it, instead of a key count that is
    silently short of the dry run's."""
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    customers = read_frame(tables / "customers.parquet")
    lonely = customers.head(2).assign(customer_id=["nobody-1", "nobody-2"])
    lonely["categories"] = [["no-such-category"], []]
    write_frame(pd.concat([customers, lonely]), tables / "customers.parquet", index=False)
    s = with_catalog(settings, domains.shop_config(tables, tmp_path / "p.toml"))
    registered(s, "shop-model", shop["plain"])
    capsys.readouterr()
    summary = _score(spark, s)
    assert summary.unmatched == 2 and summary.rows == len(customers)
    said = capsys.readouterr().out
    assert "2 entities had no candidate items: no key written for them" in said
    info = Versions(rclient, "shop", s.store).get(summary.version)
    assert info.extra["unmatched"] == 2
    assert stored_payload(rclient, "shop", summary.version, "nobody-1") is None
