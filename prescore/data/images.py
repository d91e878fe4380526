"""Images by key from a labels dataset's folder, on ``file://``, ``hdfs://``, ``s3://`` or ``gs://``
(prescore.data.storage).

The bulk job's key rule read backwards: image ``<key>`` is the file
``<folder>/<key>.<ext>``, ext tried in the order :func:`image_extensions` gives (the bulk
job reads the same extensions); the first that exists is the image. The key is checked
before any I/O (:func:`check_image_key`): it holds no ``/``, so the path names a file
directly in the folder, never one outside it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from prescore.data.datasets import Dataset
from prescore.data.storage import Root, open_root
from prescore.encoding import keys
from prescore.errors import ImageStoreUnavailable

log = logging.getLogger(__name__)


def image_folder(images: str) -> str:
    """The folder of an images path: ``hdfs://nn/photos/*.jpg`` -> ``hdfs://nn/photos``."""
    head, _, last = images.rstrip("/").rpartition("/")
    return head if head and any(c in last for c in "*?[{") else images


def image_extensions(dataset: Dataset) -> tuple[str, ...]:
    """The extensions of a dataset's image files, the one rule for the bulk job and live
    inference: those its path names (``*.jpg``, ``*.{jpg,png}``), else the declared ones.
    Each is read in lower and in upper case."""
    last = dataset.images.rstrip("/").rpartition("/")[2]
    named = re.fullmatch(r"\*\.(\w+|\{\w+(?:,\w+)*\})", last)
    found = named.group(1).strip("{}").split(",") if named else list(dataset.image_extensions)
    return tuple(dict.fromkeys(e for ext in found for e in (ext.lower(), ext.upper())))


def check_image_key(key: str) -> str:
    """Return ``key`` if it can name an image file (prescore.encoding.keys.check_file_name)."""
    return keys.KeyForm(files=True).check(key, what="image key")


class ImageStore:
    """Images by key under one folder (local disk, WebHDFS or S3)."""

    def __init__(self, root: Root, extensions: Sequence[str], max_bytes: int) -> None:
        self.root = root
        both = (e for ext in extensions for e in (ext.lower(), ext.upper()))
        self.extensions = list(dict.fromkeys(both))  # each once, in order
        self.max_bytes = max_bytes

    @classmethod
    def for_dataset(
        cls, dataset: Dataset, webhdfs_url: str = "", user: str = "", timeout_s: float = 5.0
    ) -> ImageStore:
        root = open_root(
            image_folder(dataset.images), webhdfs_url=webhdfs_url, user=user, timeout_s=timeout_s
        )
        return cls(root, image_extensions(dataset), dataset.max_image_bytes)

    def paths(self, key: str) -> list[str]:
        """Where image ``key`` may be, in the order tried; InvalidInput for a bad key."""
        check_image_key(key)
        return [self.root.join(f"{key}.{ext}") for ext in self.extensions]

    def read(self, key: str) -> bytes | None:
        """The image's bytes, or None if the folder has no image of that key.

        At most ``max_bytes + 1`` bytes are read: the decoder refuses a larger image as
        ``image_too_large`` without the whole file being held in memory.
        """
        for path in self.paths(key):
            try:
                raw = self.root.backend.read_bytes(path, self.max_bytes + 1)
            except OSError as exc:
                log.warning("image store %s cannot be read: %s", self.root.uri, exc)
                raise ImageStoreUnavailable("the image store cannot be read") from exc
            if raw is not None:
                return raw
        return None
