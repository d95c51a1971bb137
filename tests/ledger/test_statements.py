"""altcraft.ledger.statements: PostgreSQL array text, fast paths against the element-by-element rule; the
arrays PostgreSQL reads from the parameters, whichever form they are sent in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from altcraft.ledger.model import aware_utc, naive_utc
from altcraft.ledger.schema import contacts_table, outcomes_table
from altcraft.ledger.statements import _array, _array_literal, _array_param, _array_params, _array_values

DRIVERS = ("postgresql+psycopg2", "postgresql+psycopg")


def reference(values: list) -> str:
    """Array input text as PostgreSQL documents it: every element double-quoted, ``\\`` and ``"`` escaped."""
    quoted = [
        "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
    ]
    return "{" + ",".join(quoted) + "}"


@given(st.lists(st.one_of(st.none(), st.integers(), st.text(), st.sampled_from(['"', "\\", "NULL", ","]))))
def test_array_text_is_the_documented_quoting_of_every_element(values):
    assert _array_literal(values) == reference(values)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters='"\\'))))
def test_plain_text_arrays_take_the_fast_path_and_agree(values):
    assert _array_literal(iter(values)) == reference(values)


@given(st.lists(st.none(), min_size=1))
def test_all_null_arrays_take_the_fast_path_and_agree(values):
    assert _array_literal(values) == reference(values)


@given(st.lists(st.one_of(st.none(), st.integers()), min_size=1))
def test_arrays_of_numbers_and_nulls_agree(values):
    assert _array_literal(tuple(values)) == reference(values)


#: texts PostgreSQL can store (no NUL, no lone surrogate), with what array text and comma lists must survive
TEXTS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")),
    st.sampled_from(["", ",", ",,", "a,b", '"', "\\", "{}", "NULL", "null", " ", "{a,b}"]),
)


@pytest.fixture(scope="module", params=DRIVERS)
def postgres(request):
    engine = sa.create_engine(f"{request.param}://postgres@127.0.0.1:5432/test")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), TEXTS)))
@example([""])
@example(["", ""])
@example([])
@example(["a"])
@example(["0" * 64, "f" * 64])
def test_postgresql_reads_back_every_text_array_as_sent(postgres, values):
    """Texts go as a comma list split by the server where none has a comma (and they are not one empty
    text), else as array text: either way the server's array is the values, NULLs included."""
    column = contacts_table.c.contact_key
    listed, _ = _array_values(column, values)
    if None not in values:
        plain = values != [""] and not any("," in value for value in values)
        assert (listed is not None) == plain
    built_once = sa.select(_array_param(column, "v"))
    assert postgres.execute(built_once, _array_params(column, "v", values)).scalar_one() == values
    assert postgres.execute(sa.select(_array(column, values))).scalar_one() == values


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))))
def test_postgresql_reads_back_every_integer_array_as_sent(postgres, values):
    column = outcomes_table.c.code
    assert _array_params(column, "v", values) == {"v": _array_literal(values)}
    built_once = sa.select(_array_param(column, "v"))
    assert postgres.execute(built_once, _array_params(column, "v", values)).scalar_one() == values
    assert postgres.execute(sa.select(_array(column, values))).scalar_one() == values


@given(st.datetimes(timezones=st.timezones()))
@example(datetime(2030, 1, 1, 3, 0, 0, 1, tzinfo=timezone(timedelta(hours=3))))
@example(datetime(2000, 10, 29, 1, 0, tzinfo=ZoneInfo("Europe/Dublin")))  # in the repeated hour
def test_naive_and_aware_utc_are_astimezone_and_replace(moment):
    """The ledger's conversions to and from stored (naive UTC) datetimes, made by the constructor rather than
    ``replace``, give what ``astimezone`` and ``replace`` give."""
    try:
        expected = moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # an instant outside datetime's range in UTC: refused alike
        with pytest.raises(OverflowError):
            naive_utc(moment)
        return
    stored = naive_utc(moment)
    assert stored == expected and stored.tzinfo is None and type(stored) is datetime
    # the same instant in UTC (compared as UTC: a time in a zone's repeated hour equals no time of another
    # zone, PEP 495)
    assert aware_utc(stored) == moment.astimezone(UTC) and aware_utc(stored).tzinfo is UTC


def test_naive_utc_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        naive_utc(datetime(2030, 1, 1))
