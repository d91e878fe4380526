"""Labels datasets in bulk: the demo's photo tags, a domain's own images and tag names,
and labels from a feature table. Real TensorFlow, real local Spark, real Redis."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.hotels.imagegen import TAGS, generate, read_labels
from examples.hotels.train_tagger import load_images, split, train
from jobs.labels import decode_all, extension_pattern, image_key
from jobs.score import parse_args, run_job
from jobs.submit import local_args, spark_submit_bin
from prescore.data.datasets import Dataset
from prescore.data.images import image_extensions, image_folder
from prescore.errors import InvalidInput, ModelStoreError
from prescore.models.quality import mean_average_precision
from prescore.models.store import ModelStore
from prescore.models.tf_model import TFModel
from prescore.settings import Settings, StoreSettings
from prescore.store.misslog import MissLog
from prescore.store.versions import Versions, read_current
from tests import domains
from tests.frames import write_frame
from tests.helpers import (
    DEMO_CONFIG,
    demo_catalog,
    job_env,
    registered,
    stored_payload,
    with_catalog,
)

COUNT = 400
BAD = {
    "corrupt-1": "bad_image",
    "empty-1": "empty_image",
    "notes-1": "bad_image",
    "huge-1": "image_too_large",
    "x" * 241: "invalid_id",  # too long a key to be a file's name with its extension
}
AWKWARD = "hotel photo (2) ns:é{x}"  # a copy of img-000000: any key a file name can be


@pytest.fixture(scope="module")
def demo_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo var/ folder: photos, the generator's bad files, one file whose name is not an
    id; and the demo's tagger trained on them (written to var/train/tagger)."""
    var = tmp_path_factory.mktemp("demo-var")
    out = var / "images"
    generate(out, COUNT, seed=11, bad_files=True)
    (out / f"{AWKWARD}.jpg").write_bytes((out / "img-000000.jpg").read_bytes())
    (out / f"{'x' * 241}.jpg").write_bytes((out / "img-000000.jpg").read_bytes())
    train(out, var / "train" / "tagger", epochs=40, seed=11)
    return var


@pytest.fixture()
def tags_settings(settings: Settings, demo_var: Path) -> Settings:
    s = dataclasses.replace(settings, catalog=demo_catalog(demo_var))
    registered(s, "tagger", demo_var / "train" / "tagger")
    return s


def _run(spark, s: Settings, dataset: str = "tags", *extra: str):  # type: ignore[no-untyped-def]
    return run_job(spark, parse_args(["--dataset", dataset, *extra]), s)


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


def test_image_id_rule_and_globs() -> None:
    assert image_key("hdfs://nn:8020/photos/img-000042.jpg") == "img-000042"
    assert image_key("file:/var/images/a.b.png") == "a.b"
    assert image_key(f"file:/var/images/{AWKWARD}.jpg") == AWKWARD  # Spark's path as it is
    for bad in (".hidden.jpg", f"{'x' * 241}.jpg"):
        with pytest.raises(InvalidInput):
            image_key(f"file:/var/images/{bad}")
    assert image_folder("var/images/*.jpg") == "var/images"
    assert image_folder("hdfs://nn/photos/") == "hdfs://nn/photos/"
    assert image_folder("var/*/x.jpg") == "var/*/x.jpg"

    def exts(path: str) -> tuple[str, ...]:
        return image_extensions(
            Dataset("t", "labels", images=path, image_extensions=("png", "jpg"))
        )

    # the bulk job and live inference read the same files: what the path names, else the
    # declared extensions, in either case
    assert exts("var/images/*.jpg") == ("jpg", "JPG")
    assert exts("var/images/*.{jpg,webp}") == ("jpg", "JPG", "webp", "WEBP")
    assert exts("var/images/") == exts("var/images/*") == ("png", "PNG", "jpg", "JPG")
    assert extension_pattern(Dataset("t", "labels", images="x/*.jpeg")) == "*.{jpeg,JPEG}"


