"""Settings declared once: each field of a settings class names its variable, its bounds,
its default and what it does; from that one declaration come reading the environment,
refusing a bad value, ``prescore config``'s listing and the settings tables of the docs.

    @dataclass(frozen=True)
    class ServerSettings:
        threads: int = setting("LOOKUP_THREADS", 4, lo=1, doc="app threads in each process")

    read(ServerSettings, env)  # every field read from its variable, or its default

A bad value is refused where it is read, in one line that names the variable, the value
and what is allowed (``LOOKUP_THREADS='four': must be an integer of at least 1``), never a
traceback. An empty variable takes the default.
"""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlparse

from prescore.errors import ConfigError
from prescore.logs import masked_url

T = TypeVar("T")
LOG_LEVELS = ("debug", "info", "warning", "error")
SECRET = "a secret, at least 16 characters"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Spec:
    """One setting: its variable (a suffix after its group's prefix, where it has one),
    bounds, kind and doc. ``kind``: ``path``, ``url`` (of ``schemes``), ``bind`` (host:port),
    ``secret`` (never shown), ``choice`` (of ``choices``), ``list`` (comma-separated),
    ``pairs`` (``a=x,b=y``), else read by the field's type."""

    env: str
    doc: str
    lo: float | None = 0
    hi: float | None = None
    kind: str = ""
    choices: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()
    per: float = 1.0  # the variable's value over this is the field's (ms to s: 1000)
    shown: str = ""  # the default as the docs say it, where it is computed


@dataclass(frozen=True)
class Group:
    """A field holding settings of their own (``cls``), read under ``prefix`` with some of
    their defaults replaced."""

    cls: type
    prefix: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)


def setting(
    env: str,
    default: Any = MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    **spec: Any,
) -> Any:
    """A dataclass field that is a setting (:class:`Spec`'s fields as keywords)."""
    meta = {"setting": Spec(env, doc, **spec)}
    hidden = spec.get("kind") == "secret"
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=not hidden)
    return field(default=default, metadata=meta, repr=not hidden)


def group(cls: type[T], prefix: str = "", **defaults: Any) -> Any:
    """A dataclass field holding a settings class of its own, read with the rest."""
    return field(
        default_factory=lambda: cls(**defaults), metadata={"group": Group(cls, prefix, defaults)}
    )


def read(
    cls: type[T],
    env: Mapping[str, str],
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
    **given: Any,
) -> T:
    """``cls`` from ``env``: every setting and group of it read and checked (its
    variables under ``prefix``, ``defaults`` replacing some of its own); ``given`` fields
    (those no variable sets) passed as they are."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(given)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            continue
        if "group" in f.metadata:
            g: Group = f.metadata["group"]
            values[f.name] = read(g.cls, env, g.prefix, g.defaults)
        elif "setting" in f.metadata:
            default = (defaults or {}).get(f.name, _default(f))
            values[f.name] = _value(f.metadata["setting"], hints[f.name], env, prefix, default)
    return cls(**values)


@dataclass(frozen=True)
class Row:
    """A setting as the docs and ``prescore config`` list it."""

    env: str
    allowed: str
    default: str
    doc: str
    field: str  # its dotted path in the settings object
    default_value: Any = None  # the default itself


def rows(cls: type, prefix: str = "", path: str = "", **defaults: Any) -> Iterator[Row]:
    """Every setting of ``cls``, its groups' included, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        where = f"{path}{f.name}"
        if "group" in f.metadata:
            g: Group = f.metadata["group"]
            yield from rows(g.cls, g.prefix, f"{where}.", **g.defaults)
        elif "setting" in f.metadata:
            spec: Spec = f.metadata["setting"]
            default = defaults.get(f.name, _default(f))
            shown = spec.shown or _shown(spec, default)
            allowed = _allowed(spec, hints[f.name])
            yield Row(prefix + spec.env, allowed, shown, spec.doc, where, default)


