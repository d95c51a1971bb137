"""SQL sources through Airflow's common-sql hooks, streamed with server-side cursors.

The connection id gives a `DbApiHook` (PostgreSQL, MySQL/MariaDB, SQLite, ...); its SQLAlchemy engine
runs one ``SELECT ... ORDER BY key`` with ``stream_results`` / ``yield_per``, so PostgreSQL and
MySQL/MariaDB keep the rows on the server and only one batch lives in memory.

Time: window bounds are instants. Naive ``timestamp``/``DATETIME`` columns are read as wall-clock time in
``timezone`` (default UTC). To get both kinds of column right without knowing which one a column is, the
session time zone is set to ``timezone``: PostgreSQL compares aware bounds (naive columns are then read in
the session zone, a time of an hour a clock change repeats as its second occurrence); MySQL/MariaDB get
naive bounds in ``timezone`` that never go back (`wall_clock`: such a time is its first occurrence), so no
row is read by two windows (MySQL ``TIMESTAMP`` columns are read in the session zone). A named zone other
than UTC needs MySQL's time zone tables. A `SqlTableSource`'s ``created_at_column`` may also hold epoch
seconds (an integer or decimal column: the bounds are epoch seconds); a text column is refused, naming it.
SQLite keeps any value in any column: a table's timestamps are read by `altcraft.sources.timestamps` (ISO
8601 text with or without a zone, a date, epoch seconds; naive text in ``timezone``), registered as the
SQL function ``altcraft_instant``, so each row is read by the window of its instant; a value that is not a
timestamp is that row's error record in every window. A `SqlQuerySource` on SQLite gets naive bound text
in ``timezone`` (`wall_clock`). SQLite also keeps bytes that are not UTF-8 in a TEXT column: they are read
as lone surrogates, so a mapped value holding them is that record's rejection and the other rows are
delivered (PostgreSQL and MySQL/MariaDB check the encoding when the value is written). Text the driver
cannot decode (a PostgreSQL ``SQL_ASCII`` database holding other bytes: psycopg2 decodes a whole fetch at
once, so no row can be rejected alone) stops the read with a `SourceError` that says so.

Every read runs in a read-only transaction where the database offers one (PostgreSQL, MySQL/MariaDB,
SQLite ``query_only``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from altcraft.makers import records_maker
from altcraft.records import Unreadable
from altcraft.sources.base import (
    PROBE_TIMEOUT,
    Partition,
    Record,
    Source,
    SourceError,
    Stateful,
    StateStore,
    Window,
    check_batch_size,
    check_partition,
    error_record,
    naive_zone,
    partition_window,
    probe_window,
)
from altcraft.sources.timestamps import EPOCH_SECONDS, instant_text, parse_timestamp, utc_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, CursorResult, Engine
    from sqlalchemy.sql import Executable, TableClause

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
WINDOW_PARAMS = ("window_start", "window_end")

# Text that cannot hold a statement: comments, string literals, quoted identifiers. Two dialect families
# read quotes differently; a query is accepted only if it is safe under both readings.
_NOISE_STANDARD = re.compile(
    r"--[^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\1\$|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", re.DOTALL
)
_NOISE_MYSQL = re.compile(
    r"(?:--(?=\s|$)|#)[^\n]*|/\*(?!M?!).*?\*/|'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`",
    re.DOTALL,
)
_WRITES = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|COPY|CALL|INTO|LOCK)\b",
    re.IGNORECASE,
)
_FIRST_WORD = re.compile(r"[\s(]*(\w+)")
#: A ``:name`` that a ``::`` cast follows: SQLAlchemy binds no parameter there and passes it on as it is
_CAST_PARAM = re.compile(r"(?<![:\w\\]):(\w+)::")


def validate_identifier(value: str, field: str) -> str:
    """Accept only a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``, at most 63 characters)."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{field}: {value!r} is not a plain SQL identifier "
            "(letters, digits and _, not starting with a digit, at most 63 characters)"
        )
    return value


def validate_select(sql: str, field: str = "sql") -> str:
    """Accept one SELECT (or WITH ... SELECT) statement; return it without a trailing semicolon.

    A guard against mistakes, not a sandbox: give the connection a read-only database role.
    """
    statement = sql.strip().removesuffix(";").rstrip()
    for noise in (_NOISE_STANDARD, _NOISE_MYSQL):
        code = noise.sub(" ", statement)
        first = _FIRST_WORD.match(code)
        if first is None or first.group(1).upper() not in ("SELECT", "WITH"):
            raise ValueError(f"{field}: only a SELECT statement is allowed")
        if ";" in code:
            raise ValueError(f"{field}: only one statement is allowed (found ';')")
        if write := _WRITES.search(code):
            raise ValueError(f"{field}: only a SELECT statement is allowed (found {write.group(1).upper()})")
    if cast := _CAST_PARAM.search(statement):
        raise ValueError(
            f"{field}: ':{cast.group(1)}::' is no parameter to bind but text the database cannot read: write "
            f"CAST(:{cast.group(1)} AS <type>) for a cast"
        )
    if unbound := [name for name in bound_names(statement) if name not in WINDOW_PARAMS]:
        raise ValueError(
            f"{field}: ':{unbound[0]}' would be a parameter to bind (in a string literal too), and only "
            f":window_start and :window_end are bound: write \\:{unbound[0]} for a colon in text"
        )
    return statement


