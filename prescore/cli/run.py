"""The operator CLI's commands that run the other parts (prescore.cli): ``score``,
``retrain`` and ``serve`` hand over to their own entry points (``python -m jobs.submit``,
``jobs.retrain``, ``lookup.serve``, ``fallback.serve``) in place of this process, so the
core imports none of them and their exit codes and signals are the command's own; the
global flags reach them as the variables they override. ``config`` prints the effective
core settings, secrets masked."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from prescore import env
from prescore.errors import ConfigError
from prescore.logs import masked_url
from prescore.settings import Settings

SERVICES = {"lookup": "lookup.serve", "fallback": "fallback.serve"}
# what each handed-over module needs beyond the core: missing, the CLI names the extra
# (prescore.cli) in one line rather than the new process dying with a traceback
NEEDS = {
    "jobs.submit": ("pyspark",),
    "jobs.retrain": ("pyspark", "tensorflow"),
    "lookup.serve": ("flask", "granian"),
    "fallback.serve": ("flask", "granian", "tensorflow"),
}
PASS_ON = frozenset({"score", "retrain", "serve"})  # the commands that take ``-- ARGS``
_VALUED = frozenset({"--redis-url", "--model-store", "--config"})  # global flags with a value


def split_rest(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` cut at its first ``--`` when the command passes arguments on: (what the
    CLI parses, what is passed on). argparse alone cannot: a ``*`` positional before
    ``--`` has already matched nothing. Other commands keep ``--`` (``show NAME -- -5``)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    words = iter(argv[:cut])
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return (argv[:cut], argv[cut + 1 :]) if word in PASS_ON else (argv, [])
    return argv, []


def _rest(args: argparse.Namespace) -> list[str]:
    """The arguments passed on (those after ``--``)."""
    return list(getattr(args, "rest", []))


def _env(settings: Settings) -> dict[str, str]:
    """The environment a handed-over command runs in: the global flags as the variables
    they override."""
    env = dict(os.environ)
    env.update(REDIS_URL=settings.redis.url, PRESCORE_MODEL_STORE=settings.models.root)
    if settings.catalog.source:
        env["PRESCORE_CONFIG"] = settings.catalog.source
    return env


def _installed(module: str) -> None:
    """Raise ModuleNotFoundError, named for what is missing, unless ``module`` and what it
    needs are installed (an image holds only its own part: the lookup's has no jobs/)."""
    for name in (module, *NEEDS.get(module, ())):
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # its package is missing
            found = None
        if found is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _hand_over(args: argparse.Namespace, settings: Settings, argv: Sequence[str]) -> int:
    """Run ``python -m argv...`` in place of this process (``--print``: say it instead)."""
    command = [sys.executable, "-m", *argv]
    _installed(argv[0])
    if args.print_only:
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    os.execve(sys.executable, command, _env(settings))
    return 0  # not reached: the process is the command now


def score(settings: Settings, args: argparse.Namespace) -> int:
    settings.catalog.get(args.dataset)  # an undeclared one: exit 2 here, not in Spark
    submit = ["jobs.submit", "score", "--target", args.target, "--master", args.master]
    if args.python_env:
        submit += ["--python-env", _archive(args.python_env)]
    chosen = ["--dry-run"] if args.dry_run else []
    chosen += ["--keys", args.keys] if args.keys else []
    chosen += ["--where", args.where] if args.where else []
    chosen += ["--from-miss-log"] if args.from_miss_log else []
    chosen += ["--stage"] if args.stage else []
    argv = [*submit, "--exec", "--", "--dataset", args.dataset, *chosen, *_rest(args)]
    if args.print_only:  # jobs.submit without --exec prints the spark-submit line it builds
        argv.remove("--exec")
        _installed(argv[0])
        return subprocess.run([sys.executable, "-m", *argv], env=_env(settings)).returncode
    return _hand_over(args, settings, argv)


def _archive(path: str) -> str:
    """A packed virtualenv's path, refused here in one line when there is none: Spark
    would say so only after starting, in a Java stack trace."""
    if "://" not in path and not os.path.isfile(path):
        raise ConfigError(f"--python-env: no file {path} (make one: venv-pack -o env.tar.gz)")
    return path


def retrain(settings: Settings, args: argparse.Namespace) -> int:
    settings.catalog.get(args.dataset)
    return _hand_over(args, settings, ["jobs.retrain", "--dataset", args.dataset, *_rest(args)])


def serve(settings: Settings, args: argparse.Namespace) -> int:
    return _hand_over(args, settings, [SERVICES[args.service], *_rest(args)])


def config(settings: Settings, args: argparse.Namespace) -> int:
    """The effective core settings (environment, flags, defaults), one a line by its
    variable as prescore.env declares it (``*``: not the default), secrets masked."""
    listed = [(row, *value(settings, row)) for row in env.rows(Settings)]
    if args.output == "json":
        doc = shown(settings)
        doc["variables"] = [
            {"variable": row.env, "value": text, "set": set_, "default": row.default}
            | {"allowed": row.allowed, "doc": row.doc}
            for row, text, set_ in listed
        ]
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    width = max(len(row.env) for row, _, _ in listed)
    for row, text, set_ in listed:
        print(f"{'*' if set_ else ' '} {row.env:<{width}}  {text or '(none)'}")
    catalog = shown(settings)["catalog"]
    print(f"  datasets: {', '.join(catalog['datasets']) or '(none)'} ({catalog['source']})")
    return 0


def value(settings: Settings, row: env.Row) -> tuple[str, bool]:
    """The value of ``row``'s setting in ``settings`` as its variable would say it (a
    URL's password masked, a secret never shown), and whether it is not the default."""
    found: Any = settings
    for name in row.field.split("."):
        found = getattr(found, name)
    changed = found != row.default_value
    if row.allowed == env.SECRET:
        return ("***" if found else ""), changed
    if isinstance(found, bool):
        return ("1" if found else "0"), changed
    if isinstance(found, float):
        return f"{found:g}", changed
    text = str(found)
    return (masked_url(text) if "://" in text else text), changed


def shown(settings: Settings) -> dict[str, Any]:
    """``settings`` as ``prescore config`` shows them: the URLs' passwords masked, the
    catalog as the file it came from and the datasets it declares."""
    doc = {
        f.name: dataclasses.asdict(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if dataclasses.is_dataclass(getattr(settings, f.name)) and f.name != "catalog"
    }
    doc["redis"]["url"] = masked_url(settings.redis.url)
    for name in ("root", "webhdfs_url"):  # a URL may carry its credentials too
        doc["models"][name] = masked_url(doc["models"][name]) if doc["models"][name] else ""
    doc["catalog"] = {
        "source": settings.catalog.source or "(none: PRESCORE_CONFIG is unset)",
        "datasets": settings.catalog.names(),
    }
    return doc


def add_commands(sub: Any, listing: Any) -> None:
    """The commands of this module, on the CLI's subcommand parsers ``sub``."""
    passed_on = "Arguments after -- are passed on as they are."
    sc = sub.add_parser("score", help="score a dataset in bulk (jobs.submit)", epilog=passed_on)
    sc.add_argument("dataset", help="a declared dataset")
    sc.add_argument(
        "--target",
        choices=("local", "k8s", "operator"),
        default="local",
        help="local: spark-submit here; k8s: on the cluster; operator: print the "
        "SparkApplication manifest (kubectl apply -f -)",
    )
    sc.add_argument("--master", default="local[*]", help="local target: local[N] or spark://")
    sc.add_argument(
        "--dry-run", action="store_true", help="count keys and pairs, estimate; write nothing"
    )
    incremental = "incremental: score only %s, published as a delta of the live version"
    sc.add_argument("--keys", metavar="TABLE", help=incremental % "the keys of this parquet")
    sc.add_argument("--where", metavar="CONDITION", help=incremental % "the rows it selects")
    sc.add_argument(
        "--from-miss-log", action="store_true", help=incremental % "the keys lookups missed"
    )
    sc.add_argument(
        "--stage",
        action="store_true",
        help="gate the new version and keep it beside the live one, for prescore canary",
    )
    sc.add_argument(
        "--python-env",
        default="",
        metavar="ARCHIVE",
        help="local target: run the executors' Python from this packed virtualenv "
        "(venv-pack -o env.tar.gz), shipped with --archives",
    )
    rt = sub.add_parser("retrain", help="train, gate, score, promote", epilog=passed_on)
    rt.add_argument("dataset", help="a declared dataset")
    sv = sub.add_parser("serve", help="run the lookup or the fallback", epilog=passed_on)
    sv.add_argument("service", choices=sorted(SERVICES))
    for parser, func in ((sc, score), (rt, retrain), (sv, serve)):
        parser.add_argument(
            "--print", dest="print_only", action="store_true", help="print it; run nothing"
        )
        parser.set_defaults(func=func, rest=[])
    cf = listing(sub.add_parser("config", help="the effective settings, secrets masked"))
    cf.set_defaults(func=config)
