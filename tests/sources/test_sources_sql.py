"""SQL sources against live PostgreSQL, MariaDB and SQLite, through Airflow connections."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import chain
from zoneinfo import ZoneInfo

import pydantic
import pytest
import sqlalchemy as sa

from altcraft.mapping import Mapper, ProfileMapping
from altcraft.sources import MemoryStateStore, SourceError, SqlQuerySource, SqlTableSource, Window
from altcraft.sources.spec import SqlQuerySpec
from altcraft.sources.sql import (
    _begin_read,
    _bound,
    decode_watermark,
    encode_watermark,
    lowered,
    validate_select,
)

START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=1)
WINDOW = Window(START, END)
BERLIN = ZoneInfo("Europe/Berlin")
# id -> creation instant; 3 is exactly at the end (next window), 4 just before the start.
CREATED = {
    3: END,
    5: END - timedelta(seconds=1),
    1: START,
    6: START + timedelta(hours=6),
    4: START - timedelta(seconds=1),
    2: START + timedelta(hours=12),
}
IN_WINDOW = [1, 2, 5, 6]

DDL = {
    "postgresql": "id integer primary key, email text, created_at timestamptz, created_utc timestamp, "
    "created_local timestamp, seq integer",
    "mysql": "id int primary key, email varchar(64), created_at timestamp(6) null, created_utc datetime(6), "
    "created_local datetime(6), seq int",
    "sqlite": "id integer primary key, email text, created_at text, created_utc text, created_local text, "
    "seq integer",
}


def keys(batches: Iterable[list[dict]]) -> list[int]:
    return [record["id"] for batch in batches for record in batch]


def row(dialect: str, key: int, instant: datetime) -> dict:
    """One contact as this dialect stores it: created_at aware (MySQL TIMESTAMP, SQLite text in UTC),
    created_utc naive UTC (SQLite: SQLAlchemy's text format), created_local naive Berlin wall time."""
    utc = instant.astimezone(UTC).replace(tzinfo=None)
    local = instant.astimezone(BERLIN).replace(tzinfo=None)
    values = {"created_at": instant, "created_utc": utc, "created_local": local}
    if dialect == "mysql":
        values["created_at"] = utc
    if dialect == "sqlite":
        values = {
            "created_at": utc.isoformat(" "),
            "created_utc": utc.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "created_local": local.isoformat(" "),
        }
    return {"id": key, "email": f"user{key}@example.org", "seq": key * 10, **values}


def insert(database, table: str, rows: dict[int, datetime]) -> None:
    with database.engine.begin() as conn:
        if database.dialect == "mysql":
            conn.exec_driver_sql("SET time_zone = '+00:00'")
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (id, email, created_at, created_utc, created_local, seq) "
                "VALUES (:id, :email, :created_at, :created_utc, :created_local, :seq)"
            ),
            [row(database.dialect, key, instant) for key, instant in rows.items()],
        )


@pytest.fixture
def contacts(database, drop_tables: list) -> tuple:
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({DDL[database.dialect]})")
    drop_tables.append((database, table))
    insert(database, table, CREATED)
    return database, table


def mariadb_knows_named_zones(database) -> bool:
    with database.engine.connect() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM mysql.time_zone_name")).scalar_one() > 0


@pytest.mark.parametrize("column", ["created_at", "created_utc"])
def test_window_takes_the_row_at_start_and_leaves_the_row_at_end(contacts, column):
    database, table = contacts
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column=column)

    assert keys(source.batches(WINDOW, 100)) == IN_WINDOW
    assert keys(source.batches(Window(END, END + timedelta(days=1)), 100)) == [3]
    assert keys(source.batches(Window(START - timedelta(days=1), START), 100)) == [4]


def test_naive_column_is_read_in_the_configured_timezone(contacts):
    database, table = contacts
    berlin = SqlTableSource(
        database.conn_id, table, key_column="id", created_at_column="created_local", timezone="Europe/Berlin"
    )
    if database.dialect == "mysql" and not mariadb_knows_named_zones(database):
        with pytest.raises(SourceError, match="time zone tables"):
            list(berlin.batches(WINDOW, 100))
        return
    assert keys(berlin.batches(WINDOW, 100)) == IN_WINDOW
    # Read as UTC, the Berlin wall times are an hour late: 4 (00:59:59 local) enters, 5 leaves.
    as_utc = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_local")
    assert keys(as_utc.batches(WINDOW, 100)) == [1, 2, 4, 6]


def test_window_in_another_timezone_means_the_same_instants(contacts):
    database, table = contacts
    tokyo = ZoneInfo("Asia/Tokyo")
    window = Window(START.astimezone(tokyo), END.astimezone(tokyo))
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")

    assert keys(source.batches(window, 100)) == IN_WINDOW


def test_empty_window_yields_no_batch(contacts):
    database, table = contacts
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")

    assert list(source.batches(Window(END + timedelta(days=30), END + timedelta(days=31)), 100)) == []


def test_batches_are_bounded_ordered_by_key_and_repeat_on_reread(contacts):
    database, table = contacts
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")

    first = list(source.batches(WINDOW, 3))

    assert [[record["id"] for record in batch] for batch in first] == [[1, 2, 5], [6]]
    assert first[0][0]["email"] == "user1@example.org"
    assert list(source.batches(WINDOW, 3)) == first


def test_partitions_split_the_window_in_time_without_overlap(contacts):
    database, table = contacts
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")

    parts = [keys(source.batches(WINDOW, 2, partition=(index, 3))) for index in range(3)]

    assert parts == [[1, 6], [2], [5]]
    assert sorted(chain.from_iterable(parts)) == keys(source.batches(WINDOW, 2))


def test_selected_columns_always_include_key_and_time(contacts):
    database, table = contacts
    source = SqlTableSource(
        database.conn_id, table, key_column="id", created_at_column="created_at", columns=["email"]
    )

    records = [record for batch in source.batches(WINDOW, 100) for record in batch]

    assert [set(record) for record in records] == [{"email", "id", "created_at"}] * 4


@pytest.mark.parametrize("column", ["seq", "created_at"])
def test_watermark_reads_only_rows_beyond_the_last_committed_one(contacts, column):
    database, table = contacts
    state = MemoryStateStore()

    def run() -> list[int]:
        source = SqlTableSource(
            database.conn_id, table, key_column="id", watermark_column=column, state=state
        )
        read = keys(source.batches(WINDOW, 4))
        source.commit()
        return read

    assert run() == [1, 2, 3, 4, 5, 6]
    insert(database, table, {7: END + timedelta(hours=1), 8: END + timedelta(hours=2)})
    assert run() == [7, 8]
    saved = state.get(next(iter(state)))
    assert run() == []
    assert state.get(next(iter(state))) == saved


@pytest.mark.parametrize("column", ["seq", "created_at"])
def test_a_commit_after_a_higher_one_leaves_the_higher_watermark(contacts, column):
    """Two runs read from one watermark; the one that read more (rows 7 and 8 too) commits first, then the
    other. Main saved blindly: the watermark moved back to the lower run's value, and the next run read
    rows 7 and 8 again (under every_run, launched them again). A commit now keeps the later value (SQLite's
    text times compared by instant)."""
    database, table = contacts
    state = MemoryStateStore()

    def source() -> SqlTableSource:
        return SqlTableSource(database.conn_id, table, key_column="id", watermark_column=column, state=state)

    less, more = source(), source()
    assert keys(less.batches(None, 4)) == [1, 2, 3, 4, 5, 6]
    insert(database, table, {7: END + timedelta(hours=1), 8: END + timedelta(hours=2)})
    assert keys(more.batches(None, 4)) == [1, 2, 3, 4, 5, 6, 7, 8]
    more.commit()
    less.commit()
    assert keys(source().batches(None, 4)) == []


