"""``prescore``: the operator CLI for published versions and models.

prescore versions reco          list versions with their metadata (* = live)
prescore show reco u42          the payload readers get for a key
prescore rollback reco [--to V] point readers at the previous published version
prescore gc reco                remove versions beyond the kept ones
prescore models [reco]          model versions, metrics, the promoted one
prescore promote reco 3         name a model version as the one in production
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from prescore import keys
from prescore.errors import PrescoreError
from prescore.modelstore import ModelStore
from prescore.redis_client import connect, store_errors
from prescore.settings import Settings
from prescore.versions import Versions


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    v = Versions(connect(settings.redis), args.dataset, settings.store)
    live = v.current()
    infos = v.all()
    if not infos:
        print(f"{args.dataset}: no versions")
        return 0
    rows = [
        (
            "*" if i.version == live else "",
            i.version,
            i.status,
            f"{i.model}/{i.model_version}",
            i.rows,
            i.started_at,
            i.published_at or i.finished_at,
            i.note,
        )
        for i in infos
    ]
    print(_table(("", "version", "status", "model", "rows", "started", "finished", "note"), rows))
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    client = connect(settings.redis)
    v = Versions(client, args.dataset, settings.store)
    version = args.version or v.current()
    if version is None:
        print(f"{args.dataset}: nothing published", file=sys.stderr)
        return 1
    raw = client.get(keys.value_key(args.dataset, version, args.key))
    if raw is None:
        print(f"{args.dataset} {version}: no key {args.key!r}", file=sys.stderr)
        return 1
    ttl = client.ttl(keys.value_key(args.dataset, version, args.key))
    print(f"# {args.dataset} version {version}" + (f", live entry, ttl {ttl}s" if ttl > 0 else ""))
    print(json.dumps(json.loads(raw), indent=2))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    v = Versions(connect(settings.redis), args.dataset, settings.store)
    before = v.current()
    target = v.rollback(to=args.to)
    print(
        f"{args.dataset}: rolled back {before} -> {target.version} "
        f"(model {target.model}/{target.model_version}, {target.rows} rows)"
    )
    return 0


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    removed = Versions(connect(settings.redis), args.dataset, settings.store).retire_old()
    print(
        f"{args.dataset}: removed {len(removed)} version(s)"
        + (": " + ", ".join(removed) if removed else "")
    )
    return 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    store = ModelStore(settings.models)
    names = [args.name] if args.name else ["reco", "tagger"]
    for name in names:
        promoted = store.promoted(name)
        rows = []
        for version in store.versions(name):
            meta = store.meta(name, version)
            metrics = meta.get("metrics", {})
            shown = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(metrics.items())
                if not isinstance(v, dict)
            )
            rows.append(
                ("*" if version == promoted else "", version, meta.get("created_at", ""), shown)
            )
        print(f"{name} ({settings.models.root})")
        print(_table(("", "version", "created", "metrics"), rows) if rows else "  no versions")
    return 0


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    store = ModelStore(settings.models)
    before = store.promoted(args.name)
    store.promote(args.name, args.version)
    print(f"{args.name}: promoted {args.version} (was {before or 'none'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prescore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    sub = parser.add_subparsers(dest="command", required=True)

    def dataset_cmd(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("dataset", choices=keys.DATASETS)
        p.set_defaults(func=func)
        return p

    dataset_cmd("versions", _versions, "list versions with their metadata")
    show = dataset_cmd("show", _show, "print the payload served for a key")
    show.add_argument("key", help="user id (or user|context) or image id")
    show.add_argument("--version", help="a version other than the live one")
    dataset_cmd("rollback", _rollback, "serve the previous published version").add_argument(
        "--to", help="a specific published version"
    )
    dataset_cmd("gc", _gc, "remove versions beyond the kept ones")
    models = sub.add_parser("models", help="list model versions")
    models.add_argument("name", nargs="?")
    models.set_defaults(func=_models)
    promote = sub.add_parser("promote", help="promote a model version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.set_defaults(func=_promote)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(os.environ).with_overrides(args.redis_url, args.model_store)
    try:
        with store_errors("running the command"):
            return int(args.func(settings, args))
    except PrescoreError as exc:
        print(f"prescore: {exc.code}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
