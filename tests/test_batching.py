"""Chunking by count and encoded size, oversize profiles, request bodies, and a streaming map+chunk run."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterator

import pytest

from altcraft.api.protocol import encode_body
from altcraft.batching import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_BATCH_ITEMS,
    Chunk,
    chunk,
    encode_item,
    request_overhead,
)
from altcraft.mapping import Mapper, Profile, ProfileMapping, Rejection


def encode_items(profiles: list[Profile]) -> bytes:
    """The JSON array a chunk of ``profiles`` should send."""
    return b"[" + b",".join(encode_item(profile) for profile in profiles) + b"]"


def make(i: int, name: str = "Anna") -> Profile:
    return Profile(str(i), {"email": f"u{i}@example.org"}, f"email:u{i}@example.org", {"_fname": name})


def sized(i: int, size: int) -> Profile:
    """A profile whose encoded batch item is exactly `size` bytes."""
    base = len(encode_item(make(i, "")))
    profile = make(i, "x" * (size - base))
    assert len(encode_item(profile)) == size
    return profile


def chunks_only(items: list[Chunk | Rejection]) -> list[Chunk]:
    assert all(isinstance(item, Chunk) for item in items), items
    return items  # type: ignore[return-value]


def test_limits_are_the_documented_constants():
    assert (MAX_BATCH_ITEMS, DEFAULT_MAX_REQUEST_BYTES) == (10_000, 9_500_000)


def test_items_are_compact_utf8_json_of_the_batch_item():
    profile = make(1, 'Ёлка "q" \\ \n')
    assert encode_item(profile) == json.dumps(
        profile.batch_item(), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    assert json.loads(encode_items([make(1), make(2)])) == [make(1).batch_item(), make(2).batch_item()]
    assert encode_items([]) == b"[]"


def test_count_limit():
    result = chunks_only(list(chunk((make(i) for i in range(25)), max_items=10)))
    assert [len(piece.profiles) for piece in result] == [10, 10, 5]
    assert [p.source_key for piece in result for p in piece.profiles] == [str(i) for i in range(25)]


def test_every_chunk_body_is_the_encoded_array_of_its_profiles():
    for piece in chunks_only(list(chunk((make(i) for i in range(7)), max_items=3))):
        assert piece.body == encode_items(piece.profiles)
        assert piece.encoded_bytes == len(piece.body)
        assert json.loads(piece.body) == [p.batch_item() for p in piece.profiles]


@pytest.mark.parametrize(("slack", "sizes", "first_request"), [(0, [4, 4, 2], 455), (-1, [3, 3, 3, 1], 354)])
def test_byte_limit_boundary_is_exact(slack, sizes, first_request):
    profiles = [sized(i, 100) for i in range(10)]
    overhead = 50
    max_bytes = overhead + 2 + 4 * 100 + 3 + slack  # brackets, four items, three commas
    result = chunks_only(list(chunk(profiles, max_items=100, max_bytes=max_bytes, overhead_bytes=overhead)))
    assert [len(piece.profiles) for piece in result] == sizes
    assert overhead + result[0].encoded_bytes == first_request
    assert all(overhead + piece.encoded_bytes <= max_bytes for piece in result)


def test_a_chunk_can_be_filled_to_the_last_byte():
    profiles = [sized(i, 100) for i in range(8)]
    result = chunks_only(list(chunk(profiles, max_items=100, max_bytes=2 + 4 * 100 + 3)))
    assert [piece.encoded_bytes for piece in result] == [405, 405]


def test_count_and_bytes_together_the_tighter_wins():
    profiles = [sized(i, 100) for i in range(12)]
    by_count = chunks_only(list(chunk(profiles, max_items=2, max_bytes=10_000)))
    by_bytes = chunks_only(list(chunk(profiles, max_items=10, max_bytes=2 + 3 * 100 + 2)))
    assert [len(p.profiles) for p in by_count] == [2] * 6
    assert [len(p.profiles) for p in by_bytes] == [3] * 4


def test_a_profile_too_large_for_any_request_is_rejected_in_stream_order():
    profiles = [sized(0, 100), sized(1, 1001), sized(2, 100), sized(3, 1000)]
    result = list(chunk(profiles, max_items=10, max_bytes=1050, overhead_bytes=48))  # room: 1000 bytes
    assert isinstance(result[0], Rejection)
    assert result[0] == Rejection("1", "<profile>", "encoded profile is 1001 bytes, above the request limit")
    first, second = result[1], result[2]
    assert isinstance(first, Chunk) and isinstance(second, Chunk) and len(result) == 3
    assert [p.source_key for p in first.profiles] == ["0", "2"]
    assert [p.source_key for p in second.profiles] == ["3"] and 48 + second.encoded_bytes == 1050


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_items": 0}, "max_items"),
        ({"max_bytes": 100, "overhead_bytes": 98}, "leaves no room"),
    ],
)
def test_impossible_limits_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(chunk([make(1)], **kwargs))


def test_no_profiles_no_chunks():
    assert list(chunk([])) == []


def test_overhead_counts_everything_but_the_array():
    params = {"workflow_id": 12, "matching": "email", "content": {"promo": "ДА"}}
    piece = next(chunk([make(i) for i in range(3)], max_items=10, max_bytes=10_000))
    body = encode_body(params, token="tok", raw_data=piece.body)
    assert len(body) == request_overhead(params, token="tok") + piece.encoded_bytes
    assert json.loads(body)["data"] == json.loads(piece.body)


def test_chunk_is_lazy_on_an_endless_stream():
    pulled = itertools.count()

    def endless() -> Iterator[Profile]:
        while True:
            yield make(next(pulled))

    first = next(chunk(endless(), max_items=100))
    assert isinstance(first, Chunk) and len(first.profiles) == 100
    assert next(pulled) == 101  # one profile read ahead, nothing more


def _streamed_peak(n: int) -> int:
    mapper = Mapper(
        ProfileMapping(
            matching="custom",
            field_name="CRM_ID",
            key={"field_value": "id"},
            fields={"_fname": "first_name", "LOYALTY": {"source": "points", "type": "int"}},
        ),
        source_key_column="id",
    )
    records = ({"id": i, "first_name": "User", "points": i} for i in range(n))
    profiles = (result for result in map(mapper.map, records) if isinstance(result, Profile))
    tracemalloc.start()
    try:
        sent = sum(len(piece.profiles) for piece in chunk(profiles, max_items=500, max_bytes=1_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent == n
    return peak


def test_map_and_chunk_stream_in_constant_memory():
    small, large = _streamed_peak(20_000), _streamed_peak(100_000)
    assert large < 3_000_000, large
    assert large < small * 1.2, (small, large)
