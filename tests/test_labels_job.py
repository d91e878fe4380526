"""Labels datasets in bulk: a team's own images and tag names (the tests' colours domain:
JPEGs, three colours, a small CNN; tests/domains.py), with the files a folder may hold that
no model can read, and labels from a feature table. Real TensorFlow, real local Spark,
real Redis. The demo's tagger is checked in tests/test_demo_tagger.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.labels import decode_all, extension_pattern, image_key
from jobs.runtimes import chosen_runtime
from jobs.score import parse_args, run_job
from jobs.submit import local_args, spark_submit_bin
from prescore.data.datasets import Dataset
from prescore.data.images import image_extensions, image_folder
from prescore.errors import ConfigError, InvalidInput, ModelStoreError
from prescore.models.store import ModelStore
from prescore.publishing import gates
from prescore.settings import Settings, StoreSettings
from prescore.store.misslog import MissLog
from prescore.store.versions import Versions, read_current
from tests import domains
from tests import fallback_domains as fd
from tests.frames import read_frame, write_frame
from tests.helpers import job_env, registered, stored_payload, with_catalog

BAD = {
    "corrupt-1": "bad_image",
    "empty-1": "empty_image",
    "notes-1": "bad_image",
    "huge-1": "image_too_large",
    "x" * 241: "invalid_id",  # too long a key to be a file's name with its extension
}
AWKWARD = "a photo (2) ns:é{x}"  # a copy of img-0: any key a file name can be


@pytest.fixture(scope="module")
def photos(colours: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colours' JPEGs, the files no model reads, and one whose name is not an id."""
    folder = tmp_path_factory.mktemp("photos") / "images"
    shutil.copytree(colours["images"], folder)
    domains.bad_image_files(folder)
    (folder / f"{AWKWARD}.jpg").write_bytes((folder / "img-0.jpg").read_bytes())
    (folder / f"{'x' * 241}.jpg").write_bytes((folder / "img-0.jpg").read_bytes())
    return folder


THRESHOLDS = {"red": 0.5, "green": 0.995, "blue": 0.01}  # the model's own, one a label


@pytest.fixture(scope="module")
def tagger(colours: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colours' CNN with a threshold of its own for each label in its model.json."""
    folder = tmp_path_factory.mktemp("tagger") / "model"
    shutil.copytree(colours["model"], folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "thresholds": THRESHOLDS}))
    return folder


@pytest.fixture()
def colours_settings(settings: Settings, tagger: Path, photos: Path) -> Settings:
    s = with_catalog(settings, domains.colours_config(photos, photos.parent / "prescore.toml"))
    registered(s, "colour-tagger", tagger)
    return s


def _scores(model: Path, files: list[Path]) -> list[dict[str, float]]:
    """The model's own score of each label for each image, decoded as the job decodes."""
    import tensorflow as tf

    from prescore.models.image_features import decode

    size = (domains.IMAGE_SIZE, domains.IMAGE_SIZE)
    pixels = np.stack([decode(f.read_bytes(), size) for f in files])
    serve = tf.saved_model.load(str(model / "saved_model")).signatures["serving_default"]
    out = np.asarray(next(iter(serve(tf.constant(pixels)).values())))
    return [dict(zip(domains.COLOURS, map(float, row), strict=True)) for row in out]


def _run(spark, s: Settings, dataset: str = "colours", *extra: str):  # type: ignore[no-untyped-def]
    return run_job(spark, parse_args(["--dataset", dataset, *extra]), s)


def test_image_id_rule_and_globs() -> None:
    assert image_key("hdfs://nn:8020/photos/img-000042.jpg") == "img-000042"
    assert image_key("file:/var/images/a.b.png") == "a.b"
    assert image_key(f"file:/var/images/{AWKWARD}.jpg") == AWKWARD  # Spark's path as it is
    for bad in (".hidden.jpg", "_hidden.jpg", f"{'x' * 241}.jpg"):  # hidden: the first 2
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


