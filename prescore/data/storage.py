"""Files under a folder URI: ``file://`` (or a plain path), ``hdfs://`` through WebHDFS,
and ``s3://`` (or ``s3a://``) and ``gs://`` through pyarrow's filesystems
(prescore.data.object_store).

Shared by the model store, model import, the fallback's photo store and its tables, so
all reach local disks, HDFS and object storage with the same code.
``hdfs://host:port/path`` goes through the ``hdfs`` package's WebHDFS client, at
``webhdfs_url`` when given (a NameNode's WebHDFS port usually differs from its RPC
port), else at ``http://host:port``.

A file that is not there reads as None; any other I/O failure (store unreachable, no
permission) raises OSError.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from prescore.data import object_store
from prescore.errors import PrescoreError, StorageUnavailable
from prescore.logs import masked_url

# what the client libraries raise on a failed call: I/O (OSError, pyarrow's), a bad path
# (pyarrow's ArrowInvalid is a ValueError) and WebHDFS's refusals (HdfsError)
_FAILURES: tuple[type[BaseException], ...] = (OSError, ValueError)
try:
    from hdfs.util import HdfsError

    _FAILURES = (*_FAILURES, HdfsError)
except ImportError:  # a core install: no hdfs:// either
    pass


class Backend(Protocol):
    def list_dir(self, path: str) -> list[str]: ...
    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None: ...
    def write_text(self, path: str, text: str) -> None: ...
    def upload_dir(self, local: Path, path: str) -> None: ...
    def download_dir(self, path: str, local: Path) -> None: ...
    def files(self, path: str) -> dict[str, tuple[int, int]]: ...
    def download_file(self, path: str, local: Path) -> None: ...


class LocalFiles:
    """The local file system; writes are atomic (temporary name, then rename)."""

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """The file's bytes (at most ``limit``), or None if there is no such file."""
        try:
            with open(path, "rb") as f:
                return f.read(limit) if limit is not None else f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_text(self, path: str, text: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        Path(tmp).write_text(text)
        os.replace(tmp, path)  # readers never see a half-written file

    def upload_dir(self, local: Path, path: str) -> None:
        """Copy ``local`` to ``path`` under a temporary name, then rename it there:
        FileExistsError when ``path`` was made meanwhile (another writer took it); no
        temporary copy stays behind."""
        tmp = f"{path}.partial{os.getpid()}"
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(local, tmp)
            os.rename(tmp, path)  # refused onto another writer's version (never empty)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.isdir(path):
                raise FileExistsError(path) from None
            raise StorageUnavailable(f"{path}: cannot be written: {exc.strerror or exc}") from None

    def download_dir(self, path: str, local: Path) -> None:
        raise AssertionError("local roots are read in place")

    def files(self, path: str) -> dict[str, tuple[int, int]]:
        raise AssertionError("local roots are read in place")

    def download_file(self, path: str, local: Path) -> None:
        raise AssertionError("local roots are read in place")


class WebHdfs:
    """HDFS through WebHDFS (the ``hdfs`` package)."""

    def __init__(self, url: str, user: str = "", timeout_s: float = 30.0) -> None:
        from hdfs import InsecureClient  # only hdfs:// roots need it

        self.client = InsecureClient(url, user=user or None, timeout=timeout_s)

    def list_dir(self, path: str) -> list[str]:
        found = self.client.status(path, strict=False)
        return sorted(self.client.list(path)) if found else []

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """The file's bytes (at most ``limit``), or None if there is no such file."""
        from hdfs.util import HdfsError

        try:
            with self.client.read(path, length=limit) as reader:
                return bytes(reader.read(limit) if limit is not None else reader.read())
        except HdfsError as exc:
            if exc.exception == "FileNotFoundException":
                return None
            raise OSError(f"WebHDFS read of {path}: {exc}") from exc

    def write_text(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        self.client.write(tmp, data=text, encoding="utf-8", overwrite=True)
        self.client.delete(path)  # WebHDFS rename does not overwrite
        self.client.rename(tmp, path)

    def upload_dir(self, local: Path, path: str) -> None:
        """As LocalFiles.upload_dir; each writer's temporary name its own."""
        tmp = f"{path}.partial-{os.getpid()}-{secrets.token_hex(3)}"
        self.client.upload(tmp, str(local), overwrite=True)
        if self.client.status(path, strict=False) is not None:
            self.client.delete(tmp, recursive=True)
            raise FileExistsError(path)
        self.client.rename(tmp, path)
        nested = f"{path}/{posixpath.basename(tmp)}"  # HDFS moves it into a folder made since
        if self.client.status(nested, strict=False) is not None:
            self.client.delete(nested, recursive=True)
            raise FileExistsError(path)

    def download_dir(self, path: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=local.parent, prefix=".dl-"))
        self.client.download(path, str(tmp / "v"), overwrite=True)
        os.replace(tmp / "v", local)
        shutil.rmtree(tmp, ignore_errors=True)

    def files(self, path: str) -> dict[str, tuple[int, int]]:
        """Every file at or under ``path`` by its path relative to it ("": ``path`` is a
        file), with its (modification time in ms, length); empty if there is none.
        OSError when the store cannot say."""
        from hdfs.util import HdfsError

        try:
            return self._files(path)
        except HdfsError as exc:
            raise OSError(f"WebHDFS listing of {path}: {exc}") from exc

    def _files(self, path: str) -> dict[str, tuple[int, int]]:
        status = self.client.status(path, strict=False)
        if status is None:
            return {}
        if status["type"] == "FILE":
            return {"": (status["modificationTime"], status["length"])}
        found = {}
        for (folder, _), _, names in self.client.walk(path, status=True, ignore_missing=True):
            for name, info in names:
                relative = posixpath.relpath(posixpath.join(folder, name), path)
                found[relative] = (info["modificationTime"], info["length"])
        return found

    def download_file(self, path: str, local: Path) -> None:
        """Copy one file to ``local``, replaced whole: it is written under a hidden name
        beside it first (a reader of the folder never sees it half-written)."""
        from hdfs.util import HdfsError

        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial")
        try:
            self.client.download(path, str(partial), overwrite=True)
        except HdfsError as exc:  # gone since it was listed, refused: the next sync
            raise OSError(f"WebHDFS read of {path}: {exc}") from exc
        os.replace(partial, local)


@dataclass(frozen=True)
class Root:
    """A folder URI, opened: the backend that reaches it and the folder's path there."""

    uri: str
    backend: Backend
    path: str
    local: bool

    def join(self, *parts: str) -> str:
        """The path of ``parts`` under the folder (parts are names, never checked here)."""
        return "/".join([self.path.rstrip("/"), *parts])


REMOTE_SCHEMES = ("hdfs", *object_store.SCHEMES)  # read through a backend, not in place
SCHEMES = ("", "file", *REMOTE_SCHEMES)


def remote(uri: str) -> bool:
    """Whether ``uri`` names files that are copied to local disk before they are read."""
    return urlparse(uri).scheme in REMOTE_SCHEMES


def check_uri(uri: str) -> str:
    """Return ``uri`` if it is a folder URI we can open (SCHEMES; "": a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme not in SCHEMES:
        raise ValueError(f"unsupported folder URI {uri!r}: use file://, hdfs://, s3:// or gs://")
    if parsed.scheme in object_store.SCHEMES and not parsed.netloc:
        scheme = parsed.scheme
        raise ValueError(f"{uri!r}: a {scheme}:// URI names its bucket ({scheme}://BUCKET/PREFIX)")
    return uri


class Guarded:
    """A remote backend whose failures are StorageUnavailable, naming the folder URI
    (password masked): one error, whatever the client library raised, and never taken
    for a Redis outage by the code around it."""

    def __init__(self, backend: Backend, uri: str) -> None:
        self.backend = backend
        self.uri = uri

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.backend, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except PrescoreError:
                raise
            except _FAILURES as exc:
                where = masked_url(self.uri)
                raise StorageUnavailable(
                    f"{where}: {name.replace('_', ' ')} failed: {type(exc).__name__}: {exc}"
                ) from exc

        return guarded


def open_root(uri: str, *, webhdfs_url: str = "", user: str = "", timeout_s: float = 30.0) -> Root:
    """The folder ``uri`` opened; ValueError for a scheme not in SCHEMES."""
    parsed = urlparse(check_uri(uri))
    if parsed.scheme == "hdfs":
        backend = WebHdfs(webhdfs_url or f"http://{parsed.netloc}", user, timeout_s)
        return Root(uri, Guarded(backend, uri), parsed.path or "/", False)
    if parsed.scheme in object_store.SCHEMES:
        store = object_store.ObjectStore(object_store.filesystem_of(uri, timeout_s=timeout_s))
        return Root(uri, Guarded(store, uri), object_store.object_path(uri), False)
    return Root(uri, LocalFiles(), parsed.path if parsed.scheme else uri, True)
