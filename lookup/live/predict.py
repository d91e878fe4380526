"""``POST /v1/datasets/{name}:predict``: a new entity scored live from features it sends.

A key the published version holds is a hit, read from the store. Any other is sent with
the caller's features to the fallback through the lookup's FallbackClient (same deadline
and circuit breaker as a miss) and served with ``"source": "live"``. The answer is made
from inputs the caller chose, so it is never written back: what one client sends can
never change what another client reads. Body: ``{"key", "features", "context"?, "k"?,
"min_score"?}`` (the dataset's key field, e.g. ``user_id``, may stand for ``key``); an
images dataset's ``{"key", "b64"}``: the image file's bytes, base64, as the fallback takes
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from lookup import params, render
from lookup.datasets import Served, ServedDatasets
from lookup.live.client import FallbackClient
from lookup.live.misses import FAILURES
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore.encoding import keys
from prescore.errors import InvalidInput, NotFound
from prescore.service.web import json_body, json_response


def _instance(spec: Served, body: Any, max_k: int) -> tuple[dict[str, Any], params.Shape]:
    """The checked body: the instance for the fallback, and how to cut the answer."""
    names = {"key", spec.shape.key_field}
    sent = "b64" if spec.images else "features"  # an images dataset's model takes the image
    if spec.images and isinstance(body, dict) and "features" in body:
        raise InvalidInput(
            f"{spec.name} is scored from images: send the image (b64), not features",
            code="invalid_features",
        )
    others = (sent, "k", "limit", "min_score")
    field = params.key_field(body, names, spec, others, "invalid_id", "the key in")
    key = spec.key_form.check_given(body[field], what=field)
    if spec.images:
        image = body.get("b64")
        if not isinstance(image, str) or not image:
            raise InvalidInput("b64 must be the image file's bytes, base64", code="bad_image")
        return {"key": key, "b64": image}, params.shape(body, max_k)
    features = body.get("features")
    if not isinstance(features, dict) or not features:
        raise InvalidInput("features must be a non-empty object", code="invalid_features")
    for name, value in features.items():  # JSON's NaN and Infinity: no model input
        if not _finite(value):
            raise InvalidInput(f"features.{name} must be finite", code="invalid_features")
    inst: dict[str, Any] = {"key": key, "features": features}
    context = params.context(spec, body)
    if context:
        inst["context"] = context
    return inst, params.shape(body, max_k)


def _finite(value: Any) -> bool:
    """No NaN or infinity in a feature's value (a number, or lists of values: walked
    without recursion, as deep as the JSON parser let them be)."""
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, list):
            pending.extend(v)
    return True


def register(
    app: Flask,
    settings: LookupSettings,
    client: FallbackClient,
    reader: StoreReader,
    datasets: ServedDatasets,
) -> None:
    """Add ``POST /v1/datasets/{name}:predict`` (and ``/v1/{route}:predict``)."""

    def predict(spec: Served) -> Response:
        if not spec.live:
            raise NotFound(f"dataset {spec.name} has no live inference", code="no_route")
        inst, shape = _instance(spec, json_body(request, settings.max_body_bytes), settings.max_k)
        key = keys.entity_key(inst["key"], inst.get("context"))
        # the version that answers this key, while a canary runs (prescore.store.canaries)
        resolved, values = reader.read(spec.name, [key], lambda live: live.served(inst["key"]))
        if values[0] is not None:
            return json_response(render.hit(values[0], spec, shape, resolved, key=key))
        payload = client.answer(spec.name, [inst], resolved, write_back=False)[0]
        if isinstance(payload, FAILURES):  # down, slow, or the features refused (400)
            raise payload
        if payload is None:
            raise NotFound(f"live inference has no answer for {inst['key']!r}")
        return json_response(render.hit(payload, spec, shape, resolved, source="live"))

    @app.post("/v1/datasets/<name>:predict")
    def predict_dataset(name: str) -> Response:
        return predict(datasets.get(name))

    for spec in datasets.by_name.values():
        if spec.route and spec.live:
            app.add_url_rule(
                f"/v1/{spec.route}:predict",
                f"predict_{spec.name}",
                _bound(predict, spec),
                methods=["POST"],
            )


def _bound(view: Callable[[Served], Response], spec: Served) -> Callable[[], Response]:
    return lambda: view(spec)
