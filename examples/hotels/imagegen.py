"""Demo hotel photos: synthetic JPEGs where every tag has a visual signature.

    python -m examples.hotels.imagegen --out var/images --count 1500 --seed 7 [--bad-files]
    python -m examples.hotels.imagegen --out var/photos --count 300 --size 1024x768

Writes ``<image_id>.jpg`` and ``labels.jsonl`` into ``--out`` (one ``{"image_id", "tags"}`` a
line). A sea view is a blue band under a sky, a pool a turquoise slab, a bed a white block
with pillows, a balcony dark railings, breakfast plates on a table, a seating area a sofa,
a bathroom a tiled wall, a garden green foliage; each is placed, sized and coloured at
random over a noisy wall, so the tagger has something real to learn. ``--bad-files`` adds
a corrupt JPEG, an empty file, a text file and an oversized image, for the job to skip.
``--size WxH`` writes photos of a real camera's size instead: the same scenes painted
small, enlarged, under a light gradient and sensor-like noise, which a JPEG at quality 90
stores in about 150-300 KiB as it would a real photo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TAGS = ("sea_view", "pool", "bed", "balcony", "breakfast", "seating_area", "bathroom", "garden")
LABELS = {
    "sea_view": "Sea view",
    "pool": "Pool",
    "bed": "Bed",
    "balcony": "Balcony/Terrace",
    "breakfast": "Breakfast",
    "seating_area": "Seating area",
    "bathroom": "Bathroom",
    "garden": "Garden",
}
PRIOR = (0.3, 0.25, 0.35, 0.25, 0.2, 0.25, 0.2, 0.25)
Painter = Callable[[ImageDraw.ImageDraw, np.random.Generator, int], None]


def _jit(rng: np.random.Generator, rgb: tuple[int, int, int], by: int = 25) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-by, by + 1), 0, 255)) for c in rgb)


def _box(rng: np.random.Generator, s: int, w: float, h: float, top: float = 0.0) -> list[int]:
    bw, bh = int(s * w * rng.uniform(0.7, 1.2)), int(s * h * rng.uniform(0.7, 1.2))
    x = int(rng.integers(0, max(1, s - bw)))
    y = int(rng.integers(int(s * top), max(int(s * top) + 1, s - bh)))
    return [x, y, x + bw, y + bh]


def _sea(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    y = int(s * rng.uniform(0.15, 0.35))
    d.rectangle([0, 0, s, y], fill=_jit(rng, (170, 210, 245)))
    d.rectangle([0, y, s, y + int(s * 0.15)], fill=_jit(rng, (20, 70, 170)))


def _pool(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    d.rectangle(_box(rng, s, 0.5, 0.2, top=0.55), fill=_jit(rng, (60, 210, 210)))


def _bed(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    x0, y0, x1, y1 = _box(rng, s, 0.5, 0.25, top=0.4)
    d.rounded_rectangle([x0, y0, x1, y1], radius=4, fill=_jit(rng, (245, 245, 240), 8))
    d.ellipse([x0 + 2, y0 - 6, x0 + (x1 - x0) // 3, y0 + 6], fill=_jit(rng, (230, 230, 250), 10))


def _balcony(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    y = int(s * rng.uniform(0.6, 0.75))
    color = _jit(rng, (40, 40, 40), 15)
    d.line([0, y, s, y], fill=color, width=3)
    for x in range(int(rng.integers(0, 6)), s, int(rng.integers(6, 10))):
        d.line([x, y, x, s], fill=color, width=2)


def _breakfast(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    x0, y0, x1, y1 = _box(rng, s, 0.5, 0.2, top=0.5)
    d.rectangle([x0, y0, x1, y1], fill=_jit(rng, (130, 80, 40)))
    for _ in range(3):
        cx, r = int(rng.integers(x0, max(x0 + 1, x1))), int(s * 0.05)
        d.ellipse(
            [cx - r, y0 + 2, cx + r, y0 + 2 + 2 * r],
            fill=_jit(rng, (250, 250, 250), 5),
            outline=_jit(rng, (230, 160, 30)),
            width=2,
        )


def _seating(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    x0, y0, x1, y1 = _box(rng, s, 0.45, 0.2, top=0.45)
    color = _jit(rng, (160, 40, 50))
    d.rectangle([x0, y0 - int(s * 0.1), x1, y0], fill=color)
    d.rectangle([x0, y0, x1, y1], fill=_jit(rng, (190, 60, 60)))


def _bathroom(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    x0, y0, x1, y1 = _box(rng, s, 0.45, 0.45)
    d.rectangle([x0, y0, x1, y1], fill=_jit(rng, (225, 240, 250), 10))
    step = int(rng.integers(5, 8))
    for x in range(x0, x1, step):
        d.line([x, y0, x, y1], fill=(150, 170, 190), width=1)
    for y in range(y0, y1, step):
        d.line([x0, y, x1, y], fill=(150, 170, 190), width=1)


def _garden(d: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    for _ in range(int(rng.integers(4, 8))):
        cx, cy, r = int(rng.integers(0, s)), int(rng.integers(s // 3, s)), int(s * 0.08)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jit(rng, (40, 140, 50)))


PAINTERS: dict[str, Painter] = dict(
    zip(TAGS, (_sea, _pool, _bed, _balcony, _breakfast, _seating, _bathroom, _garden), strict=True)
)


def photo(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[str]]:
    """One synthetic photo and its tags (at least one)."""
    tags = [t for t, p in zip(TAGS, PRIOR, strict=True) if rng.random() < p]
    tags = tags or [TAGS[int(rng.integers(0, len(TAGS)))]]
    img = Image.new("RGB", (size, size), _jit(rng, (200, 180, 150), 40))
    draw = ImageDraw.Draw(img)
    for tag in sorted(tags, key=lambda t: TAGS.index(t)):  # sky first, foreground last
        PAINTERS[tag](draw, rng, size)
    noise = rng.normal(0, 8, (size, size, 3))
    pixels = np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), tags


def large_photo(
    rng: np.random.Generator, size: tuple[int, int], noise: float = 6.0
) -> tuple[Image.Image, list[str]]:
    """One photo-like image of ``size`` (width, height) and its tags."""
    img, tags = photo(rng, 192)
    w, h = size
    img = img.resize(size, Image.Resampling.BICUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    light = (xx * (30.0 / w) - yy * (20.0 / h))[..., None]  # a window's fall-off
    pixels = np.asarray(img, np.float32) + light + rng.normal(0, noise, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), tags


def write_bad_files(photos: Path) -> list[str]:
    """Files the tagging job must skip and report."""
    (photos / "corrupt-1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    (photos / "empty-1.jpg").write_bytes(b"")
    (photos / "notes-1.jpg").write_text("not a photo at all\n")
    Image.new("RGB", (6000, 6000), (10, 10, 10)).save(photos / "huge-1.jpg", quality=20)
    return ["corrupt-1", "empty-1", "notes-1", "huge-1"]


def generate(
    out: Path,
    count: int,
    seed: int = 7,
    bad_files: bool = False,
    size: tuple[int, int] | None = None,
) -> int:
    """Write ``count`` photos and labels.jsonl under ``out``; returns the count.

    ``size`` (width, height): photo-like images of that size (large_photo) rather than
    the small 96-160 px scenes."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.jsonl", "w") as labels:
        for i in range(count):
            if size is None:
                img, tags = photo(rng, int(rng.integers(96, 161)))
            else:
                img, tags = large_photo(rng, size)
            image_id = f"img-{i:06d}"
            img.save(out / f"{image_id}.jpg", quality=90)
            labels.write(json.dumps({"image_id": image_id, "tags": tags}) + "\n")
    if bad_files:
        write_bad_files(out)
    return count


def read_labels(out: Path) -> dict[str, list[str]]:
    with open(out / "labels.jsonl") as f:
        return {d["image_id"]: d["tags"] for d in map(json.loads, f)}


def parse_size(text: str) -> tuple[int, int]:
    """``1024x768`` -> (1024, 768): width and height."""
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/images"))
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-files", action="store_true")
    parser.add_argument("--size", type=parse_size, default=None, help="WxH, e.g. 1024x768")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    generate(args.out, args.count, args.seed, args.bad_files, args.size)
    print(
        f"wrote {args.count} photos and labels.jsonl to {args.out}"
        f"{' plus 4 bad files' if args.bad_files else ''}; "
        f"{time.perf_counter() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
