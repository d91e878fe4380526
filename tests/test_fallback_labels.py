"""The fallback answering labels datasets of a team's own: the colours (images read by key
from their folder, the CNN served in int8 where registration built it) and the swatches
(rows of a feature table, or features a caller sends), equal to what the bulk job stores.
Real TensorFlow and LiteRT, a real fallback process, real local Spark, real Redis."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from fallback.app import create_app
from fallback.settings import FallbackSettings
from jobs.score import parse_args, run_job, score
from prescore.models.image_features import decode
from prescore.models.inference import load_runner
from prescore.models.store import ModelRef, ModelStore
from prescore.settings import Settings
from tests import domains
from tests import fallback_domains as fd
from tests.fallback_procs import Server
from tests.frames import read_frame
from tests.helpers import registered, stored_payload, with_catalog

COLOURS = "/v1/datasets/colours:predict"
SWATCHES = "/v1/datasets/swatches:predict"


@pytest.fixture(scope="module")
def world(colours: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fallback-labels")
    images = fd.image_folder(root, colours)
    table = fd.swatch_table(root / "tables")
    config = fd.write_config(root / "prescore.toml", images=images, swatches=table)
    with config.open("a") as more:  # a yes/no classifier: one label, output [batch, 1]
        more.write(fd.swatches_toml(table, "reds", model="red-tagger"))
    s = fd.store_settings(Settings(), config, root)
    result = registered(s, "colour-tagger", colours["model"], int8=True)
    registered(s, "swatch-tagger", fd.swatch_model(root / "swatch-model"))
    registered(s, "red-tagger", fd.swatch_model(root / "red-model", ("red",)))
    ref = ModelStore(s.models).resolve("colour-tagger", result.version)
    return {"settings": s, "config": config, "images": images, "table": table, "ref": ref}


@pytest.fixture(scope="module")
def server(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = fd.process_env(
        world["settings"],
        world["config"],
        FALLBACK_RUNTIME="tf",
        FALLBACK_RUNTIMES="colours=int8",
    )
    srv = Server("fallback.serve", env, tmp_path_factory.mktemp("logs") / "fb.log").start()
    yield srv
    srv.stop()


def test_registration_records_the_int8_variant_of_the_cnn(world: dict[str, Any]) -> None:
    ref: ModelRef = world["ref"]
    quant = ref.meta["quantization"]
    assert quant["built"] is True, quant
    assert ref.int8.stat().st_size > 0 and (ref.path / "model_float32.tflite").stat().st_size > 0
    assert set(quant["runtimes"]) == {"tf", "float32", "int8"}
    assert quant["runtimes"]["float32"]["max_abs_diff_vs_tf"] < 1e-4
    assert quant["runtimes"]["int8"]["max_abs_diff_vs_tf"] < 0.1  # 8-bit steps, no more
    assert quant["fastest"] in quant["runtimes"] and quant["calibration_rows"] > 0


def _int8_labels(ref: ModelRef, raw: bytes) -> dict[str, float]:
    runner = load_runner(ref.path, ref.meta, "int8")
    pixels = decode(raw, (domains.IMAGE_SIZE, domains.IMAGE_SIZE))[None]
    scores = runner({"pixels": pixels})[0]
    return {c: float(s) for c, s in zip(domains.COLOURS, scores, strict=True) if s >= 0.5}


def test_live_labels_are_the_int8_models_labels_above_threshold(
    server: Server, world: dict[str, Any]
) -> None:
    ready = requests.get(server.url + "/readyz", timeout=5).json()
    assert ready["models"] == {"colours": "1", "swatches": "1", "swatches-strict": "1", "reds": "1"}
    ref: ModelRef = world["ref"]
    keys_ = ["img-0", "img-1", "img-2", "img-3"]
    reply = requests.post(
        server.url + COLOURS, json={"instances": [{"key": k} for k in keys_]}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    for key, payload in zip(keys_, reply.json()["predictions"], strict=True):
        raw = (world["images"] / f"{key}.jpg").read_bytes()
        expected = _int8_labels(ref, raw)
        assert (payload["key"], payload["source"], payload["model"]) == (
            key,
            "live",
            "colour-tagger",
        )
        assert {c["colour"] for c in payload["colours"]} == set(expected)
        for entry in payload["colours"]:
            assert entry["score"] == pytest.approx(expected[entry["colour"]], abs=1e-4)
        got = [c["score"] for c in payload["colours"]]
        assert got == sorted(got, reverse=True)
    raw = fd.jpeg_bytes({"green", "blue"})
    one = requests.post(
        server.url + COLOURS + "?key=sent-1",
        data=raw,
        headers={"Content-Type": "image/jpeg"},
        timeout=10,
    ).json()
    expected = _int8_labels(ref, raw)
    assert set(expected) == {"green", "blue"}
    assert [c["colour"] for c in one["colours"]] == sorted(expected, key=lambda c: -expected[c])


def test_a_key_the_folder_lacks_is_a_per_instance_not_found(server: Server) -> None:
    reply = requests.post(
        server.url + COLOURS,
        json={"instances": [{"key": "img-999"}, {"key": "img-0"}]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    missing, found = reply.json()["predictions"]
    assert (missing["key"], missing["error"]) == ("img-999", "not_found")
    assert "img-999" in missing["message"] and "folder" in missing["message"]
    assert "/" not in missing["message"]  # no path of the server's in an answer
    assert "colours" in found


def test_rows_of_a_feature_table_by_key_and_sent_features(
    server: Server, world: dict[str, Any]
) -> None:
    table = read_frame(world["table"]).set_index("swatch_id")
    body = {
        "instances": [
            {"key": "s0"},
            {"key": "s-absent"},
            {"key": "new", "features": {"r": 0.9, "g": 0.1, "b": 0.7}},
            {"key": "s3"},
        ]
    }
    reply = requests.post(server.url + SWATCHES, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert (doc["dataset"], doc["model"]) == ("swatches", "swatch-tagger")
    s0, absent, new, s3 = doc["predictions"]
    for payload, (r, g, b) in (
        (s0, table.loc["s0", ["r", "g", "b"]]),
        (new, (0.9, 0.1, 0.7)),
        (s3, table.loc["s3", ["r", "g", "b"]]),
    ):
        assert list(payload) == [
            "swatch_id",
            "colours",
            "model",
            "model_version",
            "scored_at",
            "source",
        ]
        want = {c: v for c, v in fd.swatch_colours(r, g, b).items() if v >= 0.5}
        assert {c["colour"] for c in payload["colours"]} == set(want)
        for entry in payload["colours"]:
            assert entry["score"] == pytest.approx(want[entry["colour"]], abs=1e-4)
    assert {c["colour"] for c in new["colours"]} == {"red", "blue"}
    assert (absent["swatch_id"], absent["error"]) == ("s-absent", "not_found")
    # a dataset's own min_score over the model's thresholds: the same model, stricter
    strict = requests.post(
        server.url + "/v1/datasets/swatches-strict:predict",
        json={"instances": [{"key": "s0"}, {"key": "x", "features": {"r": 0.55, "g": 1, "b": 0}}]},
        timeout=10,
    ).json()["predictions"]
    r, g, b = table.loc["s0", ["r", "g", "b"]]
    assert {c["colour"] for c in strict[0]["colours"]} == {
        c for c, v in fd.swatch_colours(r, g, b).items() if v >= 0.99
    }
    assert [c["colour"] for c in strict[1]["colours"]] == ["green"]  # red is 0.73: below


def test_a_one_label_model_answers_its_label_or_none(server: Server, world: dict[str, Any]) -> None:
    table = read_frame(world["table"]).set_index("swatch_id")
    keys = list(table.index[:12])
    body = {"instances": [{"key": k} for k in keys]}
    reply = requests.post(server.url + "/v1/datasets/reds:predict", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    for key, payload in zip(keys, reply.json()["predictions"], strict=True):
        red = fd.swatch_colours(*table.loc[key, ["r", "g", "b"]])["red"]
        got = {c["colour"]: c["score"] for c in payload["colours"]}
        assert got == ({"red": pytest.approx(red, abs=1e-4)} if red >= 0.5 else {}), key


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"r": 0.1, "g": 0.2}, "missing b"),
        ({"r": 0.1, "g": 0.2, "b": 0.3, "alpha": 1.0}, "unknown alpha"),
        ({"r": "red", "g": 0.2, "b": 0.3}, "features.r"),
        ({"r": [0.1], "g": 0.2, "b": 0.3}, "features.r"),
        ({"r": None, "g": 0.2, "b": 0.3}, "features.r"),
        ({"r": float("nan"), "g": 0.2, "b": 0.3}, "features.r"),
        ({"r": 0.1, "g": float("-inf"), "b": 0.3}, "features.g"),
    ],
)
def test_bad_features_of_a_rows_dataset_are_a_400(
    server: Server, features: dict[str, Any], named: str
) -> None:
    body = json.dumps({"instances": [{"key": "s0"}, {"key": "x", "features": features}]})
    json_type = {"Content-Type": "application/json"}  # NaN sent as JSON's NaN
    reply = requests.post(server.url + SWATCHES, data=body, headers=json_type, timeout=10)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_features"), reply.text
    assert named in reply.json()["message"]
    sent_image = requests.post(
        server.url + SWATCHES, json={"instances": [{"key": "x", "b64": "AAAA"}]}, timeout=10
    )  # a rows dataset takes no image
    assert (sent_image.status_code, sent_image.json()["error"]) == (400, "invalid_instances")


@pytest.mark.parametrize("dataset", ["colours", "swatches"])
def test_live_labels_equal_the_bulk_jobs(
    spark: Any,
    settings: Settings,
    rclient: redis.Redis,
    world: dict[str, Any],
    colours: dict[str, Any],
    tmp_path: Path,
    dataset: str,
) -> None:
    s = fd.store_settings(settings, world["config"], tmp_path)
    registered(s, "colour-tagger", colours["model"])
    registered(s, "swatch-tagger", fd.swatch_model(tmp_path / "swatch-model"))
    summary = run_job(spark, parse_args(["--dataset", dataset]), s)
    wanted = fd.IMAGES if dataset == "colours" else [f"s{i}" for i in range(0, 40, 3)]
    assert summary.rows == len(wanted if dataset == "colours" else range(40))
    _assert_live_equals_stored(s, rclient, dataset, summary.version, wanted)


def test_live_and_bulk_tags_agree_on_photos_decoded_at_reduced_scale(
    spark: Any,
    settings: Settings,
    rclient: redis.Redis,
    colours: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Photos far larger than the model's input, decoded at 1/2 to 1/8 scale in both."""
    folder = fd.image_folder(tmp_path, colours, junk=False)
    big = {"big-0": (640, 480), "big-1": (1024, 768), "big-2": (1600, 1200)}
    for i, (key, (w, h)) in enumerate(big.items()):
        raw = domains.colour_jpeg({domains.COLOURS[i]}, size=w, seed=i)
        with Image.open(io.BytesIO(raw)) as img:
            img.resize((w, h)).save(folder / f"{key}.jpg", quality=90)
    config = fd.write_config(tmp_path / "prescore.toml", images=folder)
    s = fd.store_settings(settings, config, tmp_path)
    registered(s, "colour-tagger", colours["model"])
    summary = score(spark, "colours", settings=s)  # the job's Python form
    assert summary.rows == len(fd.IMAGES) + len(big)
    planned = score(spark, "colours", settings=s, dry_run=True).plan  # the files, counted
    assert planned is not None and planned["keys"] == planned["work"] == summary.rows
    assert planned["unit"] == "images" and planned["rate"] > 0
    _assert_live_equals_stored(s, rclient, "colours", summary.version, [*big, *fd.IMAGES])