def bound_names(sql: str) -> list[str]:
    """The names SQLAlchemy binds in ``sql``: each ``:name`` (in a string literal or comment too), not
    ``\\:name`` nor a ``::`` cast."""
    from sqlalchemy import text

    return list(text(sql).compile().params)


def _is_utc(timezone: str) -> bool:
    return timezone.upper() in ("UTC", "ETC/UTC")


def _bound(ts: datetime, dialect: str, timezone: str) -> datetime | str:
    """A window bound as this dialect compares it with a date/time column (see the module docstring)."""
    if dialect == "postgresql":
        return ts
    local = wall_clock(ts, ZoneInfo(timezone))
    return local.isoformat(" ") if dialect == "sqlite" else local


def wall_clock(ts: datetime, zone: ZoneInfo) -> datetime:
    """The naive bound in ``zone`` for the instant ``ts``: its wall-clock time, except in the second
    occurrence of an hour a clock change repeats, whose wall-clock times the windows before already
    compared with (a naive time there is its first occurrence): there the end of the repeated hour. So
    consecutive bounds never go back, and no row is read by two windows. An instant within a day of year 1
    or 9999 that no naive time in ``zone`` holds is `datetime.min` or `datetime.max`: before or past every
    naive value, as the instant is."""
    try:
        local = ts.astimezone(zone)
    except OverflowError:
        return datetime.min if ts.year == 1 else datetime.max
    naive = local.replace(tzinfo=None)
    if not local.fold:
        return naive
    low, high = naive, naive + (local.replace(fold=0).utcoffset() - local.utcoffset())  # type: ignore[operator]
    while high - low > timedelta(microseconds=1):  # high: the first wall-clock time not repeated
        middle = low + (high - low) // 2
        low, high = (middle, high) if _repeated(middle, zone) else (low, middle)
    return high


def _repeated(naive: datetime, zone: ZoneInfo) -> bool:
    """Whether a wall-clock time happens twice in ``zone`` (an hour a clock change repeats)."""
    return naive.replace(tzinfo=zone, fold=0).utcoffset() != naive.replace(tzinfo=zone, fold=1).utcoffset()


def _epoch(ts: datetime) -> Decimal:
    """A window bound as epoch seconds, exact to the microsecond."""
    return Decimal(int(ts.timestamp())) + Decimal(ts.microsecond).scaleb(-6)


def _time_filter(
    conn: Connection, tbl: TableClause, column: str, timezone: str
) -> Callable[[datetime], tuple[Any, Any]]:
    """``bound -> (the column's value as compared, the bound as compared)`` for ``tbl.c[column]``:
    SQLite through ``altcraft_instant``, an integer or decimal column as epoch seconds, a date/time column
    as itself; `SourceError` naming the column if it is text, which compares as text with the bounds."""
    from sqlalchemy import Integer, Numeric, String, func, inspect
    from sqlalchemy.exc import NoSuchTableError

    value, dialect = tbl.c[column], conn.dialect.name
    if dialect == "sqlite":
        return lambda ts: (func.altcraft_instant(value), utc_text(ts))
    try:
        declared = {
            c["name"].lower(): c["type"] for c in inspect(conn).get_columns(tbl.name, schema=tbl.schema)
        }
    except NoSuchTableError:
        declared = {}  # the query itself says so
    kind = declared.get(column.lower())
    if isinstance(kind, Integer | Numeric):
        _check_epoch_unit(conn, tbl, column)
        return lambda ts: (value, _epoch(ts))
    if isinstance(kind, String):
        raise SourceError(
            f"created_at_column {column!r} is a text column ({kind}): text compares as text, not as time, so "
            "rows would be read by the wrong window or by none. Use a date/time column, epoch seconds, or a "
            "sql_query that converts it"
        )
    return lambda ts: (value, _bound(ts, dialect, timezone))


def _check_epoch_unit(conn: Connection, tbl: TableClause, column: str) -> None:
    """`SourceError` naming ``column`` if its newest value is no epoch seconds (`EPOCH_SECONDS`): epoch
    milliseconds, or dates as numbers, would lie in no window and no row would ever be read."""
    from sqlalchemy import func, select

    newest = conn.execute(select(func.max(tbl.c[column]))).scalar()
    if newest is not None and not EPOCH_SECONDS[0] <= newest < EPOCH_SECONDS[1]:
        raise SourceError(
            f"created_at_column {column!r} is a number read as epoch seconds, but its highest value is no "
            "epoch seconds of a time between 1973 and 5138 (epoch milliseconds? a date as a number?): no "
            "window would hold its rows. Convert it in a sql_query"
        )


