"""``prescore canary``, ``promote`` and ``abort``: a candidate version served to a share
of keys beside the live one, then switched to or ended (prescore.store.canaries)."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable

from prescore.cli.output import done, entry
from prescore.encoding import keys, routing
from prescore.errors import InvalidInput
from prescore.settings import Settings
from prescore.store import canaries


def _canary(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    store = Prescore(settings=settings)
    if args.version is None:  # what runs now
        live, running, _ = canaries.read(store.client, store.dataset(args.dataset).name)
        doc = {"dataset": args.dataset, "live": live, "canary": running and running.to_json()}
        line = f"{args.dataset}: no canary beside {live or 'nothing live'}"
        if running is not None:
            line = f"{args.dataset}: {running.version} serves {running.percent:g}% of keys"
            line += f" beside {live}"
        done(args, doc, line)
        return 0
    if args.percent is None:
        raise _usage("--percent: give the share of keys the canary serves, e.g. --percent 5")
    started = store.canary(args.dataset, args.version, args.percent, dry_run=args.dry_run)
    serves = "would serve" if args.dry_run else "serves"
    line = f"{args.dataset}: {started.version} {serves} {started.percent:g}% "
    line += f"of keys beside {started.live} (prescore promote {args.dataset} {started.version}"
    line += f" or prescore abort {args.dataset} ends it)"
    line += " (dry run, nothing changed)" if args.dry_run else ""
    doc = {"dataset": args.dataset, "canary": started.to_json(), "dry_run": args.dry_run}
    done(args, doc, line)
    return 0


def promote_either(settings: Settings, args: argparse.Namespace) -> int:
    """``prescore promote NAME VERSION``: the canary of dataset NAME when VERSION is a
    dataset version's id (what ``prescore canary NAME`` names), else model NAME's
    VERSION (``prescore models promote``, which the top-level command was first). The
    two kinds of id never look alike, and the version is always given: a promotion
    never goes live by accident."""
    try:
        keys.check_version(args.version)
    except InvalidInput:
        if args.name in settings.catalog.datasets and not args.version.isdigit():
            raise _usage(
                f"{args.version!r} is neither a version id of {args.name} (prescore canary "
                f"{args.name} names its canary's) nor a model version"
            ) from None
        if args.dry_run or args.force:
            raise _usage("--dry-run and --force are a canary's promotion's only") from None
        from prescore.cli import models

        return models.promote(settings, args)
    args.dataset = args.name
    return _promote(settings, args)


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    who = os.environ.get("PRESCORE_OPERATOR") or getpass.getuser()
    ps = Prescore(settings=settings)
    promoted = ps.promote(args.dataset, args.version, who, force=args.force, dry_run=args.dry_run)
    line = f"{args.dataset}: {promoted.version} {_would(args, 'promoted')}: readers all get it"
    doc = {"dataset": args.dataset, "live": entry(promoted), "by": who, "dry_run": args.dry_run}
    done(args, doc, line)
    return 0


def _abort(settings: Settings, args: argparse.Namespace) -> int:
    from prescore.api import Prescore

    ended = Prescore(settings=settings).abort(args.dataset, dry_run=args.dry_run)
    line = f"{args.dataset}: canary {ended.version} {_would(args, 'ended')}: readers all get "
    line += ended.live
    doc = {"dataset": args.dataset, "ended": ended.to_json(), "dry_run": args.dry_run}
    done(args, doc, line)
    return 0


def _would(args: argparse.Namespace, did: str) -> str:
    return f"would be {did} (dry run, nothing changed)" if args.dry_run else did


def _percent(text: str) -> float:
    """``--percent``: a share in the canary's bounds (argparse names the flag, exit 2)."""
    try:
        percent = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        routing.share_of(percent)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return percent


def _usage(message: str) -> Exception:
    from prescore.errors import ConfigError

    return ConfigError(message, code="usage")


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """``canary`` and ``abort``, made by the CLI's ``command`` helper (``promote`` is
    shared with the models': :func:`promote_either`)."""
    dry = "check and say what it would do; change nothing"
    can = command("canary", _canary, "serve a staged version to a share of keys (or show it)")
    can.add_argument("version", nargs="?", help="a staged or published version")
    can.add_argument("--percent", type=_percent, help="the share of keys it serves, 0.01 to 100")
    can.add_argument("--dry-run", action="store_true", help=dry)
    ab = command("abort", _abort, "end the canary: every key gets the live version again")
    ab.add_argument("--dry-run", action="store_true", help=dry)