def markdown(table: Iterator[Row]) -> str:
    """A settings table as docs/reference.md holds it."""
    out = ["| variable | default | allowed | what it does |", "| --- | --- | --- | --- |"]
    for r in table:
        default = f"`{r.default}`" if r.default else "(none)"
        out.append(f"| `{r.env}` | {default} | {r.allowed} | {r.doc} |")
    return "\n".join(out) + "\n"


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def _value(spec: Spec, kind: Any, env: Mapping[str, str], prefix: str, default: Any) -> Any:
    name = prefix + spec.env
    if spec.kind == "secret":
        return env_secret(env, name)
    if spec.kind == "url":
        return env_url(env, name, default, spec.schemes)
    if spec.kind == "bind":
        return env_bind(env, name, default)
    if spec.kind == "choice":
        return env_choice(env, name, default, spec.choices)
    if spec.kind == "list":
        return tuple(d.strip() for d in env_str(env, name, "").split(",") if d.strip())
    if spec.kind == "pairs":
        return pairs(env_str(env, name, ""), name)
    if kind is bool:
        return env_bool(env, name, default)
    if kind is int:
        return env_int(env, name, default, lo=_int(spec.lo), hi=_int(spec.hi))
    if kind is float:
        return env_float(env, name, default * spec.per, lo=spec.lo, hi=spec.hi) / spec.per
    return env_str(env, name, default)


def _int(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


def _shown(spec: Spec, default: Any) -> str:
    if spec.kind in ("secret", "list", "pairs") or default in ("", None):
        return ""
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default * spec.per:g}"
    return str(default)


def _allowed(spec: Spec, kind: Any) -> str:
    if spec.kind == "url":
        return "a URL of " + ", ".join(f"{s}://" if s else "a path" for s in spec.schemes)
    if spec.kind == "bind":
        return "host:port"
    if spec.kind == "path":
        return "a path"
    if spec.kind == "secret":
        return SECRET
    if spec.kind == "choice":
        return ", ".join(spec.choices)
    if spec.kind == "list":
        return "names, comma-separated"
    if spec.kind == "pairs":
        return "name=value, comma-separated"
    if kind is bool:
        return "0 or 1"
    if kind in (int, float):
        return ("an integer" if kind is int else "a number") + _bounds(spec.lo, spec.hi)
    return "text"


# -- reading one variable ------------------------------------------------------------------


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value != "" else default


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" of at least {lo:g}"
    return f" of at most {hi:g}" if hi is not None else ""


def _checked(
    name: str, raw: str, value: float, what: str, lo: float | None, hi: float | None
) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={raw!r}: must be {what}{_bounds(lo, hi)}")


def env_int(
    env: Mapping[str, str], name: str, default: int, lo: int | None = 0, hi: int | None = None
) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer{_bounds(lo, hi)}") from None
    _checked(name, raw, value, "an integer", lo, hi)
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    lo: float | None = 0.0,
    hi: float | None = None,
) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r}: must be a number{_bounds(lo, hi)}")
    _checked(name, raw, value, "a number", lo, hi)
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "1" if default else "0")
    if raw.lower() not in _TRUE + _FALSE:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(_TRUE + _FALSE)}")
    return raw.lower() in _TRUE


def env_choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = _get(env, name, default)
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


def env_url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    """A URL whose scheme is one of ``schemes`` (the value shown with no password)."""
    raw = _get(env, name, default)
    try:
        parsed = urlparse(raw)
        parsed.port  # noqa: B018 (a port that is no number raises only when read)
    except ValueError as exc:
        raise ConfigError(f"{name}={masked_url(raw)!r}: not a URL ({exc})") from None
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        shown = masked_url(raw)
        allowed = ", ".join(f"{s}://" if s else "a path" for s in schemes)
        raise ConfigError(f"{name}={shown!r}: must be a URL of {allowed}")
    return raw


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return _get(env, name, default)


def env_bind(env: Mapping[str, str], name: str, default: str) -> str:
    """``host:port`` to listen on (empty when the default is empty: not listening)."""
    raw = _get(env, name, default)
    if not raw:
        return raw
    host, _, port = raw.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r}: must be host:port (e.g. 0.0.0.0:9090)")
    return raw


def env_secret(env: Mapping[str, str], name: str, min_length: int = 16) -> str:
    """A shared secret: empty (none), or at least ``min_length`` characters; never shown."""
    raw = env.get(name, "")
    if raw and (len(raw) < min_length or raw != raw.strip()):
        raise ConfigError(
            f"{name}: must be at least {min_length} characters with no surrounding spaces "
            f"(got {len(raw)} characters)"
        )
    return raw


def pairs(text: str, name: str) -> dict[str, str]:
    """``"reco=tf,tags=int8"`` -> ``{"reco": "tf", "tags": "int8"}``."""
    out = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{name}: expected dataset=value pairs, got {item!r}")
        out[key] = value
    return out


def at_least_one(text: str) -> int:
    """A flag's whole number of at least 1 (argparse names the flag when this refuses)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value