def _begin_read(conn: Connection, timezone: str, seen: list[bool] | None = None) -> None:
    """Make the session read-only and set its time zone, before the first query; on PostgreSQL read dates
    and times Python cannot hold, on MySQL/MariaDB (mysqlclient) dates with a zero month or day, as
    `Unreadable` (`_lenient_dates`), noting in ``seen`` that one was read."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    dialect = conn.dialect.name
    if dialect == "postgresql":
        _lenient_dates(conn.connection.driver_connection, seen)
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.execute(text("SELECT set_config('TimeZone', :tz, true)"), {"tz": timezone})
    elif dialect in ("mysql", "mariadb"):
        _lenient_dates(conn.connection.driver_connection, seen)
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
        try:
            conn.execute(text("SET time_zone = :tz"), {"tz": "+00:00" if _is_utc(timezone) else timezone})
        except DBAPIError:
            raise SourceError(
                f"the MySQL/MariaDB server does not know the time zone {timezone!r}: "
                "load its time zone tables (mysql_tzinfo_to_sql) or use timezone UTC"
            ) from None
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
        driver = conn.connection.driver_connection
        driver.text_factory = _lenient_text  # type: ignore[union-attr]
        instant = partial(instant_text, timezone=timezone)
        driver.create_function("altcraft_instant", 1, instant, deterministic=True)  # type: ignore[union-attr]


def _lenient_dates(driver: Any, seen: list[bool] | None) -> None:
    """Make a PostgreSQL driver connection read a ``date``, ``timestamp`` or ``timestamptz`` Python cannot
    hold (``infinity``, ``-infinity``, a year before 1 or after 9999) as `Unreadable`, appending True to
    ``seen`` the first time. psycopg 3 raised DataError and psycopg2 ValueError on such a value (each failed
    the whole read on one row), and psycopg2 read ``infinity`` as ``datetime.max`` and ``-infinity`` as year
    1: a date its database never held, and a watermark no later row passes. The drivers' own loaders read
    every other value (psycopg 3: about 0.5 us a value more, a Python call around its C loader)."""

    def unreadable(text: str) -> Unreadable:
        if seen is not None and not seen:
            seen.append(True)
        return Unreadable(text)

    if hasattr(driver, "adapters"):  # psycopg 3
        _psycopg_loaders(driver.adapters, unreadable)
    elif type(driver).__module__.startswith("psycopg2"):
        _psycopg2_casters(driver, unreadable)
    elif type(driver).__module__.startswith("MySQLdb"):
        _mysqlclient_converters(driver, unreadable)


def _psycopg_loaders(adapters: Any, unreadable: Callable[[str], Unreadable]) -> None:
    """Register with psycopg 3 ``adapters`` text loaders of dates and times that wrap the ones registered."""
    from psycopg.adapt import Loader
    from psycopg.errors import DataError
    from psycopg.pq import Format

    class Lenient(Loader):
        strict: type[Loader]  # the loader registered before, which reads every value Python can hold

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._load = self.strict(oid, context).load

        def load(self, data: Any) -> Any:
            try:
                return self._load(data)
            except DataError:
                return unreadable(bytes(data).decode())

    for name in ("date", "timestamp", "timestamptz"):
        oid = adapters.types[name].oid
        strict = adapters.get_loader(oid, Format.TEXT)
        strict = getattr(strict, "strict", strict)  # not one an earlier read of this connection registered
        adapters.register_loader(oid, type("Lenient", (Lenient,), {"strict": strict}))


def _psycopg2_casters(driver: Any, unreadable: Callable[[str], Unreadable]) -> None:
    """Register with a psycopg2 connection casters of dates and times that wrap psycopg2's own."""
    from psycopg2.extensions import PYDATE, PYDATETIME, PYDATETIMETZ, new_type, register_type

    def lenient(strict: Any) -> Callable[[str | None, Any], Any]:
        def cast(text: str | None, cursor: Any) -> Any:
            if text is not None and not text[-1].isdigit():  # infinity, -infinity, a BC date
                return unreadable(text)
            try:
                return strict(text, cursor)
            except ValueError:  # a year past 9999
                return unreadable(text or "")

        return cast

    for strict in (PYDATE, PYDATETIME, PYDATETIMETZ):
        register_type(new_type(strict.values, strict.name, lenient(strict)), driver)


def _mysqlclient_converters(driver: Any, unreadable: Callable[[str], Unreadable]) -> None:
    """Give a mysqlclient connection converters of dates and times that read a date with a zero month or day
    (``2024-00-15``, stored where ``NO_ZERO_IN_DATE`` is off) as `Unreadable`: mysqlclient read it as None,
    an empty value its row was delivered without. A zero date stays None (NULL, as before)."""
    from MySQLdb.constants import FIELD_TYPE

    def lenient(strict: Callable[[str], Any]) -> Callable[[str], Any]:
        def convert(text: str) -> Any:
            value = strict(text)
            return unreadable(text) if value is None and text.strip("0-: .") else value

        return convert

    converters = driver.converter
    for kind in (FIELD_TYPE.DATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        strict = converters[kind]
        converters[kind] = lenient(getattr(strict, "strict", strict))
        converters[kind].strict = strict  # type: ignore[attr-defined]


def _lenient_text(data: bytes) -> str:
    """SQLite text as str, bytes that are not UTF-8 kept as lone surrogates: SQLite stores whatever it is
    given, and sqlite3's strict decoding failed the whole read on one such value. A mapped value holding
    them is that record's rejection (`altcraft.validation.check_text`); the other records are delivered."""
    return data.decode("utf-8", "surrogateescape")


def _stream(
    conn_id: str,
    timezone: str,
    batch_size: int,
    statement: Callable[[Connection], tuple[Executable, dict[str, Any]]],
) -> Iterator[list[Record]]:
    """Run ``statement(conn)`` and yield its rows in lists of ``batch_size``."""
    engine = _engine(conn_id)
    try:
        with engine.connect() as conn:
            seen: list[bool] = []
            _begin_read(conn, timezone, seen)
            stmt, params = statement(conn)
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt, params)
            with result:  # a consumer stopping early must close the server-side cursor before rollback
                records = records_maker(tuple(result.keys()))
                # The DBAPI rows by the call `result.partitions()` makes (the result's fetch strategy: its
                # buffer, its wrapping of driver errors, its close at the end), without a Row each: the
                # columns `statement` selects are untyped, so SQLAlchemy has no result processor for them and
                # a Row would hold these very values. The Rows cost 0.13 us each and, tracked by the garbage
                # collector, brought on a full collection (~0.1 s in an Airflow process) every ~150,000 rows:
                # 100,000 rows of the bench table on PostgreSQL 2.24 -> 1.14 us each (medians; 1.23 -> 1.10
                # without a full collection). The strategy is SQLAlchemy's inner interface (the same since
                # 1.4); tests/sources compare the records with its Rows'. A DBAPI row has one value per name
                # (`records_maker`: 1.19 -> 0.96 us a row as above, medians of 21 runs; 1.12 -> 0.88 min)
                while rows := _fetch(result, batch_size):
                    yield _named(records(rows)) if seen else records(rows)  # seen: an `Unreadable` was read
    finally:
        engine.dispose()


