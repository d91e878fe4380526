"""Live inference on a miss: the lookup's client of the fallback service.

Every miss of one request goes to the fallback in ONE call per dataset (a batchGet's
misses included; over ``fallback_max_instances`` of them, in several calls within the
one deadline): ``POST {fallback}/v1/datasets/{name}:predict`` with
``{"instances": [{"key", "context"?}], "model_version"}``, where ``model_version`` is the
one that made the version the request read, so a live answer and a precomputed one of
the same response come from the same model. The fallback finds each key's inputs itself
(the dataset's own tables or image folder).

Each live payload (``"source": "live"``, the shape the bulk job stores) is written back
under the version the request read, with a TTL (``PRESCORE_LIVE_TTL_S``) and within a
bound per version (``PRESCORE_LIVE_MAX_KEYS``), so the next request for it is a hit. A
key the fallback cannot score stays a 404 ``not_found``. An answer made from features a
caller sent (``:predict``, lookup.live.predict) is never written back.

A call has a deadline (``fallback_timeout_s``, default 100 ms) and runs behind a circuit
breaker, one per dataset (lookup.live.breaker): it opens when enough of the last window's calls
failed, and that dataset's misses then fail at once until a few trial calls succeed. A
slow fallback gives FallbackTimeout (``fallback_timeout``), one down, refusing (a 400
included: the caller of a lookup sent only a key) or answering a body it should not
FallbackUnavailable (``fallback_unavailable``): each in the place of the keys it kept
from an answer, never raised (lookup.live.misses). A single lookup answers them as a 504 / 503
(or with its stale answer); a batchGet serves its hits and gives each missing key a
per-item entry with that code (lookup.service). On ``:predict`` (lookup.live.predict), where the
caller sent the features, the fallback's 400 is the caller's, with its code.

Plain HTTP (http.client, one keep-alive connection per thread); no TensorFlow here.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import redis

from lookup.datasets import ServedDatasets
from lookup.live.answers import MAX_LIVE_PAYLOAD_BYTES, Unusable, live_payload
from lookup.live.breaker import CircuitOpen, WindowBreaker
from lookup.live.misses import FAILURES, Answer, Failure, Miss
from lookup.metrics import Metrics
from lookup.settings import LookupSettings
from lookup.store import Resolved
from prescore.encoding import keys
from prescore.encoding.codec import dumps
from prescore.encoding.registry_entry import FINAL, VersionInfo
from prescore.errors import FallbackTimeout, FallbackUnavailable, InvalidInput
from prescore.logs import trace_headers
from prescore.store import values
from prescore.store.redis_client import OUTAGES, Client, connect

log = logging.getLogger(__name__)
_WRITE_BACK_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *OUTAGES)


class _Refused(Exception):
    """The fallback answered with an error status (counted by the breaker)."""


class FallbackClient:
    """A MissHandler calling the fallback service, with a deadline and circuit breakers."""

    def __init__(
        self,
        settings: LookupSettings,
        client: Client | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        parsed = urlparse(settings.fallback_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"PRESCORE_FALLBACK_URL must be http://host:port, got {parsed}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.base = parsed.path.rstrip("/")
        self.timeout_s = settings.fallback_timeout_s
        self.headers = {"Content-Type": "application/json"}
        if settings.fallback_token:
            self.headers["Authorization"] = f"Bearer {settings.fallback_token}"
        self.max_instances = settings.fallback_max_instances
        self.ttl_s = settings.core.store.live_ttl_s
        self.max_live_keys = settings.core.store.live_max_keys
        self.redis = client or connect(settings.core.redis, retry_timeouts=False)
        self.datasets = ServedDatasets.of(settings.core.catalog)
        # One breaker per dataset: a model that is down does not stop live answers of others.
        b = settings.breaker
        self.breakers = {
            name: WindowBreaker(
                window_s=b.window_s,
                min_calls=b.min_calls,
                ratio=b.ratio,
                reset_s=b.reset_s,
                probes=b.probes,
                excluded=(InvalidInput,),  # the caller's bad input: no outage
            )
            for name in self.datasets.by_name
        }
        self.metrics = metrics  # None: counted nowhere
        self._local = threading.local()

    # -- HTTP ----------------------------------------------------------------------------

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _post_once(self, path: str, body: bytes, deadline: float, limit: int) -> dict[str, Any]:
        """The fallback's JSON object, read to at most ``limit`` bytes."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        conn = self._conn(left)
        try:
            conn.request("POST", self.base + path, body, self.headers | trace_headers())
            reply = conn.getresponse()
            data = reply.read(limit + 1)
        except BaseException:
            self._drop(conn)
            raise
        if not reply.isclosed():  # a body past the limit, left unread: no next request on it
            self._drop(conn)
        if reply.status == 400:  # the instances themselves (e.g. features it cannot use)
            raise _client_error(reply.status, data)
        # any other refusal (404: a dataset it does not serve, 413: more instances than it
        # takes, ...) is a deployment mismatch, never the caller's fault: _Refused below
        if reply.status != 200:
            raise _Refused(f"fallback answered {reply.status}: {data[:200]!r}")
        if len(data) > limit:
            raise ValueError(f"fallback answered over {limit} bytes")
        try:
            doc = json.loads(data)
        except RecursionError:  # nested past what the parser's stack takes
            raise ValueError("fallback answered JSON nested too deep") from None
        if not isinstance(doc, dict):
            raise ValueError(f"fallback answered a JSON {type(doc).__name__}, not an object")
        return doc

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None

    def _post(self, path: str, body: bytes, deadline: float, n: int) -> list[Any]:
        """The ``n`` predictions of one call; ValueError for a body that holds no such
        list (counted as a failed call: the breaker opens on a fallback answering so)."""
        limit = n * MAX_LIVE_PAYLOAD_BYTES + 4096
        try:
            doc = self._post_once(path, body, deadline, limit)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            doc = self._post_once(path, body, deadline, limit)  # a kept-alive one went stale
        preds = doc.get("predictions")
        if not isinstance(preds, list) or len(preds) != n:
            raise ValueError(f"fallback answered no list of {n} predictions")
        return preds

    def predict(
        self, dataset: str, instances: list[dict[str, Any]], model_version: str = ""
    ) -> list[dict[str, Any] | Failure]:
        """The fallback's predictions for ``instances`` of ``dataset`` (payloads or
        per-instance errors): one call, or one per ``fallback_max_instances`` of them, all
        within one deadline. A call that fails stands for every instance not yet answered
        (no more calls are made); the earlier calls' answers are kept. Never raises."""
        deadline = time.monotonic() + self.timeout_s
        step = self.max_instances
        preds: list[dict[str, Any] | Failure] = []
        failed: Failure | None = None
        for start in range(0, len(instances), step):
            part = instances[start : start + step]
            if failed is None:
                try:
                    preds += self._predict_call(dataset, part, model_version, deadline)
                    continue
                except FAILURES as exc:
                    failed = exc
            preds += [failed] * len(part)
        return preds

    def _predict_call(
        self, dataset: str, instances: list[dict[str, Any]], model_version: str, deadline: float
    ) -> list[dict[str, Any]]:
        doc: dict[str, Any] = {"instances": instances}
        if model_version:
            doc["model_version"] = model_version
        path = f"/v1/datasets/{dataset}:predict"
        breaker = self.breakers[dataset]
        started = time.perf_counter()
        try:
            preds: list[Any] = breaker.call(self._post, path, dumps(doc), deadline, len(instances))
        except InvalidInput:
            raise
        except CircuitOpen as exc:
            self._count(dataset, "circuit_open", breaker)
            raise FallbackUnavailable("live inference unavailable (circuit open)") from exc
        except TimeoutError as exc:
            self._count(dataset, "timeout", breaker, started)
            took = f"{self.timeout_s * 1000:.0f} ms"
            raise FallbackTimeout(f"live inference took over {took}") from exc
        except (OSError, http.client.HTTPException, _Refused, ValueError) as exc:
            # the cause goes to the log; the client gets a stable code and a safe message
            self._count(
                dataset, "refused" if isinstance(exc, _Refused) else "unavailable", breaker, started
            )
            log.warning("live inference for %s failed: %s: %s", dataset, type(exc).__name__, exc)
            raise FallbackUnavailable("live inference unavailable") from exc
        self._count(dataset, "", breaker, started)
        return preds

    def _count(
        self, dataset: str, cause: str, breaker: WindowBreaker, started: float | None = None
    ) -> None:
        """A call's metrics: its latency, its failure's cause, the breaker's state."""
        if self.metrics is None:
            return
        if started is not None:
            self.metrics.seconds(
                self.metrics.fallback_seconds, dataset, time.perf_counter() - started
            )
        if cause:
            self.metrics.count(self.metrics.fallback_errors, dataset, cause)
        self.metrics.breaker_state(dataset, breaker.state)

    # -- miss seam -----------------------------------------------------------------------

    def __call__(self, misses: Sequence[Miss], version: Resolved) -> list[Answer]:
        """Live payloads for the misses (None where there is none, the error where its
        call failed), written back under ``version``: one fallback call per dataset. The
        fallback refusing a stored key's input (its 400) is no fault of the caller, who
        sent only the key: that is ``fallback_unavailable`` here."""
        out: list[Answer] = [None] * len(misses)
        for dataset in dict.fromkeys(m.dataset for m in misses):
            wanted = [i for i, m in enumerate(misses) if m.dataset == dataset]
            instances = [_instance(misses[i]) for i in wanted]
            for i, payload in zip(wanted, self.answer(dataset, instances, version), strict=True):
                out[i] = _unavailable(payload) if isinstance(payload, InvalidInput) else payload
        return out

    def answer(
        self,
        dataset: str,
        instances: list[dict[str, Any]],
        version: Resolved,
        *,
        write_back: bool = True,
    ) -> list[Answer]:
        """Payload bytes per instance (None where the fallback has none, the error where
        its call failed), written back unless ``write_back`` is False (an answer made from
        inputs the caller sent)."""
        shape, asked = self.datasets.get(dataset).shape, version.model_version
        preds = self.predict(dataset, instances, asked)
        found = [
            pred if isinstance(pred, FAILURES) else live_payload(dataset, pred, inst, shape, asked)
            for inst, pred in zip(instances, preds, strict=True)
        ]
        if unusable := [f for f in found if isinstance(f, Unusable)]:
            more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
            log.warning("%s%s", unusable[0].message, more)
            if self.metrics is not None:
                self.metrics.count(
                    self.metrics.fallback_errors, dataset, "invalid_answer", by=len(unusable)
                )
        if self.metrics is not None:
            answered = sum(1 for f in found if isinstance(f, bytes))
            if answered:
                self.metrics.count(self.metrics.live, dataset, by=answered)
        if write_back:
            self._write_back(dataset, instances, found, version)
        return found

    def _write_back(
        self,
        dataset: str,
        instances: list[dict[str, Any]],
        payloads: list[Answer],
        version: Resolved,
    ) -> None:
        where = version.placed
        rows = [
            (where.write_back(_store_key(inst)), payload)
            for inst, payload in zip(instances, payloads, strict=True)
            if isinstance(payload, bytes)
        ]
        if not rows:
            return
        try:
            allowed = self._budget(dataset, version.version, len(rows))
            if allowed < len(rows):
                log.warning(
                    "live write-backs of %s over their bound; %d not stored",
                    dataset,
                    len(rows) - allowed,
                )
            names = [n for n, _ in rows[:allowed]]
            pipe = self.redis.pipeline(transaction=False)
            for name, payload in rows[:allowed]:
                pipe.set(name, payload, ex=self.ttl_s)
            values.record_write_backs(pipe, where, names, self.ttl_s)
            pipe.execute()
            # Asked after the writes landed: a version retired (or failed) by then may have
            # had its keys removed before they did; gc would never find these again.
            if names and not self._served(dataset, version.version):
                pipe = self.redis.pipeline(transaction=False)
                values.retract_write_backs(pipe, where, names, self.ttl_s)
                pipe.execute()
        except _WRITE_BACK_ERRORS as exc:  # the answer is still served; the next miss asks
            # again
            log.warning(
                "live write-back of %d %s payloads failed: %s",
                len(rows),
                dataset,
                type(exc).__name__,
            )

    def _served(self, dataset: str, version: str) -> bool:
        """Whether ``version`` may still be read: neither retired nor failed (its record
        comes first, then its keys go: prescore.store.version_gc)."""
        raw = self.redis.hget(keys.registry_key(dataset), version)
        return raw is not None and VersionInfo.from_bytes(raw).status not in FINAL

    def _budget(self, dataset: str, version: str, wanted: int) -> int:
        """How many of ``wanted`` write-backs the bound still allows for this version.

        A counter per dataset version, expiring with the write-backs' TTL, bounds how many
        live keys a version can gain per TTL window (``PRESCORE_LIVE_MAX_KEYS``): a stream
        of new ids cannot grow the store without limit.
        """
        counter = keys.live_counter_key(dataset, version)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(counter, 0, ex=self.ttl_s, nx=True)  # the window starts with the first
        pipe.incrby(counter, wanted)
        total = int(pipe.execute()[1])
        return max(0, min(wanted, self.max_live_keys - (total - wanted)))


def _client_error(status: int, data: bytes) -> InvalidInput:
    """The fallback refused the input (e.g. features it cannot use): the caller's 400."""
    try:
        doc = json.loads(data)
        code, message = str(doc["error"]), str(doc["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "invalid_input", f"live inference refused the input ({status})"
    return InvalidInput(message, code=code)


def _unavailable(refused: InvalidInput) -> FallbackUnavailable:
    return FallbackUnavailable(f"live inference could not answer the key ({refused.code})")


def _instance(miss: Miss) -> dict[str, Any]:
    """A miss as the fallback takes it."""
    inst: dict[str, Any] = {"key": miss.key}
    if miss.context:
        inst["context"] = miss.context
    return inst


def _store_key(inst: dict[str, Any]) -> str:
    """The key a live payload is written back under (as the bulk jobs write it)."""
    return keys.entity_key(inst["key"], inst.get("context"))
