"""Turning live requests into model feeds and model scores into payloads, per dataset kind.

Ranking: an instance is a key (found in the dataset's entity table) or a key with the
entity's raw ``features``, optionally in a ``context``. Its candidates come from the
dataset's candidate rule; a factored model (on the tf runtime) encodes the entity once
and scores its pairs from encoded rows (items are encoded once per model and table
read), any other model gets every pair's raw features. Labels: an instance is a key (its
image read from the dataset's folder, or its row from the table), a ``b64`` image or raw
``features``. Every instance of a request goes to the micro-batcher as ONE submit, where
it merges with other requests. Payloads are what the bulk job stores, ``"source": "live"``.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from fallback.inputs import Inputs, RankingTables, candidates
from fallback.models import ServedModel
from prescore.data.datasets import Dataset
from prescore.encoding import codec, label_payloads
from prescore.encoding.codec import PayloadShape
from prescore.errors import InvalidInput, NotFound, PrescoreError, Unavailable
from prescore.models import feeds
from prescore.models.image_features import decode, model_input
from prescore.models.inference import Runner
from prescore.models.signature import ENCODE_CONTEXT, Tensor, image_dims, image_input

Feed = dict[str, np.ndarray]


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shape_of(dataset: Dataset) -> PayloadShape:
    return PayloadShape(dataset.key_field, dataset.list_field, dataset.entry_field)


def error_entry(dataset: Dataset, key: str, exc: PrescoreError) -> bytes:
    """The per-instance entry of a key that gets no payload."""
    return codec.dumps({dataset.key_field: key, "error": exc.code, "message": exc.message})


def _fits(value: Any, tensor: Tensor) -> bool:
    """Whether a posted feature value has the shape and type an input takes."""

    def scalar(v: Any) -> bool:
        if tensor.dtype == "string":
            return isinstance(v, str)
        if isinstance(v, float):  # JSON's NaN and Infinity are no model's input
            return math.isfinite(v)
        return isinstance(v, int)  # a bool is an int here, as numpy takes it

    if tensor.rank == 2:
        return isinstance(value, list) and all(scalar(v) for v in value)
    return tensor.rank == 1 and scalar(value)


def check_features(features: Any, inputs: Mapping[str, Tensor], also: Sequence[str] = ()) -> dict:
    """Posted raw features, checked against the inputs they feed (InvalidInput naming any
    feature missing, unknown or of the wrong type)."""
    if not isinstance(features, dict) or not features:
        raise InvalidInput("features must be a non-empty object", code="invalid_features")
    wanted = set(inputs) | {a for a in also if a}
    missing = sorted(wanted - set(features))
    unknown = sorted(set(features) - wanted)
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise InvalidInput(
            f"features: {'; '.join(parts)}; expected {', '.join(sorted(wanted))}",
            code="invalid_features",
        )
    for name, tensor in inputs.items():
        if not _fits(features[name], tensor):
            raise InvalidInput(
                f"features.{name} must be {tensor.describe()}", code="invalid_features"
            )
    for name in (a for a in also if a and a not in inputs):  # e.g. the candidate rule's column
        if not _plain_values(features[name]):
            raise InvalidInput(
                f"features.{name} must be a string or number, or a list of them",
                code="invalid_features",
            )
    return features


def _plain_values(value: Any) -> bool:
    """A value the candidate rule can match: a string or number, or a list of them."""

    def plain(v: Any) -> bool:
        return isinstance(v, str | int | float)

    return all(plain(v) for v in value) if isinstance(value, list) else plain(value)


@dataclass(frozen=True)
class Prepared:
    """What a ranking model needs per table read: its inputs by side, encoded items."""

    tables: RankingTables
    side: Mapping[str, str]  # serving input -> entity | item | context
    entity_inputs: Mapping[str, Tensor]  # what an entity's features must hold
    item_feed: Feed  # raw item features (per-pair scoring)
    item_block: np.ndarray | None  # encoded items (factored scoring)
    extras: list[dict[str, Any]] | None  # item payload columns


class RankingPredictor:
    """Live top-k of a ranking dataset."""

    def __init__(self, dataset: Dataset, inputs: Inputs, max_candidates: int) -> None:
        self.dataset = dataset
        self.inputs = inputs
        self.max_candidates = max_candidates
        self._prepared: dict[tuple[str, int], Prepared] = {}
        self._lock = threading.Lock()

    def _tables(self) -> RankingTables:
        tables = self.inputs.ranking
        if tables is None:
            raise Unavailable(
                f"the inputs of {self.dataset.name} are not read",
                code="inputs_unavailable",
                cause=self.inputs.error,  # for the log: it names the files
            )
        return tables

    def prepare(self, runner: Runner) -> dict[str, Any]:
        """At load: a pair feed (the first entity and item, no context) to warm it with."""
        prep = self._build(runner, self._tables())
        entities = prep.tables.entities
        first = entities.first() if entities is not None else None
        if first is None or not prep.tables.item_ids:
            return {}
        entity = {k: first[k] for k in prep.entity_inputs}
        return {"warm": self._pairs(runner, prep, [(entity, np.array([0]), None)])}

    def _build(self, runner: Runner, tables: RankingTables) -> Prepared:
        sigs = runner.signatures
        columns = {"entity": set(tables.entities.columns if tables.entities is not None else ())}
        columns["item"] = set(tables.items.columns)
        if tables.contexts is not None:
            columns["context"] = set(tables.contexts.columns)
        # the types were checked at registration and by the bulk job: here only where
        # each input comes from matters (entities, then items, then contexts)
        serving = sigs.serving.inputs
        side = {n: next((s for s, cols in columns.items() if n in cols), "entity") for n in serving}
        factored = runner.runtime == "tf" and sigs.factored
        if factored:
            entity_inputs = dict(sigs.by_name["encode_entity"].inputs)
            item_inputs = sigs.by_name["encode_item"].inputs
            block = runner.encode("encode_item", feeds.feeds(tables.items, item_inputs))  # type: ignore[attr-defined]
            item_feed: Feed = {}
        else:
            entity_inputs = {n: t for n, t in serving.items() if side[n] == "entity"}
            block = None
            item_feed = feeds.feeds(
                tables.items, {n: t for n, t in serving.items() if side[n] == "item"}
            )
        extras = None
        if self.dataset.item_payload:
            extras = [
                {c: _plain(v) for c, v in zip(self.dataset.item_payload, row, strict=True)}
                for row in tables.items[list(self.dataset.item_payload)].itertuples(index=False)
            ]
        return Prepared(tables, side, entity_inputs, item_feed, block, extras)

    def prepared(self, model: ServedModel) -> Prepared:
        tables = self._tables()
        key = (model.version, id(tables))
        with self._lock:
            found = self._prepared.get(key)
            if found is None:
                found = self._build(model.runner, tables)
                live = {id(self._tables())}
                self._prepared = {k: v for k, v in self._prepared.items() if k[1] in live}
                self._prepared[key] = found
        return found

    def _entity(
        self, prep: Prepared, inst: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """An instance's entity columns: the features sent, or its row in the table."""
        rule_column = self.dataset.candidates.entity_column
        if inst.get("features") is not None:
            return check_features(inst["features"], prep.entity_inputs, [rule_column])
        row = rows.get(inst["key"])
        if row is None:
            raise NotFound(
                f"no entity {inst['key']!r} in the dataset's entities, and no features sent"
            )
        return {c: row[c] for c in {*prep.entity_inputs, rule_column} - {""}}

    def _rows(self, prep: Prepared, instances: Sequence[Mapping[str, Any]]) -> tuple[Any, Any]:
        """The entity rows of the keys sent without features, and the candidate table's
        rows of every key (table rule): one read of each table for the whole request."""
        keyed = [i["key"] for i in instances if i.get("features") is None]
        entities = prep.tables.entities.get(keyed) if prep.tables.entities is not None else {}
        listed = prep.tables.candidates
        return entities, listed.get([i["key"] for i in instances]) if listed is not None else {}

    def _context(self, prep: Prepared, context: str | None) -> dict[str, Any] | None:
        if context is None:
            return None
        ctx = prep.tables.contexts
        if ctx is None or context not in ctx.index:
            raise NotFound(f"no context {context!r} in the dataset's contexts")
        return ctx.loc[context].to_dict()

    def _pairs(
        self,
        runner: Runner,
        prep: Prepared,
        plans: Sequence[tuple[dict[str, Any] | None, np.ndarray, dict[str, Any] | None]],
    ) -> Feed:
        """The batcher's feed for every (entity, candidates, context) of a request."""
        parts = []
        serving = runner.signatures.serving.inputs
        for entity, cands, context in plans:
            n = len(cands)
            if prep.item_block is not None:
                e = runner.encode("encode_entity", _one(entity, prep.entity_inputs))  # type: ignore[attr-defined]
                part = {"entity": np.repeat(e, n, axis=0), "item": prep.item_block[cands]}
                if ENCODE_CONTEXT in runner.signatures.by_name:
                    ctx_inputs = runner.signatures.by_name[ENCODE_CONTEXT].inputs
                    c = runner.encode(ENCODE_CONTEXT, _one(context, ctx_inputs))  # type: ignore[attr-defined]
                    part["context"] = np.repeat(c, n, axis=0)
            else:
                ctx_inputs = {k: t for k, t in serving.items() if prep.side[k] == "context"}
                e_feed = _one(entity, prep.entity_inputs)
                c_feed = _one(context, ctx_inputs)
                part = {
                    **{k: np.repeat(v, n, axis=0) for k, v in {**e_feed, **c_feed}.items()},
                    **feeds.take(prep.item_feed, cands),
                }
            parts.append(part)
        return feeds.concat(parts)

    def predict(
        self, model: ServedModel, instances: Sequence[Mapping[str, Any]], k: int, timeout_s: float
    ) -> list[bytes]:
        """One payload (or per-instance error entry) per instance."""
        with model.batcher.expecting():  # the batcher waits for requests still building rows
            prep = self.prepared(model)
            plans: list[tuple[Any, np.ndarray, Any]] = []
            out: list[bytes | None] = []
            rows, listed = self._rows(prep, instances)
            for inst in instances:
                try:
                    entity = self._entity(prep, inst, rows)
                    if inst.get("features") is None:  # a table row an input cannot take:
                        _one(entity, prep.entity_inputs)  # this key's error, not the call's
                    context = self._context(prep, inst.get("context"))
                    cands = candidates(self.dataset, prep.tables, entity, listed.get(inst["key"]))
                    if not len(cands):
                        raise NotFound(f"no candidate items for {inst['key']!r}")
                    if len(cands) > self.max_candidates:
                        cands = cands[: self.max_candidates]
                    plans.append((entity, cands, context))
                    out.append(None)
                except PrescoreError as exc:
                    if isinstance(exc, InvalidInput) and inst.get("features") is not None:
                        raise  # the caller's own features are wrong: their 400
                    out.append(error_entry(self.dataset, inst["key"], exc))
            scores = (
                model.predict(self._pairs(model.runner, prep, plans), timeout_s)
                if plans
                else np.empty(0)
            )
        return self._payloads(model, prep, instances, out, plans, scores, k)

    def _payloads(
        self,
        model: ServedModel,
        prep: Prepared,
        instances: Sequence[Mapping[str, Any]],
        out: list[bytes | None],
        plans: list[Any],
        scores: np.ndarray,
        k: int,
    ) -> list[bytes]:
        at, stamp, it = 0, now(), iter(plans)
        shape = shape_of(self.dataset)
        done = []
        for inst, entry in zip(instances, out, strict=True):
            if entry is not None:
                done.append(entry)
                continue
            _, cands, _ = next(it)
            mine = scores[at : at + len(cands)]
            at += len(cands)
            best = np.argsort(-mine, kind="stable")[:k]
            extras = [prep.extras[cands[i]] for i in best] if prep.extras else None
            done.append(
                codec.encode_payload(
                    shape,
                    inst["key"],
                    [(prep.tables.item_ids[cands[i]], float(mine[i])) for i in best],
                    model=model.name,
                    model_version=model.version,
                    scored_at=stamp,
                    context=inst.get("context"),
                    source="live",
                    extras=extras,
                )
            )
        return done


