"""A small WebHDFS-protocol server over a local directory, for testing hdfs:// roots.

It speaks the subset of the WebHDFS REST API that the ``hdfs`` package's client uses
(GETFILESTATUS, LISTSTATUS, OPEN, CREATE with its datanode redirect, MKDIRS, RENAME,
DELETE), so the model store's HDFS code runs unchanged against it.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/webhdfs/v1"


def _status(path: Path, suffix: str = "") -> dict[str, Any]:
    stat = path.stat()
    return {
        "pathSuffix": suffix,
        "type": "DIRECTORY" if path.is_dir() else "FILE",
        "length": 0 if path.is_dir() else stat.st_size,
        "modificationTime": int(stat.st_mtime * 1000),
        "accessTime": int(stat.st_atime * 1000),
        "permission": "755",
        "owner": "prescore",
        "group": "prescore",
        "replication": 1,
        "blockSize": 134217728,
    }


def send_json(
    handler: BaseHTTPRequestHandler, status: int, doc: Any, raw: bytes | None = None
) -> None:
    """Answer ``doc`` as JSON with ``status`` (the test servers' one way to reply);
    ``raw``: these bytes instead, as JSON no encoder would write."""
    body = raw if raw is not None else json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    root: Path  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _parse(self) -> tuple[Path, str, dict[str, str]]:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        rel = url.path[len(PREFIX) :].lstrip("/")
        return self.root / rel, query.get("op", "").upper(), query

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        send_json(self, status, doc)

    def _missing(self, path: Path) -> None:
        self._json(
            404,
            {
                "RemoteException": {
                    "exception": "FileNotFoundException",
                    "javaClassName": "java.io.FileNotFoundException",
                    "message": f"File does not exist: {path}",
                }
            },
        )

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        path, op, _ = self._parse()
        if not path.exists():
            return self._missing(path)
        if op == "GETFILESTATUS":
            return self._json(200, {"FileStatus": _status(path)})
        if op == "LISTSTATUS":
            entries = (
                [_status(p, p.name) for p in sorted(path.iterdir())]
                if path.is_dir()
                else [_status(path)]
            )
            return self._json(200, {"FileStatuses": {"FileStatus": entries}})
        if op == "OPEN":
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        return self._json(400, {"RemoteException": {"message": f"unsupported op {op}"}})

    def do_PUT(self) -> None:
        path, op, query = self._parse()
        if op == "CREATE":
            if "datanode" not in query:  # the namenode answers with a redirect, as HDFS does
                self._body()
                self.send_response(307)
                self.send_header("Location", f"http://{self.headers['Host']}{self.path}&datanode=1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if path.exists() and query.get("overwrite", "false") != "true":
                return self._json(
                    403,
                    {
                        "RemoteException": {
                            "exception": "FileAlreadyExistsException",
                            "message": f"{path} exists",
                        }
                    },
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._body())
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self._body()
        if op == "MKDIRS":
            path.mkdir(parents=True, exist_ok=True)
            return self._json(200, {"boolean": True})
        if op == "RENAME":
            target = self.root / query["destination"].lstrip("/")
            if not path.exists() or target.exists():
                return self._json(200, {"boolean": False})
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            return self._json(200, {"boolean": True})
        return self._json(400, {"RemoteException": {"message": f"unsupported op {op}"}})

    def do_DELETE(self) -> None:
        path, _, query = self._parse()
        if not path.exists():
            return self._json(200, {"boolean": False})
        if path.is_dir():
            if query.get("recursive", "false") != "true" and any(path.iterdir()):
                return self._json(403, {"RemoteException": {"message": "directory not empty"}})
            shutil.rmtree(path)
        else:
            path.unlink()
        return self._json(200, {"boolean": True})


class WebHdfsServer:
    """Serve ``root`` over WebHDFS on 127.0.0.1 in a background thread."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"root": root})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebHdfsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
