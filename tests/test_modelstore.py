"""The model store on a local root and on an hdfs:// root served over WebHDFS."""

from __future__ import annotations

from pathlib import Path

import pytest

from prescore.errors import ModelStoreError
from prescore.models.store import ModelStore
from prescore.settings import ModelStoreSettings
from tests.webhdfs_server import WebHdfsServer


def _build(tmp: Path, name: str, weights: bytes) -> Path:
    built = tmp / name
    (built / "saved_model" / "variables").mkdir(parents=True)
    (built / "saved_model" / "saved_model.pb").write_bytes(weights)
    (built / "saved_model" / "variables" / "variables.index").write_bytes(b"idx" + weights)
    return built


def _exercise(store: ModelStore, tmp: Path) -> None:
    assert store.versions("reco") == []
    assert store.promoted("reco") is None
    with pytest.raises(ModelStoreError):
        store.resolve("reco")
    assert store.save("reco", _build(tmp, "a", b"one"), {"metrics": {"auc": 0.7}}) == "1"
    assert store.save("reco", _build(tmp, "b", b"two"), {"metrics": {"auc": 0.8}}) == "2"
    assert store.versions("reco") == ["1", "2"]
    store.promote("reco", "1")
    ref = store.resolve("reco")
    assert (ref.version, ref.meta["metrics"]["auc"]) == ("1", 0.7)
    assert (ref.saved_model / "saved_model.pb").read_bytes() == b"one"
    assert (ref.saved_model / "variables" / "variables.index").read_bytes() == b"idxone"
    store.promote("reco", "2")
    assert store.promoted("reco") == "2"
    assert (store.resolve("reco").saved_model / "saved_model.pb").read_bytes() == b"two"
    with pytest.raises(ModelStoreError):
        store.promote("reco", "7")


def test_local_root(tmp_path: Path) -> None:
    store = ModelStore(ModelStoreSettings(root=(tmp_path / "models").as_uri()))
    with pytest.raises(ModelStoreError, match="no such folder"):  # a root not made yet
        store.versions("reco")
    (tmp_path / "models").mkdir()
    _exercise(store, tmp_path)
    assert (tmp_path / "models" / "reco" / "PROMOTED").read_text() == "2\n"


def test_hdfs_root_over_webhdfs(tmp_path: Path) -> None:
    with WebHdfsServer(tmp_path / "namenode") as server:
        store = ModelStore(
            ModelStoreSettings(
                root=f"hdfs://127.0.0.1:{server.port}/models",
                cache_dir=str(tmp_path / "cache"),
                timeout_s=10,
            )
        )
        assert not store.local
        _exercise(store, tmp_path)
    # what the store wrote is laid out on the "cluster" exactly as on a local root
    assert (tmp_path / "namenode" / "models" / "reco" / "PROMOTED").read_text() == "2\n"
    assert (tmp_path / "namenode" / "models" / "reco" / "2" / "model.json").exists()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ModelStoreError):
        ModelStore(ModelStoreSettings(root="az://bucket/models"))


def test_a_version_another_writer_made_meanwhile_is_not_overwritten_nor_left_half_copied(
    tmp_path: Path,
) -> None:
    """Two registrations of one model chose the same next version: the second's rename
    finds the first's folder, gives way (ModelStore.save then takes the next number) and
    leaves no temporary copy behind; a store that cannot be written says so in one line
    (it was reported as a Redis outage)."""
    from prescore.data.storage import LocalFiles
    from prescore.errors import StorageUnavailable

    files, target = LocalFiles(), tmp_path / "models" / "reco" / "1"
    files.upload_dir(_build(tmp_path, "a", b"one"), str(target))
    with pytest.raises(FileExistsError):
        files.upload_dir(_build(tmp_path, "b", b"two"), str(target))
    assert (target / "saved_model" / "saved_model.pb").read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["1"]  # no .partial left
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(StorageUnavailable, match="cannot be written: Not a directory"):
        files.upload_dir(_build(tmp_path, "c", b"three"), str(blocked / "reco" / "1"))
    store = ModelStore(ModelStoreSettings(root=(blocked / "models").as_uri()))
    with pytest.raises(ModelStoreError, match="cannot be written: Not a directory"):
        store.save("reco", _build(tmp_path, "d", b"four"), {})
