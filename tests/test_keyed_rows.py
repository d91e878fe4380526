"""Live inference's keyed reads of a table (fallback.keyed_rows) over tables as pandas and
pyarrow write them: integer, nullable and dictionary-encoded key columns, composite keys
with a separator inside a part, nanosecond timestamps, large lists, a folder of files
that grows while the fallback runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fallback.keyed_rows import KeyedRows
from prescore.data.datasets import Table
from prescore.data.storage import open_root
from prescore.encoding.keys import KeyForm
from prescore.encoding.table_keys import key_texts
from prescore.errors import Unavailable
from tests.frames import write_frame


def test_integer_keys_of_a_pandas_table_are_their_digits(tmp_path: Path) -> None:
    path = tmp_path / "readers.parquet"
    write_frame(
        pd.DataFrame(
            {
                "reader_id": [17, -3, 10**15],
                "country": pd.Categorical(["nl", "de", "nl"]),  # dictionary-encoded in the file
                "signed_up": pd.to_datetime(["2024-01-02 03:04:05.123456789"] * 3),
            }
        ),
        path,
    )
    rows = KeyedRows(Table(path=str(path), key=("reader_id",)), KeyForm())
    found = rows.get(["17", "-3", str(10**15), "017", "x", "17.0"])
    assert sorted(found) == sorted(["-3", "17", str(10**15)])  # "017" spells no integer
    assert found["17"]["country"] == "nl" and isinstance(found["17"]["country"], str)
    assert found["17"]["signed_up"] == pd.Timestamp("2024-01-02 03:04:05.123456789").value


def test_a_nullable_integer_key_column_with_gaps_and_ids_past_2_53(tmp_path: Path) -> None:
    """pandas holds such a column as floats, which round ids past 2**53 onto their
    neighbours' keys: the key text is made from Arrow, exactly."""
    path = tmp_path / "t.parquet"
    big = 2**62 + 1
    frame = pd.DataFrame({"id": pd.array([1, None, big], dtype="Int64"), "v": [0.1, 0.2, 0.3]})
    write_frame(frame, path)
    rows = KeyedRows(Table(path=str(path), key=("id",)), KeyForm())
    found = rows.get(["1", str(big), str(big - 1), "2"])
    assert {k: r["v"] for k, r in found.items()} == {"1": 0.1, str(big): 0.3}
    assert key_texts(pq.read_table(path), ["id"], KeyForm()) == ["1", None, str(big)]
    # digits past any integer column's range, or a column of no key type: no row, no error
    assert rows.get(["9" * 20, "-" + "9" * 20]) == {}
    floats = tmp_path / "f.parquet"
    write_frame(pd.DataFrame({"id": [1.0, 2.0], "v": [1, 2]}), floats)
    assert KeyedRows(Table(path=str(floats), key=("id",)), KeyForm()).get(["1"]) == {}