def test_a_watermark_read_starts_from_the_position_it_named(contacts):
    """`start_position` names the stored watermark a run starts from and fixes it for the read: another
    run committing meanwhile moves neither. Window mode reads no position."""
    database, table = contacts
    state = MemoryStateStore()
    source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="seq", state=state)
    assert source.ignores_window and source.start_position() == "null"
    state.set(source.state_key, encode_watermark(1000, "UTC"))  # another run commits
    assert keys(source.batches(None, 4)) == [1, 2, 3, 4, 5, 6]
    assert source.start_position() == '{"type":"json","value":1000}'
    windowed = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")
    assert not windowed.ignores_window


@pytest.mark.parametrize(
    ("stored", "zone", "read"),
    [
        # a naive time kept with its zone: the same instant as wall-clock time in the new zone
        (
            {"type": "datetime", "value": "2024-03-01T10:00:00", "timezone": "UTC"},
            "Europe/Moscow",
            datetime(2024, 3, 1, 13, 0),
        ),
        (
            {"type": "json", "value": "2024-03-01 13:00:00", "timezone": "Europe/Moscow"},
            "UTC",
            "2024-03-01T13:00:00+03:00",
        ),
        # kept by an earlier version, without a zone: read as before, in the source's zone
        ({"type": "datetime", "value": "2024-03-01T10:00:00"}, "Europe/Moscow", datetime(2024, 3, 1, 10, 0)),
        (
            {"type": "datetime", "value": "2024-03-01T10:00:00+00:00", "timezone": "UTC"},
            "Europe/Moscow",
            datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_naive_watermark_keeps_its_instant_when_the_sources_timezone_changes(stored, zone, read):
    assert decode_watermark(stored, zone) == read
    assert decode_watermark(encode_watermark(read, zone), zone) == read


@pytest.mark.parametrize(
    ("kind", "value", "read"),
    [
        ("datetime", "2026-10-25T02:40:00", datetime(2026, 10, 25, 0, 40)),  # autumn: its first occurrence
        ("datetime", "2026-03-29T02:30:00", datetime(2026, 3, 29, 0, 30)),  # spring: by the offset after
        ("json", "2026-03-29 02:30:00", "2026-03-29T02:30:00+02:00"),
    ],
)
def test_a_watermark_in_an_hour_a_clock_change_repeats_or_skips_is_read_elsewhere_at_its_earlier_instant(
    kind, value, read
):
    """Kept in Berlin, read in UTC: of the two instants the wall-clock time names, the earlier, so rows
    between them are read again, never skipped (the spring one was read at the later, 01:30 UTC)."""
    assert decode_watermark({"type": kind, "value": value, "timezone": "Europe/Berlin"}, "UTC") == read


def test_watermark_is_not_saved_when_the_consumer_stops_early(contacts):
    database, table = contacts
    state = MemoryStateStore()
    source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="seq", state=state)

    batches = source.batches(None, 2)
    assert keys([next(batches)]) == [1, 2]
    batches.close()

    with pytest.raises(SourceError, match="fully consumed"):
        source.commit()
    assert list(state) == []
    assert keys(source.batches(None, 2)) == [1, 2, 3, 4, 5, 6]


#: watermark columns holding what real tables hold: (dialect, column, values of rows 1-3, value of row 4, what
#: the second run reads, the rows rejected whenever read): NaN and infinity, which no number passes (their
#: rows pass every watermark), a MariaDB zero date (read as None), text next to numbers in SQLite (ordered
#: after them), and text that is no time (SQLite keeps dates as text, and compares text: past 'infinity',
#: '9999-99-99' or 'N/A' no later date is read)
ODD_WATERMARKS = [
    ("postgresql", "w double precision", ["'NaN'", "5", "7"], "9", [1, 4], [1]),
    ("postgresql", "w numeric", ["5", "'NaN'", "7"], "9", [2, 4], [2]),
    ("postgresql", "w double precision", ["5", "'Infinity'", "7"], "9", [2, 4], [2]),
    ("postgresql", "w text", ["'2024-03-01'", "'N/A'", "'2024-03-02'"], "'2024-03-03'", [2, 4], [2]),
    (
        "mysql",
        "w datetime",
        ["'0000-00-00 00:00:00'", "'2024-03-01'", "'2024-03-02'"],
        "'2024-03-03'",
        [4],
        [],
    ),
    ("sqlite", "w", ["5", "'x'", "7"], "'2024-03-01T10:00:00Z'", [2, 4], [2]),
    (
        "sqlite",
        "w text",
        ["'2024-03-01 10:00'", "'infinity'", "'9999-99-99'"],
        "'2024-03-02'",
        [2, 3, 4],
        [2, 3],
    ),
    ("sqlite", "w text", ["'N/A'", "'2024-03-01'", "'2024-03-01 12:00'"], "'2024-03-02'", [1, 4], [1]),
]


@pytest.mark.parametrize(("dialect", "column", "values", "later", "again", "odd"), ODD_WATERMARKS)
def test_a_watermark_column_of_odd_values_is_read_and_moves_past_them(
    databases, drop_tables, dialect, column, values, later, again, odd
):
    """The highest value was Python's max(): a zero date or text next to numbers failed every run with a
    TypeError, a numeric NaN with InvalidOperation, and a float NaN or infinity became the watermark, past
    which PostgreSQL places no number: no later row was ever read. So did text that is no time (SQLite keeps
    dates as text). Now the database's order, without them, and their rows are rejected naming the column."""
    from altcraft.records import ERROR_FIELD

    database, table, state = databases[dialect], databases[dialect].new_table(), MemoryStateStore()
    with database.engine.begin() as conn:
        if dialect == "mysql":
            conn.exec_driver_sql("SET SESSION sql_mode = ''")  # a zero date, as older servers stored them
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, {column})")
        for key, value in enumerate(values, start=1):
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({key}, {value})")
    drop_tables.append((database, table))

    def run() -> list[int]:
        source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="w", state=state)
        records = [record for batch in source.batches(None, 2) for record in batch]
        source.commit()
        read = [int(record["id"]) for record in records]
        rejected = {int(r["id"]): r[ERROR_FIELD] for r in records if ERROR_FIELD in r}
        assert sorted(rejected) == [key for key in odd if key in read]
        assert all(why.startswith("w: not a value a watermark can move to") for why in rejected.values())
        return read

    assert run() == [1, 2, 3]
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (4, {later})")
    assert run() == again


#: text times of one column in the forms writers mix: (key, text), in the runs that insert them; in UTC,
#: run 1 holds 10:00, 09:00 and 09:00, run 2 11:00, 10:30 and 09:30, run 3 11:30 and 10:45
MIXED_TEXT_TIMES = [
    {1: "2024-03-01 10:00:00", 2: "2024-03-01T09:00:00", 3: "2024-03-01 12:00:00+03:00"},
    {4: "2024-03-01 11:00:00", 5: "2024-03-01T10:30:00Z", 6: "2024-03-01T09:30:00"},
    {7: "2024-03-01 11:30:00", 8: "2024-03-01 13:45:00+03:00"},
]
TEXT_COLUMN = {"postgresql": "text", "mysql": "varchar(40)", "sqlite": "text"}


