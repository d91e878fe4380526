"""A JSON column packed a batch at once (prescore.encoding.json_lists): the same payloads,
entry table and frames as the row by row path for every batch it packs, and every batch
whose text it would not write back byte for byte left to that path."""

from __future__ import annotations

import json
import random

import orjson
import pyarrow as pa
import pytest

from prescore.data.datasets import Dataset
from prescore.encoding import compact
from prescore.encoding.arrow_lists import Packing
from prescore.encoding.json_lists import pack_json_batch
from prescore.encoding.keys import KeyForm
from prescore.encoding.published_lists import ListCompactor
from prescore.publishing.parquet import _Rows

STAMP = {"model": "weekly", "model_version": "3", "scored_at": "2026-12-01T10:00:00Z"}
DATASET = Dataset(name="news", kind="external", key_field="user_id", entry_field="hotel_id")
SHAPE = ("user_id", "items", "hotel_id")
NAMES = ["Hôtel ☀", 'x"y\\z', "tab\there\x01", "a/b", ""]
AWKWARD = ['a},{"b', ',"score":0.5}', "}]", "],"]  # the row by row path's separators


def _row_by_row(keys: list[str], texts: list[str]) -> tuple[list[tuple[str, bytes]], _Rows]:
    rows = _Rows(DATASET, "user_id", "payload", (), STAMP)
    return [rows.payload(k, t) for k, t in zip(keys, texts, strict=True)], rows


def _at_once(keys: list[object], texts: list[str]) -> tuple[object, ListCompactor]:
    lists = ListCompactor("user_id", "items")
    got = pack_json_batch(pa.array(keys), pa.array(texts), Packing(SHAPE, STAMP, KeyForm(), lists))
    return got, lists


def _served(stored: list[tuple[str, bytes]], lists: ListCompactor) -> list[bytes]:
    frames = lists.frames()
    return [compact.decode(p, k, frames) if compact.is_compact(p) else p for k, p in stored]


def _same_as_row_by_row(keys: list[str], texts: list[str], exact: bool = True) -> None:
    """The batch packed at once serves each row's text as the row by row path serves it;
    ``exact``: in the same bytes, entry table and frames too (every row of that path
    compact: it keeps as JSON a row whose strings hold its own separators)."""
    got, lists = _at_once(list(keys), texts)
    expected, rows = _row_by_row(keys, texts)
    assert isinstance(got, list) and all(compact.is_compact(p) for _, p in got)
    assert _served(got, lists) == _served(expected, rows.compactor)
    if exact:
        assert got == expected and lists.frames() == rows.compactor.frames()


def _entries(rng: random.Random, names: list[str] = NAMES) -> list[dict[str, object]]:
    return [
        {
            "hotel_id": f"h{rng.randrange(50)}",
            "name": rng.choice(names),
            "price": rng.randrange(3),
            "ok": rng.choice([True, False]),
            "score": round(rng.random(), 4),
        }
        for _ in range(rng.randrange(0, 12))
    ]


@pytest.mark.parametrize(
    "around",
    [
        {},  # the list alone: the key and the stamp added
        {"model": "daily"},  # a stamp of its own, the rest added
        {**STAMP, "model": "other"},  # a stamp of its own, a date-like text kept text
        {"region": "eu", "rank": 3},  # fields of its own after the list
    ],
)
@pytest.mark.parametrize("keyed", [False, True])
def test_a_batch_is_packed_as_the_row_by_row_path_packs_each_row(
    around: dict[str, object], keyed: bool
) -> None:
    rng = random.Random(7)
    keys = [f"u{i}" for i in range(300)]
    texts = [
        orjson.dumps(
            {**({"user_id": k} if keyed else {}), "items": _entries(rng), **around}
        ).decode()
        for k in keys
    ]
    _same_as_row_by_row(keys, texts)


def test_strings_holding_the_separators_are_packed_and_served_as_sent() -> None:
    rng = random.Random(9)
    keys = [f"u{i}" for i in range(200)]
    texts = [orjson.dumps({"items": _entries(rng, NAMES + AWKWARD)}).decode() for _ in keys]
    _same_as_row_by_row(keys, texts, exact=False)


def test_rows_with_stamps_of_their_own_each_get_their_frame() -> None:
    keys = [f"u{i}" for i in range(40)]
    texts = [
        orjson.dumps({"items": [{"hotel_id": "h1", "score": 0.5}], "model": f"m{i % 3}"}).decode()
        for i in range(40)
    ]
    _same_as_row_by_row(keys, texts)
    _, lists = _at_once(list(keys), texts)
    assert len(lists.frames()) == 3


ONE = {"hotel_id": "h1", "price": 80, "score": 0.5}


