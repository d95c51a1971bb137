"""Pipeline spec models of the sources: strict, offline parsing and build()."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from altcraft.sources import (
    FileSource,
    MemoryStateStore,
    OffsetPaginator,
    PythonSource,
    RestSource,
    SourceSpec,
    SqlQuerySource,
    SqlTableSource,
)

ADAPTER = TypeAdapter(SourceSpec)

VALID = {
    "sql_table": (
        {
            "type": "sql_table",
            "conn_id": "crm_db",
            "schema": "public",
            "table": "contacts",
            "key_column": "id",
            "created_at_column": "created_at",
            "timezone": "Europe/Berlin",
        },
        SqlTableSource,
        "sql_table public.contacts on connection 'crm_db', window on created_at (Europe/Berlin), "
        "ordered by id",
    ),
    "sql_query": (
        {
            "type": "sql_query",
            "conn_id": "crm_db",
            "sql": "SELECT id, email FROM contacts "
            "WHERE created_at >= :window_start AND created_at < :window_end",
            "key_column": "id",
        },
        SqlQuerySource,
        "sql_query on connection 'crm_db', window as :window_start/:window_end, ordered by id",
    ),
    "file": (
        {
            "type": "file",
            "path": "s3://bucket/in/",
            "format": "jsonl",
            "key_column": "id",
            "window_by": "mtime",
        },
        FileSource,
        "file s3://bucket/in/ (jsonl, files *.jsonl), window by file modification time",
    ),
    "rest": (
        {
            "type": "rest",
            "http_conn_id": "crm_api",
            "endpoint": "v1/contacts",
            "key_column": "id",
            "window_params": {"start": "created_from", "end": "created_to"},
            "record_path": "items",
            "paginator": {"type": "offset", "limit": 500, "total_path": "total"},
        },
        RestSource,
        "rest GET v1/contacts on connection 'crm_api', offset",
    ),
    "python": (
        {"type": "python", "callable": "my_crm.export:contacts", "key_column": "id", "kwargs": {"list": 3}},
        PythonSource,
        "python my_crm.export:contacts",
    ),
}


@pytest.mark.parametrize("kind", VALID)
def test_each_type_parses_offline_and_builds_its_source(kind):
    data, source_type, description = VALID[kind]

    spec = ADAPTER.validate_python(data)
    source = spec.build(state=MemoryStateStore())

    assert type(source) is source_type
    assert source.key_column == "id"
    assert source.describe() == description


def test_built_sources_keep_the_settings():
    rest = ADAPTER.validate_python(VALID["rest"][0]).build()
    table = ADAPTER.validate_python(VALID["sql_table"][0]).build(state=(state := MemoryStateStore()))

    assert rest.paginator == OffsetPaginator(limit=500, total_path="total")
    assert rest.window_params == {"start": "created_from", "end": "created_to"}
    assert (table.schema, table.timezone, table.state) == ("public", "Europe/Berlin", state)


def error_of(data: dict) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as failure:
        ADAPTER.validate_python(data)
    first = failure.value.errors()[0]
    return first["loc"], first["msg"]


@pytest.mark.parametrize(
    ("kind", "changes", "field", "message"),
    [
        ("sql_table", {"table": "contacts; DROP TABLE x"}, "table", "table: 'contacts; DROP TABLE x' is not"),
        ("sql_table", {"schema": "a.b"}, "schema", "schema: 'a.b' is not a plain SQL identifier"),
        ("sql_table", {"key_column": "id--"}, "key_column", "key_column: 'id--' is not"),
        ("sql_table", {"timezone": "Berlin"}, "timezone", "timezone: unknown time zone 'Berlin'"),
        ("sql_query", {"sql": "DELETE FROM contacts"}, "sql", "sql: only a SELECT statement is allowed"),
        ("sql_query", {"sql": "SELECT 1; SELECT 2"}, "sql", "sql: only one statement is allowed"),
        ("file", {"format": "xlsx"}, "format", "Input should be 'csv' or 'jsonl'"),
        ("file", {"encoding": "klingon"}, "encoding", "encoding: unknown encoding 'klingon'"),
        ("file", {"encoding": "hex"}, "encoding", "encoding: 'hex' is not a text encoding"),
        ("file", {"delimiter": '"'}, "delimiter", "delimiter: '\"' is the quote character"),
        ("file", {"delimiter": "\r"}, "delimiter", "delimiter: '\\r' is a line break (CR)"),
        ("file", {"delimiter": "\n"}, "delimiter", "delimiter: '\\n' is a line break (LF)"),
        ("file", {"delimiter": ";;"}, "delimiter", "delimiter: expected one character"),
        ("rest", {"paginator": {"type": "magic"}}, "paginator", "does not match any of the expected tags"),
        ("rest", {"window_params": {"since": "x"}}, "window_params", "Input should be 'start' or 'end'"),
        ("python", {"callable": "os.system"}, "callable", "callable: expected 'package.module:function'"),
    ],
)
def test_a_bad_field_fails_at_parse_time_naming_the_field(kind, changes, field, message):
    loc, msg = error_of({**VALID[kind][0], **changes})

    assert loc[:2] == (kind, field)
    assert message in msg


@pytest.mark.parametrize("kind", VALID)
def test_unknown_keys_are_refused(kind):
    loc, msg = error_of({**VALID[kind][0], "tabel": "contacts"})

    assert loc == (kind, "tabel")
    assert msg == "Extra inputs are not permitted"


def test_paginator_settings_are_strict_too():
    loc, _ = error_of({**VALID["rest"][0], "paginator": {"type": "offset", "limit": 0}})

    assert loc == ("rest", "paginator", "offset", "limit")


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("sql_table", {"watermark_column": "seq"}, "exactly one of created_at_column"),
        ("sql_table", {"created_at_column": None}, "exactly one of created_at_column"),
        ("file", {"window_by": "column"}, "timestamp_column: required"),
        (
            "file",
            {"delimiter": "é", "encoding": "ascii"},
            "delimiter: 'é' cannot be written in encoding 'ascii'",
        ),
    ],
)
def test_inconsistent_modes_are_refused(kind, changes, message):
    _, msg = error_of({**VALID[kind][0], **changes})

    assert message in msg


def test_an_unknown_type_is_refused():
    loc, msg = error_of({"type": "kafka", "topic": "contacts"})

    assert loc == ()
    assert "'sql_table', 'sql_query', 'file', 'rest', 'python'" in msg


class _Custom:
    pass


BUILT_IN_PYTHON = {
    "RestSource params": lambda value: RestSource(
        "crm", "v1/c", key_column="id", params={"f": {"since": value}}
    ),
    "PythonSource kwargs": lambda value: PythonSource(
        "a.b:c", key_column="id", kwargs={"f": {"since": value}}
    ),
}


@pytest.mark.parametrize("built", BUILT_IN_PYTHON)
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (datetime(2025, 1, 1, tzinfo=UTC), "a date or time (at f.since): "),
        (date(2025, 1, 1), "a date or time (at f.since): "),
        ({"a", "b"}, "a set (at f.since): not JSON data"),
        (math.nan, "not a finite number (at f.since)"),
        (-math.inf, "not a finite number (at f.since)"),
        (_Custom(), "a _Custom (at f.since): not JSON data"),
        ([1, Decimal("2.5")], "a Decimal (at f.since[1]): not JSON data"),
        ({1: "a"}, "a key that is not text (at f.since)"),
    ],
)
def test_a_source_built_in_python_refuses_what_is_no_json_data_as_a_spec_does(built, value, words):
    """The spec's rule (`json_data`), naming the argument and the path: a POST could not send a datetime, a
    GET sent its ``str()``; NaN went out as ``NaN``, which no JSON reader reads."""
    with pytest.raises(ValueError, match=re.escape(f"{built}: {words}")):
        BUILT_IN_PYTHON[built](value)


@pytest.mark.parametrize("built", BUILT_IN_PYTHON)
def test_a_source_built_in_python_keeps_json_data_and_tuples(built):
    value = ["2025-01-01", 1, 0.5, True, None, (1, "a"), {"k": []}]

    BUILT_IN_PYTHON[built](value)
