"""int8 and float32 .tflite beside a real SavedModel: files, quality record, agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.quantize import mean_average_precision, quantize_dir, roc_auc
from prescore.inference import load_runner, pick_runtime
from tests import fallback_models as fm

# Stated tolerances: int8 probabilities differ from float32 by at most MAX_DIFF on any row
# and by MEAN_DIFF on average (8-bit steps of a sigmoid output are 1/256 apart).
MAX_DIFF = 0.1
MEAN_DIFF = 0.015


def test_auc_and_map_on_known_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    y = np.array([[1, 0], [0, 1], [1, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.2]])
    # column 0: ranks hits at 1 and 3 -> AP (1 + 2/3) / 2; column 1: hit ranked 1st -> 1
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fm.build_dense(tmp_path_factory.mktemp("dense"))


def test_dense_int8_agrees_with_float32_and_records_quality(dense_dir: Path) -> None:
    x, y = fm.dense_data(600, seed=7)
    record = quantize_dir(dense_dir, fm.dense_data(300, seed=3)[0], x, y, "auc")
    assert (dense_dir / "model_int8.tflite").stat().st_size > 0
    assert (dense_dir / "model_float32.tflite").stat().st_size > 0
    runtimes = record["runtimes"]
    assert set(runtimes) == {"tf", "float32", "int8"}
    assert runtimes["tf"]["auc"] > 0.8  # the model learned the rule
    assert abs(runtimes["float32"]["auc"] - runtimes["tf"]["auc"]) < 1e-3
    assert record["int8_quality_loss"] < 0.02
    assert record["fastest"] in runtimes
    ref = load_runner(dense_dir, "tf")(x)
    f32 = load_runner(dense_dir, "float32")(x)
    i8 = load_runner(dense_dir, "int8")(x)
    np.testing.assert_allclose(f32, ref, atol=1e-5)
    assert np.abs(i8 - ref).max() < MAX_DIFF
    assert np.abs(i8 - ref).mean() < MEAN_DIFF
    # the LiteRT runner pads odd batch sizes and returns exactly the rows asked for
    assert load_runner(dense_dir, "int8")(x[:5]).shape == (5, 1)
    meta = {"quantization": record}
    assert pick_runtime(meta, dense_dir, "auto") == record["fastest"]
    assert pick_runtime(meta, dense_dir, "int8") == "int8"


def test_cnn_int8_agrees_with_float32(tmp_path: Path) -> None:
    cnn = fm.build_cnn(tmp_path)
    x, y = fm.image_data(200, seed=5)
    record = quantize_dir(cnn, fm.image_data(100, seed=2)[0], x, y, "map")
    assert record["runtimes"]["tf"]["map"] > 0.8
    assert record["int8_quality_loss"] < 0.03
    ref = load_runner(cnn, "tf")(x)
    i8 = load_runner(cnn, "int8")(x)
    assert i8.shape == ref.shape == (200, len(fm.TAGS))
    assert np.abs(i8 - ref).max() < MAX_DIFF
    assert np.abs(i8 - ref).mean() < MEAN_DIFF
