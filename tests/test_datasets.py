"""Dataset declarations: parsed into frozen settings, every bad field refused in one line
that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from prescore.data.datasets import Catalog, load, parse
from prescore.errors import ConfigError
from tests.helpers import DEMO_CONFIG

RANKING = """
[datasets.shop]
kind = "ranking"
model = "shop-model"
[datasets.shop.entities]
path = "/data/customers.parquet"
key = "customer_id"
[datasets.shop.items]
path = "hdfs://nn:8020/data/products/*.parquet"
key = "product_id"
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Catalog:
    path = tmp_path / "prescore.toml"
    path.write_text(text)
    return load(path, env or {})


def test_the_demo_declares_its_two_datasets_as_any_team_would(tmp_path: Path) -> None:
    catalog = load(DEMO_CONFIG, {"PRESCORE_VAR": str(tmp_path)})
    assert catalog.names() == ["reco", "tags"]
    reco, tags = catalog.get("reco"), catalog.get("tags")
    assert (reco.kind, reco.model, reco.route, reco.k) == ("ranking", "reco", "recommendations", 10)
    assert (
        reco.entities is not None
        and reco.entities.path == (tmp_path / "data/users.parquet").as_uri()
    )
    assert (reco.key_field, reco.list_field, reco.entry_field) == ("user_id", "items", "hotel_id")
    assert (reco.candidates.rule, reco.candidates.entity_column) == ("match", "regions")
    assert reco.contexts is not None and reco.contexts.key == "context"
    assert reco.training is not None and reco.training.metric == "auc"
    assert (tags.kind, tags.key_field, tags.list_field, tags.entry_field) == (
        "labels",
        "image_id",
        "tags",
        "tag",
    )
    assert tags.images.endswith("/images/*.jpg")


def test_defaults_and_names_of_a_plain_ranking(tmp_path: Path) -> None:
    shop = _load(tmp_path, RANKING).get("shop")
    assert (shop.key_field, shop.batch_field, shop.list_field, shop.entry_field) == (
        "customer_id",
        "keys",
        "items",
        "product_id",
    )
    assert shop.candidates.rule == "all" and shop.k == 10 and shop.live
    assert shop.items is not None and shop.items.path.startswith("hdfs://")  # any path Spark reads
    assert shop.key_columns == ("customer_id",)


def test_environment_values_are_expanded_and_relative_paths_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = RANKING.replace('"/data/customers.parquet"', '"${DATA:-data}/c.parquet"')
    assert _load(tmp_path, text).get("shop").entities.path == (tmp_path / "data/c.parquet").as_uri()  # type: ignore[union-attr]
    got = _load(tmp_path, text, {"DATA": "file:///srv"}).get("shop").entities
    assert got is not None and got.path == "file:///srv/c.parquet"


def test_composite_keys_contexts_and_a_candidate_table(tmp_path: Path) -> None:
    text = (
        RANKING.replace('key = "customer_id"', 'key = ["customer_id", "market"]')
        + """
[datasets.shop.candidates]
rule = "table"
path = "/data/picks.parquet"
key = ["customer_id", "market"]
items_column = "products"
[datasets.shop.contexts]
values = ["weekday", "weekend"]
score = ["weekend"]
"""
    )
    shop = _load(tmp_path, text).get("shop")
    assert shop.key_columns == ("customer_id", "market") and shop.key_field == "key"
    assert shop.candidates.table is not None and shop.candidates.items_column == "products"
    assert shop.contexts is not None and shop.contexts.score == ("weekend",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('kind = "ranking"', 'kind = "nearest"'),
            "datasets.shop.kind: must be one of ranking, labels, external; got 'nearest'",
        ),
        (("[datasets.shop]", "[datasets.Shop]"), "datasets.Shop: a dataset name is"),
        (("[datasets.shop]", '[datasets."a:b"]'), "a dataset name is"),
        (('model = "shop-model"', ""), "datasets.shop.model: missing"),
        (('key = "product_id"', "key = 7"), "datasets.shop.items.key: must be a column name"),
        (
            ('key = "product_id"', 'key = "product id"'),
            "datasets.shop.items.key: not a column name",
        ),
        (
            ('kind = "ranking"', 'kind = "ranking"\nk = 0'),
            "datasets.shop.k: must be an integer from 1 to 1000",
        ),
        (
            ('kind = "ranking"', 'kind = "ranking"\ncolour = "red"'),
            "datasets.shop.colour: unknown field",
        ),
        (('kind = "ranking"', 'kind = "ranking"\nroute = "metrics"'), "'metrics' is reserved"),
        (  # a filter only where a run scores the table's rows: never ignored silently
            ('key = "product_id"', 'key = "product_id"\nfilter = "price > 1"'),
            "datasets.shop.items.filter: unknown field",
        ),
        (('path = "/data/customers.parquet"', 'path = "${NOPE}/c"'), "${NOPE} is not set"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, RANKING.replace(*change))
    text = str(info.value)
    assert message in text and "\n" not in text and str(tmp_path) in text


def test_rules_and_kinds_need_their_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"candidates\.entity_column: missing"):
        _load(tmp_path, RANKING + '[datasets.shop.candidates]\nrule = "match"\nitem_column = "x"\n')
    with pytest.raises(ConfigError, match="either images or rows"):
        _load(tmp_path, '[datasets.t]\nkind = "labels"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match="command or an entry, not both"):
        _load(tmp_path, RANKING + '[datasets.shop.training]\nlabel = "y"\n')
    with pytest.raises(ConfigError, match=r"must pass \{output\}"):
        _load(tmp_path, RANKING + '[datasets.shop.training]\ncommand = ["train.sh"]\n')
    train = '[datasets.shop.training]\ncommand = ["t.sh", "{output}"]\nmax_regression = '
    for nonsense in ("nan", "inf", "-0.5", "1e9"):  # a margin that gates nothing, or all
        with pytest.raises(ConfigError, match=r"training\.max_regression: must be a number from 0"):
            _load(tmp_path, RANKING + train + nonsense + "\n")
    routes = RANKING + '\n[datasets.two]\nkind = "external"\nroute = "r"\n'
    with pytest.raises(ConfigError, match="more than one dataset"):
        _load(tmp_path, routes.replace('kind = "ranking"', 'kind = "ranking"\nroute = "r"'))


def test_unreadable_or_invalid_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the dataset file"):
        load(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path, "[datasets.x\n")
    with pytest.raises(ConfigError, match="datasets: missing"):
        _load(tmp_path, "# nothing declared\n")


def test_an_undeclared_dataset_names_the_declared_ones() -> None:
    catalog = parse({"datasets": {"ext": {"kind": "external"}}}, {}, source="x.toml")
    with pytest.raises(ConfigError) as info:
        catalog.get("reco")
    assert info.value.code == "unknown_dataset" and "declared: ext" in str(info.value)