def _named(batch: list[Record]) -> list[Record]:
    """The batch, each `Unreadable` value naming its column, so that the rejection names it too."""
    return [
        {
            name: Unreadable(value.text, name) if isinstance(value, Unreadable) else value
            for name, value in row.items()
        }
        for row in batch
    ]


def _selected_name(record: Record, column: str) -> str:
    """``column`` as the database named it in ``record``: MySQL/MariaDB and SQLite match column names
    without regard to case, and ``SELECT *`` gives the name as the table declares it."""
    if column in record:
        return column
    return next((name for name in record if name.lower() == column.lower()), column)


def _fetch(result: CursorResult[Any], size: int) -> Sequence[Any]:
    """The next ``size`` DBAPI rows of ``result``; text the driver cannot decode is a `SourceError` that says
    why (never the bytes): the driver decodes a whole fetch at once, so that row cannot be rejected alone."""
    try:
        return result.cursor_strategy.fetchmany(result, result.cursor, size)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"a row holds text that is not valid {exc.encoding}, the encoding the database sends its text in "
            "(a PostgreSQL SQL_ASCII database holding other bytes, say): the driver cannot read it, so the "
            "read stops here. Correct the value, or convert the column in a sql_query (PostgreSQL: "
            "convert_from(column::bytea, 'LATIN1'))"
        ) from None


def _engine(conn_id: str) -> Engine:
    from altcraft.engines import NotASqlConnection, sql_engine

    try:
        return sql_engine(conn_id)
    except NotASqlConnection as exc:
        raise SourceError(str(exc)) from None


class _Probing(Source):
    """Cheap checks for new rows (`probe`), for a watcher trigger that polls every few seconds.

    The probe runs one aggregate query (a count and a maximum, never the rows) on an engine kept between
    calls; `close_probe` disposes it. The database cancels it after ``probe_timeout`` seconds
    (`time_limited`): a probe waiting on a lock fails naming the timeout, and frees its connection.
    """

    conn_id: str
    timezone: str
    probe_timeout: float = PROBE_TIMEOUT
    _probe_engine: Engine | None = None

    def _aggregate(
        self, statement: Callable[[Connection], tuple[Executable, dict[str, Any]]]
    ) -> tuple[Any, ...]:
        from altcraft.engines import time_limited

        if self._probe_engine is None:
            self._probe_engine = _engine(self.conn_id)
        with self._probe_engine.connect() as conn:
            _begin_read(conn, self.timezone)
            try:
                with time_limited(conn, self.probe_timeout):
                    stmt, params = statement(conn)
                    return tuple(conn.execute(stmt, params).one())
            except TimeoutError as exc:
                raise SourceError(f"{self.describe()}: probe: {exc}") from None

    def close_probe(self) -> None:
        if self._probe_engine is not None:
            self._probe_engine.dispose()
            self._probe_engine = None


def encode_watermark(value: Any, timezone: str) -> dict[str, Any]:
    """A watermark value as JSON for the state store (datetimes keep their offset or naivety); a naive time,
    and text (which may be one), keep the ``timezone`` they were read in (`decode_watermark`)."""
    naive = isinstance(value, str) or (isinstance(value, datetime) and value.tzinfo is None)
    zone = {"timezone": timezone} if naive else {}
    for kind, python_type in (("datetime", datetime), ("date", date), ("decimal", Decimal)):
        if isinstance(value, python_type):
            return {"type": kind, "value": value.isoformat() if kind != "decimal" else str(value), **zone}
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return {"type": "json", "value": value, **zone}
    raise SourceError(f"cannot keep a watermark of type {type(value).__name__}")


_INFINITY = float("inf")  # equal to Decimal("Infinity") too


#: `instant_text` of the first instant of year 9999: a watermark never moves to it or past it
_LAST_YEAR = "9999"


def _keepable(value: Any) -> bool:
    """Whether a watermark column's value is one `encode_watermark` keeps (a number, a date or time, text), or
    one `_may_lead` leaves out as its row's rejection (NULL, `Unreadable`, bytes); not a UUID, a time of day,
    an interval, JSON or an array, whose column can keep no watermark."""
    return value is None or (isinstance(value, _KEPT) and not isinstance(value, bool))


#: what `_keepable` allows besides None
_KEPT = (str, int, float, Decimal, date, Unreadable, bytes)


