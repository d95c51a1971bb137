"""PythonSource: a dotted path or a callable, called with the window, re-chunked."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from itertools import chain

import pytest

from altcraft.sources import ERROR_FIELD, PythonSource, SourceError, Window
from altcraft.sources.python import IterableSource

WINDOW = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))


@pytest.fixture
def crm_module(tmp_path, monkeypatch) -> str:
    """A user module with a generator function; returns its name."""
    (tmp_path / "src_test_user_crm.py").write_text(
        textwrap.dedent(
            """
            from datetime import UTC, datetime, timedelta

            DAY = datetime(2024, 3, 1, tzinfo=UTC)

            def contacts(window, prefix, hours=24):
                for hour in range(-2, hours):
                    ts = DAY + timedelta(hours=hour)
                    if window.contains(ts):
                        yield {"id": f"{prefix}{hour}", "created_at": ts.isoformat()}

            class Api:
                @staticmethod
                def pages(window):
                    return [[{"id": 1}, {"id": 2}], [{"id": 3}], {"id": 4}]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "src_test_user_crm"


def ids(batches) -> list:
    return [record["id"] for batch in batches for record in batch]


def test_dotted_path_is_called_with_the_window_and_kwargs(crm_module):
    source = PythonSource(f"{crm_module}:contacts", key_column="id", kwargs={"prefix": "h"})

    batches = list(source.batches(WINDOW, 10))

    assert [len(batch) for batch in batches] == [10, 10, 4]
    assert ids(batches) == [f"h{hour}" for hour in range(24)]
    assert batches[0][0]["created_at"] == "2024-03-01T00:00:00+00:00"
    assert source.describe() == f"python {crm_module}:contacts"


def test_lists_of_records_are_flattened_and_rechunked(crm_module):
    source = PythonSource(f"{crm_module}:Api.pages", key_column="id")

    assert [[r["id"] for r in batch] for batch in source.batches(None, 3)] == [[1, 2, 3], [4]]


def test_partitions_get_time_sub_windows(crm_module):
    source = PythonSource(f"{crm_module}:contacts", key_column="id", kwargs={"prefix": ""})

    parts = [ids(source.batches(WINDOW, 5, partition=(index, 4))) for index in range(4)]

    assert parts[1] == [str(hour) for hour in range(6, 12)]
    assert list(chain.from_iterable(parts)) == ids(source.batches(WINDOW, 5))


def test_a_plain_callable_works_and_an_item_that_is_not_a_mapping_is_its_error_record():
    seen = []

    def produce(window, count):
        seen.append(window)
        return ({"id": n} for n in range(count))

    assert ids(PythonSource(produce, key_column="id", kwargs={"count": 3}).batches(WINDOW, 2)) == [0, 1, 2]
    assert seen == [WINDOW]
    produced = [{"id": 1}, "id=2", [None, {"id": 4}]]  # a list is a batch of items
    for source in (
        PythonSource(lambda window: produced, key_column="id"),
        IterableSource([{"id": 1}, "id=2", None, {"id": 4}], key_column="id"),
    ):
        assert [(r["id"], r.get(ERROR_FIELD)) for b in source.batches(WINDOW, 2) for r in b] == [
            (1, None),
            ("item 2", "not a mapping but str"),
            ("item 3", "not a mapping but null"),
            (4, None),
        ]
    given = IterableSource([{"id": 1}, 2, {"id": 3}], key_column="id")
    parts = [given.batches(None, 5, partition=(i, 2)) for i in (0, 1)]
    assert [[r["id"] for b in part for r in b] for part in parts] == [[1, 3], ["item 2"]]


@pytest.mark.parametrize(
    ("produced", "kind"), [({"id": 1, "email": "a@example.org"}, "dict"), (None, "null"), ("id=1", "str")]
)
def test_a_callable_returning_no_records_fails_the_read_saying_what_it_returned(produced, kind):
    """One record returned alone was read as its keys, each rejected as "not a mapping but str" (the contact
    never launched, the reasons misleading), text as its characters; None failed with a bare TypeError."""

    def produce(window):
        return produced

    source = PythonSource(produce, key_column="id")
    with pytest.raises(SourceError, match=rf"^python .*produce: returned {kind}, not records \("):
        list(source.batches(WINDOW, 10))


@pytest.mark.parametrize("path", ["os.path.join", "os:path:join", "1mod:fn", "pkg.mod:fn()", ""])
def test_malformed_dotted_paths_are_refused(path):
    with pytest.raises(ValueError, match=r"^callable: expected 'package\.module:function'"):
        PythonSource(path, key_column="id")


def test_a_window_shifted_back_reaches_the_callable(crm_module):
    source = PythonSource(f"{crm_module}:contacts", key_column="id", kwargs={"prefix": "", "hours": 1})
    shifted = WINDOW.shifted(timedelta(hours=2))

    records = [record for batch in source.batches(shifted, 5) for record in batch]

    assert [record["id"] for record in records] == ["-2", "-1", "0"]
    assert records[0]["created_at"] == "2024-02-29T22:00:00+00:00"


def test_iterable_source_serves_given_records_and_deals_partitions_by_position():
    records = [{"id": n} for n in range(7)]
    source = IterableSource(iter(records), key_column="id")

    assert [[r["id"] for r in batch] for batch in source.batches(WINDOW, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert ids(source.batches(None, 3)) == list(range(7)), "records are kept, so a re-read is identical"
    assert [ids(source.batches(None, 3, partition=(index, 3))) for index in range(3)] == [
        [0, 3, 6],
        [1, 4],
        [2, 5],
    ]
    assert source.describe() == "7 records given in code"
