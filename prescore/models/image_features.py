"""Image decoding for labels models (Pillow + numpy, no TensorFlow): bytes -> [H, W, C].

Shared by the bulk labels job and the live fallback, so both feed the model the same
pixels: decoded, converted to RGB (or grey for one channel), resized to the model's
input size, as uint8; a float32 input gets them scaled to [0, 1]. A JPEG is decoded at
the smallest DCT scale (1/2, 1/4, 1/8) whose image still covers the input size, then
resized like any other: a fraction of the work of a full decode for a large image, with
the same pixels to within resampling noise. Training decodes through this function too,
so a model sees the pixels it was trained on. Bad input raises
InvalidInput with a stable code, before any large allocation: the header is read first,
so a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from prescore.errors import InvalidInput

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 25_000_000


def decode(
    raw: bytes,
    size: tuple[int, int],
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    channels: int = 3,
    reduced: bool = True,
) -> np.ndarray:
    """Decode and resize to ``size`` (height, width): uint8 [H, W, channels].

    ``reduced=False`` decodes a JPEG at full scale (to compare the two paths)."""
    if not raw:
        raise InvalidInput("image is empty", code="empty_image")
    if len(raw) > max_bytes:
        raise InvalidInput(f"image is larger than {max_bytes} bytes", code="image_too_large")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > max_pixels:
                raise InvalidInput(
                    f"image has {img.width}x{img.height} pixels, over {max_pixels}",
                    code="image_too_large",
                )
            mode = "L" if channels == 1 else "RGB"
            box = _draft(img, mode, size) if reduced else None
            rgb = _eight_bits(img).convert(mode)
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR, box)
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own header check, far over ours
        raise InvalidInput("image is too large", code="image_too_large") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        # Pillow's message names in-memory objects (<_io.BytesIO object at 0x...>): not for
        # clients, who get the stable code and a plain message
        raise InvalidInput("not a readable image", code="bad_image") from exc
    pixels = np.asarray(rgb, np.uint8)
    return pixels[:, :, None] if channels == 1 else pixels


def _eight_bits(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale image scaled to 8 bits (Pillow's convert clips it: a 16-bit
    mid grey came out white); any other image as it is."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    values = np.asarray(img).astype(np.int64)
    bits = 16 if img.mode.startswith("I;16") or values.max(initial=0) < 1 << 16 else 32
    return Image.fromarray((np.clip(values, 0, None) >> (bits - 8)).astype(np.uint8), "L")


def _draft(
    img: Image.Image, mode: str, size: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """Ask a JPEG decoder for the smallest scale at or above ``size``; the box of the
    reduced image that holds the whole image, or None where nothing was reduced.

    A reduced image is rounded up to whole pixels, so its last column and row may cover
    less than a full one; resizing ``box`` rather than the whole image keeps the geometry
    of the full decode."""
    drafted = img.draft(mode, (size[1], size[0]))  # None for any format but JPEG
    return None if drafted is None else drafted[1]


def model_input(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """Decoded uint8 pixels as a model's input takes them: as they are, or in [0, 1]."""
    return pixels if dtype == "uint8" else pixels.astype(np.float32) / 255.0