def _may_lead(value: Any, timezone: str) -> bool:
    """Whether a watermark may move to ``value``: a number that is not NaN or infinity, a date or time Python
    holds before year 9999 (UTC), or text our date parsing reads (ISO 8601 or epoch seconds, `instant_text`)
    of such a time; also None (NULL, as MariaDB's zero date is read), which `_highest` leaves out and which
    is no row's rejection. A date or time in year 9999 (``9999-12-31``, a stand-in for "never") is left out
    as infinity is: past it no later row would ever be read.

    Left out, each its row's rejection (`SqlTableSource._rejecting`): NaN and infinity, which no later number
    would pass (PostgreSQL places NaN above every number); an `Unreadable` date or time (PostgreSQL's
    ``infinity``, which no later time would pass, ``-infinity``, a year before 1); and text that is no time
    (``'infinity'``, ``'9999-99-99'``, ``'N/A'``), which SQLite, keeping dates as text, compares as text, so
    that no later date passes it either; bytes too. Their rows pass every watermark but the lowest, so every
    run reads them again, and rejects them again."""
    if isinstance(value, str):
        return (instant_text(value, timezone) or _LAST_YEAR) < _LAST_YEAR
    if isinstance(value, date):  # a datetime too
        return value.year < 9998 or _instant_of(value, timezone) < _LAST_YEAR
    return not isinstance(value, Unreadable | bytes) and value == value != _INFINITY  # NaN != NaN


def _highest(values: list[Any], timezone: str) -> Any:
    """The highest of ``values`` (values `_may_lead` allows), None left out; None if none is left. Text
    stands after every number, as SQLite orders values of different types (it keeps any value in any
    column), and by the instant it writes (`instant_text`), not as text: ISO 8601 text of one time in two
    forms (``T`` or a space, an offset) sorts apart. Other values in the database's order."""
    kept = [value for value in values if value is not None]
    if texts := [value for value in kept if isinstance(value, str)]:
        return max(texts, key=partial(instant_text, timezone=timezone))
    return max(kept, default=None)


def _after_text(last: str, timezone: str) -> Callable[[Any], bool]:
    """Whether a value of a watermark column stands past the text watermark ``last`` (`_highest`): text
    whose instant is later, and text that is no time, which every run reads and rejects as window mode
    does; a date or time whose instant is later (the column was given a time type since: else no row would
    ever pass); not a number (ordered before text); bytes (SQLite orders them after text, and they are
    rejected). Only Python reads every form of ISO 8601 text (the databases' casts refuse or misread some),
    so the rows are compared here, not in the query."""
    bound = instant_text(last, timezone) or ""  # an older watermark that is no time: every row is past it

    def after(value: Any) -> bool:
        if isinstance(value, date):  # a datetime too
            return _instant_of(value, timezone) > bound
        if not isinstance(value, str):
            return isinstance(value, bytes)
        instant = instant_text(value, timezone)
        return instant is None or instant > bound

    return after


def _later(value: Any, last: Any, timezone: str) -> bool:
    """Whether the watermark ``value`` stands past ``last`` (a stored one, decoded) as a read compares them:
    past a text watermark by `_after_text`; text past any other value (`_highest`: SQLite's order); others
    in the database's order, and values Python cannot compare (a naive and an aware time, a date and a
    time: the column's type changed between the reads) as past, the read's own value kept."""
    if isinstance(last, str):
        return _after_text(last, timezone)(value)
    if isinstance(value, str):
        return True
    try:
        return bool(value > last)
    except TypeError:
        return True


def _instant_of(value: date, timezone: str) -> str:
    """A date or time of a typed column as `instant_text` writes an instant: naive (a date's midnight too)
    in ``timezone``."""
    moment = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
    return utc_text(moment if moment.tzinfo is not None else moment.replace(tzinfo=ZoneInfo(timezone)))


def decode_watermark(stored: dict[str, Any], timezone: str) -> Any:
    """The stored watermark as the source reads it in ``timezone``: a naive time or text kept in another
    zone (the spec's ``timezone`` changed) is the same instant, not the same wall-clock time (which skipped
    or re-read the hours between); one stored without a zone (an earlier version) is read as before."""
    parse = {"datetime": datetime.fromisoformat, "date": date.fromisoformat, "decimal": Decimal}
    value = parse.get(stored["type"], lambda value: value)(stored["value"])
    kept = stored.get("timezone")
    return value if kept in (None, timezone) else _same_instant(value, kept, timezone)


def _same_instant(value: Any, kept: str, timezone: str) -> Any:
    """A watermark read in zone ``kept`` as the source reads it in ``timezone``: a naive datetime as the
    wall-clock time there (a naive column compares wall-clock times), text as its instant with an offset
    (text is compared by instant, `_after_text`); anything else as it is. A naive time a clock change in
    ``kept`` repeats or skips is its earliest reading (`_earliest`): rows of the hour between are read
    again, never skipped. A naive time no naive time in ``timezone`` holds (within a day of year 1 or 9999)
    is None before year 1 (no watermark: every row is read) and `datetime.max` past 9999."""
    if isinstance(value, datetime) and value.tzinfo is None:
        instant = _earliest(value, ZoneInfo(kept))
        try:
            return instant.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
        except OverflowError:
            return None if instant.year == 1 else datetime.max
    if isinstance(value, str):
        try:
            moment = parse_timestamp(value, kept)
        except (ValueError, OverflowError, OSError):
            return value  # no time: every row is past it (`_after_text`)
        if isinstance(moment.tzinfo, ZoneInfo):  # naive text, read in `kept`
            moment = _earliest(moment.replace(tzinfo=None), moment.tzinfo)
        return moment.isoformat()
    return value


