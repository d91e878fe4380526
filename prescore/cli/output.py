"""How the operator CLI (prescore.cli) reports: a table or one line for a person, one
JSON document on stdout with ``-o json`` (what it says along the way then on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under their headers, columns aligned."""
    # a cell is one line: a note written with line breaks would break the columns
    cells = [[str(c) for c in headers]] + [[" ".join(str(c).split()) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(args: argparse.Namespace, doc: Any, headers: Sequence[str], rows: list[list[Any]]) -> None:
    """A listing: ``rows`` as a table, or ``doc`` as JSON with ``-o json``."""
    if getattr(args, "output", "table") == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif rows:
        print(table(headers, rows))


def done(args: argparse.Namespace, doc: Any, line: str) -> None:
    """A command's outcome: ``line`` for a person, or ``doc`` as JSON with ``-o json``."""
    print(json.dumps(doc, indent=2, sort_keys=True) if args.output == "json" else line)


def entry(info: Any) -> dict[str, Any]:
    """A registry entry as JSON shows it: its gates' key sample counted, not listed."""
    doc = dict(info.__dict__)
    extra = dict(doc.get("extra") or {})
    if isinstance(extra.get("sample"), list):
        extra["sample"] = len(extra["sample"])
    return {**doc, "extra": extra}


def bar(args: argparse.Namespace) -> TextIO | None:
    """Where long work draws its bar: stderr, when a person watches the command (its
    stderr a terminal, and its stdout too unless that carries ``-o json``); None, for
    progress lines instead, where the lines go to a log or a pipe, or tqdm is missing."""
    watched = sys.stderr.isatty() and (args.output == "json" or sys.stdout.isatty())
    return sys.stderr if watched and find_spec("tqdm") is not None else None


def say(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a command's progress goes: stdout, or stderr beside ``-o json``; where a bar
    may be drawn (:func:`bar`), through tqdm's writer, which lifts the bar off the line
    and draws it again below, so that no line (a lease's warning from its own thread, say)
    breaks into it."""
    stream = sys.stderr if args.output == "json" else sys.stdout
    if bar(args) is not None:
        from tqdm import tqdm

        return lambda line: tqdm.write(line, file=stream)
    return lambda line: print(line, file=stream, flush=True)
