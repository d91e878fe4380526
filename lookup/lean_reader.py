"""The lookup's Redis reads: pipelined on one connection per thread, replies parsed in C."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import hiredis
import redis
from redis._parsers import BaseParser
from redis.connection import AbstractConnection

from prescore.values import Command


class LeanReader:
    """Reads pipelined on one connection per thread, skipping the pool and retry machinery.

    The hot path of the API is one HGET, or a hundred for a batch. redis-py's reply loop
    makes several Python calls per reply, more than Redis spends on an HGET, so here the
    commands are packed by hiredis and the replies parsed by one hiredis Reader straight
    off the connection's socket, as redis-py's own hiredis parser does; redis-py still
    makes the connection (TLS, AUTH, SELECT, its timeouts). A connection broken since its
    last use (Redis restarted) is reconnected and the commands sent once more; any other
    failure raises at once (no retry loop).
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._new = lambda: pool.connection_class(**pool.connection_kwargs)
        self._local = threading.local()

    def _conn(self) -> AbstractConnection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # a forked worker opens its own
            local.conn, local.pid = self._new(), os.getpid()
        conn: AbstractConnection = local.conn
        return conn

    def run(self, commands: list[Command]) -> list[Any]:
        """The replies of ``commands``, sent in one write."""
        try:
            return self._send(self._conn(), commands)
        except redis.ConnectionError:
            return self._send(self._conn(), commands)  # once, on a fresh connection

    def _send(self, conn: AbstractConnection, commands: list[Command]) -> list[Any]:
        try:
            sock = _socket(conn)
            if sock is None:  # new, or dropped after a failure
                conn.connect()
                sock = _socket(conn)
                self._local.reader = hiredis.Reader(replyError=BaseParser.parse_error)
            if sock is None:
                raise redis.ConnectionError("no connection to Redis")
            packed = b"".join([hiredis.pack_command(c) for c in commands])  # type: ignore[arg-type]
            sock.sendall(packed)
            return _replies(sock, self._local.reader, len(commands))
        except BaseException as exc:
            conn.disconnect()  # whatever is left unread on it goes with it
            if isinstance(exc, socket.timeout):
                raise redis.TimeoutError("timed out reading from Redis") from exc
            if isinstance(exc, OSError):
                raise redis.ConnectionError(f"connection to Redis lost: {exc}") from exc
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
        if reply is False:  # hiredis: not enough data yet
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection")
            reader.feed(chunk)
        elif isinstance(reply, Exception):
            raise reply
        else:
            replies.append(reply)
    return replies