def test_job_publishes_labels_that_match_and_a_failed_run_changes_nothing(  # type: ignore[no-untyped-def]
    spark, colours, colours_settings, tagger, photos, rclient
) -> None:
    truth = colours["truth"]
    log = MissLog(rclient)
    log.record("colours", [sorted(truth)[0], "no-such-photo"])
    summary = _run(spark, colours_settings)
    # a logged miss of a photo the run scored is forgotten; one of no file stays
    assert log.all_keys("colours") == ["no-such-photo"]

    # Every good photo is labelled and counted; every bad file is listed with its reason.
    count = len(truth)
    assert summary.rows == summary.scored == count + 1  # the photos and AWKWARD
    assert summary.bad == len(BAD)
    reasons = {Path(line.split(": ")[0]).stem: line.split(": ")[1] for line in summary.bad_sample}
    assert reasons == BAD
    versions = Versions(rclient, "colours", StoreSettings())
    assert versions.current() == summary.version
    assert versions.get(summary.version).rows == count + 1
    assert versions.count_keys(summary.version) == count + 1
    _, (copy, same) = read_current(rclient, "colours", [AWKWARD, "img-0"])
    assert copy is not None and same is not None
    assert json.loads(copy) == {**json.loads(same), "key": AWKWARD}

    ids = sorted(truth)
    version, payloads = read_current(rclient, "colours", [*ids, *BAD])
    assert version == summary.version
    assert payloads[len(ids) :] == [None] * len(BAD)  # bad files never get a payload
    said = _scores(tagger, [photos / f"{key}.jpg" for key in ids])
    for key, raw, scores in zip(ids, payloads[: len(ids)], said, strict=True):
        assert raw is not None
        doc = json.loads(raw)
        assert list(doc) == ["key", "colours", "model", "model_version", "scored_at"]
        assert doc["key"] == key and doc["model_version"] == "1"
        listed = [e["score"] for e in doc["colours"]]
        assert listed == sorted(listed, reverse=True)  # best first
        assert all(set(e) == {"colour", "score"} for e in doc["colours"])
        # each label kept by its own threshold (none told apart closer than 1e-3)
        kept = {e["colour"] for e in doc["colours"]}
        clear = {c for c, v in scores.items() if abs(v - THRESHOLDS[c]) > 1e-3}
        assert kept & clear == {c for c in clear if scores[c] >= THRESHOLDS[c]}, (key, scores)

    # A run that cannot run (its model version does not exist) begins nothing.
    before = versions.all()
    with pytest.raises(ModelStoreError, match="colour-tagger/99 not found"):
        _run(spark, colours_settings, "colours", "--model-version", "99")
    assert versions.current() == summary.version and versions.all() == before
    assert read_current(rclient, "colours", ids[:1])[1][0] == payloads[0]


def _labels(rclient, version: str, ids: list[str]) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Each key's published labels and scores in ``version``."""
    out = {}
    for key in ids:
        raw = stored_payload(rclient, "colours", version, key)
        assert raw is not None, key
        out[key] = {e["colour"]: e["score"] for e in json.loads(raw)["colours"]}
    return out


