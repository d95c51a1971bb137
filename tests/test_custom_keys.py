"""A custom matching key is one ledger key per value, whichever source gives it
(`altcraft.validation.number_key_text`): the values below are what the real drivers return for one id."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from altcraft.ledger.rules import former_keys
from altcraft.mapping import Mapper, Profile, ProfileMapping, Rejection
from tests.operators.conftest import LEDGER_URLS

#: What each source gives for the id 1 and the id 10**16 (stored as each column type holds it)
PG_QUERY = (
    "SELECT 1::integer, 1::bigint, 1::numeric, 1::numeric(10,2), 1::float8, "
    "1e16::bigint, 1e16::numeric, 1e16::numeric(20,2), 1e16::float8"
)
MARIADB_QUERY = (
    "SELECT CAST(1 AS SIGNED), CAST(1 AS DECIMAL(10,2)), CAST(1 AS DOUBLE), "
    "CAST(1e16 AS SIGNED), CAST(1e16 AS DECIMAL(20,2)), CAST(1e16 AS DOUBLE)"
)


def _sql_values(url: str, query: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(query).one())
    finally:
        engine.dispose()


def _sqlite_values() -> list[Any]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (i INTEGER, r REAL, n NUMERIC, d DECIMAL(10, 2))")
        conn.execute("INSERT INTO t VALUES (1, 1, '1.00', 1.00), (1e16, 1e16, 1e16, '1e16')")
        return [value for row in conn.execute("SELECT * FROM t") for value in row]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def one_id_everywhere() -> dict[int, list[tuple[str, Any]]]:
    """Each source's values of the ids 1 and 10**16, with where each came from."""
    values = [("postgresql", v) for v in _sql_values(LEDGER_URLS["postgresql"], PG_QUERY)]
    values += [("mariadb", v) for v in _sql_values(LEDGER_URLS["mariadb"], MARIADB_QUERY)]
    values += [("sqlite", v) for v in _sqlite_values()]
    values += [("csv", v) for v in next(csv.reader(io.StringIO("1,10000000000000000\n")))]
    values += [("json", v) for v in json.loads("[1, 1.0, 1e16, 10000000000000000, 1.0e16]")]
    by_id: dict[int, list[tuple[str, Any]]] = {1: [], 10**16: []}
    for source, value in values:
        by_id[int(Decimal(str(value)))].append((source, value))
    return by_id


def custom_mapper(key_type: str | None) -> Mapper:
    """Custom matching on ``CRM_ID`` from column ``crm``, declared as ``key_type`` (None: not declared)."""
    fields = {} if key_type is None else {"CRM_ID": {"source": "crm", "type": key_type}}
    spec = {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "crm"}, "fields": fields}
    return Mapper(ProfileMapping.model_validate(spec), source_key_column="id")


KEY_TYPES = [None, "string", "int", "float"]


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_one_id_from_every_source_is_one_ledger_key(one_id_everywhere, key_type):
    """The id 1 as PostgreSQL integer/bigint/numeric/numeric(10,2)/float8, MariaDB BIGINT/DECIMAL(10,2)/
    DOUBLE, SQLite INTEGER/REAL/NUMERIC, CSV text and a JSON body's 1 and 1.0 (and 10**16 likewise) is one
    contact. Keyed by `str()` of the value, a string or undeclared key was `custom:1`, `custom:1.00` and
    `custom:1.0`: launched once per form."""
    mapper = custom_mapper(key_type)
    for number, values in one_id_everywhere.items():
        keys = {}
        for source, value in values:
            result = mapper.map({"id": "r", "crm": value})
            assert isinstance(result, Profile), (source, value, result)
            keys.setdefault(result.ledger_key, []).append((source, value))
        assert list(keys) == [f"custom:{number}"], keys
        sent = {json.dumps(mapper.map({"id": "r", "crm": v}).match["field_value"]) for _, v in values}
        assert len(sent) == 1, f"one value sent to Altcraft too: {sent}"


