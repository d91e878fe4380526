"""prescore's Python API: what a notebook or a team's own code calls.

    from prescore.api import Prescore

    ps = Prescore(config="datasets.toml", redis_url="redis://127.0.0.1:6379/0")
    report = ps.publish("news", df)            # pandas, pyarrow or Spark DataFrame, or a path
    ps.get("news", "reader-1")                 # the answer readers get, or None
    ps.get_df("news", ["reader-1", "reader-2"])  # one row per key, as pandas
    ps.rollback("news")                        # the previous version is live again

Settings come as they do for every entry point (environment, then the keyword
arguments, which are checked as their flags are); a bad one raises ConfigError naming
it. Errors are prescore's own (prescore.errors): ``InvalidInput`` for a bad key,
``NotFound`` for no such version, ``StoreUnavailable`` when Redis cannot be reached.
Bulk scoring with the team's model is Spark's: ``jobs.score.score(spark, "name")``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from prescore.data.datasets import Dataset
from prescore.encoding.compact import Frame
from prescore.encoding.registry_entry import VersionInfo
from prescore.settings import Settings
from prescore.store import deltas, values
from prescore.store.canaries import Canary, served_by_canary
from prescore.store.redis_client import REDIS_OUTAGES, Client, connect, store_errors
from prescore.store.values import Placed
from prescore.store.versions import Versions

if TYPE_CHECKING:
    import pandas as pd

    from prescore.publishing.parquet import PublishReport

__all__ = ["Prescore", "PublishReport", "VersionInfo"]
F = TypeVar("F", bound=Callable[..., Any])
_FRAMES_KEPT = 8  # versions whose frames a Prescore object keeps


def _redis_errors(method: F) -> F:
    """``method`` with a Redis outage raised as StoreUnavailable (as the CLI says it)."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with store_errors(method.__name__.replace("_", " "), REDIS_OUTAGES):
            return method(*args, **kwargs)

    return cast(F, wrapped)


def __getattr__(name: str) -> Any:
    if name == "PublishReport":  # the report publish returns, from the tables extra
        from prescore.publishing.parquet import PublishReport

        return PublishReport
    raise AttributeError(f"module 'prescore.api' has no attribute {name!r}")


