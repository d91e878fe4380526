"""The lookup's Redis reads: pipelined on one connection per thread, replies parsed in C."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import hiredis
import redis
from redis._parsers import BaseParser
from redis.connection import AbstractConnection

from prescore.values import Command

_MORE = object()  # hiredis: not enough data for a whole reply yet


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
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if str(kwargs.get("protocol") or 2) != "2":
            raise ValueError("LeanReader reads RESP2 replies; the client speaks another")
        self._new = lambda: pool.connection_class(**kwargs)
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
                    protocolError=Dropped, replyError=BaseParser.parse_error,
                    notEnoughData=_MORE,
                )  # fmt: skip
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