@pytest.mark.parametrize(
    ("key_type", "raw", "key"),
    [
        ("string", "1.00", "custom:1.00"),  # text is the key as written: '007' and '7' are two ids
        ("string", " 007 ", "custom:007"),
        (None, "A-1001", "custom:A-1001"),
        ("string", Decimal("1.50"), "custom:1.5"),
        ("string", 0.00001, "custom:0.00001"),
        ("string", -0.0, "custom:0"),
        ("float", "1.50", "custom:1.5"),
        ("float", 1e-5, "custom:0.00001"),
        ("float", Decimal("-0"), "custom:0"),
        ("int", "  42 ", "custom:42"),
        ("int", Decimal("4.2E+1"), "custom:42"),
    ],
)
def test_a_key_is_written_in_one_form_per_value(key_type, raw, key):
    result = custom_mapper(key_type).map({"id": "r", "crm": raw})
    assert isinstance(result, Profile), result
    assert result.ledger_key == key


@pytest.mark.parametrize(
    ("key_type", "raw", "reason"),
    [
        (None, float("nan"), "is not a finite number"),
        ("string", float("inf"), "is not a finite number"),
        ("string", Decimal("NaN"), "is not a finite number"),
        ("string", True, "expected text, got bool"),
        ("int", 1.5, "has a fractional part, expected an integer"),
        ("int", False, "expected an integer, got bool"),
        ("int", float("-inf"), "is not a finite number"),
        ("float", True, "expected a number, got bool"),
        ("float", Decimal("sNaN"), "is not a finite number"),
        ("float", 2**53 + 1, "is a number a float cannot hold exactly"),
        ("float", "9007199254740993", "is a number a float cannot hold exactly"),
        ("float", Decimal("0.1000000000000000000001"), "is a number a float cannot hold exactly"),
    ],
)
def test_a_value_that_is_no_one_key_is_rejected_naming_the_field(key_type, raw, reason):
    """NaN, infinities and booleans are no id; 1.5 no integer; and an integer a float cannot hold (2**53 + 1
    is sent as 2**53) would be another contact's key: each is rejected, naming the field, not guessed."""
    mapper = custom_mapper(key_type)
    result = mapper.map({"id": "bad", "crm": raw})
    assert isinstance(result, Rejection), result
    assert (result.source_key, result.field, result.reason) == ("bad", "CRM_ID", reason)
    assert isinstance(mapper.map({"id": "good", "crm": 7}), Profile), "the other records are mapped"


def _places(mode: str, value: str, first: int) -> tuple[str, ...]:
    """``value`` written with ``first`` to 6 decimal places."""
    whole, _, fraction = value.partition(".")
    return tuple(f"{mode}:{whole}.{fraction.ljust(n, '0')}" for n in range(first, 7))


@pytest.mark.parametrize(
    ("key", "former"),
    [
        ("custom:1", _places("custom", "1", 1)),
        ("custom_sub:-2.5", _places("custom_sub", "-2.5", 2)),
        ("custom:10000000000000000", (*_places("custom", "10000000000000000", 1), "custom:1e+16")),
        ("custom:0.00001", ("custom:0.000010", "custom:1e-05")),
        ("custom:9007199254740993", _places("custom", "9007199254740993", 1)),
        ("custom:0.1234567", ()),
        ("custom:A-1", ()),
        ("custom:007", ()),
        ("custom:1.0", ()),
        ("custom:-0", ()),
        ("email:1", ()),
        ("profile_id:1", ()),
    ],
)
def test_the_forms_an_earlier_version_wrote_a_numeric_key_in(key, former):
    """`str()` of the value: an int's digits, a float's `1.0` / `1e+16` / `1e-05` (a float key, a float read
    for a text key before floats were written positionally), a decimal column's digits at its scale (up to
    6 places). A float that is another number (9007199254740993 is no float) is no former form."""
    assert former_keys(key) == former
