"""What one live prediction is worth to the lookup (no I/O): the payload to serve and
write back, no answer, or a failure.

The fallback answers each instance with a payload (``"source": "live"``, what the bulk
job stores) or a per-key error. A payload is served and written back only when it is the
one asked for: the key's and context's, made by the model version the request read, its
list a list of entries, ending ``"source": "live"`` (so a later hit says
``written_back``), holding none of the fields the lookup adds itself, and at most
MAX_LIVE_PAYLOAD_BYTES as JSON. Anything else is a fallback answering what it should
not: ``fallback_unavailable`` for that key, never stored, and never a 500. A per-key error
is no answer (404 ``not_found``), except one that says the key's input exists and cannot
be used (Unscorable).
"""

from __future__ import annotations

from typing import Any

from lookup.live.misses import Answer
from prescore.encoding.codec import PayloadShape, dumps
from prescore.errors import FallbackUnavailable, Unscorable

# A live answer is one key's list; far past any a bulk run stores, it is no payload
MAX_LIVE_PAYLOAD_BYTES = 1 << 20
RESERVED = ("dataset_version", "age_s", "stale", "context_fallback")  # the lookup's own

# The fallback's per-key errors that say the dataset's own input for the key cannot be
# used (the image is no image, is empty or is too large; a table value no model input can
# take): the data needs fixing. Any other per-key error (a key it does not find) is no
# answer.
UNUSABLE_INPUT = frozenset({"bad_image", "empty_image", "image_too_large", "invalid_features"})


def live_payload(
    dataset: str, pred: Any, inst: dict[str, Any], shape: PayloadShape, model_version: str
) -> Answer:
    """``pred``, the fallback's answer to ``inst``, as payload bytes, None (no answer) or
    why it cannot be used; ``model_version``: the one asked for ('' when not known)."""
    if isinstance(pred, dict) and isinstance(pred.get("error"), str):
        return _unscorable(dataset, pred) if pred["error"] in UNUSABLE_INPUT else None
    why = _wrong(pred, inst, shape, model_version)
    if why is None:
        try:
            payload = dumps(pred)
        except (ValueError, RecursionError):  # NaN or Infinity in it; nested too deep
            why = "a payload JSON cannot carry"
        else:
            if len(payload) <= MAX_LIVE_PAYLOAD_BYTES:
                return payload
            why = f"a payload over {MAX_LIVE_PAYLOAD_BYTES} bytes"
    return Unusable(f"live inference answered {why} for {dataset}")


class Unusable(FallbackUnavailable):
    """A prediction the lookup will not serve: the fallback answered what it should not."""


def _wrong(pred: Any, inst: dict[str, Any], shape: PayloadShape, model_version: str) -> str | None:
    """What makes ``pred`` not the payload asked for, or None."""
    if not isinstance(pred, dict):
        return "no object"
    if "error" in pred:
        return "an error that names no code"
    if pred.get(shape.key_field) != inst["key"] or pred.get("context") != inst.get("context"):
        return "another key's payload"
    if model_version and pred.get("model_version") != model_version:
        return "another model version's payload"
    entries = pred.get(shape.list_field)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return f"a payload whose {shape.list_field} is no list of entries"
    if any(field in pred for field in RESERVED):
        return "a payload holding fields the lookup adds"
    if next(reversed(pred)) != "source" or pred["source"] != "live":
        return 'a payload not ending "source": "live"'
    return None


def _unscorable(dataset: str, pred: dict[str, Any]) -> Unscorable:
    """A key whose input live inference found but cannot use (a corrupt image): its
    reason, not a 404 that says the key does not exist."""
    why = f"{pred.get('error')}: {pred.get('message', '')}"[:200]
    return Unscorable(f"live inference cannot use the input {dataset} holds for this key ({why})")
