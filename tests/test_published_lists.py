"""Compact payloads of published lists: pinned bytes, every payload decoded to exactly
the JSON text it was cut from, the rows that must stay JSON, the version's limits, and
a publish into a real Redis whose buckets stay listpacks."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from prescore.data.datasets import Dataset
from prescore.encoding import compact
from prescore.encoding.keys import KeyForm
from prescore.encoding.published_lists import ListCompactor
from prescore.publishing.parquet import publish_rows
from prescore.settings import Settings
from prescore.store import bucket_encodings, values
from prescore.store.versions import Versions

STAMP = {"model": "weekly", "model_version": "3", "scored_at": "2026-12-01T10:00:00Z"}


def _text(key: str, entries: list[dict[str, object]], **around: object) -> bytes:
    return orjson.dumps({"user_id": key, "items": entries, **(around or STAMP)})


def _entry(item: str, score: object, **extra: object) -> dict[str, object]:
    return {"hotel_id": item, **extra, "score": score}


def _decoded(lists: ListCompactor, key: str, stored: bytes) -> bytes:
    return compact.decode(stored, key, lists.frames())


def test_pinned_bytes_and_frame() -> None:
    lists = ListCompactor("user_id", "items")
    text = _text("u1", [_entry("h7", 0.9876, price=120), _entry("h2", 0.5, price=80)])
    stored = lists.pack("u1", text)
    # narrow, frame 0, entries 0 and 1, ticks 9876 and 5000
    assert stored == bytes.fromhex("01000000010094268813")
    (frame,) = lists.frames().values()
    assert frame.entries == (
        b'{"hotel_id":"h7","price":120,"score":',
        b'{"hotel_id":"h2","price":80,"score":',
    )
    assert frame.head_end == b',"items":['
    assert (
        frame.tail == b'],"model":"weekly","model_version":"3","scored_at":"2026-12-01T10:00:00Z"}'
    )
    assert _decoded(lists, "u1", stored) == text
    # the same entries in another row: indices into the one table
    again = lists.pack("u2", _text("u2", [_entry("h2", 0.25, price=80)]))
    assert again == bytes.fromhex("01000100c409") and lists.packed == 2


# Texts no cut at ",\"score\":" may split wrongly: quotes, braces and the separator
# itself inside strings, nested objects and lists, fields after the score.
AWKWARD_STRINGS = ['a},{"b', ',"score":0.5}', 'x"y\\z', "Hôtel ☀", "}]", "],", "{", ""]


def _random_entry(rng: random.Random) -> dict[str, object]:
    score = rng.choice(
        [round(rng.random(), 4), round(rng.random(), 4), 0.0, 1.0, 0.12345, 1, 2.5, -0.0, 5e-05]
    )
    extra = rng.choice(
        [
            {},
            {"price": rng.randrange(1000)},
            {"name": rng.choice(AWKWARD_STRINGS)},
            {"tags": [{"a": 1}, {"score": 0.5}]},
            {"m": {"x": 1, "score": 0.3}},
            {"variants": [{"v": 1, "score": 0.9}, {"v": 2}]},
            {"variants": [{"v": 1, "score": 0.5}]},
            {"flag": rng.choice([True, None, 1.0])},
        ]
    )
    entry: dict[str, object] = {"hotel_id": rng.choice([*AWKWARD_STRINGS, "h1", "h2"])}
    entry.update(extra)
    if rng.random() < 0.9:
        entry["score"] = score
    if rng.random() < 0.1:
        entry["after"] = 1  # a field after the score
    return entry


def test_every_stored_row_is_served_as_its_json_text() -> None:
    rng = random.Random(7)
    lists = ListCompactor("user_id", "items")
    rows = []
    for i in range(3000):
        key = rng.choice([f"u{i}", f'u"{i}', f"u\\{i}", f"ü{i}"])
        entries = [_random_entry(rng) for _ in range(rng.randrange(0, 5))]
        around = rng.choice(
            [STAMP, {"segment": rng.choice(AWKWARD_STRINGS), **STAMP}, {**STAMP, "source": "x"}]
        )
        doc: dict[str, object] = {"user_id": key}
        if rng.random() < 0.5:  # a field before the list
            doc["note"] = rng.choice(AWKWARD_STRINGS)
        doc.update({"items": entries, **around})
        rows.append((key, orjson.dumps(doc)))
    stored = [lists.pack(k, t) for k, t in rows]
    frames = lists.frames()
    packed = 0
    for (key, text), value in zip(rows, stored, strict=True):
        if value is text:
            continue
        packed += 1
        assert compact.decode(value, key, frames) == text, text
        whole = json.loads(text)
        assert "note" not in whole and "source" not in whole  # not after the list: JSON
        for k in range(1, len(whole["items"]) + 1):  # a lookup's cut: whole entries, JSON
            served = json.loads(compact.decode(value, key, frames, limit=k))
            assert served == {**whole, "items": whole["items"][:k]}, text
    assert packed == lists.packed and 200 < packed < 3000


@pytest.mark.parametrize(
    "entries",
    [
        [_entry("h1", 1)],  # an integer score: its text is not a tick's
        [_entry("h1", 0.12345)],  # five decimals
        [_entry("h1", 1.5)],  # beyond 1
        [_entry("h1", -0.0)],  # "-0.0" is no tick's text
        [{"score": 0.5, "hotel_id": "h1"}],  # the score not last
        [_entry("h1", 0.5, tags=[{"a": 1}, {"b": 2}])],  # "},{" inside an entry
        [{"hotel_id": "h1"}],  # no score
        ["h1"],
        # a nested list whose entries have scores: cut inside the entry, so a lookup's
        # cut at k entries would not be JSON
        [_entry("a", 0.8, variants=[{"v": 1, "score": 0.9}, {"v": 2}]), _entry("b", 0.7)],
        [_entry("a", 0.8), {"hotel_id": "b", "variants": [{"v": 1, "score": 0.5}]}],
    ],
)
def test_lists_that_do_not_cut_cleanly_stay_json(entries: list[object]) -> None:
    lists = ListCompactor("user_id", "items")
    text = orjson.dumps({"user_id": "u1", "items": entries, **STAMP})
    assert lists.pack("u1", text) is text and lists.packed == 0 and lists.frames() == {}


def test_a_key_or_list_not_where_the_frame_has_it_stays_json() -> None:
    lists = ListCompactor("user_id", "items")
    entries = [_entry("h1", 0.5)]
    # a field before the list (the lookup reads scored_at after it), a field whose name
    # ends like the list's, a source the lookup says itself
    for doc in (
        {"user_id": "u1", "scored_at": "2026-01-01T00:00:00Z", "items": entries},
        {"user_id": "u1", 'a"items': entries, "items": entries},
        {"user_id": "u1", "items": entries, "source": "live"},
    ):
        text = orjson.dumps(doc)
        assert lists.pack("u1", text) is text, doc
    other_key = orjson.dumps({"user_id": "someone else", "items": entries})
    assert lists.pack("u1", other_key) is other_key
    no_list = orjson.dumps({"user_id": "u1", "ranked": entries})
    assert lists.pack("u1", no_list) is no_list
    empty = orjson.dumps({"user_id": "u1", "items": [], **STAMP})
    stored = lists.pack("u1", empty)
    assert len(stored) == 2 and _decoded(lists, "u1", stored) == empty


def test_a_full_entry_table_or_frame_table_leaves_the_rest_json() -> None:
    lists = ListCompactor("user_id", "items", max_entries=2)
    first = _text("u1", [_entry("h1", 0.5), _entry("h2", 0.5)])
    assert lists.pack("u1", first) is not first
    third = _text("u2", [_entry("h1", 0.5), _entry("h3", 0.5)])
    assert lists.pack("u2", third) is third  # h3 has no room
    texts = [_text(f"u{i}", [_entry("h1", 0.5)], model="m", scored_at=str(i)) for i in range(300)]
    stored = [lists.pack(f"u{i}", t) for i, t in enumerate(texts)]
    assert len(lists.frames()) == compact.MAX_FRAMES
    assert [s is t for s, t in zip(stored, texts, strict=True)].index(True) == 255
    off = ListCompactor("user_id", "items", max_entries=0)
    assert off.pack("u1", first) is first and off.frames() == {}


def test_a_published_version_is_compact_and_served_as_json(settings: Settings, rclient) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    dataset = Dataset(name="news", kind="external", key_field="user_id", entry_field="hotel_id")
    rows = 600
    table = pa.table(
        {
            "user_id": [f"u{i}" for i in range(rows)],
            "items": [
                [_entry(f"h{(i + j) % 97}", round(1 - j / 10, 4), price=j) for j in range(10)]
                for i in range(rows)
            ],
        }
    )
    say: list[str] = []
    compacted = publish_rows(rclient, settings.store, dataset, table, "t", say=say.append)
    assert compacted.compact == rows and f"{rows} of them compact" in say[-1], say
    versions = Versions(rclient, "news", settings.store)
    where = versions.placed(compacted.version)
    names = [f"u{i}" for i in range(rows)]
    raw = values.read_raw(rclient, where, names)
    assert all(v is not None and compact.is_compact(v) for v in raw)
    served = values.read(rclient, where, names)
    as_json = publish_rows(
        rclient, settings.store, dataset, table, "t", say=lambda _: None, compact=False
    )
    assert as_json.compact == 0
    plain = values.read(rclient, versions.placed(as_json.version), names)
    # the same bytes served, the scoring stamp aside
    stamp = json.loads(plain[0] or b"")["scored_at"].encode()
    first = json.loads(served[0] or b"")["scored_at"].encode()
    assert [v.replace(first, stamp) for v in served if v] == plain
    compact_buckets = bucket_encodings.sample(rclient, where)
    json_buckets = bucket_encodings.sample(rclient, versions.placed(as_json.version))
    assert compact_buckets.hashtables == 0 and json_buckets.hashtables == json_buckets.sampled


SHAPE = ("user_id", "items", "hotel_id")


def _table(rows: list[tuple[object, list[dict[str, object]]]], **types: object):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(
        {"user_id": [k for k, _ in rows], "items": [e for _, e in rows]}, **types
    )


def _packed(batch, lists: ListCompactor | None = None):  # type: ignore[no-untyped-def]
    from prescore.encoding.arrow_lists import Packing, pack_batch

    lists = lists or ListCompactor("user_id", "items")
    return pack_batch(batch, "user_id", Packing(SHAPE, STAMP, KeyForm(), lists)), lists


def test_a_batch_packed_at_once_is_served_as_each_rows_json() -> None:
    rng = random.Random(3)
    names = ["Hôtel ☀", 'a},{"b', 'x"y\\z', "tab\there\x01", None, ""]
    rows = []
    for i in range(400):
        entries = [
            _entry(
                f"h{rng.randrange(60)}",
                round(rng.random(), 4),
                price=rng.randrange(3),
                name=rng.choice(names),
                ok=rng.choice([True, False]),
            )
            for _ in range(rng.randrange(0, 12))
        ]
        rows.append((f"u{i}", entries))
    got, lists = _packed(_table(rows))
    assert got is not None and lists.packed == len(rows)
    frames = lists.frames()
    for (key, entries), (packed_key, stored) in zip(rows, got, strict=True):
        assert packed_key == key and compact.is_compact(stored)
        assert compact.decode(stored, key, frames) == _text(key, entries)
    # the row by row path, given the same tables after, reuses their entries and frame
    again = _text("u0", rows[0][1])
    assert lists.pack("u0", again) != again and len(lists.frames()) == 1


def test_a_batch_with_more_entries_than_uint16_holds_is_packed_wide() -> None:
    rows = [(f"u{i}", [_entry(f"h{i}", 0.5), _entry("h0", 0.25)]) for i in range(70_000)]
    got, lists = _packed(_table(rows))
    assert got is not None
    narrow, wide = got[0][1], got[-1][1]
    assert narrow[0] == compact.NARROW and wide[0] == compact.WIDE
    frames = lists.frames()
    assert compact.decode(wide, "u69999", frames) == _text("u69999", rows[-1][1])


def test_an_integer_key_column_is_packed_under_its_digits() -> None:
    got, _ = _packed(_table([(7, [_entry("h1", 0.5)]), (12, [])]))
    assert got is not None and [k for k, _ in got] == ["7", "12"]


@pytest.mark.parametrize(
    "rows",
    [
        [("u1", [_entry("h1", 0.12345)])],  # not a tick
        [("u1", [_entry("h1", -0.0)])],
        [("u1", [_entry("h1", 1.5)])],
        [("u1", [_entry("h1", 0.5, price=float("nan"))])],  # refused row by row
        [("u1", [_entry("h1", 0.5, tags={"a": 1})])],  # nested: not dictionary-encoded
        [("u1", [{"hotel_id": "h1", "score": 0.5, "price": 1}])],  # the score not last
        [("u1", [{"other": "h1", "score": 0.5}])],  # no entry field
        [("u1", None)],  # a null list
        [("u1", [_entry("h1", 0.5), None])],  # a null entry
        [("bad\tkey", [_entry("h1", 0.5)])],  # a key the bulk check refuses
        [(None, [_entry("h1", 0.5)])],
    ],
)
def test_a_batch_the_row_path_would_treat_otherwise_goes_row_by_row(rows: list) -> None:  # type: ignore[type-arg]
    got, lists = _packed(_table(rows))
    assert got is None and lists.packed == 0


def test_a_categorical_field_with_a_null_is_packed_as_its_values() -> None:
    import pyarrow as pa

    names = pa.array(["Sea", None, "Sea"]).dictionary_encode()
    entries = pa.StructArray.from_arrays(
        [pa.array(["h1", "h2", "h3"]), names, pa.array([0.5, 0.25, 0.125])],
        names=["hotel_id", "name", "score"],
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["u1", "u2"]),
            pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), entries),
        ],
        names=["user_id", "items"],
    )
    got, lists = _packed(batch)
    assert got is not None
    rows = [
        [_entry("h1", 0.5, name="Sea"), _entry("h2", 0.25, name=None)],
        [_entry("h3", 0.125, name="Sea")],
    ]
    for (key, stored), entries_of in zip(got, rows, strict=True):
        assert compact.decode(stored, key, lists.frames()) == _text(key, entries_of)


def test_a_struct_repeating_a_field_name_goes_row_by_row() -> None:
    import pyarrow as pa

    entries = pa.StructArray.from_arrays(
        [pa.array(["h1"]), pa.array([1]), pa.array([2]), pa.array([0.5])],
        names=["hotel_id", "a", "a", "score"],
    )
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["u1"]), pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), entries)],
        names=["user_id", "items"],
    )
    assert _packed(batch)[0] is None


def test_float32_scores_and_other_columns_go_row_by_row() -> None:
    import pyarrow as pa

    entry = pa.struct([("hotel_id", pa.string()), ("score", pa.float32())])
    schema = pa.schema([("user_id", pa.string()), ("items", pa.list_(entry))])
    halves = _table([("u1", [_entry("h1", 0.5)])], schema=schema)
    assert _packed(halves)[0] is not None  # 0.5 is exact in float32
    tenths = _table([("u1", [_entry("h1", 0.1)])], schema=schema)
    assert _packed(tenths)[0] is None  # float32's 0.1 is no tick
    extra = _table([("u1", [_entry("h1", 0.5)])]).append_column("segment", pa.array(["a"]))
    assert _packed(extra)[0] is None


def test_the_gates_reservoir_samples_every_batch_alike() -> None:
    from prescore.publishing.gates import Reservoir

    few = Reservoir(100)
    few.offer([f"k{i}" for i in range(40)])
    assert few.keys == [f"k{i}" for i in range(40)] and few.seen == 40
    keys = [str(i) for i in range(100_000)]
    sizes = [60, 7, 10_000, 33, 89_900]  # the first batch does not fill it
    draws = []
    for seed in range(20):
        sample = Reservoir(100, seed=seed)
        at = 0
        for size in sizes:
            sample.offer(keys[at : at + size])
            at += size
        assert sample.seen == len(keys) and len(set(sample.keys)) == 100
        draws += [int(k) for k in sample.keys]
    whole = Reservoir(100, seed=19)
    whole.offer(keys)
    assert whole.keys == sample.keys  # one draw a key, in order: however they are batched
    # 2,000 draws: each tenth of the keys holds about a tenth of them (a stuck first
    # batch, or a last batch never drawn, would hold 0 or all)
    tenths = [sum(1 for d in draws if t * 10_000 <= d < (t + 1) * 10_000) for t in range(10)]
    assert all(120 < n < 280 for n in tenths), tenths


def test_frames_written_after_the_lease_lapsed_are_removed(settings: Settings, rclient) -> None:  # type: ignore[no-untyped-def]
    from prescore.encoding.keys import frames_key, lease_key
    from prescore.errors import PublishError

    versions = Versions(rclient, "news", settings.store)
    lists = ListCompactor("user_id", "items")
    lists.pack("u1", _text("u1", [_entry("h1", 0.5)]))
    info = versions.begin("m", "1")
    where = versions.placed(info.version)
    versions.write_frames(where, lists.frames())  # the lease held: written
    assert rclient.exists(frames_key("news", info.version))
    rclient.delete(lease_key("news", info.version))  # the lease lapsed, as if paused
    with pytest.raises(PublishError) as lost:
        versions.write_frames(where, lists.frames())
    assert lost.value.code == "lease_lost"
    assert not rclient.exists(frames_key("news", info.version))
    # another writer's token (a job's driver passes its own) is checked the same way
    with pytest.raises(PublishError):
        Versions(rclient, "news", settings.store).write_frames(where, lists.frames(), "t")


def test_a_table_without_the_list_column_is_bad_rows_named_before_anything_is_written(
    settings: Settings, rclient
) -> None:  # type: ignore[no-untyped-def]
    """Rows without the dataset's list are refused row by row (a dry run says so too):
    the lookup reads no payload without it. JSON text in a column is named as such."""
    import pyarrow as pa

    dataset = Dataset(name="news", kind="external", key_field="user_id", entry_field="hotel_id")
    table = pa.table({"user_id": ["u1", "u2"], "headline": ["a", '{"items": []}']})
    for dry_run in (True, False):
        report = publish_rows(
            rclient, settings.store, dataset, table, "t", dry_run=dry_run, say=lambda _: None
        )
        assert (report.bad, report.published) == (2, False), report
        assert report.bad_sample[0].endswith("no list 'items'"), report.bad_sample
        assert "column 'headline' holds JSON text: --json-column" in report.bad_sample[1]
    v = Versions(rclient, "news", settings.store)
    assert v.current() is None and [i.status for i in v.all()] == ["failed"]


def test_an_entry_text_not_utf8_fails_the_batch_before_anything_is_written() -> None:
    """Arrow does not check a parquet string column's UTF-8: such an entry fails packing
    (so a dry run fails as the publish would), never its frames after the rows."""
    import pyarrow as pa

    hotel = pa.array([b"ok\xff", b"h2"]).view(pa.string())  # no check, as a file is read
    entries = pa.StructArray.from_arrays(
        [hotel, pa.array([0.5, 0.25])], names=["hotel_id", "score"]
    )
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["u1"]), pa.ListArray.from_arrays(pa.array([0, 2], pa.int32()), entries)],
        names=["user_id", "items"],
    )
    with pytest.raises(UnicodeDecodeError):
        _packed(batch)
