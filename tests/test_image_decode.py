"""prescore.models.image_features: decode + resize, and a stable error code for every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prescore.errors import InvalidInput
from prescore.models.image_features import decode, model_input


def _encoded(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_decodes_and_resizes_to_uint8_pixels() -> None:
    raw = _encoded(Image.new("RGB", (150, 100), (255, 0, 0)))
    x = decode(raw, (64, 48))
    assert x.shape == (64, 48, 3) and x.dtype == np.uint8
    assert x[..., 0].mean() > 240 and x[..., 1].mean() < 20  # still red
    grey = decode(raw, (8, 8), channels=1)
    assert grey.shape == (8, 8, 1)


def test_a_float_input_gets_pixels_in_zero_one_a_uint8_input_as_they_are() -> None:
    x = decode(_encoded(Image.new("RGB", (20, 20), (255, 128, 0))), (4, 4))
    scaled = model_input(x, "float32")
    assert scaled.dtype == np.float32 and scaled.min() >= 0.0 and scaled.max() <= 1.0
    assert scaled[0, 0, 0] == pytest.approx(x[0, 0, 0] / 255)
    assert model_input(x, "uint8") is x


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_become_rgb(mode: str) -> None:
    raw = _encoded(Image.new(mode, (40, 30)), "PNG")
    assert decode(raw, (32, 32)).shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty_image"),
        (b"not a photo at all\n", "bad_image"),
        (b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, "bad_image"),
        (b'{"json": true}', "bad_image"),
    ],
)
def test_bad_bytes_raise_stable_codes(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        decode(raw, (64, 64))
    assert err.value.code == code and err.value.http_status == 400


def test_truncated_jpeg_is_bad_image() -> None:
    raw = _encoded(Image.new("RGB", (120, 120), (0, 90, 200)))
    with pytest.raises(InvalidInput) as err:
        decode(raw[: len(raw) // 2], (64, 64))
    assert err.value.code == "bad_image"


def test_too_many_bytes_refused_before_decoding() -> None:
    raw = _encoded(Image.new("RGB", (64, 64)))
    with pytest.raises(InvalidInput) as err:
        decode(raw, (32, 32), max_bytes=len(raw) - 1)
    assert err.value.code == "image_too_large"


def test_decompression_bomb_refused_from_its_header() -> None:
    # An 8000x8000 PNG of one colour compresses to under 100 KB; decoded as RGB it would
    # take 192 MB. The header alone must refuse it.
    raw = _encoded(Image.new("L", (8000, 8000)), "PNG")
    assert len(raw) < 200_000
    with pytest.raises(InvalidInput) as err:
        decode(raw, (64, 64))
    assert err.value.code == "image_too_large"


def test_pixel_limit_is_a_parameter() -> None:
    raw = _encoded(Image.new("RGB", (100, 100)))
    assert decode(raw, (8, 8), max_pixels=10_000).shape == (8, 8, 3)
    with pytest.raises(InvalidInput):
        decode(raw, (8, 8), max_pixels=9_999)


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth shapes under noise, as a photo has: what a resize is judged on."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (w + h)], axis=-1)
    base[(xx - w / 3) ** 2 + (yy - h / 2) ** 2 < (h / 4) ** 2] = (230, 40, 40)
    noisy = base + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(150, 100), (641, 479), (1024, 768), (1601, 1201)])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(("target", "channels"), [((64, 64), 3), ((224, 224), 3), ((96, 128), 1)])
def test_reduced_scale_decode_gives_the_full_decodes_pixels(
    size: tuple[int, int], fmt: str, target: tuple[int, int], channels: int
) -> None:
    raw = _encoded(_photo(size, seed=size[0]), fmt)
    fast = decode(raw, target, channels=channels).astype(np.int16)
    full = decode(raw, target, channels=channels, reduced=False).astype(np.int16)
    assert fast.shape == full.shape == (*target, channels)
    diff = np.abs(fast - full)
    # the same geometry: a shifted or stretched image would differ along every edge
    assert diff.mean() <= 1.5 and np.percentile(diff, 99) <= 12, (diff.mean(), diff.max())
    if fmt == "PNG":  # no reduced scales: one decode
        assert diff.max() == 0


@pytest.mark.parametrize("channels", [3, 1])
def test_a_16_bit_greyscale_image_is_scaled_to_8_bits_not_clipped(channels: int) -> None:
    """Pillow's convert clips 16-bit values at 255: a mid grey (32768 of 65535) became
    white, and its labels were another image's."""
    grey = np.tile(np.array([0, 16384, 32768, 65535], np.uint16), (4, 1))
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    pixels = decode(buf.getvalue(), (4, 4), channels=channels, reduced=False)
    assert pixels[0, :, 0].tolist() == [0, 64, 128, 255]
