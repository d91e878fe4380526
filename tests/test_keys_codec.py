"""Golden tests: the exact bytes of keys and payloads that every deployable agrees on."""

from __future__ import annotations

import random
import string
from datetime import datetime, timezone

import pytest

from prescore.encoding import codec, keys, registry_entry
from prescore.errors import InvalidInput


def test_key_layout_is_pinned() -> None:
    assert keys.value_key("reco", "20261124T115301.042Z-3f9a0c", "u42") == (
        "ps:reco:20261124T115301.042Z-3f9a0c:u42"
    )
    assert keys.value_key("tags", "20261124T115301.042Z-3f9a0c", "img-7") == (
        "ps:tags:20261124T115301.042Z-3f9a0c:img-7"
    )
    assert keys.pointer_key("reco") == "ps:{reco}:current"
    assert keys.registry_key("tags") == "ps:{tags}:versions"
    assert keys.version_prefix("reco", "v") == "ps:reco:v:"
    assert keys.lease_key("reco", "v1") == "ps:{reco}:lease:v1"
    assert keys.written_key("reco", "v1") == "ps:{reco}:written:v1"
    assert keys.live_counter_key("reco", "v1") == "ps:{reco}:live:v1"
    assert keys.miss_log_key("reco") == "ps:{reco}:misses"
    assert keys.miss_seen_key("reco") == "ps:{reco}:misses:seen"
    assert keys.flight_key("reco", "v1", "u1|ctx") == "ps:reco:flight:v1:u1|ctx"
    assert keys.flight_outcome_key("reco", "v1", "u1", "ab12") == "ps:reco:flight:v1:u1:ab12"
    assert keys.negative_key("tags", "v1", "img-7") == "ps:tags:neg:v1:img-7"
    assert keys.bucket_key("reco", "v1", 6) == "ps:reco:v1:#6"
    assert keys.bucket_of("u1", 8) == 6  # CRC-32 of b"u1" is 1112514422: every process agrees
    assert keys.bucket_count(1) == 1 and keys.bucket_count(64) == 1 and keys.bucket_count(65) == 2
    assert keys.frames_key("reco", "v1") == "ps:{reco}:frames:v1"
    assert keys.write_backs_key("reco", "v1", 20_000) == "ps:{reco}:wb:v1:20000"
    assert keys.entity_key("u1") == "u1"
    assert keys.entity_key("u1", "weekend-summer") == "u1|weekend-summer"
    assert keys.entity_key("u1|x", "a|b") == "u1|x|a\\|b"  # a context is one more part
    assert keys.KeyForm(2).check("c1|nl") == "c1|nl"
    with pytest.raises(InvalidInput):
        keys.KeyForm(1, contexts=True).check("c1|nl")
    assert keys.KeyForm(1).check("c1|nl") == "c1|nl"  # no parts, no contexts: a key as it is


# Awkward keys a team has: (key's text, its name in Redis key names, its bucket of 97).
AWKWARD = [
    ("someone@example.com", "someone%40example.com", 25),
    ("ns:123", "ns%3A123", 61),
    ("-17", "-17", 37),
    ("aGVsbG8+/w==", "aGVsbG8%2B%2Fw%3D%3D", 84),  # base64
    ("🏨 hôtel", "%F0%9F%8F%A8%20h%C3%B4tel", 95),
    ("a|b", "a|b", 36),
    ("{x}", "%7Bx%7D", 47),  # no cluster hash tag in a name
    ("#5", "%235", 72),  # no name is a bucket's
    ("DOMAIN\\user", "DOMAIN%5Cuser", 69),
    (" padded ", "%20padded%20", 58),
    ("\u00e9", "%C3%A9", 13),  # é as one code point (NFC) ...
    ("e\u0301", "e%CC%81", 88),  # ... and as e + combining accent (NFD): two keys
    ("k" * 1024, "k" * 1024, 42),
]


