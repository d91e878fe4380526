"""The fallback over hdfs:// (a WebHDFS-protocol test server, tests.webhdfs_server): models
from an hdfs:// store, a promoted version swapped in, and a dataset's own inputs (the
shop's tables, the colours' image folder) read from hdfs:// too."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from fallback.app import create_app
from fallback.settings import FallbackSettings
from prescore.data.datasets import load
from prescore.models.store import ModelStore
from prescore.settings import ModelStoreSettings, Settings
from tests import fallback_domains as fd
from tests.helpers import registered
from tests.webhdfs_server import WebHdfsServer


def test_models_and_inputs_from_hdfs_and_a_promoted_version_swapped_in(
    shop: dict[str, Path], colours: dict[str, Any], tmp_path: Path
) -> None:
    namenode = tmp_path / "namenode"
    shutil.copytree(shop["tables"], namenode / "tables")
    fd.image_folder(namenode, colours)  # namenode/images, and namenode/secret.jpg beside it
    with WebHdfsServer(namenode) as server:
        hdfs = f"hdfs://127.0.0.1:{server.port}"
        config = fd.write_config(
            tmp_path / "prescore.toml", tables=Path("/tables"), images=Path("/images")
        )
        text = config.read_text().replace('path = "/tables', f'path = "{hdfs}/tables')
        config.write_text(text.replace('path = "/images', f'path = "{hdfs}/images'))
        models = ModelStoreSettings(
            root=f"{hdfs}/models", cache_dir=str(tmp_path / "cache"), timeout_s=10
        )
        s = dataclasses.replace(Settings(models=models), catalog=load(config, {}))
        assert s.catalog.get("shop").entities.path.startswith("hdfs://")  # type: ignore[union-attr]
        registered(s, "shop-model", shop["plain"])
        registered(s, "colour-tagger", colours["model"])
        assert (namenode / "models" / "shop-model" / "1" / "saved_model").is_dir()
        app = create_app(FallbackSettings(core=s, runtime="tf"), watch=False)
        client = app.test_client()
        assert client.get("/readyz").json == {
            "status": "ready",
            "models": {"colours": "1", "shop": "1"},
        }
        c = fd.customers(shop["tables"]).loc["c4"]
        body = {"instances": [{"key": "c4"}], "k": 3}
        first = client.post("/v1/datasets/shop:predict", json=body)
        assert first.status_code == 200 and first.get_json()["model_version"] == "1"
        want = fd.expected_top(
            shop["tables"], shop["plain"], c["segment"], list(c["categories"]), 3
        )
        got = first.get_json()["predictions"][0]["items"]
        assert [i["product_id"] for i in got] == [p for p, _ in want]  # tables read from hdfs
        tags = client.post(
            "/v1/datasets/colours:predict",
            json={"instances": [{"key": "img-0"}, {"key": "secret"}, {"key": "p-junk"}]},
        ).get_json()["predictions"]
        scores = fd.colour_scores(colours["model"], (namenode / "images/img-0.jpg").read_bytes())
        assert {e["colour"] for e in tags[0]["colours"]} == {
            k for k, v in scores.items() if v >= 0.5
        }
        assert [tags[1]["error"], tags[2]["error"]] == ["not_found", "bad_image"]
        v2 = registered(s, "shop-model", shop["factored"]).version  # promoted
        assert v2 == "2" and ModelStore(s.models).promoted("shop-model") == "2"
        slots = app.extensions["fallback_slots"]
        assert slots.refresh("shop") is True  # what the watcher does on its next pass
        second = client.post("/v1/datasets/shop:predict", json=body)
        assert second.status_code == 200 and second.get_json()["model_version"] == "2"
        assert [i["product_id"] for i in second.get_json()["predictions"][0]["items"]] == [
            p for p, _ in want
        ]  # the factored export of the same model
        assert (tmp_path / "cache" / "shop-model" / "2" / "saved_model").is_dir()
        assert slots.refresh("shop") is False  # nothing new
        assert slots.refresh("colours") is False


def test_an_unreachable_hdfs_image_folder_is_a_503_and_a_sent_image_still_answered(
    colours: dict[str, Any], tmp_path: Path
) -> None:
    namenode = tmp_path / "namenode"
    fd.image_folder(namenode, colours)
    with contextlib.ExitStack() as running:
        server = running.enter_context(WebHdfsServer(namenode))
        hdfs = f"hdfs://127.0.0.1:{server.port}"
        config = fd.write_config(tmp_path / "p.toml", images=Path("/images"))
        config.write_text(config.read_text().replace('path = "/images', f'path = "{hdfs}/images'))
        s = fd.store_settings(Settings(), config, tmp_path)
        registered(s, "colour-tagger", colours["model"])
        settings = FallbackSettings(core=s, runtime="tf", request_timeout_s=2)
        client = create_app(settings, watch=False).test_client()
        ok = client.post("/v1/datasets/colours:predict", json={"instances": [{"key": "img-1"}]})
        assert ok.status_code == 200 and "colours" in ok.get_json()["predictions"][0]
    # the namenode has gone away
    gone = client.post("/v1/datasets/colours:predict", json={"instances": [{"key": "img-1"}]})
    assert (gone.status_code, gone.get_json()["error"]) == (503, "image_store_unavailable")
    assert "127.0.0.1" not in gone.text and "Errno" not in gone.text
    sent = client.post(
        "/v1/datasets/colours:predict",
        json={"instances": [{"key": "x", "b64": _b64(fd.jpeg_bytes({"red"}))}]},
    )
    assert sent.status_code == 200  # an image sent needs no store


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


@pytest.fixture(autouse=True)
def _quiet_hdfs_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="hdfs")
