"""The model store: versioned SavedModels with model.json, on a local path or HDFS.

Layout under the root URI:

    {root}/{model_name}/{version}/saved_model/   TensorFlow SavedModel (float32)
    {root}/{model_name}/{version}/model_int8.tflite   where built
    {root}/{model_name}/{version}/model.json     schema, metrics, data range, created time
    {root}/{model_name}/PROMOTED                 the version in production

Versions are increasing integers, as TF Serving numbers them. ``file://`` roots are used
in place; ``hdfs://`` roots go through WebHDFS (the ``hdfs`` package) and are copied to a
local cache before TensorFlow loads them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from prescore.errors import ModelStoreError
from prescore.settings import ModelStoreSettings

META_FILE = "model.json"
PROMOTED_FILE = "PROMOTED"


class _Backend(Protocol):
    def list_dir(self, path: str) -> list[str]: ...
    def read_text(self, path: str) -> str | None: ...
    def write_text(self, path: str, text: str) -> None: ...
    def upload_dir(self, local: Path, path: str) -> None: ...
    def download_dir(self, path: str, local: Path) -> None: ...


class _LocalBackend:
    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def write_text(self, path: str, text: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        Path(tmp).write_text(text)
        os.replace(tmp, path)  # readers never see a half-written file

    def upload_dir(self, local: Path, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.partial{os.getpid()}"
        shutil.copytree(local, tmp)
        os.replace(tmp, path)

    def download_dir(self, path: str, local: Path) -> None:
        raise AssertionError("local roots are read in place")


class _HdfsBackend:
    def __init__(self, settings: ModelStoreSettings, netloc: str) -> None:
        from hdfs import InsecureClient  # only hdfs:// roots need it

        url = settings.webhdfs_url or f"http://{netloc}"
        self.client = InsecureClient(
            url, user=settings.hdfs_user or None, timeout=settings.timeout_s
        )

    def list_dir(self, path: str) -> list[str]:
        found = self.client.status(path, strict=False)
        return sorted(self.client.list(path)) if found else []

    def read_text(self, path: str) -> str | None:
        if self.client.status(path, strict=False) is None:
            return None
        with self.client.read(path, encoding="utf-8") as reader:
            return str(reader.read())

    def write_text(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        self.client.write(tmp, data=text, encoding="utf-8", overwrite=True)
        self.client.delete(path)  # WebHDFS rename does not overwrite
        self.client.rename(tmp, path)

    def upload_dir(self, local: Path, path: str) -> None:
        tmp = f"{path}.partial"
        self.client.delete(tmp, recursive=True)
        self.client.upload(tmp, str(local), overwrite=True)
        self.client.rename(tmp, path)

    def download_dir(self, path: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=local.parent, prefix=".dl-"))
        self.client.download(path, str(tmp / "v"), overwrite=True)
        os.replace(tmp / "v", local)
        shutil.rmtree(tmp, ignore_errors=True)


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
    """Versioned models under a ``file://`` or ``hdfs://`` root."""

    def __init__(self, settings: ModelStoreSettings) -> None:
        self.settings = settings
        parsed = urlparse(settings.root)
        if parsed.scheme in ("", "file"):
            self.root = parsed.path if parsed.scheme else settings.root
            self._backend: _Backend = _LocalBackend()
            self.local = True
        elif parsed.scheme == "hdfs":
            self.root = parsed.path or "/"
            self._backend = _HdfsBackend(settings, parsed.netloc)
            self.local = False
        else:
            raise ModelStoreError(f"unsupported model store root {settings.root!r}")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        return sorted((v for v in self._backend.list_dir(self._path(name)) if v.isdigit()), key=int)

    def save(self, name: str, local_dir: Path, meta: dict[str, Any]) -> str:
        """Store a built model directory as the next version; returns the version."""
        existing = self.versions(name)
        version = str(int(existing[-1]) + 1 if existing else 1)
        meta = {**meta, "name": name, "version": version}
        (local_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._backend.upload_dir(local_dir, self._path(name, version))
        return version

    def meta(self, name: str, version: str) -> dict[str, Any]:
        raw = self._backend.read_text(self._path(name, version, META_FILE))
        if raw is None:
            raise ModelStoreError(f"model {name}/{version} not found in {self.settings.root}")
        return dict(json.loads(raw))

    def promote(self, name: str, version: str) -> None:
        """Name ``version`` as the one in production."""
        self.meta(name, version)  # refuse to promote what is not there
        self._backend.write_text(self._path(name, PROMOTED_FILE), version + "\n")

    def promoted(self, name: str) -> str | None:
        raw = self._backend.read_text(self._path(name, PROMOTED_FILE))
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
            self._backend.download_dir(self._path(name, version), local)
        return ModelRef(name, version, local, meta)
