"""Parsing and checking request parameters; every refusal is an InvalidInput with a code.

Every dataset takes ``k`` (or its synonym ``limit``: at most that many entries, best
first; of both, the smaller) and ``min_score`` (only entries scoring at least that),
whatever its list is called; a dataset with contexts takes ``context``. Codes:
``invalid_k``, ``invalid_limit``, ``invalid_min_score``, ``invalid_id`` (from
prescore.encoding.keys), ``invalid_body``, ``invalid_ids``, ``too_many_ids`` (413),
``malformed_json``, ``unsupported_media_type`` (415), ``too_large`` (413).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request

from lookup.datasets import Served
from lookup.settings import LookupSettings
from prescore.encoding import keys
from prescore.errors import InvalidInput, PayloadTooLarge
from prescore.service.web import json_body

_INT_RE = re.compile(r"[0-9]{1,9}")
_NUMBER_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?")
MAX_ABS_SCORE = 1e9
BATCH_KEYS = "keys"  # the list of keys of every batchGet body (or the dataset's own name)


@dataclass(frozen=True)
class Limits:
    """The bounds a request is checked against (LOOKUP_MAX_K, LOOKUP_MAX_BATCH_IDS,
    LOOKUP_MAX_BODY_BYTES)."""

    max_k: int
    max_ids: int
    max_body_bytes: int

    @classmethod
    def of(cls, settings: LookupSettings) -> Limits:
        return cls(settings.max_k, settings.max_batch_ids, settings.max_body_bytes)


@dataclass(frozen=True)
class Shape:
    """How to cut a payload's list: at most ``limit`` entries scoring at least ``min_score``."""

    limit: int | None = None
    min_score: float | None = None


@dataclass(frozen=True)
class Pick:
    """Which version a request asks for while a canary runs: ``version`` pins one (the
    live one or the canary's: ``?version=``), ``canary`` True or False sends the whole
    request to the canary or away from it (the CANARY_HEADER); neither: by key."""

    version: str | None = None
    canary: bool | None = None


BY_KEY = Pick()
CANARY_HEADER = "X-Prescore-Canary"  # 1: the canary answers; 0: the live version does
_HEADER_VALUES = {"1": True, "true": True, "0": False, "false": False}


def pick(version: Any, header: str | None, allowed: bool = True) -> Pick:
    """A request's ``version`` parameter and CANARY_HEADER, checked (``invalid_version``,
    ``invalid_header``); both ignored unless ``allowed`` (LOOKUP_VERSION_PICK)."""
    if (version is None and header is None) or not allowed:
        return BY_KEY
    if version is not None:
        if not isinstance(version, str):
            raise InvalidInput("version must be a version id", code="invalid_version")
        try:
            keys.check_version(version)
        except InvalidInput:
            raise InvalidInput("version must be a version id", code="invalid_version") from None
    canary = None
    if header is not None:
        canary = _HEADER_VALUES.get(header.strip().lower())
        if canary is None:
            raise InvalidInput(f"{CANARY_HEADER} must be 1 or 0", code="invalid_header")
    return Pick(version, canary)


@dataclass(frozen=True)
class BatchRequest:
    keys: list[str]
    shape: Shape
    context: str | None = None
    pick: Pick = BY_KEY


def _int(raw: Any, name: str, hi: int) -> int:
    """An integer in [1, hi] from a query string or a JSON number."""
    code = f"invalid_{name}"
    if isinstance(raw, str) and _INT_RE.fullmatch(raw):
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer() and abs(raw) < 1e10:
        value = int(raw)  # JSON Schema's integers include 3.0
    else:
        raise InvalidInput(f"{name} must be an integer from 1 to {hi}", code=code)
    if not 1 <= value <= hi:
        raise InvalidInput(f"{name} must be an integer from 1 to {hi}, got {value}", code=code)
    return value


def _score(raw: Any) -> float:
    """A finite score threshold from a query string or a JSON number."""
    value: float | None = None
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if number or (isinstance(raw, str) and _NUMBER_RE.fullmatch(raw)):
        value = float(raw)
    if value is None or not math.isfinite(value) or abs(value) > MAX_ABS_SCORE:
        raise InvalidInput(
            f"min_score must be a number from {-MAX_ABS_SCORE:g} to {MAX_ABS_SCORE:g}",
            code="invalid_min_score",
        )
    return value


def shape(params: Mapping[str, Any], max_k: int) -> Shape:
    """``k`` / ``limit`` (at most ``max_k``) and ``min_score`` of a query string or a batch
    body."""
    k, limit, floor = params.get("k"), params.get("limit"), params.get("min_score")
    bounds = [_int(v, n, max_k) for n, v in (("k", k), ("limit", limit)) if v is not None]
    return Shape(
        limit=min(bounds) if bounds else None,  # both bound the answer: the smaller does
        min_score=None if floor is None else _score(floor),
    )


def context(spec: Served, params: Mapping[str, Any]) -> str | None:
    """The ``context`` parameter of a dataset that has contexts (refused by others)."""
    raw = params.get("context")
    if raw is None:
        return None
    if not spec.contexts:
        raise InvalidInput(f"dataset {spec.name} has no contexts", code="invalid_id")
    if not isinstance(raw, str):
        raise InvalidInput("context must be a string", code="invalid_id")
    return keys.check_context(raw)


def check_key(spec: Served, raw: str, what: str | None = None) -> str:
    return spec.key_form.check(raw, what=what or spec.shape.key_field)


def batch_request(request: Request, spec: Served, limits: Limits) -> BatchRequest:
    """The checked body of a batchGet: keys in request order (duplicates kept)."""
    return batch_body(json_body(request, limits.max_body_bytes), spec, limits)


def key_field(
    body: Any, names: set[str], spec: Served, others: tuple[str, ...], code: str, how: str
) -> str:
    """Which one of ``names`` a JSON object body gives its key(s) in, beside ``others``
    (and ``context`` where the dataset has contexts); InvalidInput for a body that is not
    an object, a field beyond those, or not exactly one of ``names`` (``code``: "give
    ``how`` NAME or NAME")."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    allowed = names | set(others) | ({"context"} if spec.contexts else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            code="invalid_body",
        )
    given = [n for n in sorted(names) if n in body]
    if len(given) != 1:
        raise InvalidInput(f"give {how} {' or '.join(sorted(names))}", code=code)
    return given[0]


def batch_body(body: Any, spec: Served, limits: Limits) -> BatchRequest:
    """A parsed batchGet body, checked: its keys in request order (duplicates kept)."""
    names = {BATCH_KEYS, spec.batch_field}
    others = ("k", "limit", "min_score")
    field = key_field(body, names, spec, others, "invalid_ids", "the keys as")
    raw = body[field]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{field} must be a non-empty list of keys", code="invalid_ids")
    if len(raw) > limits.max_ids:
        raise PayloadTooLarge(
            f"{field} holds {len(raw)} keys; at most {limits.max_ids}", code="too_many_ids"
        )
    form = spec.key_form
    if not form.all_valid(raw):  # integer keys, or the first bad one and why
        raw = [form.check_given(v, what=f"{field}[{i}]") for i, v in enumerate(raw)]
    return BatchRequest(raw, shape(body, limits.max_k), context(spec, body))