def _one(row: Mapping[str, Any] | None, inputs: Mapping[str, Tensor]) -> Feed:
    """A one-row feed of ``row`` (None: blank, as the plain key is scored)."""
    if row is None:
        return feeds.blank(inputs)
    return feeds.feeds({k: [row[k]] for k in inputs}, inputs)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass(frozen=True)
class ImageInput:
    """One image of a labels request: its bytes, or why there are none."""

    key: str
    raw: bytes | None = None  # sent by the caller, or read from the image folder
    error: PrescoreError | None = None  # why there is no image (e.g. not in the folder)
    sent: bool = True  # sent bytes that do not decode are the caller's 400, not an entry


class LabelsPredictor:
    """Live labels of a labels dataset (images or rows)."""

    def __init__(self, dataset: Dataset, inputs: Inputs) -> None:
        self.dataset = dataset
        self.inputs = inputs

    def prepare(self, runner: Runner) -> dict[str, Any]:
        sig = runner.signatures.serving
        if self.dataset.images:
            name, tensor = image_input(sig, "model")
            dims = tuple(int(d) for d in tensor.shape[1:])  # type: ignore[arg-type]
            return {"warm": {name: model_input(np.zeros((1, *dims), np.uint8), tensor.dtype)}}
        return {}

    def image(self, key: str, b64: Any = None, raw: bytes | None = None) -> ImageInput:
        """An instance's image: sent (as the body, or base64), or read from the folder."""
        if raw is not None:
            return ImageInput(key, raw)
        if b64 is not None:
            try:
                return ImageInput(key, base64.b64decode(str(b64), validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(f"the b64 of {key!r} is not base64", code="bad_image") from exc
        if self.inputs.images is None:
            return ImageInput(key, error=NotFound("this dataset reads no images"), sent=False)
        raw = self.inputs.images.read(key)
        if raw is None:
            return ImageInput(
                key, error=NotFound(f"no image {key!r} in the dataset's folder"), sent=False
            )
        return ImageInput(key, raw, sent=False)

    def _feed(
        self, model: ServedModel, instances: Sequence[Mapping[str, Any]]
    ) -> tuple[list[int], Feed, dict[int, bytes]]:
        sig = model.runner.signatures.serving
        errors: dict[int, bytes] = {}
        good: list[int] = []
        if self.dataset.images:
            name, tensor = image_input(sig, "model")
            h, w, channels = image_dims(tensor)
            # every instance is checked before the first image is read
            images = [self.image(i["key"], i.get("b64"), i.get("raw")) for i in instances]
            pixels = []
            for n, image in enumerate(images):
                try:
                    if image.error is not None:
                        raise image.error
                    pixels.append(
                        decode(
                            image.raw or b"",
                            (h, w),
                            self.dataset.max_image_bytes,
                            channels=channels,
                        )
                    )
                    good.append(n)
                except PrescoreError as exc:
                    if image.sent and isinstance(exc, InvalidInput):
                        raise
                    errors[n] = error_entry(self.dataset, image.key, exc)
            feed = {name: model_input(np.stack(pixels), tensor.dtype)} if pixels else {}
            return good, feed, errors
        keyed = [i["key"] for i in instances if i.get("features") is None]
        if keyed and self.dataset.rows is not None and self.inputs.rows is None:
            raise Unavailable(  # not "no such row": the table could not be read
                f"the table of {self.dataset.name} is not read",
                code="inputs_unavailable",
                cause=self.inputs.error,  # for the log: it names the files
            )
        rows = []
        table = self.inputs.rows
        found = table.get(keyed) if table is not None and keyed else {}
        for n, inst in enumerate(instances):
            try:
                if inst.get("features") is not None:
                    rows.append(check_features(inst["features"], sig.inputs))
                else:
                    row = found.get(inst["key"])
                    if row is None:
                        raise NotFound(f"no row {inst['key']!r} in the dataset's table")
                    picked = {c: row[c] for c in sig.inputs}
                    try:  # a value an input cannot take: this key's error, not the call's
                        feeds.feeds({c: [v] for c, v in picked.items()}, sig.inputs)
                    except InvalidInput as exc:
                        errors[n] = error_entry(self.dataset, inst["key"], exc)
                        continue
                    rows.append(picked)
                good.append(n)
            except PrescoreError as exc:
                if isinstance(exc, InvalidInput):
                    raise
                errors[n] = error_entry(self.dataset, inst["key"], exc)
        feed = (
            feeds.feeds({c: [r[c] for r in rows] for c in sig.inputs}, sig.inputs) if rows else {}
        )
        return good, feed, errors

    def predict(
        self, model: ServedModel, instances: Sequence[Mapping[str, Any]], k: int, timeout_s: float
    ) -> list[bytes]:
        with model.batcher.expecting():
            good, feed, errors = self._feed(model, instances)
            scores = model.predict(feed, timeout_s) if good else np.empty((0, 0))
        payloads = label_payloads.encode(
            shape_of(self.dataset),
            [instances[n]["key"] for n in good],
            scores,
            model.meta,
            model=model.name,
            model_version=model.version,
            scored_at=now(),
            floor=self.dataset.min_score,
            source="live",
        )
        by_n = dict(zip(good, payloads, strict=True))
        return [by_n.get(n) or errors[n] for n in range(len(instances))]


def check_key(dataset: Dataset, raw: Any, what: str) -> str:
    return dataset.key_form.check_given(raw, what=what)
