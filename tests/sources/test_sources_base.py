"""Window, MemoryStateStore, re-chunking and partition helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from altcraft.sources import MemoryStateStore, Window, error_record
from altcraft.sources.base import ERROR_FIELD, ErrorRecord, partition_window, rechunk

START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=1)


def test_window_is_half_open_and_kept_in_utc():
    berlin = ZoneInfo("Europe/Berlin")
    window = Window(START.astimezone(berlin), END.astimezone(berlin))

    assert window == Window(START, END)
    assert window.start.tzinfo is UTC
    assert window.contains(START) and window.contains(END - timedelta(microseconds=1))
    assert not window.contains(END) and not window.contains(START - timedelta(microseconds=1))
    assert window.key() == "2024-03-01T00:00:00+00:00/2024-03-02T00:00:00+00:00"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(2024, 3, 1), END, "start must be timezone-aware"),
        (START, datetime(2024, 3, 2), "end must be timezone-aware"),
        (END, START, "ends before it starts"),
    ],
)
def test_window_refuses_naive_or_reversed_bounds(start, end, message):
    with pytest.raises(ValueError, match=message):
        Window(start, end)


def test_contains_refuses_naive_timestamps():
    with pytest.raises(ValueError, match="naive"):
        Window(START, END).contains(datetime(2024, 3, 1, 12))


def test_shifted_windows_stay_contiguous():
    lag = timedelta(minutes=30)
    today, tomorrow = Window(START, END), Window(END, END + timedelta(days=1))

    assert today.shifted(lag) == Window(START - lag, END - lag)
    assert today.shifted(lag).end == tomorrow.shifted(lag).start


def test_parts_tile_the_window_even_across_a_dst_change():
    berlin = ZoneInfo("Europe/Berlin")  # 2024-03-31 has 23 hours in Berlin
    window = Window(datetime(2024, 3, 31, tzinfo=berlin), datetime(2024, 4, 1, tzinfo=berlin))

    parts = [window.part(index, 7) for index in range(7)]

    assert parts[0].start == window.start and parts[-1].end == window.end
    assert all(left.end == right.start for left, right in pairwise(parts))
    assert sum((part.end - part.start for part in parts), timedelta()) == timedelta(hours=23)
    assert partition_window(window, (2, 7)) == parts[2]
    assert partition_window(window, None) is window


@pytest.mark.parametrize("partition", [(3, 3), (-1, 2), (0, 0)])
def test_invalid_partitions_are_refused(partition):
    with pytest.raises(ValueError, match="partition must be"):
        Window(START, END).part(*partition)


def test_partitioning_needs_a_window():
    with pytest.raises(ValueError, match="needs a window"):
        partition_window(None, (0, 2))


def test_memory_state_store_keeps_json_like_airflow():
    state = MemoryStateStore()
    value = {"type": "datetime", "value": "2024-03-01T00:00:00+00:00", "n": [1, 2.5]}

    state.set("watermark", value)
    value["n"].append(3)

    assert state.get("watermark") == {"type": "datetime", "value": "2024-03-01T00:00:00+00:00", "n": [1, 2.5]}
    assert state.get("other", "default") == "default"
    with pytest.raises(ValueError, match="None"):
        state.set("watermark", None)
    with pytest.raises(TypeError):
        state.set("watermark", START)


def test_rechunk_bounds_batches_and_refuses_non_records():
    assert list(rechunk(({"n": n} for n in range(5)), 2)) == [
        [{"n": 0}, {"n": 1}],
        [{"n": 2}, {"n": 3}],
        [{"n": 4}],
    ]
    assert list(rechunk([], 2)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(rechunk([{"n": 1}], 0))
    with pytest.raises(TypeError, match="mapping"):
        list(rechunk([{"n": 1}, ("n", 2)], 5))


def test_error_records_say_where_and_why():
    record = error_record("id", "contacts.jsonl:7", "invalid JSON")

    assert record == {"id": "contacts.jsonl:7", ERROR_FIELD: "invalid JSON"}
    assert isinstance(record, ErrorRecord) and not isinstance({"id": 1, ERROR_FIELD: "x"}, ErrorRecord)
    # batched, it stays one (its type is what makes it one), a row holding that column stays data
    [[kept, data]] = rechunk([record, {"id": 1, ERROR_FIELD: "x"}], 5)
    assert isinstance(kept, ErrorRecord) and not isinstance(data, ErrorRecord)