def _assert_live_equals_stored(
    s: Settings, rclient: redis.Redis, dataset: str, version: str, wanted: list[str]
) -> None:
    """The fallback's live answer for each key is the payload the bulk run stored."""
    client = create_app(FallbackSettings(core=s, runtime="tf"), watch=False).test_client()
    reply = client.post(
        f"/v1/datasets/{dataset}:predict", json={"instances": [{"key": k} for k in wanted]}
    )
    assert reply.status_code == 200, reply.get_json()
    for key, live in zip(wanted, reply.get_json()["predictions"], strict=True):
        stored = json.loads(stored_payload(rclient, dataset, version, key) or b"")
        assert live["source"] == "live" and "source" not in stored
        plain = {k: v for k, v in live.items() if k not in ("source", "scored_at", "colours")}
        assert plain == {k: v for k, v in stored.items() if k not in ("scored_at", "colours")}
        assert [c["colour"] for c in live["colours"]] == [c["colour"] for c in stored["colours"]]
        assert np.allclose(
            [c["score"] for c in live["colours"]],
            [c["score"] for c in stored["colours"]],
            atol=1.5e-4,
        )


def test_a_table_that_cannot_be_read_is_a_503_not_a_missing_row(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """ "No such row" would be negative-cached by the lookup: an unread table is an outage."""
    config = fd.write_config(tmp_path / "prescore.toml", swatches=tmp_path / "gone.parquet")
    s = with_catalog(world["settings"], config)
    client = create_app(FallbackSettings(core=s, runtime="tf"), watch=False).test_client()
    reply = client.post(SWATCHES, json={"instances": [{"key": "s0"}]})
    assert (reply.status_code, reply.get_json()["error"]) == (503, "inputs_unavailable")
    sent = {"instances": [{"key": "new", "features": {"r": 0.9, "g": 0.1, "b": 0.7}}]}
    assert client.post(SWATCHES, json=sent).status_code == 200  # sent features need no table


def test_a_table_value_no_input_can_take_is_that_keys_error_not_the_calls(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """One row the model cannot be fed (text in a number column) fails its own key, as an
    input that needs fixing; the other keys of the call are answered (the call was a 400,
    which the lookup gave every key of a batch)."""
    import pandas as pd

    from tests.frames import write_frame

    path = tmp_path / "swatches.parquet"
    rows = {"swatch_id": ["s0", "s1"], "r": ["0.9", "red"], "g": [0.1, 0.1], "b": [0.7, 0.7]}
    write_frame(pd.DataFrame(rows), path, index=False)
    s = with_catalog(world["settings"], fd.write_config(tmp_path / "p.toml", swatches=path))
    client = create_app(FallbackSettings(core=s, runtime="tf"), watch=False).test_client()
    reply = client.post(SWATCHES, json={"instances": [{"key": "s0"}, {"key": "s1"}]})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    good, bad = reply.get_json()["predictions"]
    assert {c["colour"] for c in good["colours"]} == {"red", "blue"}
    assert (bad["swatch_id"], bad["error"]) == ("s1", "invalid_features")
    assert bad["message"].startswith("input 'r': ")
