"""Registering a team's own SavedModel: checked against its dataset before anything is
stored; every refusal one clear line, and nothing registered. Real TensorFlow models of
the tests' own domains (tests.domains)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prescore.errors import ModelMismatch, ModelStoreError, PrescoreError
from prescore.models.signature import Signatures
from prescore.models.store import ModelStore
from prescore.settings import Settings
from tests import domains
from tests.frames import read_frame, write_frame
from tests.helpers import ROOT, registered, with_catalog


@pytest.fixture()
def shop_settings(settings: Settings, shop: dict[str, Path], tmp_path: Path) -> Settings:
    return with_catalog(settings, domains.shop_config(shop["tables"], tmp_path / "prescore.toml"))


def test_a_two_input_model_with_its_preprocessing_inside_is_registered(
    shop_settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    done = registered(shop_settings, "shop-model", shop["plain"], int8=True)
    assert (done.version, done.promoted, done.checked) == ("1", True, ("shop",))
    store = ModelStore(shop_settings.models)
    meta = store.meta("shop-model", "1")
    sigs = Signatures.from_json(meta["signature"])
    inputs = sigs.serving.inputs
    assert {n: (t.dtype, t.rank) for n, t in inputs.items()} == {
        "segment": ("string", 1),
        "price": ("float32", 1),
    }
    assert not sigs.factored and meta["kind"] == "ranking" and meta["registered_at"]
    q = meta["quantization"]  # built where the converter allows; else it says why
    assert q["built"] or q["reason"]
    assert store.promoted("shop-model") == "1"
    factored = registered(shop_settings, "shop-model", shop["factored"], promote=False)
    assert factored.version == "2" and store.promoted("shop-model") == "1"
    sigs = Signatures.from_json(store.meta("shop-model", "2")["signature"])
    assert sigs.factored
    # model.json naming the scores: each encode_* signature keeps its one output's own name
    scores = next(iter(sigs.serving.outputs))
    assert any(scores not in sig.outputs for sig in sigs.by_name.values())
    named = tmp_path / "named"
    shutil.copytree(shop["factored"], named)
    meta = {**json.loads((named / "model.json").read_text()), "output": scores}
    (named / "model.json").write_text(json.dumps(meta))
    assert registered(shop_settings, "shop-model", named, promote=False).version == "3"
    from prescore.models.tf_model import TFModel

    ref = store.resolve("shop-model", "3")
    assert TFModel(ref.saved_model, ref.meta).signatures.factored  # every output resolved


def test_a_labels_model_over_images_gets_its_int8_variant(
    settings: Settings, colours: dict[str, Any], tmp_path: Path
) -> None:
    s = with_catalog(settings, domains.colours_config(colours["images"], tmp_path / "c.toml"))
    done = registered(s, "colour-tagger", colours["model"], int8=True)
    meta = ModelStore(s.models).meta("colour-tagger", done.version)
    assert meta["labels"] == ["red", "green", "blue"]
    q = meta["quantization"]
    assert q["built"] and set(q["runtimes"]) == {"tf", "float32", "int8"}
    assert q["runtimes"]["int8"]["max_abs_diff_vs_tf"] < 0.15
    ref = ModelStore(s.models).resolve("colour-tagger")
    assert (ref.path / "model_int8.tflite").is_file()


def _refused(s: Settings, folder: Path, name: str = "shop-model", **kw: Any) -> str:
    with pytest.raises(PrescoreError) as info:
        registered(s, name, folder, **kw)
    store = ModelStore(s.models)  # nothing was registered (the store not even made)
    assert not Path(store.root).exists() or store.versions(name) == []
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_model_that_does_not_fit_its_dataset_lists_both_sides(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    customers = read_frame(tables / "customers.parquet").rename(columns={"segment": "tier"})
    write_frame(customers, tables / "customers.parquet", index=False)
    s = with_catalog(settings, domains.shop_config(tables, tmp_path / "p.toml"))
    text = _refused(s, shop["plain"])
    assert "input 'segment' (string, a value per row) is not a column of the dataset" in text
    assert "The model expects: price (float32, a value per row), segment (string" in text
    assert "entity: categories (list<string>), customer_id (string), tier (string)" in text
    assert "item: category (string), name (string), price (float), product_id (string)" in text


def test_a_match_rule_the_tables_cannot_serve_is_refused_at_registration(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    config = domains.shop_config(shop["tables"], tmp_path / "p.toml")
    text = config.read_text()
    for column, said in (
        ("categoriez", "dataset shop: candidates: no column 'categoriez' in entities; it has "),
        ("customer_id", "compares entities.customer_id (string) with items.price (float)"),
    ):
        rule = text.replace('"categories"', f'"{column}"')
        config.write_text(
            rule if column != "customer_id" else rule.replace('"category"', '"price"')
        )
        assert said in _refused(with_catalog(settings, config), shop["plain"])


def test_a_column_of_the_wrong_type_is_refused(
    settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    products = read_frame(tables / "products.parquet")
    products["price"] = products["price"].astype(str)
    write_frame(products, tables / "products.parquet", index=False)
    s = with_catalog(settings, domains.shop_config(tables, tmp_path / "p.toml"))
    assert "input 'price' wants float32, a value per row but item.price is string" in _refused(
        s, shop["plain"]
    )


def test_not_a_savedmodel_and_no_serving_signature_are_refused(
    shop_settings: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: not a SavedModel" in _refused(shop_settings, empty)  # the path given
    assert "no such folder" in _refused(shop_settings, tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    (corrupt / "saved_model").mkdir(parents=True)
    (corrupt / "saved_model" / "saved_model.pb").write_bytes(b"not a graph")
    text = _refused(shop_settings, corrupt)
    assert text.startswith(f"cannot load the SavedModel at {corrupt}/saved_model: "), text
    assert "/src/saved_model" not in text  # the folder given, not its temporary copy
    (corrupt / "model.json").write_text("{}")  # the SavedModel given, not its folder
    text = _refused(shop_settings, corrupt / "saved_model")
    assert text.endswith(f"register the folder that holds both ({corrupt})"), text
    for name in ("../evil", "prod/tagger", "Upper"):  # refused as a name, before anything
        assert _refused(shop_settings, empty, name=name).startswith(f"{name!r}: a model name")
    linked = tmp_path / "linked"
    (linked / "saved_model").mkdir(parents=True)
    (linked / "saved_model" / "saved_model.pb").write_bytes(b"x")
    (linked / "saved_model" / "gone").symlink_to(tmp_path / "nothing")  # a link to nothing
    text = _refused(shop_settings, linked)
    assert text == f"{linked}: cannot read saved_model/gone: [Errno 2] No such file or directory"
    bare = tmp_path / "bare"
    code = (
        "import tensorflow as tf; m = tf.Module(); m.v = tf.Variable(1.0); "
        f"tf.saved_model.save(m, {str(bare)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    text = _refused(shop_settings, bare)
    assert "no serving_default signature" in text


def test_a_model_json_that_contradicts_the_model_is_refused(
    settings: Settings, colours: dict[str, Any], shop: dict[str, Path], tmp_path: Path
) -> None:
    s = with_catalog(settings, domains.colours_config(colours["images"], tmp_path / "c.toml"))
    wrong = tmp_path / "wrong"
    shutil.copytree(colours["model"], wrong)
    (wrong / "model.json").write_text(json.dumps({"labels": ["red", "green"]}))
    assert "[batch, 2]" in _refused(s, wrong, "colour-tagger")
    (wrong / "model.json").write_text(json.dumps({"kind": "ranking", "labels": ["a", "b", "c"]}))
    assert "kind is 'ranking', the dataset is labels" in _refused(s, wrong, "colour-tagger")
    (wrong / "model.json").write_text("{not json")
    assert f"{wrong}/model.json: not valid JSON" in _refused(s, wrong, "colour-tagger")
    labels = {"kind": "labels", "labels": ["red", "green", "blue"], "output": "scroes"}
    (wrong / "model.json").write_text(json.dumps(labels))  # one output, misnamed: refused
    said = "model.json output 'scroes' is not an output of serving_default ("
    assert said in _refused(s, wrong, "colour-tagger")
    # a ranking model under the name a labels dataset declares: its own model.json says
    # ranking; without one, the image input is what is missing
    assert "kind is 'ranking'" in _refused(s, shop["plain"], "colour-tagger")
    plain = tmp_path / "no-meta"
    shutil.copytree(shop["plain"], plain)
    (plain / "model.json").unlink()
    assert "takes one image input" in _refused(s, plain, "colour-tagger")


def test_a_model_no_dataset_declares_is_refused(
    shop_settings: Settings, shop: dict[str, Path]
) -> None:
    with pytest.raises(PrescoreError, match="no dataset declares model 'other'"):
        registered(shop_settings, "other", shop["plain"])
    with pytest.raises(PrescoreError, match="declares model 'shop-model', not 'other'"):
        registered(shop_settings, "other", shop["plain"], dataset="shop")


def test_the_cli_registers_and_refuses_with_exit_codes(
    shop_settings: Settings, shop: dict[str, Path], tmp_path: Path
) -> None:
    env = {
        "PRESCORE_CONFIG": shop_settings.catalog.source,
        "PRESCORE_MODEL_STORE": shop_settings.models.root,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": "/usr/bin:/bin",
    }
    cli = [sys.executable, "-m", "prescore.cli", "models"]
    ok = subprocess.run(
        [*cli, "register", "shop-model", str(shop["plain"]), "--promote", "--no-int8"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        "shop-model: fits dataset shop" in ok.stdout
        and "shop-model: saving to the model store..." in ok.stdout
        and "registered version 1 and promoted" in ok.stdout
    )
    as_json = subprocess.run(
        [*cli, "register", "shop-model", str(shop["plain"]), "--no-int8", "-o", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    doc = json.loads(as_json.stdout)  # the document alone on stdout; progress on stderr
    assert (doc["version"], doc["checked"]) == ("2", ["shop"]), as_json.stderr
    assert "shop-model: fits dataset shop" in as_json.stderr
    bad = subprocess.run(
        [*cli, "register", "shop-model", str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("prescore: model_store: ")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    listed = subprocess.run(
        [*cli, "list", "shop-model", "-o", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(listed.stdout)
    assert [v["version"] for v in doc["shop-model"]] == ["1", "2"] and doc["shop-model"][0][
        "promoted"
    ]
    usage = subprocess.run([*cli, "register"], env=env, cwd=ROOT, capture_output=True, check=False)
    assert usage.returncode == 2


def test_signature_errors_are_model_errors() -> None:
    assert issubclass(ModelMismatch, ModelStoreError)


def test_a_model_whose_int8_fails_is_registered_with_its_float32_variant(
    settings: Settings, tmp_path: Path
) -> None:
    """Each LiteRT variant stands alone: int8's calibration fails on a list of strings (or
    crashes the converter's process), and the float32 variant is still built and served."""
    import numpy as np
    import pandas as pd

    from prescore.models.inference import load_runner, pick_runtime

    words = [["red"], ["green", "blue"], [], ["blue", "red", "pink"]]
    table = pd.DataFrame({"doc": ["d1", "d2", "d3", "d4"], "words": words})
    write_frame(table, tmp_path / "docs.parquet", index=False)
    config = tmp_path / "w.toml"
    config.write_text(
        '[datasets.docs]\nkind = "labels"\nmodel = "words-model"\n'
        f'[datasets.docs.rows]\npath = "{tmp_path}/docs.parquet"\nkey = "doc"\n'
    )
    s = with_catalog(settings, config)
    done = registered(s, "words-model", domains.words_model(tmp_path / "m"), int8=True)
    q = done.quantization
    assert q["built"] and set(q["runtimes"]) == {"tf", "float32"}, q
    assert set(q["not_built"]) == {"int8"} and q["not_built"]["int8"], q
    ref = ModelStore(s.models).resolve("words-model", done.version)
    assert (ref.path / "model_float32.tflite").is_file()
    assert not (ref.path / "model_int8.tflite").exists()
    feed = {"words": np.array([["red", ""], ["green", "blue"], ["", ""]], dtype=object)}
    lite = load_runner(ref.path, ref.meta, "float32")(feed)
    np.testing.assert_allclose(lite, load_runner(ref.path, ref.meta, "tf")(feed), atol=1e-5)
    named = [[0.982, 0.018, 0.018], [0.018, 0.982, 0.982], [0.018] * 3]  # sigmoid(4), (-4)
    np.testing.assert_allclose(lite, named, atol=1e-3)
    assert pick_runtime(ref.meta, ref.path, "auto") == q["fastest"] in ("tf", "float32")
