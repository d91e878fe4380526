"""Tagger training and the bulk tagging job: real TensorFlow, real local Spark, real Redis."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobs.bulk import settings_for
from jobs.imagegen import TAGS, generate, read_labels
from jobs.submit import local_args, spark_submit_bin
from jobs.tag_images import image_id, parse_args, run_job, split_glob
from jobs.train_tagger import TrainResult, train
from prescore.errors import InvalidInput, ModelStoreError
from prescore.modelstore import ModelStore
from prescore.settings import ModelStoreSettings, StoreSettings
from prescore.versions import Versions, read_current

ENV_KEYS = ("PATH", "HOME", "JAVA_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
COUNT = 400
BAD = {
    "corrupt-1": "bad_image",
    "empty-1": "empty_image",
    "notes-1": "bad_image",
    "huge-1": "image_too_large",
    "hotel photo (2)": "invalid_id",
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo photos, the generator's bad files and one file whose name is not an id."""
    out = tmp_path_factory.mktemp("photos")
    generate(out, COUNT, seed=11, bad_files=True)
    (out / "hotel photo (2).jpg").write_bytes((out / "img-000000.jpg").read_bytes())
    return out


@pytest.fixture(scope="module")
def tagger(
    photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelStore, TrainResult]:
    """A promoted tagger trained once for the module."""
    root = tmp_path_factory.mktemp("tag-models")
    store = ModelStore(ModelStoreSettings(root=root.as_uri(), cache_dir=str(root / ".cache")))
    return store, train(photos, store, epochs=40, seed=11, promote=True, int8=False)


def _run(spark, photos: str, redis_url: str, store: ModelStore, *extra: str):
    args = parse_args(
        ["--images", photos, "--redis-url", redis_url, "--model-store", store.settings.root, *extra]
    )
    return run_job(spark, args, settings_for(args, {}))


def test_training_beats_label_frequency(tagger: tuple[ModelStore, TrainResult]) -> None:
    store, result = tagger
    m = result.metrics
    assert m["map"] > m["baseline_map"] + 0.2, m
    assert m["micro_f1"] > m["baseline_micro_f1"] + 0.1, m
    meta = store.meta("tagger", result.version)
    assert meta["tags"] == list(TAGS) and meta["labels"]["sea_view"] == "Sea view"
    assert set(meta["thresholds"]) == set(TAGS)
    assert all(0.0 < t < 1.0 for t in meta["thresholds"].values())
    assert meta["image_size"] == [64, 64] and meta["created_at"].endswith("Z")
    assert store.promoted("tagger") == result.version
    assert (store.resolve("tagger").saved_model / "saved_model.pb").is_file()


def test_image_id_rule_and_globs() -> None:
    assert image_id("hdfs://nn:8020/photos/img-000042.jpg") == "img-000042"
    assert image_id("file:/var/images/a.b.png") == "a.b"
    with pytest.raises(InvalidInput):
        image_id("file:/var/images/hotel photo (2).jpg")
    assert split_glob("var/images/*.jpg", "P") == ("var/images", "*.jpg")
    assert split_glob("var/images/*", "P") == ("var/images", "P")
    assert split_glob("hdfs://nn/photos/", "P") == ("hdfs://nn/photos/", "P")
    assert split_glob("var/*/x.jpg", "P") == ("var/*/x.jpg", "P")


def test_job_publishes_tags_that_match_labels_and_a_failed_run_changes_nothing(
    spark, photos, tagger, redis_url, rclient
) -> None:
    store, result = tagger
    meta = store.meta("tagger", result.version)
    summary = _run(spark, f"{photos}/*", redis_url, store)

    # Every good photo is tagged and counted; every bad file is listed with its reason.
    assert summary.rows == summary.scored == COUNT
    assert summary.bad == len(BAD)
    reasons = {Path(line.split(": ")[0]).stem: line.split(": ")[1] for line in summary.bad_sample}
    assert reasons == BAD
    versions = Versions(rclient, "tags", StoreSettings())
    assert versions.current() == summary.version
    assert versions.get(summary.version).rows == COUNT
    assert versions.count_keys(summary.version) == COUNT

    labels = read_labels(photos)
    ids = sorted(labels)
    version, payloads = read_current(rclient, "tags", [*ids, *BAD])
    assert version == summary.version
    assert payloads[len(ids) :] == [None] * len(BAD)  # bad files never get a payload
    stored: dict[str, set[str]] = {}
    for image, raw in zip(ids, payloads, strict=False):
        assert raw is not None
        doc = json.loads(raw)
        assert doc["image_id"] == image and doc["model_version"] == result.version
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

    # A run that fails for real (its model version does not exist) publishes nothing.
    with pytest.raises(Exception) as err:
        _run(spark, str(photos), redis_url, store, "--model-version", "99")
    assert "99" in str(err.value) or isinstance(err.value, ModelStoreError)
    assert versions.current() == summary.version
    failed = [v for v in versions.all() if v.status == "failed"]
    assert len(failed) == 1 and versions.count_keys(failed[0].version) == 0
    assert read_current(rclient, "tags", ids[:1])[1][0] == payloads[0]


def test_spark_submit_runs_the_job(photos, tagger, redis_url, rclient) -> None:
    store, _ = tagger
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": store.settings.root,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = local_args("tag_images", master="local[2]", driver_memory="1g", images=f"{photos}/*.jpg")
    done = subprocess.run(
        [spark_submit_bin(), *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"keys written {COUNT}, images scored {COUNT}" in done.stdout
    assert f"skipped {len(BAD)} bad input(s)" in done.stdout
    live = Versions(rclient, "tags", StoreSettings()).current()
    assert live is not None and f"tags: published version {live}" in done.stdout
