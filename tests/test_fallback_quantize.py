"""int8 and float32 .tflite variants beside a team's SavedModel (prescore.models.quantize): the
files, the record in model.json, agreement with TensorFlow, named feeds in LiteRT, and a
model that does not convert. Real TensorFlow, real LiteRT."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prescore.models.image_features import decode
from prescore.models.inference import TFLITE_FILES, load_runner, pick_runtime
from prescore.models.quality import mean_average_precision, quality, roc_auc
from prescore.models.quantize import quantize_dir
from prescore.models.registration import _described
from prescore.models.tf_model import describe
from tests import domains
from tests.frames import read_frame

# Stated tolerances: int8 probabilities differ from float32 by at most MAX_DIFF on any row
# and by MEAN_DIFF on average (8-bit steps of a sigmoid output are 1/256 apart).
MAX_DIFF = 0.1
MEAN_DIFF = 0.015


def test_auc_and_map_on_known_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # a missing label is neither class (as a bool, NaN was a positive)
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.05])
    assert roc_auc(np.array([0, 0, 1, 1, np.nan]), scores) == 0.75
    assert roc_auc(np.array([0, 0, 1, 1, None], object), scores) == 0.75
    y = np.array([[1, 0], [0, 1], [1, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.2]])
    # column 0: ranks hits at 1 and 3 -> AP (1 + 2/3) / 2; column 1: hit ranked 1st -> 1
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert quality("map", y, s) == mean_average_precision(y, s)
    # one label: the truth a column, the scores flattened as a runner returns them
    assert mean_average_precision(y[:, :1], s[:, 0]) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="auc, map"):
        quality("f1", y, s)


def _copy(model: Path, to: Path) -> tuple[Path, dict[str, Any]]:
    """A model folder of its own (quantize_dir writes beside saved_model/), and its meta
    with the signatures registration records."""
    shutil.copytree(model, to)
    meta = {"signature": describe(to / "saved_model").to_json(), "labels": list(domains.COLOURS)}
    return to, meta


def _colour_feed(colours: dict[str, Any], keys: list[str]) -> tuple[dict, np.ndarray]:
    size = (domains.IMAGE_SIZE, domains.IMAGE_SIZE)
    pixels = np.stack([decode((colours["images"] / f"{k}.jpg").read_bytes(), size) for k in keys])
    y = np.array([[c in colours["truth"][k] for c in domains.COLOURS] for k in keys], np.float32)
    return {"pixels": pixels}, y


def test_the_cnn_int8_agrees_with_tensorflow_and_records_quality(
    colours: dict[str, Any], tmp_path: Path
) -> None:
    model, meta = _copy(colours["model"], tmp_path / "cnn")
    keys = sorted(colours["truth"])
    calibration, _ = _colour_feed(colours, keys[:60])
    x, y = _colour_feed(colours, keys[60:])
    record = quantize_dir(model, meta, calibration, x, y, "map")
    assert record["built"] is True, record
    assert all((model / f).stat().st_size > 0 for f in TFLITE_FILES.values())
    runtimes = record["runtimes"]
    assert set(runtimes) == {"tf", "float32", "int8"}
    assert runtimes["tf"]["map"] > 0.8  # the model learned the colours
    assert abs(runtimes["float32"]["map"] - runtimes["tf"]["map"]) < 1e-3
    assert record["int8_quality_loss"] < 0.03
    assert (record["metric"], record["calibration_rows"], record["eval_rows"]) == ("map", 60, 60)
    ref = load_runner(model, meta, "tf")(x)
    f32 = load_runner(model, meta, "float32")(x)
    i8 = load_runner(model, meta, "int8")(x)
    assert i8.shape == ref.shape == (60, len(domains.COLOURS))
    np.testing.assert_allclose(f32, ref, atol=1e-5)
    assert np.abs(i8 - ref).max() < MAX_DIFF
    assert np.abs(i8 - ref).mean() < MEAN_DIFF
    assert runtimes["int8"]["max_abs_diff_vs_tf"] == pytest.approx(np.abs(i8 - ref).max(), abs=1e-4)
    # the LiteRT runner pads odd batch sizes and returns exactly the rows asked for
    assert load_runner(model, meta, "int8")({"pixels": x["pixels"][:5]}).shape == (5, 3)
    # a bulk job's runner pads every batch to its own size (one interpreter): same answers
    padded = load_runner(model, meta, "float32", threads=1, min_rows=16)
    for n in (1, 5, 16, 23):
        np.testing.assert_allclose(padded({"pixels": x["pixels"][:n]}), f32[:n], atol=1e-6)
    meta = {**meta, "quantization": record}
    assert pick_runtime(meta, model, "auto") == record["fastest"]
    assert pick_runtime(meta, model, "int8") == "int8"
    assert pick_runtime(meta, model, "tf") == "tf"
    # registration's line says what auto serves and, where int8 agrees but is not it, why
    line = _described(record)
    assert line.startswith(f"built (auto serves {record['fastest']}")
    if record["fastest"] != "int8":
        rate = runtimes["int8"]["batch_rows_per_s"]
        assert f"int8 is slower here, {rate:,.0f} rows/s against" in line, line


def test_a_model_whose_int8_fails_keeps_its_float32_variant(
    colours: dict[str, Any], tmp_path: Path
) -> None:
    """Each variant stands alone: here int8's calibration cannot run (its samples name no
    input of the model), and the float32 file is still built, measured and served."""
    model, meta = _copy(colours["model"], tmp_path / "cnn")
    x, y = _colour_feed(colours, sorted(colours["truth"])[:40])
    record = quantize_dir(model, meta, {"no_such_input": x["pixels"]}, x, y, "map")
    assert record["built"] is True and set(record["runtimes"]) == {"tf", "float32"}
    assert set(record["not_built"]) == {"int8"} and record["not_built"]["int8"]
    assert "int8_quality_loss" not in record
    assert (model / TFLITE_FILES["float32"]).stat().st_size > 0
    assert not (model / TFLITE_FILES["int8"]).exists()  # nothing half-written
    f32 = load_runner(model, meta, "float32")(x)
    np.testing.assert_allclose(f32, load_runner(model, meta, "tf")(x), atol=1e-5)
    quant = {**meta, "quantization": record}
    assert pick_runtime(quant, model, "auto") == record["fastest"] in ("tf", "float32")
    line = _described(record)
    assert line == (
        f"not built: {record['not_built']['int8']} (its float32 variant is; auto serves "
        f"{record['fastest']})"
    )
    only = quantize_dir(model, meta, x, x, y, "map", lite=("float32",))  # int8 not asked for
    assert set(only["runtimes"]) == {"tf", "float32"} and "not_built" not in only


def test_a_model_tensorflow_scores_nan_is_recorded_not_built(tmp_path: Path) -> None:
    import tensorflow as tf

    class Logs(tf.Module):  # log of a negative number: NaN agrees with nothing
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"score": tf.math.log(x - 10.0)}

    module = Logs()
    out = tmp_path / "logs"
    tf.saved_model.save(
        module, str(out / "saved_model"), signatures={"serving_default": module.serve}
    )
    meta = {"signature": describe(out / "saved_model").to_json()}
    feed = {"x": np.arange(32, dtype=np.float32)}
    record = quantize_dir(out, meta, feed, feed)
    assert record == {
        "built": False,
        "reason": "TensorFlow's scores of the sample are not all finite",
    }
    assert not any((out / f).exists() for f in TFLITE_FILES.values())


def test_registration_says_why_int8_is_not_served() -> None:
    def runtime(diff: float, rate: float, agrees: bool) -> dict[str, Any]:
        return {
            "max_abs_diff_vs_tf": diff,
            "batch_rows_per_s": rate,
            "single_ms": 1.0,
            "agrees": agrees,
        }

    record = {
        "built": True,
        "fastest": "float32",
        "metric": "map",
        "int8_quality_loss": 0.05,
        "runtimes": {
            "tf": runtime(0, 100, True),
            "float32": runtime(0, 300, True),
            "int8": runtime(0.02, 900, False),
        },
    }
    assert "it loses 0.05 of the float32 variant's map" in _described(record)
    record["runtimes"]["int8"] = runtime(0.4, 900, False)
    assert "scores up to 0.4 apart" in _described(record)
    assert _described({"built": False, "reason": "no kernels"}) == "not built: no kernels"
    neither = {"built": False, "reason": "x", "not_built": {"int8": "no kernels", "float32": "y"}}
    assert _described(neither) == "not built, nor its float32 variant: float32: y; int8: no kernels"


def _shop_feed(tables: Path, events: str, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rows = read_frame(tables / events).head(n)
    cust = read_frame(tables / "customers.parquet").set_index("customer_id")
    prod = read_frame(tables / "products.parquet").set_index("product_id")
    feed = {
        "segment": cust.loc[rows["customer_id"], "segment"].to_numpy(object),
        "price": prod.loc[rows["product_id"], "price"].to_numpy(np.float32),
    }
    return feed, rows["bought"].to_numpy()


@pytest.fixture(scope="module")
def shop_record(
    shop: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    model, meta = _copy(shop["plain"], tmp_path_factory.mktemp("shopq") / "m")
    calibration, _ = _shop_feed(shop["tables"], "purchases_train.parquet", 300)
    x, y = _shop_feed(shop["tables"], "purchases_test.parquet", 600)
    return model, meta, quantize_dir(model, meta, calibration, x, y, "auc"), x, y


def test_a_string_lookup_model_records_truthfully_whether_it_converted(shop_record: Any) -> None:
    """Named string and float inputs: the record holds what was measured, or why not."""
    model, meta, record, x, y = shop_record
    tflite = [model / f for f in TFLITE_FILES.values()]
    if not record["built"]:
        assert record["reason"] and not any(p.exists() for p in tflite)
        assert pick_runtime({**meta, "quantization": record}, model, "auto") == "tf"
        return
    assert all(p.stat().st_size > 0 for p in tflite)
    ref = load_runner(model, meta, "tf")(x)
    assert record["runtimes"]["tf"]["auc"] > 0.6  # the model learned the hidden rule
    f32 = load_runner(model, meta, "float32")(x)  # strings go into LiteRT by name
    np.testing.assert_allclose(f32, ref, atol=1e-5)
    i8 = load_runner(model, meta, "int8")(x)
    for runtime, scores in (("float32", f32), ("int8", i8)):
        measured = record["runtimes"][runtime]["max_abs_diff_vs_tf"]
        assert measured == pytest.approx(np.abs(scores - ref).max(), abs=1e-3)
        assert record["runtimes"][runtime]["auc"] == pytest.approx(
            quality("auc", y, scores), abs=1e-4
        )


def test_a_model_that_does_not_convert_is_recorded_and_served_by_tensorflow(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import tensorflow as tf

    class Vowels(tf.Module):  # string ops TFLite's builtins do not have
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
        def serve(self, word: Any) -> dict[str, Any]:
            kept = tf.strings.regex_replace(word, "[aeiou]", "")
            return {"score": tf.sigmoid(tf.cast(tf.strings.length(kept), tf.float32) - 3.0)}

    module = Vowels()
    out = tmp_path / "words"
    tf.saved_model.save(
        module, str(out / "saved_model"), signatures={"serving_default": module.serve}
    )
    meta = {"signature": describe(out / "saved_model").to_json()}
    feed = {"word": np.array(["hello", "sky", "strengths", "a"] * 8, object)}
    capfd.readouterr()
    record = quantize_dir(out, meta, feed, feed)
    assert record["built"] is False
    # one line naming the ops, and none of the converter's own error: text on stderr
    assert record["reason"] == "LiteRT has no kernels for the ops StaticRegexReplace, StringLength"
    assert "error:" not in capfd.readouterr().err
    assert not any((out / f).exists() for f in TFLITE_FILES.values())  # nothing half-written
    assert pick_runtime({**meta, "quantization": record}, out, "auto") == "tf"
    scores = load_runner(out, meta, "tf")(feed)
    np.testing.assert_allclose(
        scores[:4], 1 / (1 + np.exp(-(np.array([3, 3, 8, 0]) - 3.0))), atol=1e-6
    )
