"""Turning prediction requests into model rows and model scores into codec payloads.

Recommendations: each instance is a user (id, optional features, optional context,
optional candidate hotel ids). Its rows come from the model's featurizer, named in its
model.json as ``"featurizer": "module:function"`` (default
``fallback.reco_rows:request_matrix``, over prescore.reco_features), called as
``f(meta, user, context, hotel_ids) -> float32 [len(hotel_ids), F]``, where ``user`` is
the features sent plus ``user_id`` (a featurizer may know users by id and raise
NotFound for others). The module's optional ``candidates(meta, user, context)`` gives
the default candidates (the hotels of the user's regions). All instances of a request go
to the model as one batch, and merge there with other requests.

Image tags: each image (sent in the request, or read from the photo store by id) is
decoded and resized by prescore.image_features (as the bulk job does) to the model's
input size (model.json ``image_size``), scaled to [0, 1]; tags at or above their
threshold (model.json ``tags`` and ``thresholds``) are returned best first. All images of
a request go to the model as one batch, and merge there with other requests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from fallback.models import ServedModel
from prescore import codec, keys
from prescore.errors import InvalidInput, NotFound, PrescoreError
from prescore.image_features import decode

DEFAULT_RECO_FEATURIZER = "fallback.reco_rows:request_matrix"
_featurizers: dict[str, Any] = {}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolve(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    found = _featurizers.get(spec)
    if found is None:
        module = importlib.import_module(module_name)
        found = _featurizers[spec] = (
            getattr(module, attr),
            getattr(module, "candidates", None),
            getattr(module, "warm", None),
        )
    return found


def featurizer(meta: dict[str, Any]) -> tuple[Callable[..., np.ndarray], Callable[..., Any] | None]:
    try:
        make_rows, candidates, _ = _resolve(str(meta.get("featurizer") or DEFAULT_RECO_FEATURIZER))
        return make_rows, candidates
    except (ImportError, AttributeError) as exc:
        raise PrescoreError(f"model featurizer unavailable: {exc}", code="model_not_ready") from exc


def warm(name: str, meta: dict[str, Any]) -> None:
    """Prepare what a model's first request would (the reco featurizer's tables)."""
    if name == "reco":
        warm_up = _resolve(str(meta.get("featurizer") or DEFAULT_RECO_FEATURIZER))[2]
        if warm_up is not None:
            warm_up(meta)


def _error(user_id: str, exc: PrescoreError) -> dict[str, Any]:
    return {"user_id": user_id, "error": exc.code, "message": exc.message}


def recommend(
    model: ServedModel, instances: list[dict[str, Any]], k: int, timeout_s: float
) -> list[bytes]:
    """One payload (or per-instance error object) per instance, as JSON bytes."""
    with model.batcher.expecting():  # the batcher waits for requests still building rows
        return _recommend(model, instances, k, timeout_s)


def _recommend(
    model: ServedModel, instances: list[dict[str, Any]], k: int, timeout_s: float
) -> list[bytes]:
    make_rows, default_candidates = featurizer(model.meta)
    rows: list[np.ndarray] = []
    plans: list[tuple[dict[str, Any], list[str]] | bytes] = []
    for inst in instances:
        user = {**inst["features"], "user_id": inst["user_id"]}
        try:
            hotels = inst.get("candidates")
            if hotels is None:
                if default_candidates is None:
                    raise InvalidInput(
                        "candidates are required for this model", code="candidates_required"
                    )
                hotels = list(default_candidates(model.meta, user, inst["context"]))
            if not hotels:
                raise NotFound(f"no candidate hotels for user {inst['user_id']!r}")
            matrix = make_rows(model.meta, user, inst["context"], hotels)
            rows.append(np.asarray(matrix, np.float32))
            plans.append((inst, hotels))
        except PrescoreError as exc:
            plans.append(codec.dumps(_error(inst["user_id"], exc)))
    scores = model.predict(np.concatenate(rows), timeout_s).reshape(-1) if rows else np.array([])
    out, at, stamp = [], 0, now()
    for plan in plans:
        if isinstance(plan, bytes):
            out.append(plan)
            continue
        inst, hotels = plan
        mine = scores[at : at + len(hotels)]
        at += len(hotels)
        best = np.argsort(-mine, kind="stable")[:k]
        out.append(
            codec.encode_recommendations(
                inst["user_id"],
                [(hotels[i], float(mine[i])) for i in best],
                model="reco",
                model_version=model.version,
                scored_at=stamp,
                context=inst["context"],
                source="live",
            )
        )
    return out


def _thresholds(meta: dict[str, Any], tags: list[str]) -> np.ndarray:
    raw = meta.get("thresholds", 0.5)
    if isinstance(raw, dict):
        return np.array([float(raw.get(t, 0.5)) for t in tags], np.float32)
    if isinstance(raw, list):
        return np.asarray(raw, np.float32)
    return np.full(len(tags), float(raw), np.float32)


@dataclass(frozen=True)
class ImageInput:
    """One image of a tags request: its bytes, or why there are none."""

    image_id: str
    raw: bytes | None = None  # sent by the caller, or read from the photo store
    error: PrescoreError | None = None  # why there is no image (e.g. not in the photo store)
    sent: bool = True  # sent bytes that do not decode are the caller's 400, not an entry


def image_error(image_id: str, exc: PrescoreError) -> bytes:
    """The per-image entry of an image that gets no tags."""
    return codec.dumps({"image_id": image_id, "error": exc.code, "message": exc.message})


def tag_images(model: ServedModel, images: list[ImageInput], timeout_s: float) -> list[bytes]:
    """One tags payload (or per-image error entry) per image, in order.

    Every image that decodes goes to the model in ONE submit to the micro-batcher. An
    image the caller sent that does not decode fails the request (InvalidInput); one read
    from the photo store gets a per-image error entry instead.
    """
    tags = [str(t) for t in model.meta["tags"]]
    height, width = (int(v) for v in model.meta.get("image_size", (128, 128)))
    pixels: list[np.ndarray] = []
    errors: dict[int, bytes] = {}
    with model.batcher.expecting():
        for i, image in enumerate(images):
            if image.error is not None:
                errors[i] = image_error(image.image_id, image.error)
                continue
            try:
                pixels.append(decode(image.raw or b"", (height, width)))
            except InvalidInput as exc:
                if image.sent:
                    raise
                errors[i] = image_error(image.image_id, exc)
        scores = model.predict(np.stack(pixels), timeout_s) if pixels else np.empty((0, 0))
    floor = _thresholds(model.meta, tags)
    stamp, out, rows = now(), [], iter(scores)
    for i, image in enumerate(images):
        if i in errors:
            out.append(errors[i])
            continue
        row = next(rows)
        keep = [j for j in np.argsort(-row, kind="stable") if row[j] >= floor[j]]
        out.append(
            codec.encode_tags(
                image.image_id,
                [(tags[j], float(row[j])) for j in keep],
                model="tagger",
                model_version=model.version,
                scored_at=stamp,
                source="live",
            )
        )
    return out


def check_id(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"{what} must be a string", code="invalid_id")
    return keys.check_id(raw, what=what)
