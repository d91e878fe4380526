"""``prescore``: the operator CLI for datasets, their published versions and models.

prescore datasets                         the declared datasets (PRESCORE_CONFIG)
prescore versions NAME                    its versions (* live, + its deltas, ~ its canary)
prescore show NAME KEY                    the payload readers get for a key
prescore rollback NAME [--to V]           point readers at another published version
prescore rollback NAME --delta D          take one incremental publish off the live version
prescore gc NAME                          remove versions beyond the kept ones
prescore release NAME VERSION --reason R  publish a version its data gates held back
prescore canary NAME VERSION --percent P  serve a staged version to P% of keys beside it
prescore promote NAME VERSION             switch readers to the canary's version
prescore abort NAME                       end the canary: every key gets the live version
  (rollback, gc, release, canary, promote, abort and publish take --dry-run: what they
  would do, nothing changed)
prescore misses NAME [-n N]               the keys missed most (the next bulk run scores them)
prescore publish NAME PATH                publish scores computed elsewhere (parquet)
  (--incremental: add them to the live version as a delta instead; --stage: gate
  them and keep them beside the live version, for a canary)
prescore models [list] [NAME]             model versions, metrics, the promoted one
prescore models register NAME PATH        import a SavedModel, checked against its dataset
prescore models promote NAME VERSION      name a model version as the one in production
  (also prescore promote NAME VERSION, where VERSION is a model version, not a version id)
prescore score NAME [--print] [-- ARGS]   score in bulk (spark-submit, python -m jobs.submit)
  (--keys TABLE, --where CONDITION, --from-miss-log: only those rows, as a delta;
  --stage: gate the version and keep it beside the live one, for a canary)
prescore retrain NAME [-- ARGS]           train, gate, score, promote (python -m jobs.retrain)
prescore serve lookup|fallback [-- ARGS]  run a service (python -m lookup.serve, ...)
prescore config                           the effective settings, secrets masked

Exit codes: 0 done, 1 the command failed (the message says why), 2 bad usage or
configuration (one line naming the setting or flag). Every command takes ``-o json``: one
JSON document on stdout, what it says along the way on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import redis

from prescore.cli import canary as cli_canary
from prescore.cli import models as cli_models
from prescore.cli import run as cli_run
from prescore.cli.output import bar, done, emit, entry, say
from prescore.env import at_least_one
from prescore.errors import ConfigError, PrescoreError, StoreUnavailable
from prescore.logs import masked_url
from prescore.settings import Settings
from prescore.store import canaries, deltas, values
from prescore.store.canaries import served_by_canary
from prescore.store.redis_client import REFUSED, check_policy, connect, store_errors
from prescore.store.versions import Versions


def _versions_of(settings: Settings, dataset: str, writes: bool = True) -> Versions:
    """The dataset's versions; a Redis that may evict them is refused for a command that
    writes, and only warned of (stderr) for one that reads, so it can still be looked at."""
    settings.catalog.get(dataset)
    client = connect(settings.redis)
    try:
        check_policy(client)
    except ConfigError as exc:
        if writes or exc.code == REFUSED:  # a Redis that refuses this client refuses reads too
            raise
        print(f"warning: {exc.message}", file=sys.stderr)
    return Versions(client, dataset, settings.store)


def _datasets(settings: Settings, args: argparse.Namespace) -> int:
    found = [settings.catalog.datasets[n] for n in settings.catalog.names()]
    doc = [{"name": d.name, "kind": d.kind, "model": d.model, "route": d.route} for d in found]
    if not found and args.output != "json":
        print(f"no datasets declared ({settings.catalog.source or 'PRESCORE_CONFIG is unset'})")
    rows = [[d.name, d.kind, d.model or "-", f"/v1/{d.route}" if d.route else "-"] for d in found]
    emit(args, doc, ("dataset", "kind", "model", "route"), rows)
    return 0


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    v = _versions_of(settings, args.dataset, writes=False)
    live, layered, _ = deltas.read(v.client, args.dataset)
    canary = canaries.read(v.client, args.dataset)[1]
    infos = v.all()
    doc = {
        "dataset": args.dataset,
        "live": live,
        "deltas": list(layered),
        "canary": canary and canary.to_json(),
        "versions": [entry(i) for i in infos],
    }
    if not infos and args.output != "json":
        print(f"{args.dataset}: no versions")
        return 0
    rows = [
        [
            _mark(i.version, live, layered, canary),
            i.version,
            _status(i.status, i.version, layered, canary),
            f"{i.model}/{i.model_version}",
            i.rows,
            i.started_at,
            i.published_at or i.finished_at,
            i.note,
        ]
        for i in infos
    ]
    heads = ("", "version", "status", "model", "rows", "started", "finished", "note")
    emit(args, doc, heads, rows)
    return 0


def _mark(version: str, live: str | None, layered: tuple[str, ...], canary: Any) -> str:
    """A version's mark in the listing: * live, + one of its deltas, ~ its canary."""
    if version == live:
        return "*"
    if version in layered:
        return "+"
    return "~" if canary is not None and canary.version == version else ""