@pytest.mark.parametrize(("key", "name", "bucket"), AWKWARD, ids=[repr(a[0][:12]) for a in AWKWARD])
def test_any_key_has_one_pinned_name_and_bucket_in_every_writer_and_reader(
    key: str, name: str, bucket: int
) -> None:
    """A key is taken as it is (no normalization), named in Redis keys without a hash tag,
    a ':' or a '#', and found in the same bucket by a single read and a batch's."""
    assert keys.KeyForm().check(key) == key
    assert keys.KeyForm().check_given(key) == key
    assert keys.KeyForm().all_valid([key, "u1"])
    assert keys.key_name(key) == name
    assert keys.value_key("reco", "v1", key) == f"ps:reco:v1:{name}"
    assert not any(c in name for c in "{}:#")
    assert keys.bucket_of(key, 97) == bucket
    assert keys.bucket_keys("reco", "v1", 97, [key]) == [keys.bucket_key("reco", "v1", bucket)]


def test_no_two_awkward_keys_share_a_name() -> None:
    names = [keys.key_name(k) for k, _, _ in AWKWARD]
    assert len(set(names)) == len(names)


def test_a_joined_key_escapes_a_separator_inside_a_part() -> None:
    two = keys.KeyForm(2)
    assert two.of_values(["a|b", "c\\"]) == "a\\|b|c\\\\"
    assert two.split("a\\|b|c\\\\") == ["a|b", "c\\"]
    assert two.of_values([17, "x"]) == "17|x"
    assert two.of_values(["a", "b|c"]) != two.of_values(["a|b", "c"])
    with_contexts = keys.KeyForm(1, contexts=True)
    assert with_contexts.of_values(["a|b"]) == "a\\|b"
    store = {keys.entity_key(with_contexts.of_values(["a|b"])), keys.entity_key("a", "b")}
    assert len(store) == 2  # the plain key "a|b" is not key "a" in context "b"
    for bad, why in [("a|b|c", "got 3"), ("a\\x|b", "escapes neither"), ("ab", "got 1")]:
        with pytest.raises(InvalidInput, match=why):
            two.check(bad)
    with pytest.raises(InvalidInput, match="one part"):
        with_contexts.check("a|b")
    with pytest.raises(InvalidInput):
        two.of_values(["", "x"])  # an empty part


