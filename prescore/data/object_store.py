"""Files in object storage through pyarrow's filesystems: ``s3://bucket/prefix`` (also
written ``s3a://`` as Spark's Hadoop connector names it) and ``gs://bucket/prefix``; a
storage backend (prescore.data.storage) beside the local disk and WebHDFS.

Credentials and the endpoint come from each cloud's standard environment, as its own
clients take them:

- S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or a profile, or the pod's IAM
  role), ``AWS_REGION``, and ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for a store
  that is not AWS itself (MinIO, Ceph, a test server).
- GCS: Google's application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, or
  the pod's workload identity), and ``STORAGE_EMULATOR_HOST`` for an emulator, reached
  without credentials as Google's clients do.

An object is written whole by one PUT, so a reader never sees part of a file; a folder
has no atomic rename, so a folder is uploaded with the file that marks it complete last
(``last``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs",)
SCHEMES = (*S3_SCHEMES, *GCS_SCHEMES)


def filesystem(
    scheme: str = "s3", env: Mapping[str, str] | None = None, timeout_s: float = 30.0
) -> Any:
    """pyarrow's filesystem for ``scheme`` (one of SCHEMES), configured from the cloud's
    standard variables of ``env``."""
    env = os.environ if env is None else env
    if scheme in GCS_SCHEMES:
        return _gcs(env, timeout_s)
    return _s3(env, timeout_s)


def filesystem_of(uri: str, env: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> Any:
    """The filesystem an object URI (``s3://...``, ``gs://...``) is read through."""
    return filesystem(urlparse(uri).scheme, env, timeout_s)


def _gcs(env: Mapping[str, str], timeout_s: float) -> Any:
    from pyarrow import fs

    # pyarrow's GCS client has no per-call timeout: its retries stop after the limit
    options: dict[str, Any] = {"retry_time_limit": timedelta(seconds=timeout_s)}
    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator:
        parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
        options |= {"endpoint_override": parsed.netloc, "scheme": parsed.scheme}
        options["anonymous"] = True
    return fs.GcsFileSystem(**options)


def _s3(env: Mapping[str, str], timeout_s: float) -> Any:
    from pyarrow import fs

    options: dict[str, Any] = {"connect_timeout": timeout_s, "request_timeout": timeout_s}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return fs.S3FileSystem(**options)


def object_path(uri: str) -> str:
    """``s3://bucket/a/b`` -> ``bucket/a/b``, the path pyarrow's filesystems take."""
    parsed = urlparse(uri)
    return f"{parsed.netloc}{parsed.path}".rstrip("/")


class ObjectStore:
    """A storage backend over an object store; I/O failures raise OSError, a missing file
    reads None."""

    def __init__(self, fs: Any, last: str = "model.json") -> None:
        self.fs = fs
        self.last = last  # uploaded after the rest of a folder: it marks the folder whole

    def _infos(self, path: str, recursive: bool) -> list[Any]:
        from pyarrow import fs

        selector = fs.FileSelector(path, allow_not_found=True, recursive=recursive)
        return list(self.fs.get_file_info(selector))

    def list_dir(self, path: str) -> list[str]:
        """The names right under ``path``, from every object below it: pyarrow's GCS
        lists a folder's subfolders only where a marker object names them, and one
        listing serves both stores (for small folders: it lists everything below)."""
        start = len(path) + 1
        names = {info.path[start:].split("/", 1)[0] for info in self._infos(path, True)}
        return sorted(name for name in names if name)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return bytes(f.read(limit) if limit is not None else f.read())
        except FileNotFoundError:
            return None

    def write_text(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as f:
            f.write(text.encode("utf-8"))

    def upload_dir(self, local: Path, path: str) -> None:
        found = sorted(p for p in local.rglob("*") if p.is_file())
        marks = [p for p in found if p.relative_to(local).as_posix() == self.last]
        for file in [p for p in found if p not in marks] + marks:
            with (
                file.open("rb") as src,
                self.fs.open_output_stream(f"{path}/{file.relative_to(local).as_posix()}") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)

    def files(self, path: str) -> dict[str, tuple[int, int]]:
        """Every file at or under ``path`` by its path relative to it ("": ``path`` is a
        file), with its (modification time in ms, size)."""
        from pyarrow import fs

        info = self.fs.get_file_info(path)
        if info.type == fs.FileType.File:
            return {"": _stamp(info)}
        found = {
            info.path[len(path) + 1 :]: _stamp(info)
            for info in self._infos(path, recursive=True)
            if info.type == fs.FileType.File
        }
        return {relative: stamp for relative, stamp in found.items() if _plain(relative)}

    def download_file(self, path: str, local: Path) -> None:
        """Copy one object to ``local``, replaced whole (written beside it first)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial")
        with self.fs.open_input_stream(path) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(partial, local)

    def download_dir(self, path: str, local: Path) -> None:
        """Copy the folder (or the one file) at ``path`` to ``local``, which appears whole."""
        found = self.files(path)
        if list(found) == [""]:  # a file
            self.download_file(path, local)
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=local.parent, prefix=".dl-"))
        try:
            for relative in found:
                self.download_file(f"{path}/{relative}", tmp / "v" / relative)
            (tmp / "v").mkdir(exist_ok=True)  # an empty folder is still a folder
            os.replace(tmp / "v", local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _plain(relative: str) -> bool:
    """Whether an object's name under a folder is a plain relative path: a key may hold
    ``//``, ``.`` or ``..`` segments, which copied to local disk would name a file
    outside the folder it is copied into. Such objects are left out."""
    return all(part not in ("", ".", "..") for part in relative.split("/"))


def _stamp(info: Any) -> tuple[int, int]:
    mtime = info.mtime
    return (int(mtime.timestamp() * 1000) if mtime else 0, int(info.size or 0))