def test_a_watermark_of_text_times_in_mixed_forms_moves_by_their_instants(database, drop_tables):
    """Each run reads the rows whose instant is past the highest instant read before, whatever the form of
    their text (' ' or 'T', an offset, a 'Z'); a row whose time is before it (6, 8: committed late) is not
    read, as with any watermark. Main compared the text: 'T' sorts after ' ', so the watermark became
    '2024-03-01T09:00:00' and rows 4 and 7, later in time, were never read (lost), and 6 was read though it
    is before the watermark."""
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id integer primary key, w {TEXT_COLUMN[database.dialect]})"
        )
    drop_tables.append((database, table))
    state, read = MemoryStateStore(), []
    for rows in MIXED_TEXT_TIMES:
        with database.engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {table} VALUES (:id, :w)"), [{"id": k, "w": w} for k, w in rows.items()]
            )
        source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="w", state=state)
        read.append(keys(source.batches(None, 2)))
        source.commit()

    assert read == [[1, 2, 3], [4, 5], [7]]
    assert state.get(source.state_key) == {"type": "json", "value": "2024-03-01 11:30:00", "timezone": "UTC"}


TYPED_COLUMN = {
    "postgresql": "ALTER COLUMN w TYPE timestamp USING w::timestamp",
    "mysql": "MODIFY w datetime",
}


def test_a_text_watermark_passes_to_a_column_typed_as_a_time_since(database, drop_tables):
    """A text watermark column changed to a date-time type: the rows are compared with the stored text by
    their instants. Main compared only text in Python once the watermark was text (2fed5a2): every row of
    the typed column stood before it, so no later contact was ever read, the runs found nothing."""
    if database.dialect == "sqlite":
        pytest.skip("SQLite gives any column's times as text")
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id integer primary key, w {TEXT_COLUMN[database.dialect]})"
        )
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, '2024-03-01 10:00:00')"))
    drop_tables.append((database, table))
    state = MemoryStateStore()
    read = []
    for new_rows in ([], [(2, "2024-03-01 09:00:00"), (3, "2024-03-01 11:00:00")]):
        with database.engine.begin() as conn:
            if new_rows:
                conn.exec_driver_sql(f"ALTER TABLE {table} {TYPED_COLUMN[database.dialect]}")
            for key, moment in new_rows:
                conn.execute(sa.text(f"INSERT INTO {table} VALUES (:id, :w)"), {"id": key, "w": moment})
        source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="w", state=state)
        read.append(keys(source.batches(None, 10)))
        source.commit()

    assert read == [[1], [3]]
    assert state.get(source.state_key)["value"] == "2024-03-01T11:00:00"


#: a table whose id and time the database takes when a row is inserted: (id, time) by dialect
TAKEN_ON_INSERT = {
    "postgresql": "id bigserial primary key, email text, taken timestamptz default clock_timestamp()",
    "mysql": "id bigint auto_increment primary key, email varchar(64), taken datetime(6) "
    "default current_timestamp(6)",
}


@pytest.mark.parametrize("database", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize(("column", "lookback"), [("id", 1000), ("taken", timedelta(hours=1))])
def test_a_row_committed_after_a_higher_one_was_read_is_read_by_the_next_run_within_lookback(
    database, drop_tables, column, lookback
):
    """Two writers: A takes the lower id (or time), B the higher one and commits first; a run reads B and
    moves the watermark past A's value; then A commits. Read above the watermark alone, A's row was never
    read by any run, without a word. Each run now also reads ``lookback`` below the watermark: the next run
    reads A's row (and again the rows within the margin, which the ledger skips); the watermark stays at
    the highest value read."""
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({TAKEN_ON_INSERT[database.dialect]})")
        conn.exec_driver_sql(f"INSERT INTO {table} (email) VALUES ('first@example.org')")
    drop_tables.append((database, table))
    state = MemoryStateStore()

    def run() -> list[str]:
        source = SqlTableSource(
            database.conn_id, table, key_column="id", watermark_column=column, lookback=lookback, state=state
        )
        read = [record["email"] for batch in source.batches(None, 10) for record in batch]
        source.commit()
        return read

    assert run() == ["first@example.org"]
    with database.engine.connect() as slow, database.engine.connect() as fast:
        slow.exec_driver_sql(f"INSERT INTO {table} (email) VALUES ('slow@example.org')")  # not committed
        fast.exec_driver_sql(f"INSERT INTO {table} (email) VALUES ('fast@example.org')")
        fast.commit()
        assert run() == ["first@example.org", "fast@example.org"]
        slow.commit()
    assert run() == ["first@example.org", "slow@example.org", "fast@example.org"]
    highest = state.get(f"sql_table:.{table}.{column}:watermark")
    with database.engine.connect() as conn:
        top = conn.exec_driver_sql(f"SELECT max({column}) FROM {table}").scalar_one()
    assert decode_watermark(highest, "UTC") == top


@pytest.mark.parametrize(
    ("column", "lookback", "late", "again"),
    [
        ("seq", 10, {7: 55, 8: 5}, [6, 7]),
        ("created_at", timedelta(hours=1), {7: END - timedelta(minutes=30), 8: START}, [3, 5, 7]),
        ("created_utc", timedelta(hours=1), {7: END - timedelta(minutes=30), 8: START}, [3, 5, 7]),
    ],
)
def test_lookback_reads_again_the_margin_below_the_watermark_which_stays(
    contacts, column, lookback, late, again
):
    """Rows showing below the watermark: one within ``lookback`` (7) is read by the next run, with the rows
    read before within it (the ledger skips those); one further below (8) is still never read. A number
    (seq), an aware time (PostgreSQL), a naive one (MariaDB, PostgreSQL) and text (SQLite) alike; the
    watermark stays the highest value read."""
    database, table = contacts
    state = MemoryStateStore()

    def run() -> list[int]:
        source = SqlTableSource(
            database.conn_id, table, key_column="id", watermark_column=column, lookback=lookback, state=state
        )
        read = keys(source.batches(None, 4))
        source.commit()
        return read

    assert run() == [1, 2, 3, 4, 5, 6]
    saved = state.get(next(iter(state)))
    insert(database, table, {key: START for key in late} if column == "seq" else late)
    if column == "seq":
        with database.engine.begin() as conn:
            for key, seq in late.items():
                conn.execute(
                    sa.text(f"UPDATE {table} SET seq = :seq WHERE id = :id"), {"seq": seq, "id": key}
                )
    assert run() == again
    assert run() == again
    assert state.get(next(iter(state))) == saved


@pytest.mark.parametrize(
    ("column", "lookback", "message"),
    [
        (
            "seq",
            timedelta(hours=1),
            "lookback: 1:00:00 is a duration, but watermark_column 'seq' holds numbers",
        ),
        ("created_utc", 10, "lookback: 10 is a number, but watermark_column 'created_utc' holds "),
    ],
)
def test_a_lookback_that_does_not_fit_the_watermark_column_is_refused_naming_it(
    contacts, column, lookback, message
):
    """Refused before the first batch, on the first run (no watermark yet) and on a run after one without
    lookback, whose watermark the margin would be taken off."""
    database, table = contacts
    state = MemoryStateStore()

    def source(margin: object) -> SqlTableSource:
        return SqlTableSource(
            database.conn_id, table, key_column="id", watermark_column=column, lookback=margin, state=state
        )

    with pytest.raises(SourceError, match=message):
        next(iter(source(lookback).batches(None, 100)))
    first = source(None)
    keys(first.batches(None, 100))
    first.commit()
    with pytest.raises(SourceError, match=message):
        next(iter(source(lookback).batches(None, 100)))


def test_a_watermark_read_without_lookback_says_late_commits_are_lost(contacts, caplog):
    """Without lookback a row committed after a higher one was read is lost: each read says so in its
    log; ``lookback: 0`` (one writer, committing in order) says it is known."""
    database, table = contacts
    for lookback, warned in ((None, True), (0, False)):
        caplog.clear()
        source = SqlTableSource(
            database.conn_id,
            table,
            key_column="id",
            watermark_column="seq",
            lookback=lookback,
            state=MemoryStateStore(),
        )
        assert keys(source.batches(None, 100)) == [1, 2, 3, 4, 5, 6]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("no lookback" in text for text in warnings) == warned


@pytest.mark.parametrize(
    ("last", "lookback", "zone", "read"),
    [
        (1000, 1000, "UTC", 0),
        (Decimal("10.5"), 0.5, "UTC", Decimal("10.0")),
        (7.5, 10, "UTC", -2.5),
        (date(2024, 3, 2), timedelta(minutes=15), "UTC", date(2024, 3, 1)),  # whole days, rounded up
        # an aware time: by the instant (wall-clock arithmetic in Berlin gave a time the spring skips)
        (
            datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN),
            timedelta(hours=1),
            "UTC",
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        ),
        # naive in Berlin, across the spring change: 03:30 less an hour is 01:30 (02:30 missed 01:30-01:59)
        (datetime(2026, 3, 29, 3, 30), timedelta(hours=1), "Europe/Berlin", datetime(2026, 3, 29, 1, 30)),
        # in the autumn hour repeated: from its first occurrence
        (
            datetime(2026, 10, 25, 2, 20),
            timedelta(minutes=30),
            "Europe/Berlin",
            datetime(2026, 10, 25, 1, 50),
        ),
        ("2024-03-01 10:00:00", timedelta(hours=1), "Europe/Moscow", "2024-03-01T06:00:00+00:00"),
        ("N/A", timedelta(hours=1), "UTC", "N/A"),  # no time: every row is past it, as before
        (datetime(1, 1, 1, 0, 30), timedelta(hours=1), "UTC", None),  # before year 1: every row
    ],
)
def test_the_watermark_less_lookback_is_at_least_that_much_earlier(last, lookback, zone, read):
    assert lowered(last, lookback, zone) == read


