"""examples.hotels.imagegen: deterministic demo photos with labels, and the bad files the
job must skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examples.hotels.imagegen import TAGS, generate, main, read_labels
from prescore.errors import InvalidInput
from prescore.models.image_features import decode


def test_same_seed_same_photos(tmp_path: Path) -> None:
    generate(tmp_path / "a", 20, seed=5)
    generate(tmp_path / "b", 20, seed=5)
    generate(tmp_path / "c", 20, seed=6)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.jpg"))
    assert len(names) == 20
    assert all(
        (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names
    )
    assert read_labels(tmp_path / "a") == read_labels(tmp_path / "b")
    assert read_labels(tmp_path / "a") != read_labels(tmp_path / "c")


def test_labels_and_photos_agree(tmp_path: Path) -> None:
    generate(tmp_path, 200, seed=1)
    labels = read_labels(tmp_path)
    assert set(labels) == {p.stem for p in tmp_path.glob("*.jpg")}
    assert all(tags and set(tags) <= set(TAGS) for tags in labels.values())
    counts = {t: sum(t in tags for tags in labels.values()) for t in TAGS}
    assert all(c > 10 for c in counts.values()), counts  # every tag is common enough to learn
    assert np.mean([len(t) for t in labels.values()]) > 1.5  # several tags per photo
    x = decode((tmp_path / "img-000000.jpg").read_bytes(), (64, 64)) / 255.0
    assert x.std() > 0.05  # not a blank canvas


def test_sea_view_has_its_blue_band(tmp_path: Path) -> None:
    generate(tmp_path, 120, seed=2)
    labels = read_labels(tmp_path)

    def blue_rows(image_id: str) -> float:
        x = decode((tmp_path / f"{image_id}.jpg").read_bytes(), (64, 64)).astype(np.float32) / 255
        top = x[: 64 // 2]
        return float(((top[..., 2] - top[..., 0]) > 0.3).mean())

    sea = [blue_rows(i) for i, t in labels.items() if "sea_view" in t]
    other = [blue_rows(i) for i, t in labels.items() if "sea_view" not in t]
    assert np.mean(sea) > 3 * np.mean(other)


def test_cli_writes_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--count", "5", "--seed", "3", "--bad-files"]) == 0
    assert "wrote 5 photos" in capsys.readouterr().out
    codes = {}
    for name in ("corrupt-1", "empty-1", "notes-1", "huge-1"):
        try:
            decode((tmp_path / f"{name}.jpg").read_bytes(), (64, 64))
        except InvalidInput as exc:
            codes[name] = exc.code
    assert codes == {
        "corrupt-1": "bad_image",
        "empty-1": "empty_image",
        "notes-1": "bad_image",
        "huge-1": "image_too_large",
    }
    assert len(read_labels(tmp_path)) == 5  # bad files have no labels


def test_large_photos_have_a_cameras_size_and_file_size(tmp_path: Path) -> None:
    generate(tmp_path, 4, seed=3, size=(1024, 768))
    for path in sorted(tmp_path.glob("*.jpg")):
        with Image.open(path) as img:
            assert img.size == (1024, 768) and img.mode == "RGB"
        assert 150 * 1024 <= path.stat().st_size <= 300 * 1024, path.stat().st_size
    assert len(read_labels(tmp_path)) == 4