def _earliest(naive: datetime, zone: ZoneInfo) -> datetime:
    """The earliest instant the wall-clock time ``naive`` may mean in ``zone``: in an hour a clock change
    repeats, its first occurrence (``fold=0``); in one it skips, the reading by the offset after the change
    (``fold=1``), an hour before the other."""
    readings = (naive.replace(tzinfo=zone, fold=fold) for fold in (0, 1))
    return max(readings, key=lambda reading: reading.utcoffset() or timedelta(0))


Lookback = timedelta | int | float | Decimal
"""A margin below a watermark: a duration for a date, time or text-time column, a number of the column's
units for a numeric one (`check_lookback`)."""


def check_lookback(lookback: Any) -> Lookback:
    """``lookback`` if it is a margin (`Lookback`): a positive duration, or a finite number >= 0 (not a
    bool); ValueError naming the field otherwise."""
    duration = isinstance(lookback, timedelta) and lookback > timedelta(0)
    number = isinstance(lookback, int | float | Decimal) and not isinstance(lookback, bool)
    if duration or (number and math.isfinite(lookback) and lookback >= 0):
        return lookback
    raise ValueError(
        f"lookback: expected a duration such as 15m (a date/time watermark column) or a number >= 0 of the "
        f"column's units (a numeric one, e.g. 1000 ids), got {lookback!r}"
    )


def _margin_misfit(value: Any, lookback: Lookback, column: str) -> str | None:
    """Why ``lookback`` cannot be taken off ``value``, a value of the watermark column, or None."""
    numeric = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if isinstance(lookback, timedelta) and numeric:
        return (
            f"lookback: {lookback} is a duration, but watermark_column {column!r} holds numbers "
            f"({type(value).__name__}): give lookback as a number of the column's units (lookback: 1000)"
        )
    if not isinstance(lookback, timedelta) and not numeric:
        return (
            f"lookback: {lookback} is a number, but watermark_column {column!r} holds "
            f"{type(value).__name__} values: give lookback as a duration such as 15m"
        )
    return None