def test_a_run_in_a_litert_variant_publishes_what_the_savedmodel_does(  # type: ignore[no-untyped-def]
    spark, colours, colours_settings, tagger, photos, rclient, capsys
) -> None:
    ids = sorted(colours["truth"])
    versions = Versions(rclient, "colours", StoreSettings())
    in_tf = _run(spark, colours_settings)
    # version 1 was registered without variants: asking for one begins nothing
    before = versions.all()
    with pytest.raises(ConfigError, match=r"^--runtime int8: colour-tagger/1 has no int8 variant"):
        _run(spark, colours_settings, "colours", "--runtime", "int8")
    assert versions.all() == before and versions.current() == in_tf.version

    record = registered(colours_settings, "colour-tagger", tagger, int8=True).quantization
    assert record["built"], record  # version 2: the same weights, with LiteRT variants
    capsys.readouterr()
    in_f32 = _run(spark, colours_settings, "colours", "--runtime", "float32", "--batch-rows", "7")
    assert "with colour-tagger/2 in LiteRT (float32)" in capsys.readouterr().out
    # (that its workers score in LiteRT, test_spark_submit_runs_the_job sees)
    assert in_f32.scored == in_tf.scored and in_f32.bad == in_tf.bad
    assert versions.get(in_f32.version).extra["runtime"] == "float32"  # recorded with it
    assert "runtime" not in versions.get(in_tf.version).extra
    want, got = _labels(rclient, in_tf.version, ids), _labels(rclient, in_f32.version, ids)
    own = _scores(tagger, [photos / f"{key}.jpg" for key in ids])
    for key, scores in zip(ids, own, strict=True):
        # the same labels, but one the two runtimes put either side of its threshold
        near = {c for c, v in scores.items() if abs(v - THRESHOLDS[c]) <= 1e-3}
        assert set(got[key]) - near == set(want[key]) - near, key
        for colour in set(got[key]) & set(want[key]):
            assert got[key][colour] == pytest.approx(want[key][colour], abs=2e-4), key


def test_auto_chooses_what_publishes_as_the_savedmodel_does_and_int8_only_by_name(
    colours_settings: Settings, tagger: Path
) -> None:
    registered(colours_settings, "colour-tagger", tagger, int8=True)  # version 2
    ref = ModelStore(colours_settings.models).resolve("colour-tagger", "2")
    measured = ref.meta["quantization"]["runtimes"]
    exact = [r for r in ("tf", "float32") if measured[r]["agrees"]]
    faster = max(exact, key=lambda r: measured[r]["batch_rows_per_s"])
    assert chosen_runtime("labels", ref, "auto") == faster  # never int8, however fast
    assert chosen_runtime("ranking", ref, "auto") == chosen_runtime("labels", ref, "tf") == "tf"
    if measured["int8"]["agrees"]:
        assert chosen_runtime("labels", ref, "int8") == "int8"
    # a variant registration found answering otherwise is refused, with what it measured
    off = {**measured, "int8": {**measured["int8"], "agrees": False, "max_abs_diff_vs_tf": 0.3}}
    quant = {**ref.meta["quantization"], "runtimes": off}
    disagreeing = dataclasses.replace(ref, meta={**ref.meta, "quantization": quant})
    with pytest.raises(ConfigError, match=r"int8 variant does not answer .* up to 0\.3 apart"):
        chosen_runtime("labels", disagreeing, "int8")


