"""``s3://`` and ``gs://`` roots against real servers on 127.0.0.1 (moto in server mode
for S3, gcp-storage-emulator for GCS's JSON API): the storage backend, the model store,
publishing a parquet folder, live inference's table mirror and its photos, each through
the same code as file:// and hdfs://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fallback.keyed_rows import KeyedRows
from prescore.api import Prescore
from prescore.data import object_store
from prescore.data.datasets import Table
from prescore.data.images import ImageStore
from prescore.data.storage import open_root
from prescore.encoding.keys import KeyForm
from prescore.errors import ConfigError, ImageStoreUnavailable, ModelStoreError
from prescore.models.store import ModelStore
from prescore.settings import ModelStoreSettings, Settings
from prescore.store.embedded_redis import free_port
from tests.object_servers import GcsServer, ObjectServer, S3Server


@pytest.fixture(scope="module", params=["s3", "gs"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectServer]:
    """An S3 server (moto) and a GCS one (Google's JSON API, emulated): each test runs on both."""
    kind = S3Server if request.param == "s3" else GcsServer
    with kind(tmp_path_factory.mktemp(request.param) / "server.log") as running:
        yield running


@pytest.fixture()
def bucket(server: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket, and this process's environment pointed at the server as a pod's
    would be (each cloud's standard variables)."""
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    name = f"b-{uuid4().hex[:12]}"
    server.admin().create_dir(name)
    return f"{server.scheme}://{name}"


def _put(uri: str, data: bytes) -> None:
    with object_store.filesystem_of(uri).open_output_stream(object_store.object_path(uri)) as f:
        f.write(data)


def _parquet(uri: str, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    where = object_store.filesystem_of(uri)
    pq.write_table(table, object_store.object_path(uri), filesystem=where)


def test_the_backend_reads_writes_lists_and_copies(bucket: str, tmp_path: Path) -> None:
    root = open_root(f"{bucket}/data", timeout_s=5)
    assert not root.local and root.path == f"{bucket.split('://')[1]}/data"
    store = root.backend
    assert store.read_bytes(root.join("none.txt")) is None and store.list_dir(root.path) == []
    store.write_text(root.join("a.txt"), "hello")
    assert store.read_bytes(root.join("a.txt")) == b"hello"
    assert store.read_bytes(root.join("a.txt"), limit=2) == b"he"
    folder = tmp_path / "up"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(b"\0" * 3000)
    (folder / "model.json").write_text("{}")
    store.upload_dir(folder, root.join("dir"))
    assert store.list_dir(root.path) == ["a.txt", "dir"]
    listed = store.files(root.join("dir"))
    assert sorted(listed) == ["model.json", "sub/x.bin"] and listed["sub/x.bin"][1] == 3000
    assert list(store.files(root.join("a.txt"))) == [""]  # a file: itself
    store.download_dir(root.join("dir"), tmp_path / "down")
    assert (tmp_path / "down" / "sub" / "x.bin").read_bytes() == b"\0" * 3000
    store.download_dir(root.join("a.txt"), tmp_path / "one.txt")
    assert (tmp_path / "one.txt").read_text() == "hello"


def test_the_model_store_in_object_storage(bucket: str, tmp_path: Path) -> None:
    settings = ModelStoreSettings(root=f"{bucket}/models", cache_dir=str(tmp_path / "cache"))
    assert Settings.from_env({"PRESCORE_MODEL_STORE": settings.root}).models.root == settings.root
    store = ModelStore(settings)
    built = tmp_path / "built"
    (built / "saved_model" / "variables").mkdir(parents=True)
    (built / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    assert store.save("m", built, {"metrics": {"auc": 0.7}}) == "1"
    assert store.save("m", built, {"metrics": {"auc": 0.8}}) == "2"
    store.promote("m", "2")
    assert store.versions("m") == ["1", "2"] and store.promoted("m") == "2"
    ref = store.resolve("m")
    assert ref.version == "2" and ref.path == tmp_path / "cache" / "m" / "2"
    assert (ref.saved_model / "saved_model.pb").read_bytes() == b"graph"
    assert json.loads((ref.path / "model.json").read_text())["metrics"] == {"auc": 0.8}
    # a version whose upload stopped before its model.json (uploaded last) is not one:
    # not listed, not resolved, and the next registration takes its number
    _put(f"{bucket}/models/m/3/saved_model/saved_model.pb", b"half")
    assert store.versions("m") == ["1", "2"]
    with pytest.raises(ModelStoreError, match="m/3 not found"):
        store.resolve("m", "3")
    assert store.save("m", built, {"metrics": {"auc": 0.9}}) == "3"
    # a key with '..', '.' or '//' segments is no file of a folder copied to local disk
    # (S3 takes any name; the GCS emulator refuses '..' segments, pyarrow '//')
    odd = "../../../escape.txt" if bucket.startswith("s3://") else "./escape.txt"
    _put(f"{bucket}/models/m/3/{odd}", b"x")
    assert (store.resolve("m", "3").saved_model / "saved_model.pb").exists()
    assert list(tmp_path.rglob("escape.txt")) == []
    with pytest.raises(ModelStoreError, match="m/9 not found"):
        store.promote("m", "9")
    with pytest.raises(ConfigError, match="PRESCORE_MODEL_STORE"):
        Settings.from_env({"PRESCORE_MODEL_STORE": "az://b/models"})


def test_a_parquet_folder_in_object_storage_is_published(
    bucket: str, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "datasets.toml"
    config.write_text(
        '[datasets.sims]\nkind = "external"\nkey_field = "sku"\nlist_field = "sims"\n'
    )
    for part, skus in enumerate((["a", "b"], ["c"])):
        frame = pd.DataFrame({"sku": skus, "sims": [[{"sku": "z", "score": 0.5}]] * len(skus)})
        _parquet(f"{bucket}/scores/part-{part}.parquet", frame)
    _put(f"{bucket}/scores/_SUCCESS", b"")  # Spark's marker: not a part of the table
    with Prescore(config=str(config), redis_url=redis_url, env={}) as ps:
        report = ps.publish("sims", f"{bucket}/scores", say=lambda line: None)
        assert report.published and report.rows == 3
        assert ps.get("sims", "c")["sims"] == [{"sku": "z", "score": 0.5}]
        assert ps.versions("sims")[0].note == f"written from {bucket}/scores"


def test_a_table_in_object_storage_is_mirrored_file_by_file(bucket: str) -> None:
    """Live inference's rows of an s3:// or gs:// table: a file added is copied at the next
    maintain, a rewritten one again, a removed one dropped, a _temporary/ never."""
    folder = f"{bucket}/users"
    _parquet(f"{folder}/a.parquet", pd.DataFrame({"user_id": ["u1", "u2"], "age": [30, 40]}))
    rows = KeyedRows(Table(path=folder, key=("user_id",)), KeyForm(), timeout_s=5)
    assert rows.get(["u1", "u3"]) == {"u1": {"user_id": "u1", "age": 30}}
    _parquet(f"{folder}/b.parquet", pd.DataFrame({"user_id": ["u3"], "age": [50]}))
    _put(f"{folder}/_temporary/part-9.parquet", b"half a file")
    assert rows.get(["u3"]) == {}  # not copied yet
    rows.maintain()
    assert rows.get(["u3", "u1"])["u3"]["age"] == 50
    # rewritten with another size (S3 times are whole seconds; the size tells it apart)
    rewritten = pd.DataFrame({"user_id": ["u1", "u8", "u9"], "age": [31, 60, 70]})
    _parquet(f"{folder}/a.parquet", rewritten)
    gone = f"{folder}/b.parquet"
    object_store.filesystem_of(gone).delete_file(object_store.object_path(gone))
    rows.maintain()
    assert rows.get(["u1", "u2", "u3"]) == {"u1": {"user_id": "u1", "age": 31}}


def test_photos_in_object_storage_and_an_unreachable_store(
    bucket: str, server: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(f"{bucket}/photos/p1.jpg", b"\xff\xd8 a jpeg")
    store = ImageStore(open_root(f"{bucket}/photos", timeout_s=5), ["jpg"], max_bytes=4)
    assert store.read("p1") == b"\xff\xd8 a "  # max_bytes + 1: enough to refuse it
    assert store.read("p2") is None
    for name, value in server.client_env(free_port()).items():
        monkeypatch.setenv(name, value)
    down = ImageStore(open_root(f"{bucket}/photos", timeout_s=1), ["jpg"], max_bytes=4)
    with pytest.raises(ImageStoreUnavailable) as failed:
        down.read("p1")
    assert failed.value.http_status == 503 and "127.0.0.1" not in failed.value.message


def test_store_failures_are_one_line_naming_the_store(
    bucket: str, server: ObjectServer, redis_url: str, tmp_path: Path
) -> None:
    """Not a traceback, and not taken for Redis: the CLI's line names the store's URI."""
    config = tmp_path / "datasets.toml"
    config.write_text('[datasets.sims]\nkind = "external"\nkey_field = "sku"\n')
    base = [sys.executable, "-m", "prescore.cli", "--config", str(config)]
    base += ["--redis-url", redis_url]
    env = {**os.environ, **server.client_env(free_port()), "PRESCORE_MODEL_STORE_TIMEOUT_S": "2"}
    for command, named in (
        (["publish", "sims", f"{bucket}/scores"], f"{bucket}/scores"),
        (["--model-store", f"{bucket}/models", "models", "list", "m"], f"{bucket}/models"),
    ):
        done = subprocess.run(
            [*base, *command], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"prescore: storage_unavailable: {named}:"), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    no_bucket = subprocess.run(
        [*base, "publish", "sims", f"{server.scheme}:///x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert no_bucket.returncode in (1, 2) and "names its bucket" in no_bucket.stderr
    assert "Traceback" not in no_bucket.stderr
