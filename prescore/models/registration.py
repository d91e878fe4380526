"""Registering a team's own SavedModel: ``prescore models register NAME PATH``.

PATH (``file://``, ``hdfs://`` or a plain path) is a folder holding either a SavedModel
(``saved_model.pb``) or ``saved_model/``, and optionally ``model.json`` (or ``--meta``): the
fields a user states (labels, thresholds, output, metrics, ...; see docs/reference.md). The
model is refused, before anything is stored, when it is no SavedModel, has no serving
signature, or does not fit a dataset that declares it: the error lists the inputs the model
expects and the columns the dataset provides. Then its LiteRT variants (float32, int8) are
built where the model allows (prescore.models.quantize), the signatures are recorded in
model.json, and the model is stored as the next version; ``--promote`` names it the one in
production.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prescore.data import local_tables
from prescore.data.columns import Columns
from prescore.data.datasets import MODEL_NAME_RULE, NAME_RE, Catalog, Dataset
from prescore.data.storage import open_root, remote
from prescore.errors import ConfigError, ModelMismatch, ModelStoreError
from prescore.models import dataset_feeds
from prescore.models.inference import TFLITE_FILES
from prescore.models.quantize import MAX_DIFF
from prescore.models.signature import Signatures, check
from prescore.models.store import META_FILE, ModelStore
from prescore.progress import duration

Say = Callable[[str], None]


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    promoted: bool
    quantization: Mapping[str, Any]
    checked: tuple[str, ...]  # datasets the signature was checked against


def fetch(source: str, into: Path, webhdfs_url: str = "") -> Path:
    """A local copy of the model folder at ``source``."""
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else source)
        if not path.is_dir():
            raise ModelStoreError(f"{source}: no such folder")
        try:
            shutil.copytree(path, into)
        except shutil.Error as exc:  # a link to nothing, a loop of links, a file unreadable
            raise ModelStoreError(_unreadable(source, path, exc.args[0])) from None
        except OSError as exc:
            raise ModelStoreError(f"{source}: cannot be read: {exc.strerror or exc}") from None
        return into
    if remote(source):
        try:
            root = open_root(source, webhdfs_url=webhdfs_url)
        except ValueError as exc:  # no bucket
            raise ModelStoreError(str(exc)) from exc
        if not root.backend.files(root.path):
            raise ModelStoreError(f"{source}: no such folder")
        root.backend.download_dir(root.path, into)
        return into
    raise ModelStoreError(f"{source}: a model is imported from file://, hdfs://, s3:// or gs://")


def _unreadable(source: str, path: Path, failed: list[tuple[str, str, str]]) -> str:
    """One line for the files of a model folder that could not be copied."""
    first, _, why = failed[0]
    try:
        inside = Path(first).relative_to(path)
    except ValueError:
        inside = Path(first)
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    reason = str(why).split(": '", 1)[0][:120]  # the OS's words, without the path again
    return f"{source}: cannot read {str(inside)[:160]}{more}: {reason}"


def _layout(folder: Path, meta_file: str | None, source: str) -> tuple[Path, dict[str, Any]]:
    """(the SavedModel folder, the user's model.json) of a model folder fetched from
    ``source`` (what errors name: not the copy)."""
    if (folder / "saved_model.pb").is_file():
        saved = folder
    elif (folder / "saved_model" / "saved_model.pb").is_file():
        saved = folder / "saved_model"
    else:
        raise ModelStoreError(
            f"{source}: not a SavedModel (no saved_model.pb, nor saved_model/saved_model.pb)"
        )
    meta_path = Path(meta_file) if meta_file else folder / META_FILE
    shown = meta_file or f"{source.rstrip('/')}/{META_FILE}"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise ModelStoreError(f"{shown}: not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise ModelStoreError(f"{shown}: must hold a JSON object")
    elif meta_file:
        raise ModelStoreError(f"{meta_file}: no such file")
    elif saved == folder and _beside(source):  # the SavedModel given, not its folder
        raise ModelStoreError(
            f"{source}: a SavedModel with no {META_FILE}, whose folder holds one: register "
            f"the folder that holds both ({_beside(source)})"
        )
    return saved, meta


def _beside(source: str) -> str:
    """The local folder above ``source`` when it holds a model.json, else ''."""
    parsed = urlparse(source)
    if parsed.scheme not in ("", "file"):
        return ""
    above = Path(parsed.path if parsed.scheme else source).resolve().parent
    return str(above) if (above / META_FILE).is_file() else ""


def dataset_sides(dataset: Dataset, webhdfs_url: str = "") -> dict[str, Columns] | None:
    """The columns each side of ``dataset`` provides, or None when its tables cannot be
    read here (the bulk job checks them against Spark's schemas before it writes)."""
    if dataset.kind == "ranking":
        assert dataset.entities is not None and dataset.items is not None
        tables = [dataset.entities, dataset.items]
        if dataset.contexts is not None and dataset.contexts.table is not None:
            tables.append(dataset.contexts.table)
        if not all(local_tables.readable(t) for t in tables):
            return None
        return dataset_feeds.ranking_tables(dataset, webhdfs_url)[1]
    if dataset.rows is not None:
        if not local_tables.readable(dataset.rows):
            return None
        return {"rows": local_tables.schema(dataset.rows, webhdfs_url)}
    return {}


def _datasets(catalog: Catalog, name: str, only: str | None) -> list[Dataset]:
    if only:
        found = catalog.get(only)
        if found.model != name:
            raise ConfigError(f"dataset {only} declares model {found.model!r}, not {name!r}")
        return [found]
    found_all = catalog.by_model(name)
    if not found_all:
        raise ConfigError(
            f"no dataset declares model {name!r} in {catalog.source or 'the configuration'}; "
            "declare one (or pass --dataset)"
        )
    return found_all


def register(
    store: ModelStore,
    catalog: Catalog,
    name: str,
    source: str,
    *,
    dataset: str | None = None,
    meta_file: str | None = None,
    promote: bool = False,
    int8: bool = True,
    webhdfs_url: str = "",
    say: Say = print,
) -> Registered:
    """Check and store the model at ``source`` as the next version of ``name``."""
    from prescore.models.tf_model import describe

    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{name!r}: {MODEL_NAME_RULE}", code="invalid_name")
    targets = _datasets(catalog, name, dataset)
    with tempfile.TemporaryDirectory() as tmp:
        folder = fetch(source, Path(tmp) / "src", webhdfs_url)
        saved, meta = _layout(folder, meta_file, source)
        try:
            sigs = describe(saved)
        except ModelStoreError as exc:  # named by its copy: name the folder given
            named = exc.message.replace(str(folder), source.rstrip("/"))
            raise ModelStoreError(named, code=exc.code) from None
        meta = {**meta, "kind": meta.get("kind") or targets[0].kind}
        checked = []
        for target in targets:
            sides = dataset_sides(target, webhdfs_url)
            if sides is not None:
                check(target, sigs, meta, sides)
                say(f"{name}: fits dataset {target.name}")
            else:
                _check_shape(target, sigs, meta)
                say(
                    f"{name}: dataset {target.name}'s tables are not readable here; "
                    "the bulk job checks its columns before it writes"
                )
            checked.append(target.name)
        out = Path(tmp) / "model"
        shutil.copytree(saved, out / "saved_model")
        meta.update(
            signature=sigs.to_json(),
            source=source,
            registered_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        meta.setdefault("created_at", meta["registered_at"])
        skipped = {"built": False, "reason": "skipped (--no-int8)"}
        started = time.monotonic()
        if int8:
            say(f"{name}: converting to LiteRT (float32, int8) and measuring both...")
        q = _litert_variants(out, meta, sigs, targets[0], webhdfs_url) if int8 else skipped
        meta["quantization"] = q
        took = f" ({duration(time.monotonic() - started)})" if int8 else ""
        say(f"{name}: int8 variant {_described(q)}{took}")
        say(f"{name}: saving to the model store...")
        version = store.save(name, out, meta)
    if promote:
        store.promote(name, version)
    return Registered(name, version, promote, q, tuple(checked))


def _described(q: Mapping[str, Any]) -> str:
    """The int8 variant in one line: not built and why, or what ``auto`` serves and, where
    that is not int8, why not."""
    if not q["built"]:  # nor float32: each says why
        missing = q.get("not_built") or {}
        whys = "; ".join(f"{runtime}: {why}" for runtime, why in sorted(missing.items()))
        return (
            f"not built, nor its float32 variant: {whys}" if whys else f"not built: {q['reason']}"
        )
    runtimes, fastest = q["runtimes"], q["fastest"]
    missing = q.get("not_built") or {}
    if "int8" not in runtimes:
        why = missing.get("int8", "not asked for")
        return f"not built: {why} (its float32 variant is; auto serves {fastest})"
    if "float32" not in runtimes:
        why = missing.get("float32", "not asked for")
        return f"built, its float32 variant not ({why}): auto serves {fastest}"
    int8 = runtimes["int8"]
    if not int8["agrees"]:
        metric = q.get("metric")
        lost = q.get("int8_quality_loss")
        why = (
            f"it loses {lost} of the float32 variant's {metric}"
            if metric and lost is not None and int8["max_abs_diff_vs_tf"] <= MAX_DIFF
            else f"scores up to {int8['max_abs_diff_vs_tf']} apart"
        )
        return (
            f"built, but it does not answer as the SavedModel does ({why}): "
            f"never served by auto (serves {fastest})"
        )
    if fastest != "int8":
        rate, best = int8["batch_rows_per_s"], runtimes[fastest]["batch_rows_per_s"]
        return (
            f"built (auto serves {fastest}: int8 is slower here, {rate:,.0f} rows/s "
            f"against {best:,.0f}, {int8['single_ms']} ms a row against "
            f"{runtimes[fastest]['single_ms']}; its integer kernels do not pay for this "
            "model's ops and sizes on this CPU)"
        )
    return f"built (auto serves {fastest})"


def _check_shape(dataset: Dataset, sigs: Signatures, meta: Mapping[str, Any]) -> None:
    """What can be checked without the dataset's columns: signature, kind, output."""
    from prescore.models.signature import SERVING, check_labels

    if SERVING not in sigs.by_name:
        raise ModelMismatch(f"model for dataset {dataset.name}: no serving_default signature")
    if dataset.kind == "labels" and dataset.images:
        check_labels(dataset, sigs, meta, None)


CRASHED = "the TFLite converter crashed on this model"


def _litert_variants(
    model_dir: Path, meta: dict[str, Any], sigs: Signatures, dataset: Dataset, webhdfs_url: str
) -> dict[str, Any]:
    """The variants' record; the conversions run in a child process, because the TFLite
    converter can crash the process (a segmentation fault, an uncaught C++ exception) on
    some graphs. After such a crash float32 alone is tried again in a new child: int8's
    conversion is the one that meets what its kernels lack."""
    try:
        sample = dataset_feeds.sample(dataset, sigs, 256, webhdfs_url)
    except (ConfigError, ModelMismatch, OSError) as exc:
        return {"built": False, "reason": f"no calibration sample: {exc}"}
    record = _quantized(model_dir, meta, sample, tuple(TFLITE_FILES))
    if record is not None:
        return record
    record = _quantized(model_dir, meta, sample, ("float32",))
    if record is None:  # float32 crashed it too (or the child died of something else)
        return {"built": False, "reason": CRASHED}
    return {**record, "not_built": {**record.get("not_built", {}), "int8": CRASHED}}


def _quantized(
    model_dir: Path, meta: dict[str, Any], sample: Any, lite: Sequence[str]
) -> dict[str, Any] | None:
    """prescore.models.quantize.quantize_dir for the ``lite`` variants, in a child process;
    None if it crashed (what it left half-written removed)."""
    from prescore.models.quantize import quantize_dir

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        try:
            return pool.submit(
                quantize_dir, model_dir, meta, sample, sample, lite=tuple(lite)
            ).result()
        except BrokenProcessPool:
            for name in TFLITE_FILES.values():
                (model_dir / name).unlink(missing_ok=True)
            return None