@pytest.mark.parametrize(
    ("kind", "value", "python_type"),
    [
        ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "UUID"),
        ("time", "'10:00'", "time"),
        ("interval", "'1 day'", "timedelta"),
        ("jsonb", "'{\"a\": 1}'", "dict"),
    ],
)
def test_a_watermark_column_no_watermark_can_keep_fails_before_its_rows_are_read(
    postgres, drop_tables, kind, value, python_type
):
    """Every row was read and delivered, and then commit failed ("cannot keep a watermark of type UUID"),
    or the read failed with a bare TypeError comparing two values (jsonb): every run read the table again
    and failed again."""
    table = postgres.new_table()
    drop_tables.append((postgres, table))
    with postgres.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, email text, mark {kind})")
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES (1, 'a@example.org', {value}), (2, 'b@x.org', {value})"
        )
    source = SqlTableSource(
        postgres.conn_id,
        table,
        key_column="id",
        watermark_column="mark",
        lookback=0,
        state=MemoryStateStore(),
    )

    with pytest.raises(SourceError, match=rf"watermark_column 'mark' holds {python_type} values, which no "):
        next(source.batches(None, 10))


def test_watermark_mode_needs_a_state_store_and_cannot_be_partitioned(contacts):
    database, table = contacts
    source = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="seq")

    with pytest.raises(SourceError, match="state store"):
        list(source.batches(None, 10))
    source.state = MemoryStateStore()
    with pytest.raises(ValueError, match="cannot be partitioned"):
        list(source.batches(WINDOW, 10, partition=(0, 2)))


def test_query_gets_the_window_as_bound_parameters(contacts):
    database, table = contacts
    sql = f"SELECT id, email FROM {table} WHERE created_at >= :window_start AND created_at < :window_end"
    source = SqlQuerySource(database.conn_id, sql, key_column="id")

    assert keys(source.batches(WINDOW, 3)) == IN_WINDOW
    assert keys(source.batches(Window(END, END + timedelta(hours=1)), 3)) == [3]
    parts = [keys(source.batches(WINDOW, 3, partition=(index, 2))) for index in range(2)]
    assert parts == [[1, 6], [2, 5]]


#: A query that answers after 10 s or later, using both window bounds (so that a probe may run it)
SLOW_QUERIES = {
    "postgresql": "SELECT 1 AS id FROM pg_sleep(10) "
    "WHERE CAST(:window_start AS timestamptz) < CAST(:window_end AS timestamptz)",
    "mysql": "SELECT SLEEP(10) AS id FROM DUAL WHERE :window_start < :window_end",
    "sqlite": "WITH RECURSIVE n(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM n WHERE id < 1000000000) "
    "SELECT id FROM n WHERE :window_start < :window_end",
}


def test_a_probe_the_database_does_not_answer_is_cancelled_after_the_probe_timeout(database):
    """A probe query waited on forever (a lock, a slow plan) held its connection, and the trigger only
    said every 60 s that it still waited. The database cancels it after ``probe_timeout``; the error names
    the source and the timeout, and the connection serves the next probe."""
    quick = "SELECT 1 AS id FROM (SELECT 1 AS x) AS one WHERE :window_start < :window_end"
    source = SqlQuerySource(database.conn_id, quick, key_column="id")
    source.probe_timeout = 0.5
    try:
        assert source.probe(START) == (1, None)  # connected (the driver imported) before the clock starts
        source.sql = SLOW_QUERIES[database.dialect]
        started = time.monotonic()
        with pytest.raises(SourceError) as failed:
            source.probe(START)
        waited = time.monotonic() - started
        source.sql = quick
        assert source.probe(START) == (1, None)
    finally:
        source.close_probe()

    assert str(failed.value) == (
        f"{source.describe()}: probe: no answer within 0.5s: the database cancelled the query "
        "(statement timeout)"
    )
    assert 0.5 <= waited < 3


@pytest.mark.parametrize("database", ["postgresql", "sqlite"], indirect=True)  # MariaDB: see above
def test_query_in_local_time_with_a_naive_column(contacts):
    database, table = contacts
    sql = f"SELECT id FROM {table} WHERE created_local >= :window_start AND created_local < :window_end;"
    source = SqlQuerySource(database.conn_id, sql, key_column="id", timezone="Europe/Berlin")

    assert keys(source.batches(WINDOW, 10)) == IN_WINDOW


def test_query_records_are_dicts_of_the_selected_columns(contacts):
    database, table = contacts
    sql = f"SELECT id, email, seq AS extra, id * 2 AS seq FROM {table} WHERE id <= 2"
    source = SqlQuerySource(database.conn_id, sql, key_column="id")

    records = [record for batch in source.batches(None, 10) for record in batch]
    assert records == [
        {"id": key, "email": f"user{key}@example.org", "extra": key * 10, "seq": key * 2} for key in (1, 2)
    ]


