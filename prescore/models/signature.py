"""The model contract, checked without TensorFlow: a model's signatures against a dataset.

A model is a SavedModel whose ``serving_default`` signature takes raw named features
(strings, integers, floats, lists of them; an image tensor for labels from images), with
its preprocessing inside the graph. Registration reads the signatures once (prescore.
tf_model) into model.json's ``signature`` field; everything here works on that record,
so the jobs, the fallback and the CLI check the same contract, and nothing here needs TF.

Inputs are matched to dataset columns by name. A ranking model is fed one row per
(entity, item) pair: each input is a column of the entities, the items or the contexts.
It may also expose the factored signatures ``encode_entity``, ``encode_item`` (and
``encode_context``) and ``score_pairs``; a bulk job then encodes each entity, item and
context once and scores pairs from the encoded rows (``score_pairs`` takes float inputs
``entity``, ``item`` and, with contexts, ``context``).

Shapes: ``[None]`` is one value per row, ``[None, None]`` a list per row (padded with
"" or 0), ``[None, H, W, C]`` an image; the first dimension is the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prescore.data.columns import Column, Columns
from prescore.data.datasets import Dataset
from prescore.errors import ConfigError, ModelMismatch

SERVING = "serving_default"
FACTORED = ("encode_entity", "encode_item", "score_pairs")
ENCODE_CONTEXT = "encode_context"
STRINGS = ("string",)
INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")
FLOATS = ("float16", "float32", "float64", "bfloat16")


@dataclass(frozen=True)
class Tensor:
    """One named input or output of a signature."""

    dtype: str
    shape: tuple[int | None, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        per_row = {1: "a value per row", 2: "a list per row"}.get(self.rank, f"shape {self.shape}")
        return f"{self.dtype}, {per_row}"

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Tensor:
        return cls(str(doc["dtype"]), tuple(None if d is None else int(d) for d in doc["shape"]))


@dataclass(frozen=True)
class Signature:
    inputs: Mapping[str, Tensor]
    outputs: Mapping[str, Tensor]


@dataclass(frozen=True)
class Signatures:
    """A model's signatures, by name, as registration recorded them."""

    by_name: Mapping[str, Signature] = field(default_factory=dict)

    @property
    def serving(self) -> Signature:
        return self.by_name[SERVING]

    @property
    def factored(self) -> bool:
        return all(name in self.by_name for name in FACTORED)

    def to_json(self) -> dict[str, Any]:
        return {
            name: {
                "inputs": {k: t.to_json() for k, t in sorted(sig.inputs.items())},
                "outputs": {k: t.to_json() for k, t in sorted(sig.outputs.items())},
            }
            for name, sig in sorted(self.by_name.items())
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Signatures:
        return cls(
            {
                name: Signature(
                    {k: Tensor.from_json(t) for k, t in sig["inputs"].items()},
                    {k: Tensor.from_json(t) for k, t in sig["outputs"].items()},
                )
                for name, sig in doc.items()
            }
        )


def output_name(sig: Signature, meta: Mapping[str, Any], where: str) -> str:
    """The output that holds the scores: model.json ``output``, else the only one."""
    wanted = meta.get("output")
    if wanted and wanted in sig.outputs:
        return str(wanted)
    if len(sig.outputs) == 1:  # (an encode_* signature's one output, whatever its name)
        return next(iter(sig.outputs))
    if wanted:
        raise ModelMismatch(f"{where}: model.json output {wanted!r} is not an output")
    if len(sig.outputs) != 1:
        raise ModelMismatch(
            f"{where}: the signature has outputs {', '.join(sorted(sig.outputs))}; "
            "name the scores in model.json 'output'"
        )
    return next(iter(sig.outputs))


def _fits(tensor: Tensor, column: Column) -> bool:
    if tensor.rank not in (1, 2) or (tensor.rank == 2) != column.is_list:
        return False
    if tensor.dtype in STRINGS:
        return column.kind == "string"
    if tensor.dtype in INTEGERS:
        return column.kind in ("int", "bool")
    if tensor.dtype in FLOATS:
        return column.kind in ("int", "float", "bool")
    return False


def _listing(sides: Mapping[str, Columns]) -> str:
    return "; ".join(
        f"{side}: " + ", ".join(f"{c} ({t.describe()})" for c, t in sorted(cols.items()))
        for side, cols in sides.items()
    )


def _expected(inputs: Mapping[str, Tensor]) -> str:
    return ", ".join(f"{n} ({t.describe()})" for n, t in sorted(inputs.items()))


def bind_inputs(
    inputs: Mapping[str, Tensor], sides: Mapping[str, Columns], where: str
) -> dict[str, str]:
    """Which side (table) feeds each input; ModelMismatch listing both sides if one cannot."""
    bound: dict[str, str] = {}
    problems = []
    for name, tensor in sorted(inputs.items()):
        found = [side for side, cols in sides.items() if name in cols]
        if not found:
            problems.append(f"input {name!r} ({tensor.describe()}) is not a column of the dataset")
        elif len(found) > 1:
            problems.append(
                f"input {name!r} is a column of both {' and '.join(found)}; use the factored "
                "signatures (encode_entity, encode_item) or rename one column"
            )
        elif not _fits(tensor, sides[found[0]][name]):
            col = sides[found[0]][name]
            problems.append(
                f"input {name!r} wants {tensor.describe()} but {found[0]}.{name} is "
                f"{col.describe()}"
            )
        else:
            bound[name] = found[0]
    if problems:
        raise ModelMismatch(
            f"{where}: {'; '.join(problems)}. The model expects: {_expected(inputs)}. "
            f"The dataset provides: {_listing(sides)}"
        )
    return bound


def _score_output(sig: Signature, meta: Mapping[str, Any], where: str) -> None:
    out = sig.outputs[output_name(sig, meta, where)]
    if out.dtype not in FLOATS or not (out.rank == 1 or (out.rank == 2 and out.shape[1] == 1)):
        raise ModelMismatch(f"{where}: a ranking model outputs one float score per row")


def check_ranking(
    dataset: Dataset, sigs: Signatures, meta: Mapping[str, Any], sides: Mapping[str, Columns]
) -> dict[str, str]:
    """Check a ranking model; returns the side (entity, item, context) of each input."""
    where = f"model {dataset.model!r} for dataset {dataset.name!r}"
    bound = bind_inputs(sigs.serving.inputs, sides, where)
    _score_output(sigs.serving, meta, where)
    if sigs.factored:
        parts = [("encode_entity", "entity"), ("encode_item", "item")]
        if ENCODE_CONTEXT in sigs.by_name:
            parts.append((ENCODE_CONTEXT, "context"))
        for sig_name, side in parts:
            bind_inputs(sigs.by_name[sig_name].inputs, {side: sides.get(side, {})}, where)
        pairs = sigs.by_name["score_pairs"]
        wanted = {side for _, side in parts}
        if set(pairs.inputs) != wanted:
            raise ModelMismatch(
                f"{where}: score_pairs takes {', '.join(sorted(pairs.inputs))}; "
                f"expected {', '.join(sorted(wanted))}"
            )
        _score_output(pairs, meta, where)
    return bound


def image_input(sig: Signature, where: str) -> tuple[str, Tensor]:
    """The one image input [None, H, W, C] of a labels-from-images model."""
    if len(sig.inputs) != 1:
        raise ModelMismatch(f"{where}: a model over images takes one image input")
    name, tensor = next(iter(sig.inputs.items()))
    ok_dtype = tensor.dtype in ("float32", "uint8")
    if (
        tensor.rank != 4
        or None in tensor.shape[1:]
        or tensor.shape[3] not in (1, 3)
        or not ok_dtype
    ):
        raise ModelMismatch(
            f"{where}: input {name!r} must be float32 or uint8 [batch, height, width, 1 or 3] "
            f"with a fixed size; got {tensor.dtype} {list(tensor.shape)}"
        )
    return name, tensor


def image_dims(tensor: Tensor) -> tuple[int, int, int]:
    """(height, width, channels) of an image input that :func:`image_input` accepted."""
    h, w, c = (int(d) if d is not None else 0 for d in tensor.shape[1:4])
    return h, w, c


def check_labels(
    dataset: Dataset, sigs: Signatures, meta: Mapping[str, Any], rows: Columns | None
) -> list[str]:
    """Check a labels model; returns its label vocabulary (model.json ``labels``)."""
    where = f"model {dataset.model!r} for dataset {dataset.name!r}"
    serving = sigs.serving
    if dataset.images:
        image_input(serving, where)
    else:
        bind_inputs(serving.inputs, {"rows": rows or {}}, where)
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelMismatch(f"{where}: model.json must list its label vocabulary in 'labels'")
    out = serving.outputs[output_name(serving, meta, where)]
    if out.rank != 2 or out.shape[1] not in (None, len(labels)) or out.dtype not in FLOATS:
        raise ModelMismatch(
            f"{where}: the output must be float [batch, {len(labels)}] (one score per label); "
            f"got {out.dtype} {list(out.shape)}"
        )
    return list(labels)


def check(
    dataset: Dataset, sigs: Signatures, meta: Mapping[str, Any], sides: Mapping[str, Columns]
) -> None:
    """Refuse a model that does not fit ``dataset`` (ModelMismatch, one line)."""
    where = f"model {dataset.model!r} for dataset {dataset.name!r}"
    if SERVING not in sigs.by_name:
        raise ModelMismatch(f"{where}: the SavedModel has no serving_default signature")
    wanted, have = meta.get("output"), sigs.serving.outputs
    if wanted and wanted not in have:  # a misnamed one, even where one output would do
        raise ModelMismatch(
            f"{where}: model.json output {wanted!r} is not an output of serving_default "
            f"({', '.join(sorted(have))})"
        )
    kind = meta.get("kind")
    if kind and kind != dataset.kind:
        raise ModelMismatch(f"{where}: model.json kind is {kind!r}, the dataset is {dataset.kind}")
    if dataset.kind == "ranking":
        check_ranking(dataset, sigs, meta, sides)
        check_candidates(dataset, sides)
    elif dataset.kind == "labels":
        check_labels(dataset, sigs, meta, sides.get("rows"))
    else:
        raise ModelMismatch(f"{where}: an external dataset has no model")


def check_candidates(dataset: Dataset, sides: Mapping[str, Columns]) -> None:
    """ConfigError for a ``match`` rule the tables cannot serve: a column neither side has,
    or columns whose values never equal (a string against a number: no entity would get
    a candidate)."""
    rule = dataset.candidates
    if rule.rule != "match":
        return
    where = f"dataset {dataset.name}: candidates"
    found = []
    for side, column in (("entity", rule.entity_column), ("item", rule.item_column)):
        have = sides.get(side, {})
        if column not in have:
            table = "entities" if side == "entity" else "items"
            raise ConfigError(f"{where}: no column {column!r} in {table}; it has {names(have)}")
        found.append(have[column])
    ours, theirs = found
    if ours.kind != theirs.kind and not {ours.kind, theirs.kind} <= {"int", "float"}:
        raise ConfigError(
            f"{where}: match compares entities.{rule.entity_column} ({ours.kind}) with "
            f"items.{rule.item_column} ({theirs.kind}): values of these never match"
        )


def names(columns: Iterable[str]) -> str:
    return ", ".join(sorted(columns))
