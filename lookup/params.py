"""Parsing and checking request parameters; every refusal is an InvalidInput with a code.

Codes: ``invalid_k``, ``invalid_limit``, ``invalid_min_score``, ``invalid_id`` (from
prescore.keys), ``invalid_body``, ``invalid_ids``, ``too_many_ids`` (413),
``malformed_json``, ``unsupported_media_type`` (415), ``too_large`` (413).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request

from lookup.datasets import RECO, DatasetSpec
from lookup.settings import LookupSettings
from prescore import keys
from prescore.errors import InvalidInput, PayloadTooLarge
from prescore.web import json_body

_INT_RE = re.compile(r"[0-9]{1,9}")
_NUMBER_RE = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?")
_MAX_ABS_SCORE = 1e9


@dataclass(frozen=True)
class Shape:
    """How to cut a payload's list: at most ``limit`` entries scoring at least ``min_score``."""

    limit: int | None = None
    min_score: float | None = None


@dataclass(frozen=True)
class BatchRequest:
    ids: list[str]
    shape: Shape
    context: str | None = None


def _int(raw: Any, name: str, hi: int) -> int:
    """An integer in [1, hi] from a query string or a JSON number."""
    code = f"invalid_{name}"
    if isinstance(raw, str) and _INT_RE.fullmatch(raw):
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
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
    if value is None or not math.isfinite(value) or abs(value) > _MAX_ABS_SCORE:
        raise InvalidInput("min_score must be a finite number", code="invalid_min_score")
    return value


def _context(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput("context must be a string", code="invalid_id")
    return keys.check_id(raw, what="context")


def reco_shape(params: Mapping[str, Any], settings: LookupSettings) -> Shape:
    raw = params.get("k")
    return Shape(limit=settings.default_k if raw is None else _int(raw, "k", settings.max_k))


def tags_shape(params: Mapping[str, Any], settings: LookupSettings) -> Shape:
    limit, min_score = params.get("limit"), params.get("min_score")
    return Shape(
        limit=None if limit is None else _int(limit, "limit", settings.max_tag_limit),
        min_score=None if min_score is None else _score(min_score),
    )


def shape_for(spec: DatasetSpec, params: Mapping[str, Any], settings: LookupSettings) -> Shape:
    return reco_shape(params, settings) if spec is RECO else tags_shape(params, settings)


def context_param(spec: DatasetSpec, params: Mapping[str, Any]) -> str | None:
    return _context(params.get("context")) if spec is RECO else None


def batch_request(request: Request, spec: DatasetSpec, settings: LookupSettings) -> BatchRequest:
    """The checked body of a batchGet: ids in request order (duplicates kept)."""
    body = json_body(request, settings.max_body_bytes)
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    extra = ("k", "context") if spec is RECO else ("limit", "min_score")
    allowed = {spec.ids_field, *extra}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            code="invalid_body",
        )
    ids = body.get(spec.ids_field)
    if not isinstance(ids, list) or not ids:
        raise InvalidInput(f"{spec.ids_field} must be a non-empty list of ids", code="invalid_ids")
    if len(ids) > settings.max_batch_ids:
        raise PayloadTooLarge(
            f"{spec.ids_field} holds {len(ids)} ids; at most {settings.max_batch_ids}",
            code="too_many_ids",
        )
    checked = []
    for i, raw in enumerate(ids):
        if not isinstance(raw, str):
            raise InvalidInput(f"{spec.ids_field}[{i}] must be a string", code="invalid_id")
        checked.append(keys.check_id(raw, what=f"{spec.ids_field}[{i}]"))
    return BatchRequest(checked, shape_for(spec, body, settings), context_param(spec, body))