#: a column of each type a source may read, per dialect
TYPED_DDL = {
    "postgresql": "id integer primary key, big bigint, small smallint, amount numeric(20, 6), "
    "real_ double precision, flag boolean, txt text, chars varchar(40), day date, naive timestamp, "
    "aware timestamptz, raw bytea, doc jsonb",
    "mysql": "id int primary key, big bigint, small smallint, amount decimal(20, 6), real_ double, "
    "flag boolean, txt text, chars varchar(40), day date, naive datetime(6), aware timestamp(6) null, "
    "raw blob, doc json",
    "sqlite": "id integer primary key, big bigint, small smallint, amount numeric(20, 6), real_ real, "
    "flag boolean, txt text, chars varchar(40), day date, naive timestamp, aware text, raw blob, doc text",
}
#: rows as SQL literals: extremes, NULLs, empty text, quotes, non-ASCII, an offset (dropped but on PostgreSQL)
TYPED_ROWS = [
    "1, 9223372036854775807, -32768, 12345678901234.123456, 1.5e300, TRUE, 'ünï \"q\" ''x''', 'a', "
    "'2024-02-29', '2024-03-01 12:34:56.789012', '2024-03-01 12:34:56.789012+02', NULL, '{\"a\": [1, 2.5]}'",
    "2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "3, -1, 0, -0.000001, -0.5, FALSE, '', '', '1970-01-02', '1970-01-02 00:00:00', "
    "'2038-01-19 03:14:07+00', NULL, 'null'",
]
#: a row of each dialect's own literals: other extremes, bytes with a NUL and a byte that is not UTF-8; on
#: SQLite text that is not UTF-8 (read as lone surrogates), an integer beyond 64 bits and a malformed time
TYPED_DIALECT_ROW = {
    "postgresql": "4, -9223372036854775808, 32767, -99999999999999.999999, 5e-324, TRUE, 'x', 'y', "
    "'9999-12-31', '0001-01-01 00:00:00', '2024-01-01 00:00:00-12', decode('00ff61', 'hex'), '[]'",
    "mysql": "4, -9223372036854775808, 32767, -99999999999999.999999, 2.2250738585072014e-308, TRUE, 'x', "
    "'y', '9999-12-31', '1000-01-01 00:00:00', '1970-01-01 00:00:01', x'00ff61', '[]'",
    "sqlite": "4, 99999999999999999999, 32767, -99999999999999.999999, 5e-324, 2, CAST(x'ff61' AS TEXT), "
    "CAST(x'c3' AS TEXT), '9999-12-31', '0001-01-01 00:00:00', 'not a time', x'00ff61', '[]'",
}


def test_records_hold_exactly_what_sqlalchemy_reads_for_every_column_type(database, drop_tables):
    """The records `batches` builds, of a query and of a table (all columns or some), against SQLAlchemy's
    own mappings of the same rows read in the same session settings: the same names in the same order, equal
    values of the same types (datetimes with the same tzinfo, Decimal not float, bytes, surrogates) on every
    backend. Batches of 2 take the row SQLAlchemy fetches ahead and the rows fetched after it."""
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({TYPED_DDL[database.dialect]})")
        for values in [*TYPED_ROWS, TYPED_DIALECT_ROW[database.dialect]]:
            if database.dialect != "postgresql":
                values = values.replace("+02'", "'").replace("+00'", "'")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({values})")
    drop_tables.append((database, table))
    some = ["doc", "raw", "amount", "txt"]
    sources = {
        f"SELECT * FROM {table} ORDER BY id": [
            SqlQuerySource(database.conn_id, f"SELECT * FROM {table}", key_column="id"),
            SqlTableSource(database.conn_id, table, key_column="id", created_at_column="naive"),
        ],
        f"SELECT {', '.join(some)}, id, naive FROM {table} ORDER BY id": [
            SqlTableSource(database.conn_id, table, key_column="id", created_at_column="naive", columns=some)
        ],
    }

    reader = sa.create_engine(database.engine.url)  # _begin_read leaves its session read-only
    try:
        with reader.connect() as conn:
            _begin_read(conn, "UTC")
            plain = {sql: [dict(row) for row in conn.execute(sa.text(sql)).mappings()] for sql in sources}
    finally:
        reader.dispose()

    def typed(records: list[dict]) -> list[list[tuple]]:
        return [[(name, type(value), repr(value)) for name, value in record.items()] for record in records]

    for sql, readers in sources.items():
        assert len(plain[sql]) == 4
        for source in readers:
            assert typed([record for batch in source.batches(None, 2) for record in batch]) == typed(
                plain[sql]
            )


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_numeric_column_maps_to_the_text_the_database_writes(databases, dialect):
    """A numeric(20,10) zero is Decimal('0E-10') from psycopg2 and mysqlclient alike; a string field sent
    "0E-10" and "1.00E-8", no text the database or its user ever showed."""
    database = databases[dialect]
    cast = "numeric(20, 10)" if dialect == "postgresql" else "decimal(20, 10)"
    sql = f"SELECT 1 AS id, 'a@example.org' AS email, CAST(0 AS {cast}) AS zero, CAST(1e-8 AS {cast}) AS tiny"
    mapping = ProfileMapping(
        matching="email", key={"email": "email"}, fields={"ZERO": "zero", "TINY": "tiny"}
    )
    records = [
        record
        for batch in SqlQuerySource(database.conn_id, sql, key_column="id").batches(None, 10)
        for record in batch
    ]

    result = Mapper(mapping, source_key_column="id").map(records[0])

    assert result.data == {"ZERO": "0.0000000000", "TINY": "0.0000000100"}


def test_a_name_selected_twice_keeps_its_first_place_and_its_last_value(postgres):
    """On PostgreSQL (SQLite renames the second column, MySQL refuses the subquery)."""
    sql = "SELECT 1 AS id, 'a' AS same, 2 AS other, 'b' AS same"
    source = SqlQuerySource(postgres.conn_id, sql, key_column="id")

    [[record]] = list(source.batches(None, 10))

    assert list(record.items()) == [("id", 1), ("same", "b"), ("other", 2)]


def test_postgres_error_in_a_later_batch_is_sqlalchemys_after_the_batches_before_it(postgres, drop_tables):
    """A driver error while fetching rows is raised as SQLAlchemy's DBAPIError, as for the query itself."""
    table = postgres.new_table()
    with postgres.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key)")
        conn.exec_driver_sql(f"INSERT INTO {table} SELECT generate_series(1, 6)")
    drop_tables.append((postgres, table))
    source = SqlQuerySource(postgres.conn_id, f"SELECT id, 1 / (id - 5) AS x FROM {table}", key_column="id")

    read = []
    with pytest.raises(sa.exc.DataError, match="division by zero"):
        read.extend(keys([batch]) for batch in source.batches(None, 2))
    assert read == [[1, 2], [3, 4]]


def test_query_without_window_parameters_reads_everything_ordered_by_key(contacts):
    database, table = contacts
    source = SqlQuerySource(database.conn_id, f"SELECT * FROM {table} -- all of it", key_column="id")

    assert keys(source.batches(None, 4)) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="both :window_start and :window_end"):
        list(source.batches(WINDOW, 4, partition=(0, 2)))


def test_query_with_window_parameters_needs_a_window():
    source = SqlQuerySource("unused", "SELECT id FROM t WHERE c >= :window_start", key_column="id")

    with pytest.raises(ValueError, match="needs a window"):
        list(source.batches(None, 4))


