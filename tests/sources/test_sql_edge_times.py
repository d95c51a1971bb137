"""Dates and times near year 1 and 9999 in SQL sources, on live PostgreSQL, MariaDB and SQLite, under a source
zone east of UTC (Moscow) and one west (New York), where the instant of such a wall-clock time is before year
1 or past 9999 in UTC: no run stops on them, none moves a watermark to a wrong place or loses a row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from altcraft.records import ERROR_FIELD
from altcraft.sources import MemoryStateStore, SqlTableSource, Window
from altcraft.sources.sql import decode_watermark

ZONES = ["Europe/Moscow", "America/New_York"]
TIME_COLUMN = {"postgresql": "timestamp", "mysql": "datetime(6)", "sqlite": "text"}
#: id -> time: the first and the last a naive time can be, and one between
EDGES = {1: "0001-01-01 00:00:00", 2: "2024-03-01 10:00:00", 3: "9999-12-31 23:59:00"}
NO_WATERMARK = "w: not a value a watermark can move to"


def edge_table(database, drop_tables: list, rows: dict[int, str], column: str | None = None) -> str:
    """A table ``(id, w)`` holding ``rows``; ``w`` of the dialect's naive time type unless ``column``."""
    table = database.new_table()
    with database.engine.begin() as conn:
        kind = column or TIME_COLUMN[database.dialect]
        conn.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, w {kind})")
    drop_tables.append((database, table))
    insert(database, table, rows)
    return table


def insert(database, table: str, rows: dict[int, str]) -> None:
    with database.engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :w)"), [{"id": k, "w": w} for k, w in rows.items()]
        )


def skip_without_zones(database, *zones: str) -> None:
    if database.dialect == "mysql" and set(zones) - {"UTC"}:
        with database.engine.connect() as conn:
            if not conn.execute(sa.text("SELECT COUNT(*) FROM mysql.time_zone_name")).scalar_one():
                pytest.skip("the MariaDB server has no time zone tables")


def run(source: SqlTableSource, window: Window | None = None) -> tuple[list[int], dict[int, str]]:
    """The ids one run reads and those it rejects (with why), then its commit."""
    records = [record for batch in source.batches(window, 2) for record in batch]
    source.commit()
    read = [int(record["id"]) for record in records]
    return read, {int(r["id"]): r[ERROR_FIELD] for r in records if ERROR_FIELD in r}


@pytest.mark.parametrize("zone", ["UTC", *ZONES])
def test_a_watermark_never_moves_to_year_9999_and_reads_every_later_row(database, drop_tables, zone):
    """9999-12-31 (a stand-in for "never") became the watermark on PostgreSQL and MariaDB, and on SQLite in
    Moscow: no later row was ever read. Under New York SQLite's text of it was no time at all. Now it is
    its row's rejection, naming the column, in every run it passes (as infinity is), and year 1 is a time
    like any other."""
    skip_without_zones(database, zone)
    table = edge_table(database, drop_tables, EDGES)
    state = MemoryStateStore()

    def source() -> SqlTableSource:
        return SqlTableSource(
            database.conn_id, table, key_column="id", watermark_column="w", timezone=zone, state=state
        )

    read, rejected = run(source())
    assert (read, list(rejected)) == ([1, 2, 3], [3])
    assert rejected[3].startswith(NO_WATERMARK)
    insert(database, table, {4: "2024-03-02 10:00:00"})
    read, rejected = run(source())
    assert (read, list(rejected)) == ([3, 4], [3])
    assert decode_watermark(state.get(source().state_key), zone) in (
        datetime(2024, 3, 2, 10),
        "2024-03-02 10:00:00",
    )


@pytest.mark.parametrize("database", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize("zone", ZONES)
def test_a_text_watermark_compares_typed_times_near_year_1_and_9999_by_their_instants(
    database, drop_tables, zone
):
    """A text watermark over a column typed as a time since: the typed values are compared by their
    instants, and the instant of 0001-01-01 in Moscow (before year 1 in UTC) or of 9999-12-31 23:59 in New
    York (past 9999) raised OverflowError, failing every run."""
    skip_without_zones(database, zone)
    table = edge_table(database, drop_tables, EDGES)
    state = MemoryStateStore()
    source = SqlTableSource(
        database.conn_id, table, key_column="id", watermark_column="w", timezone=zone, state=state
    )
    state.set(source.state_key, {"type": "json", "value": "2024-03-01 09:00:00", "timezone": zone})
    read, rejected = run(source)
    assert (read, list(rejected)) == ([2, 3], [3])
    assert decode_watermark(state.get(source.state_key), zone) == datetime(2024, 3, 1, 10)


@pytest.mark.parametrize(
    ("kept", "zone", "value"),
    [("Europe/Moscow", "UTC", "0001-01-01T00:00:00"), ("UTC", "America/New_York", "0001-01-01T00:00:00")],
)
def test_a_watermark_at_year_1_carried_to_a_zone_that_cannot_hold_it_reads_every_row(
    database, drop_tables, kept, zone, value
):
    """A naive watermark of year 1 kept in one zone is before year 1 in the next one: its conversion raised
    OverflowError in every run. It is before every row, so every row is read."""
    skip_without_zones(database, kept, zone)
    table = edge_table(database, drop_tables, {1: "0001-01-01 00:00:00", 2: "2024-03-01 10:00:00"})
    state = MemoryStateStore()
    source = SqlTableSource(
        database.conn_id, table, key_column="id", watermark_column="w", timezone=zone, state=state
    )
    state.set(source.state_key, {"type": "datetime", "value": value, "timezone": kept})
    assert run(source) == ([1, 2], {})


def test_a_watermark_past_9999_in_the_new_zone_stands_past_every_naive_time():
    """9999-12-31 23:59 in New York is past 9999 in UTC: the last naive time, not an OverflowError."""
    stored = {"type": "datetime", "value": "9999-12-31T23:59:00", "timezone": "America/New_York"}
    assert decode_watermark(stored, "UTC") == datetime.max


@pytest.mark.parametrize("zone", ZONES)
def test_a_window_reaching_year_1_or_9999_places_each_row_by_its_instant(database, drop_tables, zone):
    """Windows from year 1 to 9999 in UTC: MariaDB's naive bounds of them in New York (before year 1) raised
    OverflowError, and SQLite rejected 0001-01-01 in Moscow and 9999-12-31 23:59 in New York as no
    timestamp in every window. Each row is read by the window of its instant, or by none when its instant
    is before year 1 or past 9999 in UTC."""
    skip_without_zones(database, zone)
    table = edge_table(database, drop_tables, EDGES)
    source = SqlTableSource(database.conn_id, table, key_column="id", created_at_column="w", timezone=zone)
    middle = datetime(2024, 3, 2, tzinfo=UTC)
    first, second = (
        Window(datetime(1, 1, 1, tzinfo=UTC), middle),
        Window(middle, datetime.max.replace(tzinfo=UTC)),
    )
    expected = {"Europe/Moscow": ([2], [3]), "America/New_York": ([1, 2], [])}[zone]
    assert (run(source, first), run(source, second)) == tuple((read, {}) for read in expected)