def lowered(last: Any, lookback: Lookback, timezone: str) -> Any:
    """The value a run reads above: the watermark ``last`` moved down by ``lookback`` (`_margin_misfit`
    says it fits), at least that much in time. A number less the number (a decimal as a decimal); an aware
    time less the duration; a date less it in whole days, rounded up; a naive time (wall-clock time in
    ``timezone``) at the earlier of its wall-clock time less the duration and the wall-clock time of its
    earliest instant less it (`_earliest`), so one clock change within the margin (the autumn hour
    repeated) narrows it by none (a margin of months spanning two may miss the second occurrence of an
    autumn hour repeated right after its start); text (compared by instant, `_after_text`) as the instant
    of its time less the duration, text that is no time as it is. None (no watermark: every row is read)
    below year 1."""
    if not isinstance(lookback, timedelta):
        return last - (Decimal(str(lookback)) if isinstance(last, Decimal) else lookback)
    try:
        if isinstance(last, str):
            try:
                moment = parse_timestamp(last, timezone)
            except (ValueError, OverflowError, OSError):
                return last
            return (moment.astimezone(UTC) - lookback).isoformat()
        if isinstance(last, datetime) and last.tzinfo is None:
            zone = ZoneInfo(timezone)
            moment = _earliest(last, zone).astimezone(UTC) - lookback
            return min(last - lookback, moment.astimezone(zone).replace(tzinfo=None))
        if isinstance(last, datetime):
            return last.astimezone(UTC) - lookback
        return last - timedelta(days=-(-lookback // timedelta(days=1)))  # a date: whole days, rounded up
    except OverflowError:
        return None


class SqlTableSource(_Probing, Stateful):
    """Rows of one table, by creation time window or by watermark.

    * window mode (``created_at_column``): ``created_at >= start AND created_at < end`` -- a row exactly at
      ``end`` belongs to the next window. Without a window the whole table is read.
    * watermark mode (``watermark_column``, for tables without a reliable creation time): rows whose
      watermark is greater than the highest one committed before less ``lookback`` (`lowered`; NULLs never
      qualify; text times by their instants, `_after_text`); the window is ignored. `commit` saves the
      highest value read -- equal values arriving later are not read, so use a strictly increasing column
      (a sequence, a precise update timestamp). A value taken by a transaction that commits after a higher
      one was read is below the watermark when it shows: only a ``lookback`` covering that delay reads it
      (rows within the margin are read again by every run, for the ledger to skip).

    Rows are ordered by ``key_column``. Identifiers are validated and quoted by SQLAlchemy.
    """

    complete_records = True

    def __init__(
        self,
        conn_id: str,
        table: str,
        *,
        key_column: str,
        created_at_column: str | None = None,
        watermark_column: str | None = None,
        schema: str | None = None,
        columns: list[str] | None = None,
        timezone: str | None = None,
        state: StateStore | None = None,
        lookback: Lookback | None = None,
    ):
        if (created_at_column is None) == (watermark_column is None):
            raise ValueError("set exactly one of created_at_column (window mode) and watermark_column")
        if lookback is not None and watermark_column is None:
            raise ValueError("lookback: a margin below a watermark, for watermark mode (watermark_column)")
        self.conn_id = conn_id
        self.table = validate_identifier(table, "table")
        self.schema = None if schema is None else validate_identifier(schema, "schema")
        self.key_column = validate_identifier(key_column, "key_column")
        self.created_at_column = created_at_column and validate_identifier(
            created_at_column, "created_at_column"
        )
        self.watermark_column = watermark_column and validate_identifier(watermark_column, "watermark_column")
        self.columns = [validate_identifier(c, "columns") for c in columns] if columns else None
        self.timezone, self.timezone_defaulted = naive_zone(timezone)
        self.state = state
        self.lookback = None if lookback is None else check_lookback(lookback)
        self._pending: Any = None
        self._untyped_times = False  # this read's times may be no timestamp (SQLite): `_placeable` checks

    @property
    def state_key(self) -> str:
        return f"sql_table:{self.schema or ''}.{self.table}.{self.watermark_column}:watermark"

    def describe(self) -> str:
        name = f"{self.schema}.{self.table}" if self.schema else self.table
        margin = f" (and {self.lookback} below it again)" if self.lookback else ""
        mode = (
            f"watermark {self.watermark_column}{margin}"
            if self.watermark_column
            else f"window on {self.created_at_column} ({self.timezone})"
        )
        return f"sql_table {name} on connection {self.conn_id!r}, {mode}, ordered by {self.key_column}"

    @property
    def tracks_progress(self) -> bool:
        """Watermark mode keeps the highest watermark read; window mode remembers nothing."""
        return bool(self.watermark_column)

    @property
    def ignores_window(self) -> bool:
        """Watermark mode reads past the stored watermark, whatever the window."""
        return bool(self.watermark_column)

    def _stored(self) -> Any:
        return self._position_store().get(self.state_key)

    def _read_batches(
        self, window: Window | None, batch_size: int, partition: Partition | None
    ) -> Iterator[list[Record]]:
        self._pending = None
        if self.watermark_column:
            yield from self._watermark_batches(batch_size, partition)
        else:
            window = partition_window(window, partition)
            self._untyped_times = False  # set by `_select`, before the first batch
            for batch in _stream(
                self.conn_id, self.timezone, batch_size, partial(self._select, window=window)
            ):
                yield self._placeable(batch) if self._untyped_times else batch

    def _placeable(self, batch: list[Record]) -> list[Record]:
        """The batch, each row whose time is not a timestamp (only SQLite holds such values: the windowed
        query selects them in every window) as its error record, naming the column, never the value. A typed
        column's values (PostgreSQL, MySQL/MariaDB) are not checked: the database placed them."""
        assert self.created_at_column is not None
        return self._rejecting(
            batch,
            self.created_at_column,
            lambda value: instant_text(value, self.timezone) is not None,
            "not a timestamp (ISO 8601 text, a date or epoch seconds)",
        )

    def _rejecting(
        self, batch: list[Record], column: str, readable: Callable[[Any], bool], reason: str
    ) -> list[Record]:
        """The batch, each row whose ``column`` value is not ``readable`` as its error record naming the
        column and ``reason``, never the value."""
        selected = _selected_name(batch[0], column)
        return [
            record
            if readable(record[selected])
            else error_record(self.key_column, str(record.get(self.key_column)), f"{column}: {reason}")
            for record in batch
        ]

    def _watermark_batches(self, batch_size: int, partition: Partition | None) -> Iterator[list[Record]]:
        if partition is not None and check_partition(partition)[1] > 1:
            raise ValueError("watermark mode keeps one watermark: it cannot be partitioned")
        stored = self._start_value()
        last = None if stored is None else decode_watermark(stored, self.timezone)
        column = self.watermark_column
        assert column is not None
        if self.lookback is None:
            log.warning(
                "%s: no lookback, so a row whose %s was taken before a higher one's but committed after "
                "that was read (concurrent writers) is never read; give the source a lookback longer than "
                "a writing transaction takes (lookback: 0 if one writer commits in order)",
                self.describe(),
                column,
            )
        elif self.lookback and last is not None:
            self._check_margin(last)
            last = lowered(last, self.lookback, self.timezone)
        leads = partial(_may_lead, timezone=self.timezone)
        after = _after_text(last, self.timezone) if isinstance(last, str) else None
        for batch in _stream(self.conn_id, self.timezone, batch_size, partial(self._select, last=last)):
            selected = _selected_name(batch[0], column)
            if after is not None and not (batch := [row for row in batch if after(row[selected])]):
                continue
            values = [row[selected] for row in batch]
            if (odd := next((value for value in values if not _keepable(value)), None)) is not None:
                raise SourceError(
                    f"{self.describe()}: watermark_column {column!r} holds {type(odd).__name__} values, "
                    "which no watermark can keep (every row would be read, and the watermark never saved): "
                    "use a column of numbers, dates or times, or ISO 8601 text"
                )
            self._pending = _highest([self._pending, *filter(leads, values)], self.timezone)
            if self.lookback and self._pending is not None:
                self._check_margin(self._pending)
            yield self._rejecting(
                batch,
                column,
                leads,
                "not a value a watermark can move to (a number but NaN or infinity, a date or time before "
                "year 9999, or text that is ISO 8601 or epoch seconds of one)",
            )

    def _check_margin(self, value: Any) -> None:
        """`SourceError` naming ``lookback`` if it cannot be taken off ``value`` (`_margin_misfit`)."""
        assert self.lookback is not None and self.watermark_column is not None
        misfit = _margin_misfit(value, self.lookback, self.watermark_column)
        if misfit:
            raise SourceError(f"{self.describe()}: {misfit}")

    def _select(
        self, conn: Connection, window: Window | None = None, last: Any = None
    ) -> tuple[Executable, dict[str, Any]]:
        from sqlalchemy import and_, column, literal_column, or_, select, table

        wanted = [*(self.columns or []), self.key_column, self.watermark_column or self.created_at_column]
        tbl = table(self.table, *(column(c) for c in dict.fromkeys(wanted)), schema=self.schema)
        selected = [tbl.c[c] for c in dict.fromkeys(wanted)] if self.columns else [literal_column("*")]
        stmt = select(*selected).select_from(tbl).order_by(tbl.c[self.key_column])
        if self.watermark_column:
            stmt = stmt.where(tbl.c[self.watermark_column].is_not(None))
            if last is not None and not isinstance(last, str):  # text: `_after_text`
                stmt = stmt.where(tbl.c[self.watermark_column] > last)
        elif window is not None:
            assert self.created_at_column is not None
            compared = _time_filter(conn, tbl, self.created_at_column, self.timezone)
            (value, start), (_, end) = compared(window.start), compared(window.end)
            inside = and_(value >= start, value < end)
            if conn.dialect.name == "sqlite":  # a value that is no timestamp: its error record, every window
                inside = or_(inside, and_(tbl.c[self.created_at_column].is_not(None), value.is_(None)))
                self._untyped_times = True
            stmt = stmt.where(inside)
        return stmt, {}

    def probe(self, since: datetime) -> tuple[int, str | None]:
        """Rows created in `probe_window` and the newest creation time (window mode only)."""
        from sqlalchemy import column, func, select, table

        if not self.created_at_column:
            raise SourceError(f"{self.describe()}: only window mode (created_at_column) can be polled")
        window = probe_window(since)

        def statement(conn: Connection) -> tuple[Executable, dict[str, Any]]:
            assert self.created_at_column is not None
            tbl = table(self.table, column(self.created_at_column), schema=self.schema)
            compared = _time_filter(conn, tbl, self.created_at_column, self.timezone)
            (value, start), (_, end) = compared(window.start), compared(window.end)
            stmt = select(func.count(), func.max(tbl.c[self.created_at_column])).select_from(tbl)
            return stmt.where(value >= start, value < end), {}

        count, newest = self._aggregate(statement)
        return int(count), None if newest is None else str(newest)

    def _save(self, state: StateStore) -> None:
        """The highest watermark read, unless another run stored a later one since (`_later`): a run that
        read less and commits last must not move the watermark back."""
        if self._pending is None:
            return
        stored = state.get(self.state_key)
        if stored is None or _later(self._pending, decode_watermark(stored, self.timezone), self.timezone):
            state.set(self.state_key, encode_watermark(self._pending, self.timezone))


class SqlQuerySource(_Probing):
    """A custom SELECT, wrapped as a subquery and ordered by ``key_column``.

    The window reaches the query only as the bound parameters ``:window_start`` / ``:window_end``
    (``WHERE created >= :window_start AND created < :window_end``; in PostgreSQL write
    ``CAST(:window_start AS timestamptz)``, not ``::``). Partitions bind each its time sub-window, so a
    partitioned query must use both parameters. On SQLite, whose bounds are wall-clock text, text times of
    mixed forms compare as instants through ``altcraft_instant(created) >= altcraft_instant(:window_start)``.
    """

    complete_records = True

    def __init__(self, conn_id: str, sql: str, *, key_column: str, timezone: str | None = None):
        self.conn_id = conn_id
        self.sql = validate_select(sql)
        self.key_column = validate_identifier(key_column, "key_column")
        self.timezone, self.timezone_defaulted = naive_zone(timezone)
        self._window_params = [p for p in WINDOW_PARAMS if p in bound_names(self.sql)]

    def describe(self) -> str:
        bounds = "window as :window_start/:window_end" if self._window_params else "no window"
        return f"sql_query on connection {self.conn_id!r}, {bounds}, ordered by {self.key_column}"

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        check_batch_size(batch_size)
        if partition is not None and len(self._window_params) < len(WINDOW_PARAMS):
            raise ValueError("a partitioned sql_query must use both :window_start and :window_end")
        window = partition_window(window, partition)
        if window is None and self._window_params:
            raise ValueError("this sql_query uses :window_start/:window_end: it needs a window")
        yield from _stream(self.conn_id, self.timezone, batch_size, lambda conn: self._select(conn, window))

    def probe(self, since: datetime) -> tuple[int, str | None]:
        """How many rows the query gives for `probe_window`: a count, never the rows."""
        from sqlalchemy import func, select

        window = probe_window(since)

        def statement(conn: Connection) -> tuple[Executable, dict[str, Any]]:
            stmt, params = self._select(conn, window)
            return select(func.count()).select_from(stmt.order_by(None).subquery("probe")), params

        return int(self._aggregate(statement)[0]), None

    def _select(self, conn: Connection, window: Window | None) -> tuple[Executable, dict[str, Any]]:
        from sqlalchemy import column, literal_column, select, text

        query = text(self.sql + "\n").columns(column(self.key_column)).subquery("src")
        stmt = select(literal_column("*")).select_from(query).order_by(query.c[self.key_column])
        if window is None:
            return stmt, {}
        bounds = dict(zip(WINDOW_PARAMS, (window.start, window.end), strict=True))
        return stmt, {p: _bound(bounds[p], conn.dialect.name, self.timezone) for p in self._window_params}
