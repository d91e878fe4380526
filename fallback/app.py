"""The live inference fallback: Flask app over the served datasets' models, micro-batched.

Routes (see /openapi.json):
- ``POST /v1/datasets/{name}:predict``, JSON ``{"instances": [{"key", "context"?,
  "features"?, "b64"?}], "model_version"?, "k"?}`` -> ``{"dataset", "model",
  "model_version", "predictions": [payload | {key_field, "error", "message"}]}``; each
  payload is exactly what the bulk job stores, with ``"source": "live"``. An instance is
  scored from the dataset's own inputs found by its key (entity table, image folder,
  rows table), or from the ``features`` (or, for images, ``b64``) it carries.
  ``model_version`` asks for the version that made the caller's data (default: the
  promoted one).
- the same route with the raw image as the body (``image/*`` or
  ``application/octet-stream``, ``?key=``) answers one labels payload.
- ``/healthz``, ``/readyz`` (every served dataset's model and inputs loaded),
  ``/metrics``, ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from fallback import scratch
from fallback.inputs import Inputs, Upkeep
from fallback.metrics import Metrics
from fallback.models import ModelSlots, Watcher
from fallback.openapi import document
from fallback.predict import LabelsPredictor, RankingPredictor, check_key
from fallback.settings import FallbackSettings
from prescore.data.datasets import Dataset
from prescore.encoding import codec
from prescore.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from prescore.models.store import ModelStore
from prescore.service.web import (
    install_error_handlers,
    install_openapi,
    install_request_log,
    install_timing,
    json_body,
    json_response,
    require_token,
)

_IMAGE_TYPES = ("application/octet-stream",)
Predictor = RankingPredictor | LabelsPredictor


def _instances(body: Any, dataset: Dataset, settings: FallbackSettings) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    unknown = sorted(set(body) - {"instances", "model_version", "k"})
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}", code="invalid_body")
    items = body.get("instances")
    if not isinstance(items, list) or not items:
        raise InvalidInput("instances must be a non-empty list", code="invalid_instances")
    if len(items) > settings.max_instances:
        raise PayloadTooLarge(
            f"{len(items)} instances; at most {settings.max_instances}", code="too_many_instances"
        )
    allowed = {"key", "context", "features"} | ({"b64"} if dataset.images else set())
    out = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            raise InvalidInput("every instance must be a JSON object", code="invalid_instances")
        extra = sorted(set(raw) - allowed)
        if extra:
            raise InvalidInput(
                f"instances[{i}]: unknown field(s) {', '.join(extra)}", code="invalid_instances"
            )
        if dataset.images and raw.get("features") is not None:  # never silently ignored
            raise InvalidInput(
                f"instances[{i}]: dataset {dataset.name} labels images: send the image (b64), "
                "not features",
                code="invalid_features",
            )
        inst = {**raw, "key": check_key(dataset, raw.get("key"), f"instances[{i}].key")}
        if raw.get("context") is not None:
            if not dataset.has_contexts:
                raise InvalidInput(f"dataset {dataset.name} has no contexts", code="invalid_id")
            inst["context"] = _context(raw["context"], i)
        out.append(inst)
    return out


def _context(raw: Any, i: int) -> str:
    from prescore.encoding import keys

    if not isinstance(raw, str):
        raise InvalidInput(f"instances[{i}].context must be a string", code="invalid_id")
    return keys.check_text(raw, what=f"instances[{i}].context")


def _k(body: dict[str, Any], dataset: Dataset, settings: FallbackSettings) -> int:
    k = body.get("k", dataset.k)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= settings.max_k:
        raise InvalidInput(f"k must be an integer from 1 to {settings.max_k}", code="invalid_k")
    return k


def _version(body: dict[str, Any]) -> str | None:
    raw = body.get("model_version")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidInput("model_version must be a version number", code="invalid_body")
    return raw


def _predictions(dataset: Dataset, model: str, version: str, payloads: list[bytes]) -> bytes:
    head = codec.dumps({"dataset": dataset.name, "model": model, "model_version": version})
    return head[:-1] + b',"predictions":[' + b",".join(payloads) + b"]}"


def create_app(settings: FallbackSettings, *, watch: bool = True) -> Flask:
    """Build the app, read the inputs, load the promoted models, start the watcher."""
    app = Flask("fallback", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    metrics = Metrics(settings.metrics_dir)
    served = {name: settings.core.catalog.get(name) for name in settings.served()}
    scratch.remove_orphans()  # key indexes and table copies of workers that were killed
    inputs = {
        name: Inputs(d, settings.webhdfs_url, settings.tables_refresh_s, settings.request_timeout_s)
        for name, d in served.items()
    }
    predictors: dict[str, Predictor] = {
        name: (
            RankingPredictor(d, inputs[name], settings.max_candidates)
            if d.kind == "ranking"
            else LabelsPredictor(d, inputs[name])
        )
        for name, d in served.items()
    }
    slots = ModelSlots(
        ModelStore(settings.core.models),
        settings,
        lambda d: predictors[d.name].prepare,
        metrics.observer,
    )
    slots.refresh_all()
    for name in served:
        metrics.track_depth(name, lambda n=name: _depth(slots, n))  # type: ignore[misc]
        metrics.track_tables(name, inputs[name].index_ready)

    metrics.sample(slots.promoted())
    if watch:
        app.extensions["fallback_watcher"] = Watcher(
            slots, settings.watch_interval_s, lambda: metrics.sample(slots.promoted())
        ).start()
        app.extensions["fallback_upkeep"] = Upkeep(
            inputs.values(), settings.watch_interval_s
        ).start()
    app.extensions["fallback_slots"] = slots
    install_error_handlers(app)
    install_request_log(app, access_log=settings.access_log)
    timeout = settings.request_timeout_s

    @app.post("/v1/datasets/<name>:predict")
    def predict(name: str) -> Response:
        dataset = served.get(name)
        if dataset is None:
            raise NotFound(f"dataset {name!r} is not answered live here", code="unknown_dataset")
        raw_image = request.mimetype.startswith("image/") or request.mimetype in _IMAGE_TYPES
        if raw_image and dataset.images:
            return _one_image(dataset, slots, predictors[name], timeout)  # type: ignore[arg-type]
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(
                "send application/json (or an image/* body to an images dataset)"
            )
        body = json_body(request, settings.max_body_bytes)
        instances = _instances(body, dataset, settings)
        k = _k(body, dataset, settings)
        model = slots.get(name, _version(body))  # not ready: refused before any input is read
        payloads = predictors[name].predict(model, instances, k, timeout)
        return json_response(_predictions(dataset, model.name, model.version, payloads))

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    @app.get("/readyz")
    def readyz() -> Response:
        ready = slots.ready() and all(i.ready for i in inputs.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
        body["models"] = slots.promoted()
        if not ready:
            why = {**slots.errors(), **{n: i.error for n, i in inputs.items() if i.error}}
            body.update(
                error="not_ready",
                message="a served dataset's model or inputs are not loaded",
                why=why,
            )
        return json_response(codec.dumps(body), 200 if ready else 503)

    @app.get("/metrics")
    def metrics_page() -> Response:
        if settings.metrics_bind:
            raise NotFound(f"metrics are served on {settings.metrics_bind}", code="not_found")
        metrics.sample(slots.promoted())
        return Response(metrics.render(), content_type=metrics.content_type)

    install_openapi(app, document(settings, list(served.values())))
    install_timing(app, lambda route, _method, status, s: metrics.observe(route, status, s))
    require_token(app, settings.token)  # after the timing hook: refusals are counted too
    return app


def _one_image(
    dataset: Dataset, slots: ModelSlots, predictor: LabelsPredictor, timeout: float
) -> Response:
    """A raw image body: one labels payload."""
    raw = request.get_data(cache=False)
    if not raw:
        raise InvalidInput("image is empty", code="empty_image")
    key = check_key(dataset, request.args.get("key", "upload"), "key")
    model = slots.get(dataset.name, _version(dict(request.args)))
    return json_response(predictor.predict(model, [{"key": key, "raw": raw}], 0, timeout)[0])


def _depth(slots: ModelSlots, name: str) -> float:
    try:
        return float(slots.get(name).batcher.depth())
    except Unavailable:  # not loaded (yet)
        return 0.0
