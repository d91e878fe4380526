"""Dataset declarations: what a team serves, declared in a TOML file, not coded.

    PRESCORE_CONFIG=prescore.toml   (or --config on every entry point)

    [datasets.reco]                  # the name: URLs, Redis keys, metrics
    kind = "ranking"                 # entities x candidate items -> top k
    model = "reco"                   # the model's name in the model store
    k = 10
    [datasets.reco.entities]
    path = "var/data/users.parquet"  # any path Spark reads: file://, hdfs://, globs
    key = "user_id"                  # or a list of columns: the key is their values joined by |
    [datasets.reco.items]
    path = "var/data/products.parquet"
    key = "product_id"
    payload = ["name"]               # item columns copied into each payload entry
    [datasets.reco.candidates]
    rule = "match"                   # all | match | table
    entity_column = "categories"     # match: items whose item_column value the entity holds
    item_column = "category"

    [datasets.tags]
    kind = "labels"                  # one image or row per key -> labels above threshold
    model = "tagger"
    [datasets.tags.images]
    path = "var/images/*.jpg"        # key: the file name without its extension

Every field is checked when the file is loaded; a bad one is a ConfigError naming it
(``datasets.reco.candidates.rule: must be one of all, match, table; got 'near'``). Values
may use ``${NAME}`` or ``${NAME:-default}`` from the environment; a relative local path is
taken from the working directory, as Spark takes it. This module parses and checks; it
reads nothing but the one file. docs/reference.md documents every field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prescore.encoding.keys import KeyForm, check_context
from prescore.errors import ConfigError, InvalidInput

KINDS = ("ranking", "labels", "external")
RULES = ("all", "match", "table")
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# auc and map lie in [0, 1]: a larger margin, or none that is a number, gates nothing
MAX_REGRESSION_RULE = "must be a number from 0 to 1 (how much lower the metric may be)"
MODEL_NAME_RULE = "a model name is 1-40 of a-z, 0-9, '_', '-', starting with a letter"
COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ROUTE_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
RESERVED_ROUTES = frozenset({"datasets", "models", "healthz", "readyz", "metrics"})
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Table:
    """A table of inputs: where it is, its key column(s), and which rows a run scores."""

    path: str
    key: tuple[str, ...]
    format: str = "parquet"
    filter: str = ""  # a Spark SQL condition: rows a bulk run scores (and missed keys)


@dataclass(frozen=True)
class Candidates:
    """Which items an entity is scored against."""

    rule: str = "all"  # all | match | table
    entity_column: str = ""  # match: the entity's value or list of values ...
    item_column: str = ""  # ... shared with this item column (a value or a list)
    table: Table | None = None  # table: one row per entity with a list of item keys
    items_column: str = ""  # table: the column holding that list


@dataclass(frozen=True)
class Contexts:
    """Contexts (e.g. weekday and hour) an entity is also scored in: key ``entity|context``."""

    key: str = "context"  # the column holding a context's value
    table: Table | None = None  # a small table of contexts and their features
    values: tuple[str, ...] = ()  # or a plain list of values (the key column is the feature)
    score: tuple[str, ...] = ()  # the contexts a bulk run scores besides the plain key
    plain: bool = True  # the plain key (no context: empty context features) is scored too


@dataclass(frozen=True)
class Training:
    """How jobs.retrain makes, evaluates and gates a candidate model."""

    command: tuple[str, ...] = ()  # argv; {output} is the folder the model is written to
    entry: str = ""  # or "module:function(output_dir)" in the same process
    heldout: Table | None = None  # held-out rows: key(s), item key (ranking), label
    label: str = "label"  # the held-out column with the truth
    metric: str = "auc"  # auc (a 0/1 label) | map (a list of labels)
    max_regression: float = 0.005  # how much worse than the promoted model is still kept


@dataclass(frozen=True)
class Gates:
    """The pre-switch checks of a new version against the live one (prescore.publishing.gates)."""

    enabled: bool = True
    rows: tuple[float, float] = (0.5, 2.0)  # new rows / live rows
    coverage: float = 0.9  # share of the live version's sampled keys in the new one
    drift: float = 0.25  # population stability index of the entries' scores
    payload_size: tuple[float, float] = (0.5, 2.0)  # new median payload size / live's
    sample: int = 1000  # keys sampled per version


@dataclass(frozen=True)
class Dataset:
    """One declared dataset."""

    name: str
    kind: str
    model: str = ""  # the model store name; empty only for kind external
    route: str = ""  # an extra route: /v1/{route}/{key} and /v1/{route}:batchGet
    key_field: str = "key"  # the key's name in payloads, batch answers and errors
    batch_field: str = "keys"  # the batchGet body's list of keys (``keys`` is always taken)
    list_field: str = "items"  # the payload's ranked list
    entry_field: str = ""  # the first field of each list entry (item key or label field)
    k: int = 10  # ranking: entries per payload (lookups may ask for fewer)
    live: bool = True  # a miss is answered by live inference when a fallback is set
    entities: Table | None = None  # ranking: one row per entity
    items: Table | None = None  # ranking: the candidate items
    item_payload: tuple[str, ...] = ()  # ranking: item columns copied into each entry
    candidates: Candidates = field(default_factory=Candidates)
    contexts: Contexts | None = None
    images: str = ""  # labels: image files (binaryFile); key = file name without extension
    rows: Table | None = None  # labels: or a feature table, one row per key
    image_extensions: tuple[str, ...] = ("jpg", "jpeg", "png")
    max_image_bytes: int = 20 * 1024 * 1024
    min_score: float | None = None  # labels: one threshold for every label (else model.json)
    training: Training | None = None
    gates: Gates = field(default_factory=Gates)
    miss_log: bool = True  # misses recorded; the next bulk run scores those its tables hold
    max_age_s: float | None = None  # an answer older than this is stale
    stale: str = "refresh"  # refresh: served stale, refreshed live off the request's path;
    #                         live: answered live within the deadline
    shadow_min_overlap: float = 0.9  # shadow checks: agreement below this alerts

    @property
    def has_contexts(self) -> bool:
        return self.contexts is not None

    @property
    def key_columns(self) -> tuple[str, ...]:
        source = self.entities if self.kind == "ranking" else self.rows
        return source.key if source is not None else (self.key_field,)

    @property
    def key_form(self) -> KeyForm:
        """How its keys' text is written (prescore.encoding.keys)."""
        return KeyForm(len(self.key_columns), self.has_contexts, files=bool(self.images))