def test_job_publishes_tags_that_match_labels_and_a_failed_run_changes_nothing(  # type: ignore[no-untyped-def]
    spark, demo_var, tags_settings, rclient
) -> None:
    photos = demo_var / "images"
    meta = ModelStore(tags_settings.models).meta("tagger", "1")
    log = MissLog(rclient)
    log.record("tags", [sorted(read_labels(photos))[0], "no-such-photo"])
    summary = _run(spark, tags_settings)
    # a logged miss of a photo the run scored is forgotten; one of no file stays
    assert log.all_keys("tags") == ["no-such-photo"]

    # Every good photo is tagged and counted; every bad file is listed with its reason.
    assert summary.rows == summary.scored == COUNT + 1  # the photos and AWKWARD
    assert summary.bad == len(BAD)
    reasons = {Path(line.split(": ")[0]).stem: line.split(": ")[1] for line in summary.bad_sample}
    assert reasons == BAD
    versions = Versions(rclient, "tags", StoreSettings())
    assert versions.current() == summary.version
    assert versions.get(summary.version).rows == COUNT + 1
    assert versions.count_keys(summary.version) == COUNT + 1
    _, (copy, same) = read_current(rclient, "tags", [AWKWARD, "img-000000"])
    assert copy is not None and same is not None
    assert json.loads(copy) == {**json.loads(same), "image_id": AWKWARD}

    labels = read_labels(photos)
    ids = sorted(labels)
    version, payloads = read_current(rclient, "tags", [*ids, *BAD])
    assert version == summary.version
    assert payloads[len(ids) :] == [None] * len(BAD)  # bad files never get a payload
    stored: dict[str, set[str]] = {}
    for image, raw in zip(ids, payloads, strict=False):
        assert raw is not None
        doc = json.loads(raw)
        assert doc["image_id"] == image and doc["model_version"] == "1"
        scores = [t["score"] for t in doc["tags"]]
        assert scores == sorted(scores, reverse=True)  # best first
        assert all(t["score"] >= meta["thresholds"][t["tag"]] - 1e-4 for t in doc["tags"])
        stored[image] = {t["tag"] for t in doc["tags"]}

    # The stored tags agree with the labels: overall, and exactly on the clearest tags.
    tp = sum(len(stored[i] & set(labels[i])) for i in ids)
    f1 = 2 * tp / (sum(map(len, stored.values())) + sum(len(labels[i]) for i in ids))
    assert f1 > 0.65, f1
    for tag in ("sea_view", "balcony", "garden"):
        agree = sum((tag in stored[i]) == (tag in labels[i]) for i in ids) / len(ids)
        assert agree > 0.85, (tag, agree)
    known = [i for i in ids if "sea_view" in labels[i]][:5]
    assert all("sea_view" in stored[i] for i in known)

    # A run that cannot run (its model version does not exist) begins nothing.
    before = versions.all()
    with pytest.raises(ModelStoreError, match="tagger/99 not found"):
        _run(spark, tags_settings, "tags", "--model-version", "99")
    assert versions.current() == summary.version and versions.all() == before
    assert read_current(rclient, "tags", ids[:1])[1][0] == payloads[0]


