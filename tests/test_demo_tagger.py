"""The demo's photo tagger (examples/hotels: imagegen, train_tagger) as its team would
check it: training beats label frequency, and the reduced-scale decode the bulk job and
live inference use keeps its held-out quality. The engine's labels job is tested on the
tests' own domains (tests/test_labels_job.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from examples.hotels.imagegen import TAGS, generate
from examples.hotels.train_tagger import load_images, split, train
from prescore.models.quality import mean_average_precision
from prescore.models.store import ModelStore
from prescore.models.tf_model import TFModel
from prescore.settings import Settings
from tests.helpers import demo_catalog, registered

COUNT = 400


@pytest.fixture(scope="module")
def demo_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo var/ folder: photos with the generator's bad files, and the demo's tagger
    trained on them (written to var/train/tagger)."""
    var = tmp_path_factory.mktemp("demo-var")
    generate(var / "images", COUNT, seed=11, bad_files=True)
    train(var / "images", var / "train" / "tagger", epochs=40, seed=11)
    return var


@pytest.fixture()
def tags_settings(settings: Settings, demo_var: Path) -> Settings:
    s = dataclasses.replace(settings, catalog=demo_catalog(demo_var))
    registered(s, "tagger", demo_var / "train" / "tagger")
    return s


def test_training_beats_label_frequency(tags_settings: Settings) -> None:
    meta = ModelStore(tags_settings.models).meta("tagger", "1")
    m = meta["metrics"]
    assert m["map"] > m["baseline_map"] + 0.2, m
    assert m["micro_f1"] > m["baseline_micro_f1"] + 0.1, m
    assert meta["labels"] == list(TAGS) and meta["label_names"]["sea_view"] == "Sea view"
    assert set(meta["thresholds"]) == set(TAGS)
    assert all(0.0 < t < 1.0 for t in meta["thresholds"].values())
    image = meta["signature"]["serving_default"]["inputs"]["image"]
    assert image == {"dtype": "uint8", "shape": [None, 64, 64, 3]}  # the input size is the model's
    assert meta["created_at"].endswith("Z") and meta["kind"] == "labels"


# -- reduced-scale decode against the full decode ------------------------------------------

# The reduced-scale decode is pinned on pixels in tests/test_image_decode.py (Pillow's
# decoders and resampling are integer code: the same figures on every CPU) and on the
# tags below, by the held-out mAP of the demo's tagger after each decode. A bound on one
# trained model's scores is not: oneDNN's kernels differ by CPU, and so does how steep
# the trained model is.


def test_held_out_map_of_the_reduced_and_full_decode(demo_var: Path, tags_settings) -> None:  # type: ignore[no-untyped-def]
    """The demo's held-out photos scored after each decode: the same quality."""
    ref = ModelStore(tags_settings.models).resolve("tagger")
    model = TFModel(ref.saved_model, ref.meta)
    _, _, test = split(COUNT, seed=11)  # train_tagger's split of the fixture's photos
    found = {}
    for reduced in (True, False):
        x, y = load_images(demo_var / "images", (64, 64), reduced=reduced)
        found[reduced] = mean_average_precision(y[test], model({"image": x[test]}))
    print(f"held-out mAP: reduced-scale decode {found[True]:.4f}, full {found[False]:.4f}")
    assert found[True] == pytest.approx(ref.meta["metrics"]["map"], abs=1e-4)  # as trained
    assert abs(found[True] - found[False]) <= 0.02, found