@dataclass(frozen=True)
class Catalog:
    """Every declared dataset, by name; the file they came from."""

    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    source: str = ""

    def get(self, name: str) -> Dataset:
        found = self.datasets.get(name)
        if found is None:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ConfigError(
                f"no dataset {name!r} is declared in {self.source or 'the configuration'} "
                f"(declared: {known})",
                code="unknown_dataset",
            )
        return found

    def names(self) -> list[str]:
        return sorted(self.datasets)

    def by_model(self, model: str) -> list[Dataset]:
        return [d for d in self.datasets.values() if d.model == model]


# -- loading -------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Catalog:
    """The catalog declared in the TOML file ``path``; ConfigError naming what is wrong."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the dataset file ({exc.strerror})") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    return parse(doc, env if env is not None else os.environ, source=where)


def parse(doc: Mapping[str, Any], env: Mapping[str, str], source: str = "") -> Catalog:
    """The catalog of an already-parsed document (see :func:`load`)."""
    r = _Reader(doc, source or "config", env)
    r.only(("datasets",))
    datasets = r.table("datasets", required=True)
    out = {}
    for name in datasets.names():
        if not NAME_RE.fullmatch(name):
            raise r.error(
                f"datasets.{name}",
                "a dataset name is 1-40 of a-z, 0-9, '_', '-', starting with a letter",
            )
        out[name] = _dataset(datasets.sub(name), name)
    routes = [d.route for d in out.values() if d.route]
    for route in routes:
        if routes.count(route) > 1:
            raise r.error("datasets", f"route {route!r} is declared by more than one dataset")
    return Catalog(out, source)


_REQUIRED: Any = object()  # the default of a field that must be given


class _Reader:
    """Typed access to one TOML table, with errors that name the field."""

    def __init__(self, doc: Mapping[str, Any], source: str, env: Mapping[str, str], at: str = ""):
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{source}: {at or 'the file'}: must be a table")
        self.doc, self.source, self.env, self.at = doc, source, env, at

    def error(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: {name}: {why}")

    def path_of(self, key: str) -> str:
        return f"{self.at}.{key}" if self.at else key

    def names(self) -> list[str]:
        return list(self.doc)

    def only(self, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(self.doc) - set(allowed))
        if unknown:
            raise self.error(
                self.path_of(unknown[0]), f"unknown field; allowed: {', '.join(allowed)}"
            )

    def sub(self, key: str) -> _Reader:
        return _Reader(self.doc[key], self.source, self.env, self.path_of(key))

    def table(self, key: str, required: bool = False) -> _Reader:
        if key not in self.doc:
            if required:
                raise self.error(self.path_of(key), "missing")
            return _Reader({}, self.source, self.env, self.path_of(key))
        value = self.doc[key]
        if not isinstance(value, Mapping):
            raise self.error(self.path_of(key), "must be a table")
        return self.sub(key)

    def has(self, key: str) -> bool:
        return key in self.doc

    def _get(self, key: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
        if key not in self.doc:
            if default is _REQUIRED:
                raise self.error(self.path_of(key), "missing")
            return default
        value = self.doc[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(self.path_of(key), f"must be {what}; got {value!r}")
        if not isinstance(value, kind):
            raise self.error(self.path_of(key), f"must be {what}; got {value!r}")
        return value

    def text(self, key: str, default: Any = "") -> str:
        value = self._get(key, str, "a string", default)
        return self.expand(key, value) if isinstance(value, str) else value

    def expand(self, key: str, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            found = self.env.get(m.group(1))
            if found is None or found == "":
                if m.group(2) is None:
                    raise self.error(self.path_of(key), f"${{{m.group(1)}}} is not set")
                return m.group(2)
            return found

        return _ENV_RE.sub(sub, value)

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self.text(key, default)
        if value not in allowed:
            raise self.error(
                self.path_of(key), f"must be one of {', '.join(allowed)}; got {value!r}"
            )
        return value

    def name(self, key: str, pattern: re.Pattern[str], what: str, default: Any = "") -> str:
        value = self.text(key, default)
        if value and not pattern.fullmatch(value):
            raise self.error(self.path_of(key), f"{what}; got {value!r}")
        return value

    def column(self, key: str, default: Any = "") -> str:
        return self.name(key, COLUMN_RE, "a column name is letters, digits and '_'", default)

    def columns(self, key: str, default: Any = ()) -> tuple[str, ...]:
        value = self._get(key, (str, list), "a column name or a list of them", default)
        items = [value] if isinstance(value, str) else list(value)
        for item in items:
            if not isinstance(item, str) or not COLUMN_RE.fullmatch(item):
                raise self.error(self.path_of(key), f"not a column name: {item!r}")
        return tuple(items)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list, "a list of strings", [])
        if not all(isinstance(v, str) for v in value):
            raise self.error(self.path_of(key), "must be a list of strings")
        return tuple(self.expand(key, v) for v in value)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self._get(key, int, f"an integer from {lo} to {hi}", default)
        if not lo <= value <= hi:
            raise self.error(self.path_of(key), f"must be an integer from {lo} to {hi}")
        return int(value)

    def number(self, key: str, default: float | None) -> float | None:
        value = self._get(key, (int, float), "a number", default)
        return None if value is None else float(value)

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, bool, "true or false", default))

    def uri(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.text(key, default)
        return absolute_uri(value) if value else value


def absolute_uri(path: str) -> str:
    """A URI Spark and the fallback read alike: a relative local path made absolute."""
    if urlparse(path).scheme:
        return path
    return "file://" + os.path.abspath(path)


def _table(
    r: _Reader,
    key: str,
    *,
    required: bool = True,
    key_required: bool = True,
    extra: tuple[str, ...] = (),
    filtered: bool = False,
) -> Table | None:
    """A declared table; ``filtered``: it may carry a ``filter`` (the tables a run scores)."""
    if not r.has(key):
        if required:
            raise r.error(r.path_of(key), "missing")
        return None
    t = r.table(key)
    t.only(("path", "key", "format", *(("filter",) if filtered else ()), *extra))
    keys = t.columns("key", _REQUIRED if key_required else ())
    if key_required and not keys:
        raise t.error(t.path_of("key"), "must name at least one column")
    return Table(
        path=t.uri("path"),
        key=keys,
        format=t.choice("format", ("parquet", "orc", "json", "csv"), "parquet"),
        filter=t.text("filter", ""),
    )


_COMMON = (
    "kind",
    "model",
    "route",
    "key_field",
    "batch_field",
    "list_field",
    "live",
    "training",
    "gates",
    "miss_log",
    "max_age_s",
    "stale",
    "shadow_min_overlap",
)
_BY_KIND = {
    "ranking": ("entities", "items", "candidates", "contexts", "k"),
    "labels": ("images", "rows", "label_field", "min_score"),
    "external": ("entry_field",),
}


def _dataset(r: _Reader, name: str) -> Dataset:
    kind = r.choice("kind", KINDS)
    r.only(_COMMON + _BY_KIND[kind])
    model = r.name("model", NAME_RE, MODEL_NAME_RULE)
    if kind != "external" and not model:
        raise r.error(r.path_of("model"), f"missing: a {kind} dataset names its model")
    route = r.name("route", ROUTE_RE, "a route is 1-40 of a-z, 0-9, '-'")
    if route in RESERVED_ROUTES:
        raise r.error(r.path_of("route"), f"{route!r} is reserved")
    max_age = r.number("max_age_s", None)
    if max_age is not None and max_age <= 0:
        raise r.error(r.path_of("max_age_s"), "must be a number of seconds above 0")
    min_overlap = float(r.number("shadow_min_overlap", 0.9) or 0.0)
    if not 0 <= min_overlap <= 1:
        raise r.error(r.path_of("shadow_min_overlap"), "must be a share from 0 to 1")
    common: dict[str, Any] = dict(
        name=name,
        kind=kind,
        model=model,
        route=route,
        live=r.flag("live", kind != "external"),
        training=_training(r) if r.has("training") else None,
        gates=_gates(r),
        miss_log=r.flag("miss_log", kind != "external"),
        max_age_s=max_age,
        stale=r.choice("stale", ("refresh", "live"), "refresh"),
        shadow_min_overlap=min_overlap,
    )
    if kind == "ranking":
        return _ranking(r, common)
    if kind == "labels":
        return _labels(r, common)
    key_field = r.column("key_field", "key")
    return Dataset(
        **common,
        key_field=key_field,
        batch_field=r.column("batch_field", "keys"),
        list_field=r.column("list_field", "items"),
        entry_field=r.column("entry_field", ""),
    )


def _ranking(r: _Reader, common: dict[str, Any]) -> Dataset:
    entities = _table(r, "entities", filtered=True)
    items = _table(r, "items", extra=("payload",))
    assert entities is not None and items is not None
    if len(items.key) != 1:
        raise r.error(r.path_of("items.key"), "items have one key column")
    payload = r.table("items").columns("payload")
    candidates = _candidates(r)
    contexts = _contexts(r) if r.has("contexts") else None
    key_field = r.column("key_field", entities.key[0] if len(entities.key) == 1 else "key")
    return Dataset(
        **common,
        key_field=key_field,
        batch_field=r.column("batch_field", "keys"),
        list_field=r.column("list_field", "items"),
        entry_field=items.key[0],
        k=r.integer("k", 10, 1, 1000),
        entities=entities,
        items=items,
        item_payload=payload,
        candidates=candidates,
        contexts=contexts,
    )


def _candidates(r: _Reader) -> Candidates:
    c = r.table("candidates")
    rule = c.choice("rule", RULES, "all")
    if rule == "all":
        c.only(("rule",))
        return Candidates()
    if rule == "match":
        c.only(("rule", "entity_column", "item_column"))
        return Candidates(
            rule,
            entity_column=c.column("entity_column", _REQUIRED),
            item_column=c.column("item_column", _REQUIRED),
        )
    c.only(("rule", "path", "key", "items_column", "format"))
    table = Table(
        path=c.uri("path"),
        key=c.columns("key", _REQUIRED),
        format=c.choice("format", ("parquet", "orc", "json", "csv"), "parquet"),
    )
    return Candidates(rule, table=table, items_column=c.column("items_column", _REQUIRED))


def _contexts(r: _Reader) -> Contexts:
    c = r.table("contexts")
    c.only(("path", "key", "values", "score", "plain", "format"))
    key = c.column("key", "context")
    table = None
    if c.has("path"):
        table = Table(
            path=c.uri("path"),
            key=(key,),
            format=c.choice("format", ("parquet", "orc", "json", "csv"), "parquet"),
        )
    values = c.strings("values")
    if table is None and not values:
        raise c.error(c.at, "declare a contexts table (path) or a list of values")
    score = c.strings("score")
    for value in score:
        try:
            check_context(value)
        except InvalidInput as exc:
            raise c.error(c.path_of("score"), f"not a valid context value: {exc.message}") from None
    if values and not set(score) <= set(values):
        extra = sorted(set(score) - set(values))
        raise c.error(c.path_of("score"), f"not among the declared values: {', '.join(extra)}")
    return Contexts(key=key, table=table, values=values, score=score, plain=c.flag("plain", True))


def _labels(r: _Reader, common: dict[str, Any]) -> Dataset:
    if r.has("images") == r.has("rows"):
        raise r.error(r.at, "a labels dataset reads either images or rows (declare one)")
    images, rows, exts, max_bytes = "", None, Dataset.image_extensions, Dataset.max_image_bytes
    if r.has("images"):
        i = r.table("images")
        i.only(("path", "extensions", "max_bytes"))
        images = i.uri("path")
        exts = i.strings("extensions") or exts
        max_bytes = i.integer("max_bytes", max_bytes, 1, 1 << 31)
    else:
        rows = _table(r, "rows", filtered=True)
    key_field = r.column("key_field", rows.key[0] if rows and len(rows.key) == 1 else "key")
    min_score = r.number("min_score", None)
    return Dataset(
        **common,
        key_field=key_field,
        batch_field=r.column("batch_field", "keys"),
        list_field=r.column("list_field", "labels"),
        entry_field=r.column("label_field", "label"),
        images=images,
        rows=rows,
        image_extensions=exts,
        max_image_bytes=max_bytes,
        min_score=min_score,
    )


def _band(r: _Reader, key: str, default: tuple[float, float]) -> tuple[float, float]:
    value = r._get(key, list, "a list [low, high]", list(default))
    if len(value) != 2 or not all(isinstance(v, int | float) for v in value) or value[0] > value[1]:
        raise r.error(r.path_of(key), f"must be [low, high] with low <= high; got {value!r}")
    return float(value[0]), float(value[1])


def _gates(r: _Reader) -> Gates:
    g = r.table("gates")
    g.only(("enabled", "rows", "coverage", "drift", "payload_size", "sample"))
    coverage = g.number("coverage", Gates.coverage)
    drift = g.number("drift", Gates.drift)
    if coverage is None or not 0 <= coverage <= 1:
        raise g.error(g.path_of("coverage"), "must be a share from 0 to 1")
    if drift is None or drift < 0:
        raise g.error(g.path_of("drift"), "must be a number of at least 0")
    return Gates(
        enabled=g.flag("enabled", True),
        rows=_band(g, "rows", Gates.rows),
        coverage=coverage,
        drift=drift,
        payload_size=_band(g, "payload_size", Gates.payload_size),
        sample=g.integer("sample", Gates.sample, 10, 100_000),
    )


def _training(r: _Reader) -> Training:
    t = r.table("training")
    t.only(("command", "entry", "heldout", "label", "metric", "max_regression"))
    command, entry = t.strings("command"), t.text("entry")
    if bool(command) == bool(entry):
        raise t.error(t.at, "declare the training step as a command or an entry, not both")
    if entry and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", entry):
        raise t.error(t.path_of("entry"), f"must be module:function; got {entry!r}")
    if command and not any("{output}" in part for part in command):
        raise t.error(t.path_of("command"), "must pass {output}, where the model is written")
    regression = t.number("max_regression", Training.max_regression)
    if regression is None or not 0 <= regression <= 1:  # NaN fails too
        raise t.error(t.path_of("max_regression"), MAX_REGRESSION_RULE)
    return Training(
        command=command,
        entry=entry,
        heldout=_table(t, "heldout", key_required=False),
        label=t.column("label", "label"),
        metric=t.choice("metric", ("auc", "map"), "auc"),
        max_regression=regression,
    )
