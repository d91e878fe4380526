"""The live inference fallback: Flask app over the promoted models, micro-batched.

Routes (see /openapi.json):
- ``POST /v1/predict/recommendations``: JSON ``{"instances": [{"user_id", "features"?,
  "context"?, "candidates"?}], "k"?}`` -> ``{"model", "model_version", "predictions":
  [payload | {"user_id", "error", "message"}]}``; each payload is exactly what the bulk
  job stores (prescore.codec.encode_recommendations) with ``"source": "live"``.
- ``POST /v1/predict/image-tags``: either the raw image as the body (Content-Type
  ``image/*`` or ``application/octet-stream``, ``?image_id=``) -> one tags payload; or
  JSON ``{"instances": [{"image_id", "b64"?}]}`` -> ``{"model", "model_version",
  "predictions": [payload | {"image_id", "error", "message"}]}``. An instance without
  ``b64`` is read from the photo store (``FALLBACK_PHOTOS``, see fallback.photos); a
  photo it lacks (or no store configured) is a per-image ``not_found``. Each payload is
  what the bulk tagging job stores (prescore.codec.encode_tags), ``"source": "live"``.
- ``/healthz``, ``/readyz`` (every configured model loaded), ``/metrics``, ``/openapi.json``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Flask, Response, request

from fallback import predict
from fallback.metrics import Metrics
from fallback.models import ModelSlots, Watcher
from fallback.openapi import document
from fallback.photos import PhotoStore
from fallback.settings import FallbackSettings
from prescore import codec
from prescore.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from prescore.modelstore import ModelStore
from prescore.web import (
    install_error_handlers,
    install_openapi,
    install_timing,
    json_body,
    json_response,
)

_IMAGE_TYPES = ("application/octet-stream",)


def _instances(body: Any, settings: FallbackSettings) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    items = body.get("instances")
    if not isinstance(items, list) or not items:
        raise InvalidInput("instances must be a non-empty list", code="invalid_instances")
    if len(items) > settings.max_instances:
        raise PayloadTooLarge(
            f"{len(items)} instances; at most {settings.max_instances}", code="too_many_instances"
        )
    if not all(isinstance(i, dict) for i in items):
        raise InvalidInput("every instance must be a JSON object", code="invalid_instances")
    return items


def _reco_instance(raw: dict[str, Any], i: int, settings: FallbackSettings) -> dict[str, Any]:
    user_id = predict.check_id(raw.get("user_id"), f"instances[{i}].user_id")
    context = raw.get("context")
    features = raw.get("features", {})
    if not isinstance(features, dict):
        raise InvalidInput(f"instances[{i}].features must be an object", code="invalid_features")
    candidates = raw.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list) or not candidates:
            raise InvalidInput(f"instances[{i}].candidates must be a non-empty list")
        if len(candidates) > settings.max_candidates:
            raise PayloadTooLarge(f"at most {settings.max_candidates} candidates per user")
        candidates = [predict.check_id(c, f"instances[{i}].candidates") for c in candidates]
    return {
        "user_id": user_id,
        "context": None if context is None else predict.check_id(context, "context"),
        "features": features,
        "candidates": candidates,
    }


def _k(body: dict[str, Any], settings: FallbackSettings) -> int:
    k = body.get("k", settings.default_k)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= settings.max_k:
        raise InvalidInput(f"k must be an integer from 1 to {settings.max_k}", code="invalid_k")
    return k


def _images(
    settings: FallbackSettings, photos: PhotoStore | None
) -> tuple[list[predict.ImageInput], bool]:
    """The images of the request, and whether it was a single raw image."""
    if request.mimetype.startswith("image/") or request.mimetype in _IMAGE_TYPES:
        raw = request.get_data(cache=False)
        if not raw:
            raise InvalidInput("image is empty", code="empty_image")
        image_id = predict.check_id(request.args.get("image_id", "upload"), "image_id")
        return [predict.ImageInput(image_id, raw)], True
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            "send image/* bytes, or application/json with image ids or base64 images"
        )
    sent: list[tuple[str, bytes | None]] = []
    for i, inst in enumerate(_instances(json_body(request, settings.max_body_bytes), settings)):
        image_id = predict.check_id(inst.get("image_id"), f"instances[{i}].image_id")
        if inst.get("b64") is None:  # by id, from the photo store
            sent.append((image_id, None))
            continue
        try:
            sent.append((image_id, base64.b64decode(str(inst["b64"]), validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"instances[{i}].b64 is not base64", code="bad_image") from exc
    # every instance is checked before the first photo is read
    return [
        predict.ImageInput(image_id, raw) if raw is not None else _stored(image_id, photos)
        for image_id, raw in sent
    ], False


def _stored(image_id: str, photos: PhotoStore | None) -> predict.ImageInput:
    """Photo ``image_id`` from the photo store, or a per-image not_found."""
    if photos is None:
        why = "no photo store is configured (FALLBACK_PHOTOS); send the image as b64"
        return predict.ImageInput(image_id, error=NotFound(why), sent=False)
    raw = photos.read(image_id)
    if raw is None:
        why = f"no photo of image_id {image_id!r} in the photo store"
        return predict.ImageInput(image_id, error=NotFound(why), sent=False)
    return predict.ImageInput(image_id, raw, sent=False)


def _predictions(model: str, version: str, payloads: list[bytes]) -> bytes:
    head = codec.dumps({"model": model, "model_version": version})
    return head[:-1] + b',"predictions":[' + b",".join(payloads) + b"]}"


def create_app(settings: FallbackSettings, *, watch: bool = True) -> Flask:
    """Build the app, load the promoted models, start the version watcher."""
    app = Flask("fallback", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    metrics = Metrics()
    slots = ModelSlots(ModelStore(settings.core.models), settings, metrics.observer)
    slots.refresh_all()
    for name in settings.models:
        metrics.track_depth(name, lambda n=name: _depth(slots, n))  # type: ignore[misc]
    if watch:
        app.extensions["fallback_watcher"] = Watcher(slots, settings.watch_interval_s).start()
    app.extensions["fallback_slots"] = slots
    photos = PhotoStore.for_settings(settings)
    install_error_handlers(app)
    timeout = settings.request_timeout_s

    @app.post("/v1/predict/recommendations")
    def recommendations() -> Response:
        body = json_body(request, settings.max_body_bytes)
        items = _instances(body, settings)
        instances = [_reco_instance(raw, i, settings) for i, raw in enumerate(items)]
        model = slots.get("reco")
        payloads = predict.recommend(model, instances, _k(body, settings), timeout)
        return json_response(_predictions("reco", model.version, payloads))

    @app.post("/v1/predict/image-tags")
    def image_tags() -> Response:
        model = slots.get("tagger")  # not ready: refused before any photo is read
        images, single = _images(settings, photos)
        payloads = predict.tag_images(model, images, timeout)
        if single:
            return json_response(payloads[0])
        return json_response(_predictions("tagger", model.version, payloads))

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    @app.get("/readyz")
    def readyz() -> Response:
        ready = slots.ready()
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
        body["models"] = slots.loaded()
        if not ready:
            body.update(error="not_ready", message="a configured model is not loaded")
        return json_response(codec.dumps(body), 200 if ready else 503)

    @app.get("/metrics")
    def metrics_page() -> Response:
        for name, version in slots.loaded().items():
            metrics.model_version.labels(name).set(float(version) if version.isdigit() else -1)
        return Response(metrics.render(), content_type=metrics.content_type)

    install_openapi(app, document(settings))
    install_timing(app, lambda route, _method, status, s: metrics.observe(route, status, s))

    return app


def _depth(slots: ModelSlots, name: str) -> float:
    try:
        return float(slots.get(name).batcher.depth())
    except Unavailable:  # not loaded (yet)
        return 0.0
