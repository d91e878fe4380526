"""The lookup's Redis reads: pipelined on one connection per thread, replies parsed in C."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import hiredis
import redis
from redis import exceptions as rx
from redis.connection import AbstractConnection

from prescore.store.values import Command

_MORE = object()  # hiredis: not enough data for a whole reply yet

# Redis error replies by their first word, as the redis-py exceptions its own parsers raise
# (so an outage reads the same by either path); any other is a plain ResponseError.
_REPLY_ERRORS: dict[str, type[rx.RedisError]] = {
    "ERR": rx.ResponseError,
    "LOADING": rx.BusyLoadingError,
    "READONLY": rx.ReadOnlyError,
    "NOSCRIPT": rx.NoScriptError,
    "NOPERM": rx.NoPermissionError,
    "NOAUTH": rx.AuthenticationError,
    "WRONGPASS": rx.AuthenticationError,
    "EXECABORT": rx.ExecAbortError,
    "MASTERDOWN": rx.MasterDownError,
    "CLUSTERDOWN": rx.ClusterDownError,
    "TRYAGAIN": rx.TryAgainError,
}


class Dropped(redis.ConnectionError):
    """The connection failed under a read (reset, closed, a reply stream out of step)."""


class LeanReader:
    """Reads pipelined on one connection per thread, skipping the pool and retry machinery.

    The hot path of the API is one HGET, or a hundred for a batch. redis-py's reply loop
    makes several Python calls per reply, more than Redis spends on an HGET, so here the
    commands are packed by hiredis and the replies parsed by one hiredis Reader straight
    off the connection's socket, as redis-py's own hiredis parser does; redis-py still
    makes the connection (TLS, AUTH, SELECT, its timeouts and its retried connect). A
    connection that was open and failed (Redis restarted) is made again and the commands
    sent once more; one idle for longer than the client's health-check interval is made
    again before use, as redis-py would check it; any other failure raises at once.

    The connection's socket is no public name of redis-py: pyproject.toml allows only the
    redis-py releases tests/test_lean_reader.py covers, and a connection class without it
    (another release, another transport) makes the constructor refuse, so that the lookup
    reads through redis-py instead.
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if str(kwargs.get("protocol") or 2) != "2":
            raise ValueError("LeanReader reads RESP2 replies; the client speaks another")
        self._new = lambda: pool.connection_class(**kwargs)
        if not hasattr(self._new(), "_sock"):
            raise ValueError("LeanReader reads the socket of redis-py's connections; this has none")
        self._idle_s = float(kwargs.get("health_check_interval") or 0)
        self._local = threading.local()

    def run(self, commands: list[Command]) -> list[Any]:
        """The replies of ``commands``, sent in one write."""
        conn = self._conn()
        try:
            return self._send(conn, commands)
        except Dropped:  # an open connection broke: once more, on a new one
            return self._send(conn, commands)

    def _conn(self) -> AbstractConnection:
        """This thread's connection (a forked worker makes its own); one idle too long is
        closed, to be made again."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn, local.pid, local.used = self._new(), os.getpid(), 0.0
        conn: AbstractConnection = local.conn
        now = time.monotonic()
        if self._idle_s and now - local.used > self._idle_s:
            conn.disconnect()
        local.used = now
        return conn

    def _send(self, conn: AbstractConnection, commands: list[Command]) -> list[Any]:
        """Write ``commands`` and read their replies; the connection is made if it is not
        open, and closed on any failure, with whatever is left unread on it."""
        sock = _socket(conn)
        try:
            if sock is None:
                conn.connect()  # raises redis-py's errors, after its own retries
                sock = _socket(conn)
                if sock is None:
                    raise redis.ConnectionError("no connection to Redis")
                self._local.reader = hiredis.Reader(
                    protocolError=Dropped,
                    replyError=_reply_error,
                    notEnoughData=_MORE,
                )
            packed = b"".join([hiredis.pack_command(c) for c in commands])  # type: ignore[arg-type]
            sock.sendall(packed)
            return _replies(sock, self._local.reader, len(commands))
        except BaseException as exc:
            conn.disconnect()
            if isinstance(exc, socket.timeout):
                raise redis.TimeoutError("timed out reading from Redis") from exc
            if isinstance(exc, OSError):
                raise Dropped(f"connection to Redis lost: {exc}") from exc
            raise


def _reply_error(message: str) -> rx.RedisError:
    """The exception of a Redis error reply."""
    code, _, rest = message.partition(" ")
    kind = _REPLY_ERRORS.get(code)
    return kind(rest) if kind else rx.ResponseError(message)


def _socket(conn: AbstractConnection) -> socket.socket | None:
    """The connection's socket, which redis-py's own parsers read too (None: closed)."""
    sock: socket.socket | None = getattr(conn, "_sock", None)
    return sock


def _replies(sock: socket.socket, reader: hiredis.Reader, count: int) -> list[Any]:
    """The next ``count`` replies on ``sock``; a Redis error reply raises (redis-py's type)."""
    replies: list[Any] = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is _MORE:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise Dropped("Redis closed the connection")
            reader.feed(chunk)
        elif isinstance(reply, Exception):
            raise reply
        else:
            replies.append(reply)
    return replies
