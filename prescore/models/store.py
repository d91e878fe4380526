"""The model store: versioned SavedModels with model.json, on a local path, HDFS or S3.

Layout under the root URI:

    {root}/{model_name}/{version}/saved_model/   TensorFlow SavedModel (float32)
    {root}/{model_name}/{version}/model_int8.tflite   where built
    {root}/{model_name}/{version}/model.json     schema, metrics, data range, created time
    {root}/{model_name}/PROMOTED                 the version in production

Versions are increasing integers, as TF Serving numbers them. ``file://`` roots are used
in place; ``hdfs://`` roots go through WebHDFS (prescore.data.storage, shared with the
fallback's photo store), as do ``s3://`` and ``gs://`` ones, and are copied to a local cache before
TensorFlow loads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prescore.data.storage import open_root
from prescore.errors import ModelStoreError
from prescore.settings import ModelStoreSettings

SAVE_TRIES = 5  # registrations of one model at once, each taking the next version

META_FILE = "model.json"
PROMOTED_FILE = "PROMOTED"


@dataclass(frozen=True)
class ModelRef:
    """A model version resolved to a local directory TensorFlow can load."""

    name: str
    version: str
    path: Path
    meta: dict[str, Any]

    @property
    def saved_model(self) -> Path:
        return self.path / "saved_model"

    @property
    def int8(self) -> Path:
        return self.path / "model_int8.tflite"


class ModelStore:
    """Versioned models under a ``file://``, ``hdfs://``, ``s3://`` or ``gs://`` root."""

    def __init__(self, settings: ModelStoreSettings) -> None:
        self.settings = settings
        try:
            root = open_root(
                settings.root,
                webhdfs_url=settings.webhdfs_url,
                user=settings.hdfs_user,
                timeout_s=settings.timeout_s,
            )
        except ValueError as exc:
            raise ModelStoreError(f"unsupported model store root {settings.root!r}") from exc
        self.root = root.path
        self.local = root.local
        self._backend = root.backend
        self._path = root.join

    def _read_text(self, path: str) -> str | None:
        raw = self._backend.read_bytes(path)
        return None if raw is None else raw.decode("utf-8")

    def _check_root(self) -> None:
        """A local root that does not exist is a misconfiguration, not an empty store."""
        if self.local and not Path(self.root).is_dir():
            raise ModelStoreError(
                f"PRESCORE_MODEL_STORE={self.settings.root}: no such folder (register a model "
                "to create the store, or fix the setting)"
            )

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first. On a remote root, only those
        whose model.json is there: an object store uploads a version file by file, its
        model.json last, so a version whose upload stopped is not one (a local or HDFS
        version appears whole, by a rename)."""
        self._check_root()
        if self.local:
            found = self._backend.list_dir(self._path(name))
        else:
            found = [
                r.split("/")[0]
                for r in self._backend.files(self._path(name))
                if r.count("/") == 1 and r.endswith(f"/{META_FILE}")
            ]
        return sorted((v for v in found if v.isascii() and v.isdigit()), key=int)

    def save(self, name: str, local_dir: Path, meta: dict[str, Any]) -> str:
        """Store a built model directory as the next version; returns the version. A
        version another registration took meanwhile is passed over for the next."""
        if self.local:
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelStoreError(
                    f"{self.settings.root}: cannot be written: {exc.strerror or exc}"
                ) from None
        for _ in range(SAVE_TRIES):
            existing = self.versions(name)
            version = str(int(existing[-1]) + 1 if existing else 1)
            meta = {**meta, "name": name, "version": version}
            (local_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            try:
                self._backend.upload_dir(local_dir, self._path(name, version))
            except FileExistsError:
                continue
            return version
        raise ModelStoreError(
            f"{name}: other registrations took each next version {SAVE_TRIES} times; register again"
        )

    def meta(self, name: str, version: str) -> dict[str, Any]:
        raw = self._read_text(self._path(name, version, META_FILE))
        if raw is None:
            raise ModelStoreError(f"model {name}/{version} not found in {self.settings.root}")
        return dict(json.loads(raw))

    def promote(self, name: str, version: str) -> None:
        """Name ``version`` as the one in production."""
        self.meta(name, version)  # refuse to promote what is not there
        self._backend.write_text(self._path(name, PROMOTED_FILE), version + "\n")

    def promoted(self, name: str) -> str | None:
        self._check_root()
        raw = self._read_text(self._path(name, PROMOTED_FILE))
        return raw.strip() if raw else None

    def resolve(self, name: str, version: str | None = None) -> ModelRef:
        """The given version (default: the promoted one) as a local directory."""
        version = version or self.promoted(name)
        if version is None:
            raise ModelStoreError(f"model {name!r} has no promoted version in {self.settings.root}")
        meta = self.meta(name, version)
        if self.local:
            return ModelRef(name, version, Path(self._path(name, version)), meta)
        local = Path(self.settings.cache_dir) / name / version
        if not (local / META_FILE).exists():
            try:
                self._backend.download_dir(self._path(name, version), local)
            except OSError:
                if not (local / META_FILE).exists():  # not another worker's copy, just made
                    raise
        return ModelRef(name, version, local, meta)
