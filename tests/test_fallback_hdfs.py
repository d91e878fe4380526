"""The fallback app loading its models from an hdfs:// store (WebHDFS test server)."""

from __future__ import annotations

from pathlib import Path

from fallback.app import create_app
from fallback.settings import FallbackSettings
from prescore.modelstore import ModelStore
from prescore.settings import ModelStoreSettings, Settings
from tests import fallback_models as fm
from tests.webhdfs_server import WebHdfsServer


def test_models_from_hdfs_and_a_promoted_version_swapped_in(tmp_path: Path) -> None:
    with WebHdfsServer(tmp_path / "namenode") as server:
        models = ModelStoreSettings(
            root=f"hdfs://127.0.0.1:{server.port}/models",
            cache_dir=str(tmp_path / "cache"),
            timeout_s=10,
        )
        store = ModelStore(models)
        store.promote("reco", store.save("reco", fm.build_dense(tmp_path / "v1"), fm.reco_meta()))
        settings = FallbackSettings(core=Settings(models=models), models=("reco",))
        app = create_app(settings, watch=False)
        client = app.test_client()
        assert client.get("/readyz").json == {"status": "ready", "models": {"reco": "1"}}
        body = {"instances": [{"user_id": "a", "features": {"vec": [0.5] * 12}}], "k": 3}
        first = client.post("/v1/predict/recommendations", json=body)
        assert first.status_code == 200 and first.json["model_version"] == "1"
        v2 = store.save("reco", fm.build_dense(tmp_path / "v2", seed=3, epochs=1), fm.reco_meta())
        store.promote("reco", v2)
        slots = app.extensions["fallback_slots"]
        assert slots.refresh("reco") is True  # what the watcher does on its next pass
        second = client.post("/v1/predict/recommendations", json=body)
        assert second.status_code == 200 and second.json["model_version"] == v2 == "2"
        assert (tmp_path / "cache" / "reco" / "2" / "saved_model").is_dir()
        assert slots.refresh("reco") is False  # nothing new