def test_postgres_query_runs_in_a_read_only_transaction(postgres):
    sequence = postgres.new_table()
    with postgres.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SEQUENCE {sequence}")
    source = SqlQuerySource(postgres.conn_id, f"SELECT nextval('{sequence}') AS id", key_column="id")
    try:
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            list(source.batches(None, 1))
    finally:
        with postgres.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SEQUENCE {sequence}")


def test_a_connection_that_is_not_a_database_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SRC_TEST_NOT_SQL", "http://127.0.0.1:9")
    source = SqlTableSource("src_test_not_sql", "contacts", key_column="id", created_at_column="created_at")

    with pytest.raises(SourceError, match="not a SQL database"):
        list(source.batches(WINDOW, 10))


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("table", {"table": "contacts; DROP TABLE x"}),
        ("table", {"table": "contacts--"}),
        ("schema", {"schema": 'public"."x'}),
        ("key_column", {"key_column": "id) OR (1=1"}),
        ("created_at_column", {"created_at_column": "created_at >= now() --"}),
        ("watermark_column", {"created_at_column": None, "watermark_column": "1seq"}),
        ("columns", {"columns": ["email", "*"]}),
        ("table", {"table": "x" * 64}),
    ],
)
def test_identifier_injection_is_refused_naming_the_field(field, kwargs):
    arguments = {"table": "contacts", "key_column": "id", "created_at_column": "created_at", **kwargs}

    with pytest.raises(ValueError, match=rf"^{field}: .* is not a plain SQL identifier"):
        SqlTableSource("any", **arguments)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM contacts",
        "UPDATE contacts SET email = NULL",
        "DROP TABLE contacts",
        "SELECT 1; DROP TABLE contacts",
        "SELECT * FROM contacts WHERE email = 'a'; DELETE FROM contacts",
        "WITH gone AS (DELETE FROM contacts RETURNING *) SELECT * FROM gone",
        "SELECT * INTO copy FROM contacts",
        "SELECT * FROM contacts FOR UPDATE",
        "SELECT 'a\\' ; DELETE FROM contacts; --'",  # PostgreSQL: the string ends at \'
        "SELECT 'a\\'' ; DELETE FROM contacts -- '",  # MySQL: \' is an escaped quote
        "SELECT $$'$$; DELETE FROM contacts; --'",  # PostgreSQL dollar quoting
        "SELECT 1 --1; DELETE FROM contacts",  # MySQL: --1 is not a comment
        "SELECT 1 /*! ; DELETE FROM contacts */",  # MySQL executable comment
        "EXPLAIN ANALYZE DELETE FROM contacts",
        "",
    ],
)
def test_anything_but_one_select_is_refused(sql):
    with pytest.raises(ValueError, match=r"^sql: only"):
        validate_select(sql)
    with pytest.raises(ValueError, match=r"^sql: only"):
        SqlQuerySource("any", sql, key_column="id")


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT id FROM contacts WHERE note <> ':vip'", "vip"),
        ("SELECT id FROM contacts WHERE created >= :since", "since"),
        ("SELECT id FROM contacts WHERE created >= :window_start::timestamptz", "window_start::"),
    ],
)
def test_a_colon_name_other_than_the_window_bounds_is_refused_naming_the_field(sql, name):
    """SQLAlchemy reads ``:name`` as a parameter to bind, in a string literal too; only the window bounds are
    bound, so the spec was accepted and every run failed with "A value is required for bind parameter". A
    ``:name::`` cast is no parameter: the database got the text and every run failed with a syntax error."""
    with pytest.raises(ValueError, match=rf"^sql: ':{name}' (would be|is no) a? ?parameter to bind"):
        validate_select(sql)
    with pytest.raises(pydantic.ValidationError, match=rf"sql: ':{name}' "):
        SqlQuerySpec(type="sql_query", conn_id="any", sql=sql, key_column="id")


def test_an_escaped_colon_name_in_a_query_is_text(contacts):
    database, table = contacts
    sql = f"SELECT id, '\\:vip' AS tag, email FROM {table} WHERE id = 1 AND email <> '\\:vip'"
    source = SqlQuerySource(database.conn_id, sql, key_column="id")

    assert [r["tag"] for batch in source.batches(None, 10) for r in batch] == [":vip"]


@pytest.mark.parametrize(
    "sql",
    [
        "select id from contacts where note = 'update; delete' -- ; drop",
        'SELECT "delete" FROM contacts /* insert; */',
        "(SELECT id FROM a) UNION (SELECT id FROM b);",
        "WITH recent AS (SELECT * FROM contacts) SELECT id, updated_at FROM recent",
    ],
)
def test_harmless_text_in_a_select_is_accepted(sql):
    assert validate_select(sql) == sql.removesuffix(";")


def test_a_100k_row_window_streams_with_bounded_memory(postgres, drop_tables):
    table = postgres.new_table()
    with postgres.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} AS SELECT g AS id, 'user' || g || '@example.org' AS email, "
            "timestamptz '2024-03-01 00:00:00+00' + g * interval '1 second' AS created_at, "
            "md5(g::text) AS note "
            "FROM generate_series(1, 100000) AS g"
        )
    drop_tables.append((postgres, table))
    source = SqlTableSource(postgres.conn_id, table, key_column="id", created_at_column="created_at")
    list(source.batches(Window(START - timedelta(days=1), START), 1000))  # imports and connection set-up
    # Memory is asserted here; how fast such a window is read is measured by `make bench` (SqlTableSource
    # over 100,000 rows, docs/benchmarks.md), not capped in a test that a shared machine could slow down.

    tracemalloc.start()
    count, largest, last = 0, 0, 0
    for batch in source.batches(Window(START, START + timedelta(days=2)), 1000):
        assert batch[0]["id"] > last
        count, largest, last = count + len(batch), max(largest, len(batch)), batch[-1]["id"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert (count, largest, last) == (100_000, 1000, 100_000)
    # Holding all 100k records at once peaks at ~40 MiB under tracemalloc; streaming stays near 1 MiB.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_sqlite_text_that_is_not_utf8_is_that_records_rejection_and_the_others_are_read(
    databases, drop_tables
):
    """SQLite keeps any bytes in a TEXT column; sqlite3's strict decoding failed the whole read."""
    from altcraft.mapping import Mapper, Profile, ProfileMapping, Rejection

    database = databases["sqlite"]
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, email text, note text)")
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES (1, 'a@example.org', 'ok'), (2, CAST(x'ff61406578' AS TEXT), 'ok'),"
            f" (3, 'c@example.org', CAST(x'c3' AS TEXT))"
        )
    drop_tables.append((database, table))
    mapper = Mapper(
        ProfileMapping.model_validate(
            {"matching": "email", "key": {"email": "email"}, "fields": {"NOTE": "note"}}
        ),
        source_key_column="id",
    )

    source = SqlQuerySource(database.conn_id, f"SELECT * FROM {table} ORDER BY id", key_column="id")
    [records] = list(source.batches(None, 100))
    mapped = [mapper.map(record) for record in records]

    assert [type(m) for m in mapped] == [Profile, Rejection, Rejection]
    assert [(m.source_key, m.field) for m in mapped[1:]] == [("2", "email"), ("3", "NOTE")]
    assert all("surrogate" in m.reason for m in mapped[1:])