def _status(status: str, version: str, layered: tuple[str, ...], canary: Any) -> str:
    if status == "delta" and version not in layered:
        return "delta, detached"
    if canary is not None and canary.version == version:
        return f"{status}, canary {canary.percent:g}%"
    return status


def _show(settings: Settings, args: argparse.Namespace) -> int:
    v = _versions_of(settings, args.dataset, writes=False)
    canary, theirs = (
        ("", set()) if args.version else served_by_canary(v.client, args.dataset, [args.key])
    )
    where, over = deltas.layers(v, args.version or (canary if theirs else None))
    version = where.version
    raw = values.read(v.client, where, [args.key], deltas=over)[0]
    if raw is None:
        raise PrescoreError(f"{args.dataset} {version}: no key {args.key!r}", code="not_found")
    delta = next(
        (d.placed.version for d in over if values.held(v.client, d.placed, [args.key])), None
    )
    written_back = not delta and not values.held(v.client, where, [args.key])
    ttl = v.client.ttl(where.write_back(args.key)) if written_back else -1
    if args.output == "json":  # the payload and where it came from, one document
        doc = {
            "dataset": args.dataset,
            "version": version,
            "delta": delta,
            "canary": bool(theirs),
            "key": args.key,
            "ttl_s": ttl if ttl > 0 else None,
            "payload": json.loads(raw),
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    where_from = ", the canary's, for this key" if theirs else ""
    where_from += f", live entry, ttl {ttl}s" if ttl > 0 else ""
    where_from += f", from its delta {delta}" if delta else ""
    print(f"# {args.dataset} version {version}{where_from}", file=sys.stderr)
    print(json.dumps(json.loads(raw), indent=2))  # stdout: the payload alone (| jq)
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    store = Prescore(settings=settings)
    if args.delta and args.to:
        raise ConfigError("--delta takes one delta off the live version; --to is not for it")
    if args.delta:
        return _rollback_delta(store, args)
    before, layered, _ = deltas.read(store.client, args.dataset)
    running = canaries.read(store.client, args.dataset)[1]
    target = store.rollback(args.dataset, to=args.to, dry_run=args.dry_run)
    line = (
        f"{args.dataset}: {_would(args, 'rolled back')} {before} -> {target.version} "
        f"(model {target.model}/{target.model_version}, {target.rows} rows)"
    )
    if layered:
        line += f"; its {len(layered)} delta(s) go with {before}: {', '.join(layered)}"
    line += _canary_ended(running, args.dry_run)
    doc = {
        "dataset": args.dataset,
        "from": before,
        "to": entry(target),
        "dropped_deltas": list(layered),
        "dry_run": args.dry_run,
    }
    done(args, doc, line)
    return 0


def _rollback_delta(store: Any, args: argparse.Namespace) -> int:
    dropped = store.rollback_delta(args.dataset, args.delta, dry_run=args.dry_run)
    base = dropped.extra.get("delta_of", "")
    line = f"{args.dataset}: delta {dropped.version} {_would(args, 'taken off')} {base}"
    doc = {"dataset": args.dataset, "delta": entry(dropped), "dry_run": args.dry_run}
    done(args, doc, line)
    return 0


def _canary_ended(running: Any, dry_run: bool) -> str:
    """What a switch does to the canary that ran (prescore.store.canaries): it ends."""
    if running is None:
        return ""
    return f"; the canary of {running.version} ({running.percent:g}%) " + (
        "would end" if dry_run else "ended"
    )


def _would(args: argparse.Namespace, did: str) -> str:
    """``did``, or what a dry run would do."""
    return f"would be {did} (dry run, nothing changed):" if args.dry_run else did


def _release(settings: Settings, args: argparse.Namespace) -> int:
    v = _versions_of(settings, args.dataset)
    who = os.environ.get("PRESCORE_OPERATOR") or getpass.getuser()
    running = canaries.read(v.client, args.dataset)[1]
    released = v.release(args.version, who, args.reason, force=args.force, dry_run=args.dry_run)
    line = (
        f"{args.dataset}: {_would(args, 'released')} {released.version} over its gates "
        f"(by {who}: {args.reason})"
    ) + _canary_ended(running, args.dry_run)
    doc = {"dataset": args.dataset, "released": entry(released), "by": who}
    done(args, {**doc, "dry_run": args.dry_run}, line)
    return 0


def _misses(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from prescore.store.misslog import MissLog

    if not settings.catalog.get(args.dataset).miss_log:
        raise ConfigError(f"dataset {args.dataset} keeps no miss log (miss_log = false)")
    log = MissLog(connect(settings.redis))
    top, total = log.top(args.dataset, args.n), log.size(args.dataset)
    doc = {"dataset": args.dataset, "keys": total, "top": [m.__dict__ for m in top]}
    if args.output != "json":
        print(f"{args.dataset}: {total} key(s) in the miss log" + (", most missed:" if top else ""))

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"

    rows = [[m.key, m.count, when(m.last_seen)] for m in top]
    emit(args, doc, ("key", "misses", "last missed"), rows)
    return 0


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    store = Prescore(settings=settings)
    if args.dry_run:
        planned = store.gc(args.dataset, dry_run=True)
        lines = [f"{args.dataset}: gc would (dry run, nothing changed):"] + [
            f"  {action.replace('_', ' ')}: {', '.join(found) or '-'}"
            for action, found in planned.items()
        ]
        done(args, {"dataset": args.dataset, "dry_run": True, **planned}, "\n".join(lines))
        return 0
    did = store.gc(args.dataset)
    removed = did["removed"]
    lines = [
        f"{args.dataset}: removed {len(removed)} version(s)"
        + (": " + ", ".join(removed) if removed else "")
    ] + [
        f"  {action.replace('_', ' ')}: {', '.join(found)}"
        for action, found in did.items()
        if found and action != "removed"
    ]
    done(args, {"dataset": args.dataset, **did}, "\n".join(lines))
    return 0


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    options: dict[str, Any] = {"model": args.model} if args.model else {}
    report = Prescore(settings=settings).publish(
        args.dataset,
        args.path,
        key_column=args.key,
        json_column=args.json_column,
        columns=tuple(c for c in (args.columns or "").split(",") if c),
        model_version=args.model_version,
        max_bad=args.max_bad,
        force=args.force,
        say=say(args),
        bar=bar(args),
        dry_run=args.dry_run,
        compact=not args.json_payloads,
        incremental=args.incremental,
        stage=args.stage,
        **options,
    )
    if args.output == "json":
        print(json.dumps(report.__dict__, indent=2, sort_keys=True))
    if report.dry_run:
        return 0 if report.bad <= args.max_bad and not report.repeated else 1
    return 0 if report.published or report.staged else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prescore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"prescore {_version()}")
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    parser.add_argument("--config", help="the dataset declarations (overrides PRESCORE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    def listing(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # no default here: a subcommand's parser would overwrite its parent's -o with it
        # (models -o json list); main() makes a missing one "table"
        p.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS)
        return p

    def command(name: str, func: Any, help_: str, dataset: bool = True) -> argparse.ArgumentParser:
        p = listing(sub.add_parser(name, help=help_))
        if dataset:
            p.add_argument("dataset", help="a declared dataset")
        p.set_defaults(func=func)
        return p

    command("datasets", _datasets, "list the declared datasets", dataset=False)
    command("versions", _versions, "list a dataset's versions")
    show = command("show", _show, "print the payload served for a key")
    show.add_argument("key", help="an entity key (or key|context) or image key")
    show.add_argument("--version", help="a version other than the live one")
    dry = "check and say what it would do; change nothing"
    back = command("rollback", _rollback, "serve another published version")
    back.add_argument("--to", help="a specific published version")
    back.add_argument("--delta", help="take only this delta off the live version")
    back.add_argument("--dry-run", action="store_true", help=dry)
    gc = command("gc", _gc, "remove versions beyond the kept ones")
    gc.add_argument("--dry-run", action="store_true", help=dry)
    misses = command("misses", _misses, "list the keys missed most")
    misses.add_argument("-n", type=at_least_one, default=20, help="how many (default 20)")
    rel = command("release", _release, "publish a gated version anyway (recorded)")
    rel.add_argument("version", help="the gated version")
    rel.add_argument("--reason", required=True, help="why its gates are overridden")
    rel.add_argument(
        "--force", action="store_true", help="even when older than the live version (recorded)"
    )
    rel.add_argument("--dry-run", action="store_true", help=dry)
    pub = command("publish", _publish, "publish scores computed elsewhere (parquet)")
    pub.add_argument(
        "path", help="parquet file or folder (a path, file://, hdfs://, s3://, gs://); globs: local"
    )
    pub.add_argument("--key", help="the key column (default: the dataset's key field)")
    pub.add_argument("--json-column", help="a column holding each key's payload as JSON")
    pub.add_argument("--columns", help="or: comma-separated columns that make the payload")
    pub.add_argument("--model", help="what made the scores (recorded; default: the dataset's)")
    pub.add_argument("--model-version", default="", help="recorded with the version")
    pub.add_argument("--max-bad", type=int, default=0, help="bad rows tolerated (default 0)")
    pub.add_argument(
        "--force", action="store_true", help="publish even over a newer live version (recorded)"
    )
    pub.add_argument(
        "--dry-run", action="store_true", help="read and check every row; write nothing"
    )
    how = pub.add_mutually_exclusive_group()
    how.add_argument(
        "--incremental",
        action="store_true",
        help="add the rows to the live version as a delta (all or nothing), not a new version",
    )
    how.add_argument(
        "--stage",
        action="store_true",
        help="gate the new version, then keep it beside the live one for a canary",
    )
    pub.add_argument(
        "--json-payloads",
        action="store_true",
        help="store every row as its JSON, none as a compact payload (served alike)",
    )

    cli_canary.add_commands(command)
    cli_run.add_commands(sub, listing)
    models = listing(sub.add_parser("models", help="list, register and promote models"))
    msub = models.add_subparsers(dest="action")
    models.set_defaults(func=cli_models.list_models, name=None)
    listing(msub.add_parser("list", help="list model versions")).add_argument("name", nargs="?")
    reg = listing(msub.add_parser("register", help="import a SavedModel, checked against it"))
    reg.add_argument("name", help="the model's name in the store (as datasets declare it)")
    reg.add_argument(
        "path", help="a folder with a SavedModel (a path, file://, hdfs://, s3://, gs://)"
    )
    reg.add_argument("--dataset", help="check against this dataset only")
    reg.add_argument("--meta", help="model.json to use (default: PATH/model.json)")
    reg.add_argument("--promote", action="store_true", help="promote it once registered")
    reg.add_argument(
        "--no-int8",
        dest="int8",
        action="store_false",
        help="build no LiteRT variant (neither int8 nor float32)",
    )
    reg.set_defaults(func=cli_models.register)
    promote = listing(msub.add_parser("promote", help="promote a model version"))
    promote.add_argument("name")
    promote.add_argument("version")
    promote.set_defaults(func=cli_models.promote)
    either = "switch readers to a dataset's canary (NAME), or promote a model version"
    top = command("promote", cli_canary.promote_either, either, dataset=False)
    top.add_argument("name", help="a dataset (its canary), or a model")
    top.add_argument(
        "version", help="the canary's version id, or a model version (as prescore models promote)"
    )
    top.add_argument("--dry-run", action="store_true", help="a canary's: say what it would do")
    top.add_argument(
        "--force",
        action="store_true",
        help="a canary's: promote it though it is older than the live version, or was gated "
        "against another (recorded)",
    )
    for p in msub.choices.values():
        if p.get_default("func") is None:
            p.set_defaults(func=cli_models.list_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words, rest = cli_run.split_rest(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(words)
    if rest:
        args.rest = rest
    # TensorFlow's C++ info lines (CPU features, oneDNN) are no news to an operator; set
    # before a command (models register) first imports it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not hasattr(args, "output"):
        args.output = "table"
    settings: Settings | None = None
    try:
        env = os.environ
        settings = Settings.from_env(env).with_overrides(
            args.redis_url, args.model_store, args.config, env
        )
        with store_errors("running the command"):
            try:
                return int(args.func(settings, args))
            except BrokenPipeError:  # the reader of the output left (| head): done
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
    except ConfigError as exc:
        print(f"prescore: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what a command began is cleaned up as it unwinds
        print("prescore: interrupted", file=sys.stderr)
        return 130
    except StoreUnavailable as exc:  # where, and why (the client's own words)
        where = masked_url(settings.redis.url) if settings else "Redis"
        if isinstance(exc.__cause__, redis.AuthenticationError):  # configuration, no outage
            print(
                f"prescore: {REFUSED}: {where} refused this client's credentials", file=sys.stderr
            )
            return 2
        print(f"prescore: {exc.code}: {exc.message} ({where}: {exc.__cause__})", file=sys.stderr)
        return 1
    except redis.ResponseError as exc:  # an error Redis answered: one line, not its trace
        where = masked_url(settings.redis.url) if settings else "Redis"
        print(f"prescore: redis_error: {where} answered: {exc}", file=sys.stderr)
        return 1
    except PrescoreError as exc:
        print(f"prescore: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an optional part not installed: which extra
        part = (exc.name or "").split(".")[0]
        if part in _PARTS:
            why = "not installed here (an image holds only its own part)"
            print(f"prescore: missing_part: {args.command} needs {part}/, {why}", file=sys.stderr)
            return 1
        extra = _EXTRAS.get(part)
        if extra is None:
            raise
        print(
            f"prescore: missing_extra: {args.command} needs {part}, part of the "
            f"{extra!r} extra: pip install 'prescore[{extra}]'",
            file=sys.stderr,
        )
        return 1


_PARTS = ("jobs", "lookup", "fallback")  # the project's parts besides the core
# modules of the optional extras (pyproject.toml) a command may import
_EXTRAS = {
    "pandas": "tables",
    "pyarrow": "tables",
    "numpy": "tables",
    "PIL": "tables",
    "hdfs": "tables",
    "tensorflow": "tf",
    "pyspark": "jobs",
    "ai_edge_litert": "jobs",
    "yaml": "jobs",
    "flask": "web",
    "granian": "web",
    "prometheus_client": "web",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prescore")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


if __name__ == "__main__":  # python -m prescore.cli.main, as python -m prescore.cli
    sys.exit(main())
