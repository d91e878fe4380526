"""prescore.data.images: a labels dataset's images by key, from a real folder and over
WebHDFS (test server): the key rule, the declared extensions, missing images, an
unreachable store, and keys that could leave the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prescore.data.datasets import Dataset, parse
from prescore.data.images import ImageStore, image_folder
from prescore.data.storage import open_root
from prescore.errors import ImageStoreUnavailable, InvalidInput
from tests.fallback_procs import free_port
from tests.webhdfs_server import WebHdfsServer

TRAVERSALS = ["../secret", "..", ".secret", "a/../../secret", "/etc/passwd", "", "x" * 241]
EXTS = ("jpg", "jpeg", "png")


def _folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir(parents=True)
    (images / "img-1.jpg").write_bytes(b"jpeg bytes")
    (images / "img-2.png").write_bytes(b"png bytes")
    (images / "img-3.JPEG").write_bytes(b"upper-case extension")
    (images / "img-4.txt").write_bytes(b"not an image")
    (images / "both.jpg").write_bytes(b"the jpg")
    (images / "both.png").write_bytes(b"the png")
    (images / "labels.jsonl").write_bytes(b"{}")
    (tmp_path / "secret.jpg").write_bytes(b"outside the folder")
    return images


def _store(root: str, extensions: tuple[str, ...] = EXTS, max_bytes: int = 1 << 20) -> ImageStore:
    return ImageStore(open_root(root, timeout_s=1), extensions, max_bytes)


def _dataset(images: str, extra: str = "") -> Dataset:
    doc = {
        "datasets": {
            "pics": {"kind": "labels", "model": "m", "images": {"path": images, **_toml(extra)}}
        }
    }
    return parse(doc, {}).get("pics")


def _toml(extra: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(extra) if extra else {}


def test_file_store_reads_by_the_bulk_jobs_key_rule(tmp_path: Path) -> None:
    store = _store(_folder(tmp_path).as_uri())
    assert store.read("img-1") == b"jpeg bytes"
    assert store.read("img-2") == b"png bytes"
    assert store.read("img-3") == b"upper-case extension"
    assert store.read("both") == b"the jpg"  # extensions tried in the declared order
    assert store.read("img-4") is None  # .txt is not an image extension
    assert store.read("labels") is None
    assert store.read("img-9") is None


def test_the_declared_extensions_and_their_order_are_the_ones_tried(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    store = _store(folder.as_uri(), ("png", "jpg"))
    assert store.read("both") == b"the png"
    only_png = _store(folder.as_uri(), ("png",))
    assert only_png.read("img-1") is None and only_png.read("img-2") == b"png bytes"
    declared = ImageStore.for_dataset(_dataset(f"{folder}/*", 'extensions = ["png"]'))
    assert declared.read("both") == b"the png" and declared.read("img-1") is None
    assert declared.extensions == ["png", "PNG"]


def test_a_large_image_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "big.jpg").write_bytes(b"x" * 5000)
    assert _store(folder.as_uri(), max_bytes=100).read("big") == b"x" * 101
    declared = ImageStore.for_dataset(_dataset(f"{folder}/*.jpg", "max_bytes = 10"))
    assert declared.read("big") == b"x" * 11


@pytest.mark.parametrize("key", TRAVERSALS)
def test_keys_that_could_leave_the_folder_are_refused_before_any_io(
    tmp_path: Path, key: str
) -> None:
    folder = _folder(tmp_path)
    with pytest.raises(InvalidInput) as err:
        _store(folder.as_uri()).read(key)
    assert err.value.code == "invalid_id"
    # an unreachable store is not even tried: the key is refused first
    dead = _store(f"hdfs://127.0.0.1:{free_port()}/images")
    with pytest.raises(InvalidInput):
        dead.read(key)


def test_every_candidate_path_is_directly_in_the_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    store = _store(folder.as_uri())
    for key in ("img-1", "a..b", "x.y", "A_b-c.d", "a\\b", "ns:1 é", "{x}", "x" * 240):
        paths = store.paths(key)
        assert len(paths) == 6  # jpg, JPG, jpeg, JPEG, png, PNG
        for path in paths:
            assert Path(path).resolve().parent == folder.resolve()


def test_the_folder_of_a_declared_images_path() -> None:
    assert image_folder("hdfs://nn:8020/photos/*.jpg") == "hdfs://nn:8020/photos"
    assert image_folder("file:///data/images/img-*.{jpg,png}") == "file:///data/images"
    assert image_folder("file:///data/images") == "file:///data/images"
    assert image_folder("file:///data/images/") == "file:///data/images/"
    dataset = _dataset("/data/pics/*.png")
    assert dataset.images == "file:///data/pics/*.png"  # made absolute where declared
    assert ImageStore.for_dataset(dataset).root.path == "/data/pics"


def test_hdfs_store_reads_and_reports_an_unreachable_namenode(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "namenode")
    with WebHdfsServer(tmp_path / "namenode") as server:
        dataset = _dataset(f"hdfs://127.0.0.1:{server.port}/images/*.jpg")
        store = ImageStore.for_dataset(dataset, timeout_s=5)
        assert not store.root.local
        assert store.read("img-1") == b"jpeg bytes"
        # *.jpg: neither a png nor a .JPEG, as the bulk job reads neither
        assert store.read("img-2") is None and store.read("img-3") is None
        whole = ImageStore.for_dataset(_dataset(f"hdfs://127.0.0.1:{server.port}/images"))
        assert whole.read("img-2") == b"png bytes"  # the declared extensions
        assert whole.read("img-3") == b"upper-case extension"
        assert store.read("img-9") is None
        assert store.read("secret") is None  # only the images folder is read
        (folder / "big.jpg").write_bytes(b"y" * 5000)
        small = ImageStore(store.root, EXTS, max_bytes=100)
        assert small.read("big") == b"y" * 101
    assert (folder.parent / "secret.jpg").exists()
    dead = ImageStore.for_dataset(_dataset(f"hdfs://127.0.0.1:{free_port()}/images"), timeout_s=1)
    with pytest.raises(ImageStoreUnavailable) as err:
        dead.read("img-1")
    assert (err.value.code, err.value.http_status) == ("image_store_unavailable", 503)
    assert "127.0.0.1" not in err.value.message  # the answer names no host


def test_a_folder_on_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="use file://, hdfs://, s3:// or gs://"):
        ImageStore.for_dataset(_dataset("az://bucket/images/*.jpg"))