def windows(start: datetime, end: datetime, step: timedelta) -> list[Window]:
    """The contiguous windows ``[start + k*step, ...)`` up to ``end``, as consecutive runs read them."""
    return [Window(start + step * k, start + step * (k + 1)) for k in range((end - start) // step)]


def read_by(source: SqlTableSource, runs: list[Window]) -> dict[object, list[Window]]:
    """Each key read, with the windows that read it."""
    found: dict[object, list[Window]] = {}
    for window in runs:
        for batch in source.batches(window, 3):
            for record in batch:
                found.setdefault(record["id"], []).append(window)
    return found


def new_sqlite_table(database, drop_tables: list, rows: dict[int, object]) -> str:
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, created_at)")  # no affinity
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :at)"), [{"id": k, "at": v} for k, v in rows.items()]
        )
    drop_tables.append((database, table))
    return table


HALF_PAST_TEN = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
#: key -> (what a SQLite table holds, the instant it means when naive text is UTC)
SQLITE_TIMES = {
    1: ("2024-03-01 10:30:00", HALF_PAST_TEN),  # CURRENT_TIMESTAMP's format
    2: ("2024-03-01T10:30:00.500000", HALF_PAST_TEN + timedelta(milliseconds=500)),  # isoformat()
    3: ("2024-03-01T10:30:00.123Z", HALF_PAST_TEN + timedelta(milliseconds=123)),  # JavaScript's toISOString
    4: ("2024-03-01T13:30:00+03:00", HALF_PAST_TEN),
    5: ("2024-03-01 10:30:00+00:00", HALF_PAST_TEN),  # sqlite3's adapter of an aware datetime
    6: (int(HALF_PAST_TEN.timestamp()), HALF_PAST_TEN),  # epoch seconds
    7: (HALF_PAST_TEN.timestamp() + 0.25, HALF_PAST_TEN + timedelta(milliseconds=250)),
    8: ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),  # a date only: its midnight
    9: ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10, tzinfo=UTC)),  # exactly at a window's start
    10: ("2024-03-01 09:59:59.999999", datetime(2024, 3, 1, 9, 59, 59, 999999, tzinfo=UTC)),
    11: ("2024-03-01 23:59", datetime(2024, 3, 1, 23, 59, tzinfo=UTC)),
    12: ("2024-03-02 00:00:00", datetime(2024, 3, 2, tzinfo=UTC)),  # the next day's first window
    13: (None, None),  # never read, as NULL is in PostgreSQL and MySQL
}


def test_sqlite_timestamps_of_every_format_are_read_once_by_the_window_of_their_instant(
    databases, drop_tables
):
    """Main compared the text with the bounds' text: 'T' sorts after ' ', so ISO text fell in a day's last
    hourly window, a date only in the day before's, an offset was ignored, and epoch numbers (which SQLite
    sorts before any text) were never read."""
    database = databases["sqlite"]
    table = new_sqlite_table(database, drop_tables, {key: held for key, (held, _) in SQLITE_TIMES.items()})
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")
    runs = windows(START, END + timedelta(hours=1), timedelta(hours=1))

    found = read_by(source, runs)

    expected = {key: [w for w in runs if w.contains(at)] for key, (_, at) in SQLITE_TIMES.items() if at}
    assert found == expected


def test_sqlite_naive_local_text_is_read_once_across_the_autumn_clock_change(databases, drop_tables):
    """Berlin wall-clock text every 10 minutes through the night the clock goes back (02:00-03:00 happens
    twice), read by 15-minute windows: each row once. Main mapped each bound to wall-clock text, so the
    windows after the change read 02:00-03:00 again. A time of the repeated hour is its first occurrence."""
    database = databases["sqlite"]
    local = [datetime(2026, 10, 25, 0, 0) + timedelta(minutes=10 * k) for k in range(30)]
    table = new_sqlite_table(database, drop_tables, {k: t.isoformat(" ") for k, t in enumerate(local)})
    source = SqlTableSource(
        database.conn_id, table, key_column="id", created_at_column="created_at", timezone="Europe/Berlin"
    )
    runs = windows(
        datetime(2026, 10, 24, 21, tzinfo=UTC), datetime(2026, 10, 25, 4, tzinfo=UTC), timedelta(minutes=15)
    )

    found = read_by(source, runs)

    assert {k: len(w) for k, w in found.items()} == dict.fromkeys(range(30), 1)
    two_ten = local.index(datetime(2026, 10, 25, 2, 10))
    assert found[two_ten][0].start == datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:10 CEST


def test_sqlite_text_that_is_not_a_time_is_that_rows_rejection_and_the_others_are_read(
    databases, drop_tables
):
    from altcraft.records import ERROR_FIELD

    database = databases["sqlite"]
    # 4: epoch milliseconds, 5: a date as a number: no window would ever hold them
    times = {1: "2024-03-01 10:00:00", 2: "yesterday", 3: b"\x00", 4: 1709287200000, 5: 20240301}
    table = new_sqlite_table(database, drop_tables, times)
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created_at")

    records = [record for batch in source.batches(WINDOW, 10) for record in batch]

    assert [str(record["id"]) for record in records] == ["1", "2", "3", "4", "5"]
    assert ERROR_FIELD not in records[0]
    assert all("created_at" in record[ERROR_FIELD] for record in records[1:])
    assert "yesterday" not in str(records)


@pytest.mark.parametrize("database", ["postgresql", "mysql"], indirect=True)
def test_an_epoch_seconds_column_is_windowed_by_its_instant(database, drop_tables):
    """Main: MySQL compared the integers with datetime text and read nothing, PostgreSQL failed."""
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id integer primary key, created bigint, precise decimal(16, 3))"
        )
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :at, :at)"),
            [{"id": key, "at": int(at.timestamp())} for key, at in CREATED.items()],
        )
    drop_tables.append((database, table))
    for column in ("created", "precise"):
        source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column=column)
        assert keys(source.batches(WINDOW, 100)) == IN_WINDOW
        parts = [keys(source.batches(WINDOW, 2, partition=(index, 7))) for index in range(7)]
        assert sorted(chain.from_iterable(parts)) == IN_WINDOW


@pytest.mark.parametrize("database", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        # epoch milliseconds compared with epoch-second bounds would be read by no window, silently
        ("bigint", int(START.timestamp()) * 1000, "is a number read as epoch seconds"),
        # main: MySQL compared the text with the bounds' text (ISO text with 'T' or an offset misplaced)
        ("varchar(40)", "'2024-03-01T10:00:00Z'", "is a text column"),
    ],
    ids=["epoch-milliseconds", "text"],
)
def test_a_column_that_cannot_be_windowed_is_refused_naming_it(database, drop_tables, column, value, error):
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, created {column})")
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, {value})")
    drop_tables.append((database, table))
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="created")

    with pytest.raises(SourceError, match=rf"created_at_column 'created' {error}"):
        list(source.batches(WINDOW, 10))


def test_a_query_of_naive_local_text_is_read_once_across_the_autumn_clock_change(databases, drop_tables):
    """A sql_query gets naive bounds in its zone: main gave a bound in the repeated hour's second occurrence
    its wall-clock time, which the windows before it had read past, so they read 02:00-03:00 again."""
    database = databases["sqlite"]
    local = [datetime(2026, 10, 25, 0, 0) + timedelta(minutes=10 * k) for k in range(30)]
    table = new_sqlite_table(database, drop_tables, {k: t.isoformat(" ") for k, t in enumerate(local)})
    sql = f"SELECT id FROM {table} WHERE created_at >= :window_start AND created_at < :window_end"
    source = SqlQuerySource(database.conn_id, sql, key_column="id", timezone="Europe/Berlin")
    night = windows(
        datetime(2026, 10, 24, 21, tzinfo=UTC), datetime(2026, 10, 25, 4, tzinfo=UTC), timedelta(minutes=15)
    )

    assert {k: len(w) for k, w in read_by(source, night).items()} == dict.fromkeys(range(30), 1)


