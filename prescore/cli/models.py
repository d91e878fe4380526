"""The operator CLI's model commands (prescore.cli): list, register, promote."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from prescore.cli.output import done, say, table
from prescore.errors import NotFound
from prescore.models.store import ModelStore
from prescore.settings import Settings


def list_models(settings: Settings, args: argparse.Namespace) -> int:
    store = ModelStore(settings.models)
    names = (
        [args.name]
        if args.name
        else sorted({d.model for d in settings.catalog.datasets.values() if d.model})
    )
    doc: dict[str, Any] = {}
    for name in names:
        promoted = store.promoted(name)
        rows, versions = [], []
        found = store.versions(name)
        declared = any(d.model == name for d in settings.catalog.datasets.values())
        if args.name and not found and not declared:  # a mistyped name says so
            raise NotFound(
                f"no model {name!r}: the store holds no version of it and no dataset declares it",
                code="unknown_model",
            )
        for version in found:
            meta = store.meta(name, version)
            metrics = meta.get("metrics", {})
            shown = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(metrics.items())
                if not isinstance(v, dict)
            )
            q = meta.get("quantization") or {}
            litert = _variants(q)
            rows.append(
                [
                    "*" if version == promoted else "",
                    version,
                    meta.get("created_at", ""),
                    litert,
                    shown,
                ]
            )
            versions.append({"version": version, "promoted": version == promoted, "meta": meta})
        doc[name] = versions
        if args.output != "json":
            print(f"{name} ({settings.models.root})")
            print(
                table(("", "version", "created", "LiteRT", "metrics"), rows)
                if rows
                else "  no versions"
            )
    if args.output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def register(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.models.registration import register as import_model

    registered = import_model(
        ModelStore(settings.models),
        settings.catalog,
        args.name,
        args.path,
        dataset=args.dataset,
        meta_file=args.meta,
        promote=args.promote,
        int8=args.int8,
        webhdfs_url=settings.models.webhdfs_url,
        say=say(args),
    )
    state = " and promoted" if registered.promoted else ""
    line = (
        f"{registered.name}: registered version {registered.version}{state} "
        f"in {settings.models.root}"
    )
    done(args, {**registered.__dict__, "store": settings.models.root}, line)
    return 0


def promote(settings: Settings, args: argparse.Namespace) -> int:
    store = ModelStore(settings.models)
    before = store.promoted(args.name)
    store.promote(args.name, args.version)
    line = f"{args.name}: promoted {args.version} (was {before or 'none'})"
    done(args, {"model": args.name, "promoted": args.version, "was": before}, line)
    return 0


def _variants(q: Mapping[str, Any]) -> str:
    """The LiteRT variants of a version's quantization record, in a word or two; one that
    answers otherwise than the SavedModel (never served by auto) says so."""
    runtimes = q.get("runtimes") or {}
    built = [
        r if runtimes[r].get("agrees", True) else f"{r} (disagrees)"
        for r in ("float32", "int8")  # inference.TFLITE_FILES' keys; it imports numpy
        if r in runtimes
    ]
    return ", ".join(built) or "no"