@pytest.mark.parametrize(
    "texts",
    [
        [json.dumps({"items": [ONE]})],  # spaces after separators: not orjson's text
        [orjson.dumps({"items": [ONE]}).decode() + " "],
        [orjson.dumps({"items": [ONE, {**ONE, "score": 1}]}).decode()],  # 1 where 1.0 would be
        [orjson.dumps({"items": [ONE, {"price": 80, "hotel_id": "h2", "score": 0.5}]}).decode()],
        [orjson.dumps({"items": [ONE, {"hotel_id": "h2", "score": 0.5}]}).decode()],  # no price
        [orjson.dumps({"model": "m", "items": [ONE]}).decode()],  # a field before the list
        [orjson.dumps({"user_id": "u9", "items": [ONE]}).decode()],  # another key
        [orjson.dumps({"items": [ONE], "user_id": "u1"}).decode()],  # the key after the list
        [orjson.dumps({"items": [{**ONE, "name": "a/b"}]}).decode().replace("/", "\\/")],
        [orjson.dumps({"items": [ONE]}).decode().replace(",", ",\n", 1)],  # a line break
        ['{"items": [}'],  # not JSON
        ["[1, 2]"],  # not an object
        [orjson.dumps({"items": []}).decode()],  # no entry to learn the list's type from
        [orjson.dumps({"items": [{**ONE, "score": 0.12345}]}).decode()],  # not a tick
        [orjson.dumps({"items": [{**ONE, "tags": {"a": 1}}]}).decode()],  # nested
    ],
)
def test_a_batch_whose_text_would_not_come_back_the_same_goes_row_by_row(
    texts: list[str],
) -> None:
    got, lists = _at_once(["u1"] * len(texts), texts)
    assert got is None and lists.packed == 0 and lists.frames() == {}


def test_a_null_is_packed_as_the_null_it_is() -> None:
    text = orjson.dumps({"items": [ONE, {**ONE, "price": None}]}).decode()
    _same_as_row_by_row(["u1"], [text])


def test_a_key_the_bulk_check_refuses_goes_row_by_row() -> None:
    text = orjson.dumps({"items": [ONE]}).decode()
    assert _at_once(["bad\tkey"], [text])[0] is None
    assert _at_once([None], [text])[0] is None


def test_an_integer_key_column_is_packed_under_its_digits() -> None:
    text = orjson.dumps({"items": [ONE]}).decode()
    got, _ = _at_once([7, 12], [text, text])
    assert got is not None and [k for k, _ in got] == ["7", "12"]


def test_a_stamp_named_as_the_key_field_is_not_added_twice() -> None:
    dataset = Dataset(name="news", kind="external", key_field="model", entry_field="hotel_id")
    text = orjson.dumps({"items": [ONE]}).decode()
    rows = _Rows(dataset, "model", "payload", (), STAMP)
    expected = [rows.payload("u1", text)]
    lists = ListCompactor("model", "items")
    shape = ("model", "items", "hotel_id")
    packing = Packing(shape, STAMP, KeyForm(), lists)
    got = pack_json_batch(pa.array(["u1"]), pa.array([text]), packing)
    assert got is not None and _served(got, lists) == _served(expected, rows.compactor)
    assert _served(got, lists)[0].count(b'"model"') == 1


@pytest.mark.parametrize(
    "texts",
    [
        ["null"],  # a null at the start of a block crashes pyarrow 26's reader
        [orjson.dumps({"items": [ONE]}).decode(), "null"],
        ["{}", "{}"],
        [orjson.dumps({"items": [ONE]}).decode().replace(",", ",\r", 1)],
        [
            orjson.dumps({"items": [ONE], "deep": "x"})
            .decode()
            .replace('"x"', "[" * 3000 + "]" * 3000)
        ],
    ],
)
def test_odd_texts_go_row_by_row_without_reaching_the_reader(texts: list[str]) -> None:
    got, lists = _at_once(["u1"] * len(texts), texts)
    assert got is None and lists.packed == 0


def test_rows_of_ever_new_fields_go_row_by_row() -> None:
    def text(i: int) -> str:  # a map written as an object: a field of its own each row
        return orjson.dumps({"items": [ONE], "why": {f"h{i}": 0.5}}).decode()

    few = [text(i) for i in range(10)]  # new fields after the first rows: the read fails
    assert _at_once(["u1"] * 200, few + [text(1000 + i) for i in range(190)])[0] is None
    many = [text(i) for i in range(300)]  # more fields than a batch is packed with
    assert _at_once(["u1"] * 300, many)[0] is None


def test_a_large_string_column_is_packed() -> None:
    texts = [orjson.dumps({"items": [ONE]}).decode()] * 3
    lists = ListCompactor("user_id", "items")
    packing = Packing(SHAPE, STAMP, KeyForm(), lists)
    got = pack_json_batch(pa.array(["u1", "u2", "u3"]), pa.array(texts, pa.large_string()), packing)
    expected, _ = _row_by_row(["u1", "u2", "u3"], texts)
    assert got == expected