def test_a_composite_key_with_separators_inside_its_parts(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    table = pa.table(
        {
            "customer": pa.array(["a|b", "x\\y", "ns:1 é"]).dictionary_encode(),
            "market": ["nl", "de", "nl"],
            "picked": pa.array([["p1"], ["p2", "p3"], []], pa.large_list(pa.string())),
        }
    )
    pq.write_table(table, path)
    form = KeyForm(2)
    rows = KeyedRows(Table(path=str(path), key=("customer", "market")), form)
    wanted = [form.of_values(["a|b", "nl"]), form.of_values(["x\\y", "de"]), "a|b|nl"]
    found = rows.get(wanted)
    assert sorted(found) == sorted(wanted[:2])  # "a|b|nl" is three parts: no row's key
    assert list(found[wanted[1]]["picked"]) == ["p2", "p3"]
    assert rows.get([form.of_values(["x\\y", "nl"])]) == {}  # each part must match


def test_a_file_added_to_a_folder_table_is_read_by_the_next_request(tmp_path: Path) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    write_frame(pd.DataFrame({"user_id": ["u1", "u2"], "age": [30, 40]}), folder / "a.parquet")
    rows = KeyedRows(Table(path=str(folder), key=("user_id",)), KeyForm())
    assert rows.get(["u3"]) == {}
    unfinished = folder / "_temporary" / "0" / "task"  # a writer's, not yet committed
    unfinished.mkdir(parents=True)
    (unfinished / "part-0.parquet").write_bytes(b"half a file")
    assert rows.get(["u3", "u1"]) == {"u1": {"user_id": "u1", "age": 30}}
    write_frame(pd.DataFrame({"user_id": ["u3"], "age": [50]}), folder / "b.parquet")
    assert rows.get(["u3", "u1"])["u3"]["age"] == 50
    assert rows.first() is not None


def test_rows_are_read_a_row_group_at_a_time_skipping_those_statistics_rule_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sorted.parquet"
    ids = [f"u{i:05d}" for i in range(20_000)]
    pq.write_table(pa.table({"user_id": ids, "n": list(range(20_000))}), path, row_group_size=1000)
    rows = KeyedRows(Table(path=str(path), key=("user_id",)), KeyForm())
    assert {k: r["n"] for k, r in rows.get(["u00007", "u19999", "v1"]).items()} == {
        "u00007": 7,
        "u19999": 19_999,
    }
    data = rows._dataset()  # what a read touches: the row groups that may hold a key
    where = rows._filter(data.schema, {"u00007"})
    groups = [g for f in data.get_fragments() for g in f.split_by_row_group(filter=where)]
    assert len(groups) == 1


def test_a_table_that_cannot_be_read_is_unavailable_not_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_frame(pd.DataFrame({"id": ["a"], "v": [1]}), path)
    rows = KeyedRows(Table(path=str(path), key=("id",)), KeyForm())
    write_frame(pd.DataFrame({"other": ["a"], "v": [1]}), path)  # rewritten without its key
    for broken in (None, b"not parquet any more"):
        if broken is not None:
            path.write_bytes(broken)
        with pytest.raises(Unavailable) as info:
            rows.get(["a"])
        assert info.value.code == "inputs_unavailable"
        assert str(path) not in info.value.message and str(path) in info.value.cause
        assert rows.first() is None or broken is None


def test_an_hdfs_table_is_copied_file_by_file_and_its_new_rows_read_after_a_sync(
    tmp_path: Path,
) -> None:
    """An hdfs:// table (the WebHDFS test server): a file added is copied at the next
    maintain (not the whole table again), a rewritten one copied again, a removed one
    dropped, a writer's _temporary/ never; with the store down, the last copy is read."""
    from tests.webhdfs_server import WebHdfsServer

    namenode = tmp_path / "namenode"
    folder = namenode / "users"
    folder.mkdir(parents=True)
    write_frame(pd.DataFrame({"user_id": ["u1", "u2"], "age": [30, 40]}), folder / "a.parquet")
    with WebHdfsServer(namenode) as server:
        table = Table(path=f"hdfs://127.0.0.1:{server.port}/users", key=("user_id",))
        rows = KeyedRows(table, KeyForm(), timeout_s=5)
        assert rows.get(["u1", "u3"]) == {"u1": {"user_id": "u1", "age": 30}}
        copied = Path(rows._mirror.files[0])  # type: ignore[union-attr]
        before = copied.stat().st_ino
        write_frame(pd.DataFrame({"user_id": ["u3"], "age": [50]}), folder / "b.parquet")
        (folder / "_temporary").mkdir()
        (folder / "_temporary" / "part-9.parquet").write_bytes(b"half a file")
        assert rows.get(["u3"]) == {}  # not copied yet
        rows.maintain()
        assert rows.get(["u3", "u1"])["u3"]["age"] == 50
        assert copied.stat().st_ino == before  # a.parquet was not copied again
        assert len(rows._mirror.files) == 2  # type: ignore[union-attr]
        write_frame(pd.DataFrame({"user_id": ["u1"], "age": [31]}), folder / "a.parquet")
        (folder / "b.parquet").unlink()
        rows.maintain()
        assert rows.get(["u1", "u2", "u3"]) == {"u1": {"user_id": "u1", "age": 31}}
        backend = open_root(table.path, timeout_s=5).backend
        with pytest.raises(OSError, match=r"WebHDFS read of /users/gone\.parquet"):
            backend.download_file("/users/gone.parquet", tmp_path / "gone.parquet")
    rows.maintain()  # the store is gone: logged, the last copy still read
    assert rows.get(["u1"]) == {"u1": {"user_id": "u1", "age": 31}}
