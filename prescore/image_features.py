"""Image decoding for the tagger (Pillow + numpy, no TensorFlow): bytes -> float32 [H, W, 3].

Shared by the bulk tagging job and the live fallback, so both feed the model the same
pixels. Bad input raises InvalidInput with a stable code, before any large allocation:
the header is read first, so a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from prescore.errors import InvalidInput

MAX_BYTES = 20 * 1024 * 1024
# The photo file extensions, as the bulk tagging job reads them: image ``<id>`` is the
# file ``<id>.<ext>`` (the image id is the file name without its extension).
PHOTO_EXTENSIONS = ("jpg", "jpeg", "png", "JPG", "JPEG", "PNG")
MAX_PIXELS = 25_000_000


def decode(
    raw: bytes, size: tuple[int, int], max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode and resize to ``size`` (height, width); values in [0, 1]."""
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
            img.draft("RGB", (size[1], size[0]))  # JPEG: decode at a reduced scale
            rgb = img.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own header check, far over ours
        raise InvalidInput("image is too large", code="image_too_large") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        # Pillow's message names in-memory objects (<_io.BytesIO object at 0x...>): not for
        # clients, who get the stable code and a plain message
        raise InvalidInput("not a readable image", code="bad_image") from exc
    return np.asarray(rgb, np.float32) / 255.0