def test_spark_submit_runs_the_job(  # type: ignore[no-untyped-def]
    colours, photos, tagger, colours_settings, redis_url, rclient
) -> None:
    count = len(colours["truth"])
    env = job_env()
    env |= {
        "REDIS_URL": redis_url,
        "PRESCORE_MODEL_STORE": colours_settings.models.root,
        "PRESCORE_CONFIG": str(photos.parent / "prescore.toml"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = local_args("score", master="local[2]", driver_memory="1g", dataset="colours")
    # a C locale: Java would list the file named outside ASCII under no name of its own
    c_locale = {k: v for k, v in env.items() if not k.startswith(("LANG", "LC_"))}
    refused = subprocess.run(
        [spark_submit_bin(), *argv], env=c_locale, capture_output=True, text=True, timeout=300
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "LANG: Spark's JVM spells file names" in said, said
    # the run scores in the version's LiteRT float32 variant: its workers say so (in local
    # mode a worker's stderr is the JVM's, which only a process of its own shows a test)
    registered(colours_settings, "colour-tagger", tagger, int8=True)
    in_lite = [*argv, "--runtime", "float32"]
    done = subprocess.run(
        [spark_submit_bin(), *in_lite],
        env={**env, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"keys written {count + 1}, images scored {count + 1}" in done.stdout
    assert f"skipped {len(BAD)} bad input(s)" in done.stdout
    live = Versions(rclient, "colours", StoreSettings()).current()
    assert live is not None and f"colours: published version {live}" in done.stdout
    assert "colour-tagger/2 runs on the CPU in LiteRT (float32)" in done.stderr
    assert "runs on the CPU (no GPU visible)" not in done.stderr  # no SavedModel loaded


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

    # the same rows in the model's LiteRT float32 variant, batches of 2 (one padded)
    registered(s, "shape-model", domains.rows_model(tmp_path / "model8"), int8=True)
    in_f32 = _run(spark, s, "shape", "--runtime", "float32", "--batch-rows", "2")
    assert in_f32.rows == 3 and in_f32.bad == 1
    for key, doc in got.items():
        lite = json.loads(stored_payload(rclient, "shape", in_f32.version, key) or b"")
        assert [e["label"] for e in lite["labels"]] == [e["label"] for e in doc["labels"]]
        assert [e["score"] for e in lite["labels"]] == pytest.approx(
            [e["score"] for e in doc["labels"]], abs=2e-4
        )

    # a key that repeats would be counted twice and stored once: refused before writing
    write_frame(pd.concat([table, table.iloc[[0]]]), tmp_path / "rows.parquet", index=False)
    with pytest.raises(ConfigError, match=r"shape: rows: 1 key\(s\) repeat \('a1', ...\)"):
        _run(spark, s, "shape")


def test_a_one_label_model_publishes_its_label_where_it_passes(  # type: ignore[no-untyped-def]
    spark, settings, rclient, tmp_path
) -> None:
    """A yes/no classifier (one label, its output ``[batch, 1]``) is a labels model like
    any: in TensorFlow and in its LiteRT float32 variant, a row gets the label where its
    score passes the threshold, and none where it does not."""
    table = fd.swatch_table(tmp_path / "tables")
    config = tmp_path / "reds.toml"
    config.write_text(fd.swatches_toml(table, "reds", model="red-tagger"))
    s = with_catalog(settings, config)
    registered(s, "red-tagger", fd.swatch_model(tmp_path / "model", ("red",)), int8=True)
    rows = read_frame(table).set_index("swatch_id")
    want = {
        k: fd.swatch_colours(r, g, b)["red"] for k, (r, g, b) in rows[["r", "g", "b"]].iterrows()
    }
    assert 0 < sum(v >= 0.5 for v in want.values()) < len(want)  # both answers occur
    for runtime in ("tf", "float32"):
        summary = _run(spark, s, "reds", "--runtime", runtime)
        assert summary.rows == len(rows) and summary.bad == 0
        for key, score in want.items():
            doc = json.loads(stored_payload(rclient, "reds", summary.version, key) or b"")
            got = {e["colour"]: e["score"] for e in doc["colours"]}
            assert got == ({"red": pytest.approx(score, abs=2e-4)} if score >= 0.5 else {})


def test_a_worker_decodes_the_same_from_paths_as_from_sparks_bytes(tmp_path: Path) -> None:
    """Local files are opened by the worker; other stores' bytes come from Spark."""
    for i in range(3):
        (tmp_path / f"img-{i}.jpg").write_bytes(domains.colour_jpeg({"red"}, seed=i))
    domains.bad_image_files(tmp_path)
    (tmp_path / "gone-1.jpg").write_bytes((tmp_path / "img-0.jpg").read_bytes())
    paths = [f"file:{p}" for p in sorted(tmp_path.glob("*.jpg"))]
    frame = pd.DataFrame({"path": paths, "content": [Path(p[5:]).read_bytes() for p in paths]})
    (tmp_path / "gone-1.jpg").unlink()  # listed, then removed before the worker opens it
    by_path = decode_all(frame[["path"]], (64, 64), 3, 1_000_000)
    by_bytes = decode_all(frame, (64, 64), 3, 1_000_000)
    assert by_path[0] == ["img-0", "img-1", "img-2"]
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


def test_a_rerun_over_the_same_rows_samples_the_same_keys_and_passes_its_gates(  # type: ignore[no-untyped-def]
    spark, settings, rclient, tmp_path
) -> None:
    """The gates' sample is the dataset's ``sample`` size (not a few keys a Spark batch),
    and the same keys run after run: the keys of lowest rank, wherever the tasks put
    them. So a rerun with the same model over the same rows measures no drift, instead of
    comparing two small random samples that a few labels a key make noisy."""
    rng = np.random.default_rng(7)
    n = 300
    table = pd.DataFrame(
        {"sku": [f"s{i}" for i in range(n)], "width": rng.random(n), "height": rng.random(n)}
    )
    write_frame(table, tmp_path / "rows.parquet", index=False)
    config = tmp_path / "r.toml"
    config.write_text(
        f'[datasets.shape]\nkind = "labels"\nmodel = "shape-model"\nmin_score = 0.5\n'
        f'[datasets.shape.rows]\npath = "{tmp_path}/rows.parquet"\nkey = "sku"\n'
        "[datasets.shape.gates]\nsample = 120\n"
    )
    s = with_catalog(settings, config)
    registered(s, "shape-model", domains.rows_model(tmp_path / "model"))
    lowest = gates.sample_keys(list(table["sku"]), 120)
    samples, checks = [], []
    for _ in range(2):
        summary = _run(spark, s, "shape", "--partitions", "3")
        info = Versions(rclient, "shape", s.store).get(summary.version)
        assert info.status == "published", info.note
        samples.append(sorted(info.extra["sample"]))
        checks.append({c["name"]: c["value"] for c in info.extra["gates"]["checks"]})
    assert samples[0] == samples[1] == sorted(lowest)  # 120 of 300, the same both times
    assert checks[1]["drift"] == 0.0 and checks[1]["coverage"] == 1.0


def test_two_files_of_one_key_are_refused_and_a_file_removed_after_the_listing_is_unreadable(  # type: ignore[no-untyped-def]
    spark, colours, settings, tagger, rclient, tmp_path
) -> None:
    """a.jpg and a.JPG are one key: refused in one line naming them before a version is
    begun (both were written under it, and the count check failed after the run). A file
    removed between the listing and its read is listed ``unreadable`` and the rest
    publish (Spark's scan failed the whole run with a Java trace)."""
    from jobs.bulk import Run, WorkerSettings, publish_version
    from jobs.labels import runner

    folder = tmp_path / "images"
    shutil.copytree(colours["images"], folder)
    s = with_catalog(settings, domains.colours_config(folder, tmp_path / "c.toml"))
    registered(s, "colour-tagger", tagger)
    (folder / "img-0.JPG").write_bytes((folder / "img-0.jpg").read_bytes())
    with pytest.raises(ConfigError, match=r"1 key\(s\) name more than one file \('img-0': "):
        _run(spark, s)
    assert Versions(rclient, "colours", s.store).all() == []
    (folder / "img-0.JPG").unlink()

    dataset = s.catalog.get("colours")
    ref = ModelStore(s.models).resolve("colour-tagger")
    worker = WorkerSettings.of(s)
    base = Run(
        dataset=dataset, model_version=ref.version, scored_at="", worker=worker, batch_rows=8
    )
    run, _ = runner(spark, ref, base)  # the files are listed here
    (folder / "img-1.jpg").unlink()  # removed before any worker reads it
    versions = Versions(rclient, "colours", s.store)
    summary = publish_version(
        spark, versions, dataset, ("colour-tagger", ref.version), run, "images"
    )
    assert summary.rows == len(colours["truth"]) - 1 and summary.bad == 1
    assert summary.bad_sample[0].endswith("img-1.jpg: unreadable"), summary.bad_sample
    assert versions.current() == summary.version
