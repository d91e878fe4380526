"""The photo store: a hotel photo's bytes by image id, from a ``file://`` or ``hdfs://`` folder.

The bulk tagging job's id rule (image id = the file name without its extension), read
backwards: image ``<id>`` is the file ``<folder>/<id>.<ext>``, ext tried in the order of
prescore.image_features.PHOTO_EXTENSIONS; the first that exists is the photo. The id is
checked with prescore.keys.check_id before any I/O: a valid id holds no ``/`` and never
starts with ``.``, so the path names a file directly in the folder, never one outside it.
"""

from __future__ import annotations

import logging

from fallback.settings import FallbackSettings
from prescore import keys
from prescore.errors import PhotoStoreUnavailable
from prescore.image_features import MAX_BYTES, PHOTO_EXTENSIONS
from prescore.storage import Root, open_root

log = logging.getLogger(__name__)


class PhotoStore:
    """Photos by image id under one folder (prescore.storage: local disk or WebHDFS)."""

    def __init__(self, root: Root, max_bytes: int = MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @classmethod
    def for_settings(cls, settings: FallbackSettings) -> PhotoStore | None:
        """The configured store (``FALLBACK_PHOTOS``), or None when there is none."""
        if not settings.photos:
            return None
        root = open_root(
            settings.photos,
            webhdfs_url=settings.photos_webhdfs_url,
            user=settings.core.models.hdfs_user,
            timeout_s=settings.request_timeout_s,
        )
        return cls(root)

    def paths(self, image_id: str) -> list[str]:
        """Where photo ``image_id`` may be, in the order tried; InvalidInput for a bad id."""
        keys.check_id(image_id, what="image_id")
        return [self.root.join(f"{image_id}.{ext}") for ext in PHOTO_EXTENSIONS]

    def read(self, image_id: str) -> bytes | None:
        """The photo's bytes, or None if the folder has no photo of that id.

        At most ``max_bytes + 1`` bytes are read: the decoder refuses a larger photo as
        ``image_too_large`` without the whole file being held in memory.
        """
        for path in self.paths(image_id):
            try:
                raw = self.root.backend.read_bytes(path, self.max_bytes + 1)
            except OSError as exc:
                log.warning("photo store %s cannot be read: %s", self.root.uri, exc)
                raise PhotoStoreUnavailable("the photo store cannot be read") from exc
            if raw is not None:
                return raw
        return None