class Prescore:
    """One store's datasets: publish, read, list, roll back and collect versions."""

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        config: str | None = None,
        model_store: str | None = None,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        base = settings or Settings.from_env(env)
        self.settings = base.with_overrides(redis_url, model_store, config, env)
        self._client: Client | None = None
        # each version's frames, loaded once: a version id never changes meaning
        self._frames: dict[tuple[str, str], dict[int, Frame]] = {}

    @property
    def client(self) -> Client:
        """The Redis client, connected on first use (bounded by the settings' timeouts)."""
        if self._client is None:
            self._client = connect(self.settings.redis)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Prescore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what is declared and published ----------------------------------------------------

    def datasets(self) -> list[str]:
        """The declared datasets' names."""
        return self.settings.catalog.names()

    def dataset(self, name: str) -> Dataset:
        """A dataset's declaration; ConfigError (``unknown_dataset``) if none is declared."""
        return self.settings.catalog.get(name)

    @_redis_errors
    def versions(self, dataset: str) -> list[VersionInfo]:
        """Every version in the dataset's registry, newest first."""
        return self._versions(dataset).all()

    @_redis_errors
    def live_version(self, dataset: str) -> str | None:
        """The version readers are served now, or None before the first publish."""
        return self._versions(dataset).current()

    # -- reading -----------------------------------------------------------------------------

    def get(
        self, dataset: str, key: object, *, version: str | None = None
    ) -> dict[str, Any] | None:
        """The answer readers get for ``key`` (a dict), or None where the version has none."""
        return self.get_many(dataset, [key], version=version)[0]

    @_redis_errors
    def get_many(
        self, dataset: str, keys: Sequence[object], *, version: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Each key's answer as readers get it (from the live version and its deltas, or
        the canary's version for the keys a running canary answers), or from ``version``,
        in the order asked, None where it has none. Keys are checked as the lookup checks
        them (InvalidInput for one it would refuse)."""
        form = self.dataset(dataset).key_form
        checked = [form.check_given(k) for k in keys]
        v = self._versions(dataset)
        canary, theirs = ("", set()) if version else served_by_canary(self.client, dataset, checked)
        ours = [k for k in checked if k not in theirs]
        found: dict[str, bytes | None] = {}
        for side, asked in ((version, ours), (canary, sorted(theirs))):
            if not asked:
                continue
            where, over = deltas.layers(v, side or None, self._frames_of)  # NotFound: none
            read = values.read(self.client, where, asked, self._frames_of(where), over)
            found.update(zip(asked, read, strict=True))
        return [None if (raw := found[k]) is None else json.loads(raw) for k in checked]

    def _frames_of(self, where: Placed) -> dict[int, Frame]:
        """The frames of ``where``, kept once found (none yet: asked again next time, as a
        version being written has its frames only once written)."""
        found = self._frames.get((where.dataset, where.version))
        if found is None:
            found = values.load_frames(self.client, where)
            if found:
                if len(self._frames) >= _FRAMES_KEPT:
                    self._frames.clear()
                self._frames[(where.dataset, where.version)] = found
        return found

    def get_df(
        self, dataset: str, keys: Sequence[object], *, version: str | None = None
    ) -> pd.DataFrame:
        """One row per key asked: the key, then the answer's top-level fields (missing:
        null); ``found`` says which keys had an answer."""
        import pandas as pd

        key_field = self.dataset(dataset).key_field
        answers = self.get_many(dataset, keys, version=version)
        rows = [
            {key_field: key, "found": doc is not None, **(doc or {})}
            for key, doc in zip((str(k) for k in keys), answers, strict=True)
        ]
        return pd.DataFrame(rows, columns=_columns(key_field, answers))

    # -- writing -----------------------------------------------------------------------------

    @_redis_errors
    def publish(self, dataset: str, data: Any, **options: Any) -> PublishReport:
        """Publish ``data`` as a new version of ``dataset``, switched in atomically once
        written and gated: a parquet path (a file or a folder, local, ``hdfs://`` or
        ``s3://``, ``gs://``; a glob, local only), a pandas or pyarrow DataFrame, or a Spark
        DataFrame (collected to the driver through Arrow: for tables larger than the
        driver's memory, write parquet and pass its path).

        ``options`` are ``prescore publish``'s: ``key_column``, ``json_column``,
        ``columns``, ``model``, ``model_version``, ``max_bad``, ``force``, ``say`` (given
        each progress line; default ``print``; ``say=lambda line: None`` for none), ``bar``
        (a stream to draw a progress bar on instead, e.g. ``sys.stderr``), ``compact``
        (default True: lists stored as compact payloads where they allow it, served as
        the same JSON; False: every row stored as its JSON), ``incremental`` (add the
        rows to the live version as a delta instead: see :meth:`rollback_delta`),
        ``stage`` (gate the version and keep it beside the live one: see :meth:`canary`).
        The report
        says whether it was published (``published``), or held by the dataset's gates
        (``gated``)."""
        from prescore.publishing.parquet import publish_file, publish_rows  # the tables extra

        declared = self.dataset(dataset)
        options.setdefault("model", declared.model or "external")
        if isinstance(data, str | os.PathLike):
            stores = self.settings.models  # PRESCORE_WEBHDFS_URL and the timeout, as for models
            return publish_file(
                self.client,
                self.settings.store,
                declared,
                os.fspath(data),
                webhdfs_url=stores.webhdfs_url,
                timeout_s=stores.timeout_s,
                **options,
            )
        table, origin = _arrow(data)
        return publish_rows(self.client, self.settings.store, declared, table, origin, **options)

    @_redis_errors
    def rollback(
        self, dataset: str, to: str | None = None, *, dry_run: bool = False
    ) -> VersionInfo:
        """Make the previous published version (or ``to``) the live one; the one now live."""
        return self._versions(dataset, writes=True).rollback(to=to, dry_run=dry_run)

    @_redis_errors
    def rollback_delta(self, dataset: str, delta: str, *, dry_run: bool = False) -> VersionInfo:
        """Take one delta (an incremental publish) off the live version: readers get
        what they got before it for its keys; its entry as it was."""
        return self._versions(dataset, writes=True).drop_delta(delta, dry_run=dry_run)

    @_redis_errors
    def canary(
        self, dataset: str, version: str, percent: float, *, dry_run: bool = False
    ) -> Canary:
        """Serve a staged (``publish(..., stage=True)``) or published ``version`` to
        ``percent`` of keys beside the live version, chosen by a hash of the key, or
        change the share of the canary it already is (prescore.store.canaries)."""
        return self._versions(dataset, writes=True).canary(version, percent, dry_run=dry_run)

    @_redis_errors
    def promote(
        self,
        dataset: str,
        version: str,
        by: str = "",
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> VersionInfo:
        """Switch every reader to ``version``, the canary's; its entry as published.
        Refused for a version older than the live one, or gated against another live
        version, unless ``force``."""
        v = self._versions(dataset, writes=True)
        return v.promote(version, by, force=force, dry_run=dry_run)

    @_redis_errors
    def abort(self, dataset: str, *, dry_run: bool = False) -> Canary:
        """End the canary: every key gets the live version again; the canary ended."""
        return self._versions(dataset, writes=True).abort(dry_run=dry_run)

    @_redis_errors
    def gc(self, dataset: str, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Remove dead writers' versions and published ones beyond those kept (the live
        one never), and the keys of versions past keeping: what was done (``removed``:
        the versions reaped or retired), or with ``dry_run`` what would be."""
        v = self._versions(dataset, writes=True)
        if dry_run:
            return v.gc_plan()
        done = v.gc()
        return {"removed": done["reap"] + done["retire"] + done["retire_deltas"], **done}

    def _versions(self, dataset: str, writes: bool = False) -> Versions:
        self.dataset(dataset)  # an undeclared one: ConfigError naming it
        if writes:
            from prescore.store.redis_client import check_policy

            check_policy(self.client)  # a store that may evict versions is refused
        return Versions(self.client, dataset, self.settings.store)


def _columns(key_field: str, answers: Iterable[dict[str, Any] | None]) -> list[str]:
    """The key, ``found``, then every answer field in the order first seen."""
    seen = {key_field: None, "found": None}
    for doc in answers:
        seen.update(dict.fromkeys(doc or {}))
    return list(seen)


def _arrow(data: Any) -> tuple[Any, str]:
    """``data`` as a pyarrow Table, and how the registry's note names it."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data, f"from an Arrow table of {data.num_rows} rows"
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), f"from an Arrow batch of {data.num_rows} rows"
    if type(data).__module__.startswith("pyspark."):  # Spark's DataFrame (classic or Connect)
        table = data.toArrow()
        return table, f"from a Spark DataFrame of {table.num_rows} rows"
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
        return table, f"from a pandas DataFrame of {table.num_rows} rows"
    raise TypeError(
        f"cannot publish a {type(data).__name__}: give a parquet path, or a pandas, "
        "pyarrow or Spark DataFrame"
    )
