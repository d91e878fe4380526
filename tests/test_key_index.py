"""The on-disk key index of live inference's keyed reads (fallback.key_index): it answers
exactly what a scan of the table answers (repeated keys, composite keys with separators,
integer keys, rows without a key), is used beside files added since it was built, is
dropped when a file it was built from changes, and reads stay right while it is rebuilt."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fallback import key_index
from fallback.keyed_rows import KeyedRows
from prescore.data.datasets import Table
from prescore.encoding.keys import KeyForm
from prescore.encoding.table_keys import key_text_array, key_texts
from tests.frames import write_frame

AWKWARD = ["a|b", "x\\y", "ns:1 é", "-17", "{x}", "#5", "🙂", "a\\|b", "", "tab\there"]


@pytest.fixture(autouse=True)
def small_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets, row groups and batches of a few rows, so a small table spans many."""
    monkeypatch.setattr(key_index, "BUCKET_ROWS", 40)
    monkeypatch.setattr(key_index, "GROUP_ROWS", 8)
    monkeypatch.setattr(key_index, "BATCH_ROWS", 64)


def _rows(table: Table, form: KeyForm | None = None) -> KeyedRows:
    return KeyedRows(table, form or KeyForm(), index_min_rows=1, build_spacing=0.0)


def _plain(found: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Rows comparable with ==: a list column's arrays as lists."""
    return {
        k: {c: list(v) if isinstance(v, np.ndarray) else v for c, v in row.items()}
        for k, row in found.items()
    }


def test_key_text_in_arrow_is_the_key_text_of_every_valid_key() -> None:
    table = pa.table(
        {
            "s": pa.array([*AWKWARD, None]).dictionary_encode(),
            "i": pa.array([7, -3, 2**62, None, 0, 1, 2, 3, 4, 5, 6], pa.int64()),
            "u": pa.array([2**64 - 1] * 11, pa.uint64()),
        }
    )
    for columns, form in (
        (["s"], KeyForm()),
        (["s"], KeyForm(contexts=True)),
        (["i"], KeyForm()),
        (["s", "i"], KeyForm(2)),
        (["u", "s"], KeyForm(2)),
    ):
        checked = key_texts(table, columns, form)
        made = key_text_array(table, columns, form).to_pylist()
        assert all(c == m for c, m in zip(checked, made, strict=True) if c is not None)
        assert checked.count(None) >= 1  # the corpus holds keys the checked form refuses
    assert key_text_array(table, ["s", "i"], KeyForm(2)).to_pylist()[:2] == ["a\\|b|7", "x\\\\y|-3"]


def _table(path: Path, n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    ids = [f"c{rng.randrange(n // 2)}" for _ in range(n)]  # many keys repeated
    frame = pd.DataFrame(
        {
            "customer": ids,
            "market": [rng.choice(AWKWARD[:4]) for _ in range(n)],
            "n": list(range(n)),
            "tags": [[str(i)] * (i % 3) for i in range(n)],
        }
    )
    frame.loc[::97, "customer"] = None  # rows without a key: in no bucket
    write_frame(frame, path, row_group_size=50)
    return frame


def test_the_index_answers_what_a_scan_of_the_table_answers(tmp_path: Path) -> None:
    form = KeyForm(2)
    frame = _table(tmp_path / "t.parquet", 1500, seed=1)
    rows = _rows(Table(path=str(tmp_path / "t.parquet"), key=("customer", "market")), form)
    keys = sorted(
        {
            form.of_values([c, m])
            for c, m in zip(frame.customer, frame.market, strict=True)
            if not pd.isna(c)  # None under pandas 2, NaN under pandas 3's str dtype
        }
    )
    asked = [*keys[::3], form.of_values(["absent", "a|b"]), "c1|x\\y|extra"]
    scanned = {k: _plain(rows.get([k])) for k in asked[:40]} | {"batch": _plain(rows.get(asked))}
    assert rows.reads["indexed"] == 0 and rows.maintain()
    for key, found in scanned.items():
        assert _plain(rows.get(asked if key == "batch" else [key])) == found
    assert rows.reads["indexed"] == 41 and rows.reads["scanned_files"] == 41  # before only
    first = frame.dropna().drop_duplicates(["customer", "market"])  # a repeated key's first
    some = first.iloc[0]
    got = rows.get([form.of_values([some.customer, some.market])])
    assert [r["n"] for r in got.values()] == [some.n]
    assert len(scanned["batch"]) == len(asked) - 2
    buckets = sorted(Path(rows._index._folder.name).iterdir())  # type: ignore[union-attr]
    assert len(buckets) > 10 and all(p.suffix == ".parquet" for p in buckets)


def test_files_added_since_the_index_are_scanned_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    old = pd.DataFrame({"user_id": [f"u{i}" for i in range(400)], "age": range(400)})
    write_frame(old, folder / "a.parquet")
    rows = _rows(Table(path=str(folder), key=("user_id",)))
    assert rows.maintain() and not rows.maintain()  # nothing new: not built again
    write_frame(
        pd.DataFrame({"user_id": ["u400", "u3"], "age": [1000, 1001]}), folder / "b.parquet"
    )
    got = rows.get(["u400", "u3", "u5"])
    assert {k: r["age"] for k, r in got.items()} == {"u400": 1000, "u3": 3, "u5": 5}
    assert rows.reads == {"indexed": 1, "scanned_files": 1}  # the new file only
    assert not rows.maintain()  # 2 rows new of 402: below a tenth, the index stays
    write_frame(
        pd.DataFrame({"user_id": [f"v{i}" for i in range(100)], "age": range(100)}),
        folder / "c.parquet",
    )
    assert rows.maintain()  # a quarter of the table new: built again, all of it
    assert rows.get(["v7", "u400"]).keys() == {"v7", "u400"}
    assert rows.reads == {"indexed": 2, "scanned_files": 1}


def test_a_file_rewritten_or_removed_stops_the_index_until_it_is_built_again(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    for name, age in (("a", 1), ("b", 2)):
        frame = pd.DataFrame({"user_id": [f"{name}{i}" for i in range(300)], "age": age})
        write_frame(frame, folder / f"{name}.parquet")
    rows = _rows(Table(path=str(folder), key=("user_id",)))
    assert not rows.index_ready()  # large enough to need an index (here: any size)
    assert rows.maintain() and rows.index_ready()
    write_frame(pd.DataFrame({"user_id": ["a1"], "age": [99]}), folder / "a.parquet")
    assert not rows.index_ready()  # stale: what the fallback's gauge reports
    assert rows.get(["a1", "a2", "b1"]) == {
        "a1": {"user_id": "a1", "age": 99},
        "b1": {"user_id": "b1", "age": 2},
    }
    assert rows.reads == {"indexed": 0, "scanned_files": 2}  # the stale index is not read
    (folder / "b.parquet").unlink()
    assert rows.maintain()
    assert rows.get(["a1", "b1"]) == {"a1": {"user_id": "a1", "age": 99}}
    assert rows.reads == {"indexed": 1, "scanned_files": 2}


def test_reads_stay_right_while_the_index_is_built_again(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    ids = [f"k{i}" for i in range(2000)]
    pq.write_table(pa.table({"id": ids, "v": range(2000)}), path, row_group_size=100)
    rows = _rows(Table(path=str(path), key=("id",)))
    wrong: list[object] = []
    stop = threading.Event()

    def read(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            keys = [f"k{rng.randrange(2100)}" for _ in range(5)]
            try:
                got = {k: r["v"] for k, r in rows.get(keys).items()}
            except Exception as exc:  # any failure is the test's failure
                wrong.append(exc)
                continue
            want = {k: int(k[1:]) for k in keys if int(k[1:]) < 2000}
            if got != want:
                wrong.append((keys, got))

    readers = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for t in readers:
        t.start()
    try:
        built = sum(rows.maintain(force=True) for _ in range(6))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert built == 6 and rows.reads["indexed"] > 0
    assert wrong == []
    rows.close()
    assert rows.get(["k5"]) == {"k5": {"id": "k5", "v": 5}}  # scanned again


def test_a_small_table_is_not_indexed(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_frame(pd.DataFrame({"id": ["a", "b"], "v": [1, 2]}), path)
    rows = KeyedRows(Table(path=str(path), key=("id",)), KeyForm())
    assert rows.index_ready()  # small: a scan is as it should be
    assert not rows.maintain() and rows.maintain(force=True)
    assert rows.get(["b"]) == {"b": {"id": "b", "v": 2}} and rows.reads["indexed"] == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "orc"])
def test_text_and_orc_tables_are_indexed_too(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame({"id": [f"k{i}" for i in range(300)], "v": range(300)})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_orc(path)
    rows = _rows(Table(path=str(path), key=("id",), format=fmt))
    scanned = rows.get(["k7", "k299", "k300"])
    assert rows.maintain()
    assert (
        rows.get(["k7", "k299", "k300"])
        == scanned
        == {
            "k7": {"id": "k7", "v": 7},
            "k299": {"id": "k299", "v": 299},
        }
    )
    assert rows.reads == {"indexed": 1, "scanned_files": 1}


def test_a_table_gone_or_unreadable_is_logged_and_retried_later_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upkeep runs in a background thread: a table removed (a Spark overwrite in
    progress) is logged, and tried again only after RETRY_S, not on every pass."""
    folder = tmp_path / "users"
    folder.mkdir()
    write_frame(pd.DataFrame({"user_id": ["u1", "u2"], "age": [1, 2]}), folder / "a.parquet")
    rows = KeyedRows(Table(path=str(folder), key=("user_id",)), KeyForm(), index_min_rows=1)
    for part in folder.iterdir():
        part.unlink()
    with caplog.at_level("WARNING"):
        assert [rows.maintain() for _ in range(3)] == [False] * 3
    said = [r.getMessage() for r in caplog.records if "not indexed" in r.getMessage()]
    assert len(said) == 1 and "no such table" in said[0], said
    assert not rows.index_ready()


def test_scratch_folders_of_gone_processes_are_removed(tmp_path: Path) -> None:
    from fallback import scratch

    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # never a live pid
    for name in (
        f"prescore-index-{gone}-abc",
        f"prescore-table-{gone}-x",
        f"prescore-index-{os.getpid()}-mine",
        "prescore-other-1-y",
    ):
        (tmp_path / name).mkdir()
    removed = scratch.remove_orphans(str(tmp_path))
    assert sorted(removed) == [f"prescore-index-{gone}-abc", f"prescore-table-{gone}-x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"prescore-index-{os.getpid()}-mine",
        "prescore-other-1-y",
    ]