@pytest.mark.parametrize("moment", [datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)])
def test_naive_bounds_never_go_back_across_a_clock_change(moment):
    """MySQL/MariaDB and a SQLite query compare naive bounds: consecutive ones must not go back in wall-clock
    time, or the window after a bound read rows the window before it read. Every minute of a clock change's
    night, and the seconds around it."""
    instants = sorted({moment + timedelta(seconds=s) for s in [*range(0, 4 * 3600, 60), *range(3590, 3610)]})
    for dialect in ("mysql", "sqlite"):
        bounds = [_bound(ts, dialect, "Europe/Berlin") for ts in instants]
        assert bounds == sorted(bounds), dialect


def test_sqlite_column_names_match_without_regard_to_case_as_sqlite_does(databases, drop_tables):
    """A spec naming ``createdat`` and ``seq`` of a table declaring ``CreatedAt`` and ``Seq``: SQLite runs the
    query, and ``SELECT *`` names the columns as declared. Main failed the watermark run with a KeyError."""
    from altcraft.records import ERROR_FIELD

    database = databases["sqlite"]
    table = database.new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE {table} (id integer primary key, "CreatedAt", "Seq" integer)')
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1, '2024-03-01 10:00:00', 10), (2, 'soon', 20)")
    drop_tables.append((database, table))
    windowed = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="createdat")
    [records] = list(windowed.batches(WINDOW, 10))
    assert [ERROR_FIELD in record for record in records] == [False, True]

    state = MemoryStateStore()
    by_seq = SqlTableSource(database.conn_id, table, key_column="id", watermark_column="seq", state=state)
    assert keys(by_seq.batches(None, 10)) == [1, 2]
    by_seq.commit()
    assert keys(by_seq.batches(None, 10)) == []


#: a contact's e-mail and birth date: the mapping of the tests of dates a database holds and Python cannot
BORN_MAPPER = Mapper(
    ProfileMapping.model_validate(
        {
            "matching": "email",
            "key": {"email": "email"},
            "fields": {"BORN": {"source": "born", "type": "date"}},
        }
    ),
    source_key_column="id",
)


@pytest.mark.parametrize("source_kind", ["table", "query"])
def test_postgres_dates_python_cannot_hold_are_their_rows_rejections_and_never_the_watermark(
    postgres, drop_tables, source_kind
):
    """``infinity``, ``-infinity`` and BC dates made psycopg raise DataError: the whole read failed on one
    row. Now each is an `Unreadable` value the mapper rejects naming the column and the value, a row not
    mapping it is delivered, and the watermark moves past the readable values only (+infinity would be
    one no later row passes)."""
    from altcraft.mapping import Profile, Rejection

    table, state = postgres.new_table(), MemoryStateStore()
    with postgres.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id integer primary key, email text, born date, seen timestamp, "
            "changed timestamptz)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES (1, 'a@example.org', '1990-05-01', '2024-03-01', '2024-03-01'), "
            "(2, 'b@example.org', '-infinity', 'infinity', 'infinity'), "
            "(3, 'c@example.org', '0044-03-15 BC', '0044-03-15 BC', '0044-03-15 BC'), "
            "(4, 'd@example.org', '1991-06-02', '2024-03-02', '2024-03-02')"
        )
    drop_tables.append((postgres, table))
    source = (
        SqlTableSource(postgres.conn_id, table, key_column="id", watermark_column="changed", state=state)
        if source_kind == "table"
        else SqlQuerySource(postgres.conn_id, f"SELECT * FROM {table}", key_column="id")
    )

    records = [record for batch in source.batches(None, 2) for record in batch]
    mapped = [BORN_MAPPER.map(record) for record in records]

    assert [type(m) for m in mapped] == [Profile, Rejection, Rejection, Profile]
    if source_kind == "query":
        assert [(m.source_key, m.field) for m in mapped[1:3]] == [("2", "BORN"), ("3", "BORN")]
        assert "'-infinity' of column 'born'" in mapped[1].reason
        assert "'0044-03-15 BC' of column 'born'" in mapped[2].reason
    else:  # the watermark column's value, which no watermark can move to, rejects the row first
        assert [m.source_key for m in mapped[1:3]] == ["2", "3"]
        assert all(m.reason.startswith("changed: not a value a watermark can move to") for m in mapped[1:3])
        source.commit()
        assert state.get(source.state_key) == {"type": "datetime", "value": "2024-03-02T00:00:00+00:00"}
        with postgres.engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (5, 'e@example.org', NULL, NULL, '2024-03-03')")
        again = SqlTableSource(
            postgres.conn_id, table, key_column="id", watermark_column="changed", state=state
        )
        assert keys(again.batches(None, 10)) == ["2", 5]  # +infinity passes every watermark: rejected again


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgres_drivers_read_dates_python_cannot_hold_as_unreadable_values(driver):
    """psycopg2 read ``infinity`` as ``datetime.max`` and ``-infinity`` as year 1 (a date the database never
    held), and failed the read on a BC date or a year past 9999; psycopg 3 failed it on each of them."""
    from altcraft.records import Unreadable

    engine = sa.create_engine(f"postgresql+{driver}://postgres@127.0.0.1:5432/test")
    query = (
        "SELECT 'infinity'::timestamp, '-infinity'::date, '0044-03-15 BC'::timestamptz, '10000-01-01'::date,"
        " '2024-03-01'::date"
    )
    try:
        with engine.connect() as conn:
            seen: list[bool] = []
            _begin_read(conn, "UTC", seen)
            row = conn.exec_driver_sql(query).one()
    finally:
        engine.dispose()

    assert [value.text if isinstance(value, Unreadable) else value for value in row] == [
        "infinity",
        "-infinity",
        "0044-03-15 00:00:00+00 BC",
        "10000-01-01",
        datetime(2024, 3, 1).date(),
    ]
    assert seen == [True]


def test_mariadb_dates_with_a_zero_month_or_day_are_their_rows_rejections(databases, drop_tables):
    """mysqlclient read ``2024-00-15`` (stored where NO_ZERO_IN_DATE is off) as None: the row was delivered
    without its date. A zero date is still NULL, as before."""
    from altcraft.mapping import Profile, Rejection

    database, table = databases["mysql"], databases["mysql"].new_table()
    with database.engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id int primary key, email text, born date, seen datetime)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES (1, 'a@example.org', '1990-05-01', '2024-03-01'), "
            "(2, 'b@example.org', '2024-00-15', '2024-02-00 10:00:00'), "
            "(3, 'c@example.org', '0000-00-00', '0000-00-00 00:00:00')"
        )
    drop_tables.append((database, table))

    [records] = list(
        SqlQuerySource(database.conn_id, f"SELECT * FROM {table}", key_column="id").batches(None, 10)
    )
    mapped = [BORN_MAPPER.map(record) for record in records]

    assert [type(m) for m in mapped] == [Profile, Rejection, Profile]
    assert (mapped[1].field, "'2024-00-15' of column 'born'" in mapped[1].reason) == ("BORN", True)
    assert [records[2]["born"], records[2]["seen"]] == [None, None]