def test_spark_submit_runs_the_job(demo_var, tags_settings, redis_url, rclient) -> None:  # type: ignore[no-untyped-def]
    env = job_env()
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": tags_settings.models.root,
        "PRESCORE_CONFIG": str(DEMO_CONFIG),
        "PRESCORE_VAR": str(demo_var),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = local_args("score", master="local[2]", driver_memory="1g", dataset="tags")
    # a C locale: Java would list the file named outside ASCII under no name of its own
    c_locale = {k: v for k, v in env.items() if not k.startswith(("LANG", "LC_"))}
    refused = subprocess.run(
        [spark_submit_bin(), *argv], env=c_locale, capture_output=True, text=True, timeout=300
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "LANG: Spark's JVM spells file names" in said, said
    done = subprocess.run(
        [spark_submit_bin(), *argv],
        env={**env, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"keys written {COUNT + 1}, images scored {COUNT + 1}" in done.stdout
    assert f"skipped {len(BAD)} bad input(s)" in done.stdout
    live = Versions(rclient, "tags", StoreSettings()).current()
    assert live is not None and f"tags: published version {live}" in done.stdout


def test_a_cnn_of_its_own_over_its_own_jpegs(spark, settings, colours, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = with_catalog(settings, domains.colours_config(colours["images"], tmp_path / "c.toml"))
    registered(s, "colour-tagger", colours["model"])
    summary = _run(spark, s, "colours")
    truth = colours["truth"]
    assert summary.rows == len(truth) and summary.bad == 0
    right = 0
    for key, want in truth.items():
        doc = json.loads(stored_payload(rclient, "colours", summary.version, key) or b"")
        assert list(doc) == ["key", "colours", "model", "model_version", "scored_at"]
        assert all(set(e) == {"colour", "score"} and e["score"] >= 0.5 for e in doc["colours"])
        right += {e["colour"] for e in doc["colours"]} == set(want)
    assert right / len(truth) > 0.9  # it learnt the colours


def test_labels_from_a_feature_table(spark, settings, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A labels model over rows: two float inputs -> three labels, keys in the table."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "sku": ["a1", "a2", "a3", "bad\tkey"],
            "width": [0.1, 2.0, 0.2, 1.0],
            "height": [0.1, 0.1, 3.0, 1.0],
        }
    )
    write_frame(table, tmp_path / "rows.parquet", index=False)
    config = tmp_path / "r.toml"
    config.write_text(
        f'[datasets.shape]\nkind = "labels"\nmodel = "shape-model"\nmin_score = 0.5\n'
        f'[datasets.shape.rows]\npath = "{tmp_path}/rows.parquet"\nkey = "sku"\n'
    )
    s = with_catalog(settings, config)
    registered(s, "shape-model", domains.rows_model(tmp_path / "model"))
    summary = _run(spark, s, "shape")
    assert summary.rows == 3 and summary.bad == 1 and "bad\\tkey" in summary.bad_sample[0]
    got = {
        k: json.loads(stored_payload(rclient, "shape", summary.version, k) or b"")
        for k in ("a1", "a2", "a3")
    }
    assert [e["label"] for e in got["a1"]["labels"]] == ["small"] and got["a1"]["sku"] == "a1"
    assert [e["label"] for e in got["a2"]["labels"]] == ["wide"]
    assert [e["label"] for e in got["a3"]["labels"]] == ["tall"]
    assert got["a1"]["labels"][0]["score"] == pytest.approx(0.8808, abs=1e-3)  # sigmoid(2)


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


def test_a_worker_decodes_the_same_from_paths_as_from_sparks_bytes(tmp_path: Path) -> None:
    """Local files are opened by the worker; other stores' bytes come from Spark."""
    generate(tmp_path, 3, seed=4, bad_files=True)
    (tmp_path / "gone-1.jpg").write_bytes((tmp_path / "img-000000.jpg").read_bytes())
    paths = [f"file:{p}" for p in sorted(tmp_path.glob("*.jpg"))]
    frame = pd.DataFrame({"path": paths, "content": [Path(p[5:]).read_bytes() for p in paths]})
    (tmp_path / "gone-1.jpg").unlink()  # listed, then removed before the worker opens it
    by_path = decode_all(frame[["path"]], (64, 64), 3, 1_000_000)
    by_bytes = decode_all(frame, (64, 64), 3, 1_000_000)
    assert by_path[0] == ["img-000000", "img-000001", "img-000002"]
    assert by_bytes[0] == ["gone-1", *by_path[0]]  # its bytes were read while it was there
    assert all(np.array_equal(a, b) for a, b in zip(by_path[1], by_bytes[1][1:], strict=True))
    bad = {
        "corrupt-1": "bad_image",
        "empty-1": "empty_image",
        "huge-1": "image_too_large",
        "notes-1": "bad_image",
    }
    assert by_bytes[2] == [f"file:{tmp_path}/{k}.jpg: {v}" for k, v in bad.items()]
    assert by_path[2] == [
        f"file:{tmp_path}/{k}.jpg: {v}" for k, v in sorted({**bad, "gone-1": "unreadable"}.items())
    ]


def test_a_worker_names_the_device_its_model_runs_on() -> None:
    import tensorflow as tf

    from jobs.bulk import _device

    has_gpu = bool(tf.config.list_physical_devices("GPU"))  # none on the test machines
    assert _device() == ("/device:GPU:0" if has_gpu else "the CPU (no GPU visible)")
