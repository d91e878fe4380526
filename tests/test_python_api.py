"""The Python API as a notebook uses it (``from prescore.api import Prescore``): publish a
DataFrame, read it back, roll back, collect; nothing but the public names. Real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import prescore.api
from prescore.api import Prescore
from prescore.errors import ConfigError, InvalidInput, NotFound, StoreUnavailable
from prescore.store.embedded_redis import free_port

NEWS = """
[datasets.news]
kind = "external"
key_field = "reader_id"
list_field = "articles"
entry_field = "article_id"
route = "news"
"""


@pytest.fixture()
def ps(redis_url: str, tmp_path: Path) -> Any:
    config = tmp_path / "datasets.toml"
    config.write_text(NEWS)
    with Prescore(config=str(config), redis_url=redis_url, env={}) as client:
        yield client


def _scores(score: float) -> pd.DataFrame:
    """Integer keys and a list of entries, as a team's pandas code makes them."""
    return pd.DataFrame(
        {
            "reader_id": [1, 2, 3],
            "articles": [[{"article_id": f"a{i}", "score": score}] for i in range(3)],
        }
    )


def test_a_notebook_publishes_reads_and_rolls_back(ps: Any) -> None:
    assert ps.datasets() == ["news"] and ps.live_version("news") is None
    with pytest.raises(NotFound):
        ps.get("news", 1)
    lines: list[str] = []
    checked = ps.publish("news", _scores(0.5), dry_run=True, say=lines.append)
    assert checked.dry_run and checked.rows == 3 and ps.live_version("news") is None
    first = ps.publish("news", _scores(0.5), model="weekly", model_version="1", say=lines.append)
    assert first.published and first.rows == 3 and first.bad == 0
    assert any("published version" in line for line in lines), lines
    # lists of 4-decimal scores are stored as compact payloads: their buckets stay
    # listpacks
    assert any("3 of them compact" in line for line in lines), lines
    assert not any("hashtables" in line for line in lines), lines
    assert ps.versions("news")[0].extra["buckets"]["hashtables"] == 0
    assert ps.live_version("news") == first.version
    got = ps.get("news", 2)
    assert got is not None and got["reader_id"] == "2"
    assert got["articles"] == [{"article_id": "a1", "score": 0.5}]
    assert (got["model"], got["model_version"]) == ("weekly", "1")
    assert ps.get("news", "2") == got  # an integer key and its text are one key
    assert ps.get("news", 99) is None

    # a second version from an Arrow table, stored as JSON: switched in whole; whole
    # JSON lists pass Redis' listpack bound, so their buckets are hashtables, which the
    # publish says and records
    table = pa.Table.from_pandas(_scores(0.9), preserve_index=False)
    said: list[str] = []
    second = ps.publish("news", table, say=said.append, compact=False)
    assert second.published and ps.live_version("news") == second.version
    assert any("sampled are hashtables, not listpacks" in line for line in said), said
    assert any("0 of them compact" in line for line in said), said
    assert ps.versions("news")[0].extra["buckets"]["hashtables"] == 1
    frame = ps.get_df("news", [3, 99])
    assert list(frame.columns[:2]) == ["reader_id", "found"]
    assert frame["reader_id"].tolist() == ["3", "99"] and frame["found"].tolist() == [True, False]
    assert frame.loc[0, "articles"] == [{"article_id": "a2", "score": 0.9}]
    assert ps.get("news", 3, version=first.version)["articles"][0]["score"] == 0.5

    listed = ps.versions("news")
    assert [v.version for v in listed] == [second.version, first.version]
    assert listed[0].note == "written from an Arrow table of 3 rows"

    assert ps.rollback("news", dry_run=True).version == first.version
    assert ps.live_version("news") == second.version  # a dry run changed nothing
    assert ps.rollback("news").version == first.version
    assert ps.live_version("news") == first.version
    assert ps.get("news", 3)["articles"][0]["score"] == 0.5
    planned = ps.gc("news", dry_run=True)
    assert planned["retire"] == [] and planned["reap"] == [] and planned["sweep"] == []
    assert not any(ps.gc("news").values())  # two versions: both kept, nothing to do
    with pytest.raises(NotFound):
        ps.get("news", 1, version="20000101T000000.000Z-000000")


def test_bad_input_is_refused_with_prescore_errors(ps: Any, redis_url: str) -> None:
    ps.publish("news", _scores(0.5), say=lambda line: None)
    with pytest.raises(InvalidInput) as bad_key:
        ps.get("news", "tab\there")
    assert bad_key.value.code == "invalid_id"
    with pytest.raises(ConfigError) as undeclared:
        ps.get("nope", 1)
    assert undeclared.value.code == "unknown_dataset"
    with pytest.raises(ConfigError) as bad_url:
        Prescore(redis_url="http://user:hunter2@x", env={})
    assert "--redis-url" in bad_url.value.message and "hunter2" not in bad_url.value.message
    down = Prescore(
        config=ps.settings.catalog.source, redis_url=f"redis://127.0.0.1:{free_port()}/0", env={}
    )
    with pytest.raises(StoreUnavailable):
        down.versions("news")
    with pytest.raises(TypeError, match="cannot publish a list"):
        ps.publish("news", [1, 2])
    # a version that lost a third of the live one's keys is held by the dataset's gates
    live = ps.live_version("news")
    renamed = _scores(0.5)
    renamed.loc[1, "reader_id"] = -1
    report = ps.publish("news", renamed, say=lambda line: None)
    assert report.gated and not report.published and ps.live_version("news") == live
    assert ps.get("news", -1) is None and ps.get("news", -1, version=report.version) is not None


def test_the_public_names() -> None:
    assert prescore.api.__all__ == ["Prescore", "PublishReport", "VersionInfo"]
    assert all(hasattr(prescore.api, name) for name in prescore.api.__all__)
    assert (Path(prescore.__file__).parent / "py.typed").exists()


def test_a_spark_dataframe_is_published(ps: Any, spark: Any) -> None:
    frame = spark.createDataFrame(_scores(0.7))
    report = ps.publish("news", frame, say=lambda line: None)
    assert report.published and report.rows == 3
    assert ps.versions("news")[0].note == "written from a Spark DataFrame of 3 rows"
    assert ps.get("news", 1)["articles"] == [{"article_id": "a0", "score": 0.7}]
