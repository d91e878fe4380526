"""The fallback's photo store over a real folder and over WebHDFS (test server): the id
rule, missing photos, an unreachable store, and ids that could leave the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fallback.photos import PhotoStore
from fallback.settings import FallbackSettings
from prescore.errors import InvalidInput, PhotoStoreUnavailable
from prescore.storage import open_root
from tests.fallback_procs import free_port
from tests.webhdfs_server import WebHdfsServer

TRAVERSALS = ["../secret", "..", ".secret", "a/../../secret", "/etc/passwd", "a\\b", "", "x" * 200]


def _folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(parents=True)
    (photos / "img-1.jpg").write_bytes(b"jpeg bytes")
    (photos / "img-2.png").write_bytes(b"png bytes")
    (photos / "img-3.JPEG").write_bytes(b"upper-case extension")
    (photos / "img-4.txt").write_bytes(b"not a photo")
    (photos / "labels.jsonl").write_bytes(b"{}")
    (tmp_path / "secret.jpg").write_bytes(b"outside the folder")
    return photos


def test_file_store_reads_by_the_bulk_jobs_id_rule(tmp_path: Path) -> None:
    photos = _folder(tmp_path)
    store = PhotoStore(open_root(photos.as_uri()))
    assert store.read("img-1") == b"jpeg bytes"
    assert store.read("img-2") == b"png bytes"
    assert store.read("img-3") == b"upper-case extension"
    assert store.read("img-4") is None  # .txt is not a photo extension
    assert store.read("labels") is None
    assert store.read("img-9") is None


def test_a_large_photo_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    photos = _folder(tmp_path)
    (photos / "big.jpg").write_bytes(b"x" * 5000)
    assert PhotoStore(open_root(photos.as_uri()), max_bytes=100).read("big") == b"x" * 101


@pytest.mark.parametrize("image_id", TRAVERSALS)
def test_ids_that_could_leave_the_folder_are_refused_before_any_io(
    tmp_path: Path, image_id: str
) -> None:
    photos = _folder(tmp_path)
    with pytest.raises(InvalidInput) as err:
        PhotoStore(open_root(photos.as_uri())).read(image_id)
    assert err.value.code == "invalid_id"
    # an unreachable store is not even tried: the id is refused first
    dead = PhotoStore(open_root(f"hdfs://127.0.0.1:{free_port()}/photos", timeout_s=1))
    with pytest.raises(InvalidInput):
        dead.read(image_id)


def test_every_candidate_path_is_directly_in_the_folder(tmp_path: Path) -> None:
    photos = _folder(tmp_path)
    store = PhotoStore(open_root(photos.as_uri()))
    for image_id in ("img-1", "a..b", "x.y", "A_b-c.d"):
        for path in store.paths(image_id):
            assert Path(path).resolve().parent == photos.resolve()


def test_hdfs_store_reads_and_reports_an_unreachable_namenode(tmp_path: Path) -> None:
    photos = _folder(tmp_path / "namenode")
    with WebHdfsServer(tmp_path / "namenode") as server:
        settings = FallbackSettings(photos=f"hdfs://127.0.0.1:{server.port}/photos")
        store = PhotoStore.for_settings(settings)
        assert store is not None and not store.root.local
        assert store.read("img-1") == b"jpeg bytes"
        assert store.read("img-2") == b"png bytes"
        assert store.read("img-9") is None
        assert store.read("secret") is None  # only the photos folder is read
    assert (photos.parent / "secret.jpg").exists()
    dead = PhotoStore(open_root(f"hdfs://127.0.0.1:{free_port()}/photos", timeout_s=1))
    with pytest.raises(PhotoStoreUnavailable) as err:
        dead.read("img-1")
    assert (err.value.code, err.value.http_status) == ("photo_store_unavailable", 503)


def test_settings_take_the_photos_folder_from_env(tmp_path: Path) -> None:
    assert PhotoStore.for_settings(FallbackSettings.from_env({})) is None  # empty: off
    env = {"FALLBACK_PHOTOS": tmp_path.as_uri(), "FALLBACK_PHOTOS_WEBHDFS_URL": ""}
    assert FallbackSettings.from_env(env).photos == tmp_path.as_uri()
    with pytest.raises(ValueError, match="file:// or hdfs://"):
        FallbackSettings.from_env({"FALLBACK_PHOTOS": "s3://bucket/photos"})