def test_a_batch_of_keys_is_valid_exactly_when_each_key_is() -> None:
    """all_valid (one regex over a batch) agrees with check on every key, including keys
    that hold the newline it joins them with, or too many parts, or are too long."""
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + '_.-|\\/\n\x00 "{}#é\ud800'

    def ok(form: keys.KeyForm, raw: str) -> bool:
        try:
            form.check(raw)
            return True
        except InvalidInput:
            return False

    forms = [
        keys.KeyForm(1),
        keys.KeyForm(1, True),
        keys.KeyForm(2),
        keys.KeyForm(3),
        keys.KeyForm(files=True),
    ]
    for form in forms:
        for _ in range(4000):
            batch = [
                "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
                for _ in range(rng.randint(1, 3))
            ]
            if rng.random() < 0.3:  # mostly valid ones
                batch = [
                    rng.choice(["a", "b1", "x\\|y"]) + "|c" * (form.parts - 1) for _ in range(3)
                ]
                batch[rng.randrange(3)] += rng.choice(["", "", "|d", "\n", "\na", " ", "\\"])
            assert form.all_valid(batch) == all(ok(form, k) for k in batch), (form, batch)
    longest = keys.MAX_KEY_BYTES
    one = keys.KeyForm()
    assert one.all_valid(["a" * longest]) and not one.all_valid(["a" * (longest + 1)])
    assert one.all_valid(["é" * (longest // 2)]) and not one.all_valid(["é" * (longest // 2 + 1)])
    assert not one.all_valid([]) and not one.all_valid(["a", 1])  # type: ignore[list-item]
    files = keys.KeyForm(files=True)
    assert files.all_valid(["x" * 240]) and not files.all_valid(["x" * 241])


def test_version_ids_sort_by_time_and_validate() -> None:
    early = keys.new_version_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "abcdef")
    late = keys.new_version_id(datetime(2026, 1, 2, 3, 4, 5, 1000, tzinfo=timezone.utc), "000000")
    assert early == "20260102T030405.000Z-abcdef"
    assert early < late
    assert keys.check_version(keys.new_version_id()) is not None
    with pytest.raises(InvalidInput):
        keys.check_version("latest")


def test_a_version_made_in_the_same_millisecond_sorts_after_the_newest() -> None:
    same = datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=timezone.utc)
    newest = keys.new_version_id(same, "ffffff")
    nxt = keys.new_version_id(same, "000000", after=newest)
    assert nxt == "20260102T030406.000Z-000000"
    assert nxt > newest
    later = datetime(2026, 1, 2, 3, 5, tzinfo=timezone.utc)
    assert keys.new_version_id(later, "000000", after=newest) == "20260102T030500.000Z-000000"


def test_an_integer_key_is_its_decimal_digits_as_the_job_stores_it() -> None:
    import numpy as np

    assert [keys.key_text(k) for k in ("u1", 17, np.int64(5), 10**20)] == [
        "u1",
        "17",
        "5",
        "100000000000000000000",
    ]
    assert [keys.key_text(k) for k in (True, 1.0, None, ["1"], b"1")] == [None] * 5


@pytest.mark.parametrize(
    "bad", ["", "a" * 1025, "é" * 513, "u\n", "u\x00", "tab\there", "u\x7f", "u\x85", "\ud800"]
)
def test_bad_keys_are_refused_with_a_stable_code(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        keys.KeyForm().check(bad)
    assert info.value.code == "invalid_id"
    assert info.value.http_status == 400
    if bad == "\ud800":  # says what it is, not a control character
        assert info.value.message == "key holds a lone surrogate (no UTF-8 text)"


@pytest.mark.parametrize("bad", ["", "Reco", "a:b", "{x}", "x*", "1st", "a" * 41])
def test_a_name_that_is_no_dataset_name_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        keys.check_dataset(bad)
    assert info.value.code == "unknown_dataset"


RECO = codec.PayloadShape("user_id", "items", "hotel_id")  # the demo's datasets
TAGS = codec.PayloadShape("image_id", "tags", "tag")


def test_recommendation_payload_bytes_are_pinned() -> None:
    raw = codec.encode_payload(
        RECO,
        "u42",
        [("h7", 0.912345), ("h3", 0.5)],
        model="reco",
        model_version="3",
        scored_at="2026-11-24T12:00:00Z",
    )
    assert raw == (
        b'{"user_id":"u42","items":[{"hotel_id":"h7","score":0.9123},'
        b'{"hotel_id":"h3","score":0.5}],"model":"reco","model_version":"3",'
        b'"scored_at":"2026-11-24T12:00:00Z"}'
    )


def test_tag_payload_bytes_are_pinned() -> None:
    raw = codec.encode_payload(
        TAGS,
        "img-1",
        [("sea_view", 0.93), ("balcony", 0.71)],
        model="tagger",
        model_version="1",
        scored_at="2026-11-24T12:00:00Z",
        source="live",
    )
    assert raw == (
        b'{"image_id":"img-1","tags":[{"tag":"sea_view","score":0.93},'
        b'{"tag":"balcony","score":0.71}],"model":"tagger","model_version":"1",'
        b'"scored_at":"2026-11-24T12:00:00Z","source":"live"}'
    )


def test_envelope_splices_without_decoding() -> None:
    stored = b'{"user_id":"u1","items":[]}'
    assert codec.envelope(stored, dataset_version="V") == (
        b'{"source":"precomputed","dataset_version":"V","user_id":"u1","items":[]}'
    )
    live = b'{"user_id":"u1","items":[],"source":"live"}'
    assert codec.stored_source(live) == "written_back"
    assert codec.stored_source(stored) == "precomputed"
    assert codec.envelope(live, dataset_version="V", source="written_back") == (
        b'{"source":"written_back","dataset_version":"V","user_id":"u1","items":[]}'
    )
    assert codec.envelope(live, dataset_version="V", source="live") == (
        b'{"source":"live","dataset_version":"V","user_id":"u1","items":[]}'
    )


def test_truncate_only_decodes_when_it_must() -> None:
    stored = codec.dumps({"items": [1, 2, 3], "x": "y"})
    assert codec.truncate(stored, "items", 5) is stored
    assert codec.truncate(stored, "items", 2) == b'{"items":[1,2],"x":"y"}'


def test_version_info_round_trips() -> None:
    info = registry_entry.VersionInfo(version="v", status="writing", model="reco", rows=3)
    assert registry_entry.VersionInfo.from_bytes(info.to_bytes()) == info
    assert info.replace(status="published").status == "published"


def test_malformed_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        codec.loads(b"{nope")
    assert info.value.code == "malformed_json"
