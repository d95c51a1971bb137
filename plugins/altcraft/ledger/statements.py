"""Batch-sized SQL statements on the ledger's tables, the same few whatever the batch size.

On PostgreSQL a list of contacts is one array parameter (``= ANY(…)``, ``INSERT … SELECT … FROM
unnest(…)``, ``UPDATE … FROM unnest(…)``); MySQL/MariaDB and SQLite get ``IN`` lists and executemany
inserts, chunked below SQLite's historical limit of 999 parameters per statement.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from altcraft.ledger.model import Outcome, RunRef, Scope, naive_utc, utc
from altcraft.ledger.rules import SETTLEABLE, STATE_COLUMNS, Change
from altcraft.ledger.schema import NOT_LAUNCHED, UtcDateTime, activity_table, contacts_table, outcomes_table

T = TypeVar("T")

#: Bind parameters per statement; far below every backend's limit (SQLite's historical 999 included).
PARAMS_PER_STATEMENT = 900

_C = contacts_table.c
_O = outcomes_table.c
_D = activity_table.c


def is_transient(exc: sa.exc.DBAPIError) -> bool:
    """A lock conflict, deadlock, busy database or concurrent insert of the same key: retrying helps.

    MySQL/MariaDB by the server's error code, first: mysql-connector-python's errors carry a generic SQLSTATE
    too (23000 for a duplicate key, HY000 for a lock wait timeout)."""
    orig = exc.orig
    args = getattr(orig, "args", ())
    mysql_code = getattr(orig, "errno", None) or (args[0] if args and isinstance(args[0], int) else None)
    if mysql_code is not None:  # mysql-connector-python / mysqlclient, PyMySQL
        return mysql_code in {1062, 1205, 1213}  # duplicate key, lock wait timeout, deadlock
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3 / psycopg2
    if sqlstate:
        return sqlstate in {"23505", "40001", "40P01", "55P03"}
    sqlite_error = getattr(orig, "sqlite_errorname", None)
    return bool(sqlite_error) and sqlite_error.startswith(
        ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CONSTRAINT_PRIMARYKEY")
    )


#: The database's clock, UTC, as each dialect reads it: the one clock every ledger time is written and
#: compared by, whichever worker writes it (PostgreSQL's ``clock_timestamp()``, not the transaction's start).
_CLOCK = {
    "postgresql": "timezone('UTC', clock_timestamp())",
    "mysql": "UTC_TIMESTAMP(6)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def database_now(conn: Connection) -> datetime:
    """The ledger database's time now (aware UTC)."""
    return conn.execute(_clock(conn.dialect.name)).scalar_one()


@lru_cache(maxsize=len(_CLOCK))
def _clock(dialect: str) -> sa.Select[tuple[datetime]]:
    """The query of a dialect's clock, built once: built per call (and walked for SQLAlchemy's cache key) it
    cost 25 us of the 60 us of CPU a read of the clock takes on PostgreSQL."""
    return sa.select(sa.type_coerce(sa.literal_column(_CLOCK[dialect]), UtcDateTime()))


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _arrays(conn: Connection) -> bool:
    """Whether statements take whole key lists as one array parameter (PostgreSQL)."""
    return conn.dialect.name == "postgresql"


def _array_literal(values: Iterable[Any]) -> str:
    """PostgreSQL array input text: each element double-quoted with ``\\`` and ``"`` escaped, None as NULL.

    Texts with nothing to escape (the common case) and all-None arrays are joined in C without a step per
    element: checking for None and calling str on each cost 75 of the 90 us of 1,000 keys.
    """
    items = list(values)
    try:
        plain = "".join(items)  # a TypeError unless every item is a str
    except TypeError:
        if items[0] is None and items.count(None) == len(items):  # e.g. launched contacts' error codes
            return "{" + ",".join(["NULL"] * len(items)) + "}"
    else:
        if '"' not in plain and "\\" not in plain:
            return '{"' + '","'.join(items) + '"}' if items else "{}"
    quoted = (
        "NULL" if value is None else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        for value in items
    )
    return "{" + ",".join(quoted) + "}"


def _array(column: sa.Column[Any], values: Sequence[Any]) -> sa.ColumnElement[Any]:
    """``values`` as one array for ``column``, bound as literals (a statement built per call)."""
    listed, array = _array_values(column, values)
    literal = sa.types.NullType()
    return _array_of(
        column, sa.literal(array, literal), None if _typed(column) else sa.literal(listed, literal)
    )


def _array_param(column: sa.Column[Any], name: str) -> sa.ColumnElement[Any]:
    """``column``'s array of the bound parameters `_array_params` gives under ``name``, for a statement
    built once."""
    listed = None if _typed(column) else sa.bindparam(f"{name}_list", type_=sa.types.NullType())
    return _array_of(column, sa.bindparam(name, type_=sa.types.NullType()), listed)


def _array_of(
    column: sa.Column[Any], array: sa.ColumnElement[Any], listed: sa.ColumnElement[Any] | None
) -> sa.ColumnElement[Any]:
    """``integer[]`` read from array text, or ``text[]`` for strings (not ``varchar(n)[]``: that cast
    truncates silently where the column refuses an over-long value): ``string_to_array(listed, ',')``, or
    read from ``array`` when ``listed`` is NULL (see `_array_values`).

    Sent as text of no declared type, so the server reads it once as the array (a text parameter cast per
    row would be parsed again for every row a filter looks at). A list instead would be dumped element by
    element by psycopg 3, ten times slower, and inlined by psycopg2 as an untyped ``ARRAY[...]``.
    """
    if listed is None:
        return sa.cast(array, sa.ARRAY(column.type))
    texts = sa.ARRAY(sa.Text())
    split = sa.func.string_to_array(listed, sa.literal_column("','"), type_=texts)
    return sa.func.coalesce(split, sa.cast(array, texts), type_=texts)


def _typed(column: sa.Column[Any]) -> bool:
    """Whether ``column``'s array is read from array text as its own type (integers, timestamps), not as
    texts."""
    return isinstance(column.type, sa.Integer | UtcDateTime)


def _array_values(column: sa.Column[Any], values: Sequence[Any]) -> tuple[str | None, str | None]:
    """(comma list, array text) of ``values``, one of them None: texts without a comma are joined by commas,
    which PostgreSQL splits several times faster than it reads array text (1,000 contact hashes: 0.1 ms
    against 0.7 ms); other values (a NULL, a comma, a lone empty text; any integers) as `_array_literal`;
    timestamps as naive UTC, as `UtcDateTime` stores them."""
    if isinstance(column.type, UtcDateTime):
        return None, _array_literal([None if v is None else naive_utc(v) for v in values])
    if not _typed(column):
        try:
            joined = "".join(values)  # a TypeError unless every value is a str
        except TypeError:
            pass
        else:  # looked for in the texts joined as they are: faster than counting the commas of the list
            if "," not in joined and (joined or len(values) != 1):
                return ",".join(values), None
    return None, _array_literal(values)


def _array_params(column: sa.Column[Any], name: str, values: Sequence[Any]) -> dict[str, str | None]:
    """The bound values of `_array_param` ``name`` for ``values``."""
    listed, array = _array_values(column, values)
    return {name: array} if _typed(column) else {f"{name}_list": listed, name: array}


def _unnest(table: sa.Table, columns: Mapping[str, Sequence[Any]]) -> sa.TableValuedAlias:
    """``unnest(array, ...) AS anon(name, ...)``: one row per position of the equal-length ``columns``."""
    arrays = [_array(table.c[name], values) for name, values in columns.items()]
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived()


def matching(
    conn: Connection, column: sa.Column[Any], values: Iterable[str], size: int = PARAMS_PER_STATEMENT
) -> Iterator[tuple[Sequence[str], sa.ColumnElement[bool]]]:
    """``column`` in ``values`` (sorted) as (values, condition) pairs: one ``= ANY(array)`` on
    PostgreSQL, else ``IN`` lists of at most ``size``; none for no values."""
    ordered = sorted(values)
    if ordered and _arrays(conn):
        yield ordered, column == sa.any_(_array(column, ordered))
        return
    for chunk in _chunks(ordered, size):
        yield chunk, column.in_(chunk)


def contact_states(conn: Connection, hashes: Iterable[str], *, lock: bool) -> Iterator[sa.Row[Any]]:
    """``(contact_hash, *`rules.ContactState` columns)`` of the contact rows of ``hashes`` in hash order,
    locked (``FOR UPDATE``) if ``lock``: on PostgreSQL one statement built once (every claim runs it;
    building it per call cost more than its rows), elsewhere one per chunk of `matching`. Only the columns
    the claim reads."""
    ordered = sorted(hashes)
    if ordered and _arrays(conn):
        params = _array_params(_C.contact_hash, "hashes", ordered)
        yield from conn.execute(_contacts_among(lock), params)
        return
    for _, condition in matching(conn, _C.contact_hash, ordered):
        yield from conn.execute(_contacts_where(condition, lock=lock))


@lru_cache(maxsize=2)
def _contacts_among(lock: bool) -> sa.Select[Any]:
    return _contacts_where(_C.contact_hash == sa.any_(_array_param(_C.contact_hash, "hashes")), lock=lock)


def _contacts_where(condition: sa.ColumnElement[bool], *, lock: bool) -> sa.Select[Any]:
    state = [_C[name] for name in STATE_COLUMNS]
    query = sa.select(_C.contact_hash, *state).where(condition).order_by(_C.contact_hash)
    return query.with_for_update() if lock else query


def open_in(platform: Any, scenario_id: Any) -> tuple[sa.ColumnElement[bool], ...]:
    """A scope's contacts not launched (in ``ix_altcraft_contacts_open``): its ``platform`` and
    ``scenario_id``, or the bind parameters of a statement built once."""
    return NOT_LAUNCHED, _C.scenario_id == scenario_id, _C.platform == platform


def open_contacts(
    conn: Connection,
    scope: Scope,
    hashes: Collection[str],
    columns: tuple[sa.Column[Any], ...],
    statuses: tuple[str, ...],
) -> list[sa.Row[Any]]:
    """``columns`` of the scope's contact rows of ``hashes`` in ``statuses``, not launched (`open_in`). On
    PostgreSQL one statement built once per columns and statuses, the hashes one array, unsorted (nothing is
    locked): built and sorted per call, a read of 1,000 new contacts took 1.3-1.4 us of CPU per contact at
    best, not 0.85-0.92; elsewhere one per chunk of `matching`."""
    if hashes and _arrays(conn):
        params = _array_params(_C.contact_hash, "hashes", list(hashes))
        bound = {**params, "platform": scope.platform, "scenario_id": scope.scenario_id}
        return conn.execute(_open_among(columns, statuses), bound).all()
    found: list[sa.Row[Any]] = []
    for _, condition in matching(conn, _C.contact_hash, hashes):
        open_rows = open_in(scope.platform, scope.scenario_id)
        found += conn.execute(sa.select(*columns).where(condition, _C.status.in_(statuses), *open_rows)).all()
    return found


@lru_cache(maxsize=4)
def _open_among(columns: tuple[sa.Column[Any], ...], statuses: tuple[str, ...]) -> sa.Select[Any]:
    among = _C.contact_hash == sa.any_(_array_param(_C.contact_hash, "hashes"))
    bound = open_in(sa.bindparam("platform"), sa.bindparam("scenario_id"))
    return sa.select(*columns).where(among, _C.status.in_(statuses), *bound)


def contact_outcome_rows(
    conn: Connection, origins: Mapping[str, datetime | None], query: sa.Select[Any]
) -> list[sa.Row[Any]]:
    """``query``'s rows among the outcome rows of these contacts (hash -> the ``created_at`` of its row,
    None if it has no row or none there), in ``id`` order (``query`` selects ``id``), each contact's looked
    up in ``ix_altcraft_outcomes_by_contact``.

    A contact's rows carry its row's ``created_at`` or NULL (written before it had a row, or by an earlier
    version): looked up under both, so a row written without it is found all the same.
    """
    found = (conn.execute(statement) for statement in _contact_lookups(conn, origins, query))
    rows = [row for result in found for row in result]
    return sorted(rows, key=lambda row: row.id)


def _contact_lookups(
    conn: Connection, origins: Mapping[str, datetime | None], query: sa.Select[Any]
) -> Iterator[sa.Select[Any]]:
    """The statements of `contact_outcome_rows`: the NULL arm (always) and the dated pairs."""
    undated = _O.contact_created_at.is_(None)
    dated = sorted((origin, found) for found, origin in origins.items() if origin is not None)
    if _arrays(conn):
        if origins:
            yield _per_contact(query, {"contact_hash": sorted(origins)}, undated)
        if dated:
            times, hashes = zip(*dated, strict=True)
            yield _per_contact(query, {"contact_created_at": times, "contact_hash": hashes})
        return
    for _, condition in matching(conn, _O.contact_hash, origins):
        yield query.where(undated & condition)
    # elsewhere each time with its hashes: SQLite reads a pair IN list by scanning the whole table
    for chunk in _chunks(dated, PARAMS_PER_STATEMENT // 2):
        by_time: dict[datetime, list[str]] = {}
        for origin, found in chunk:
            by_time.setdefault(origin, []).append(found)
        yield query.where(
            sa.or_(*((_O.contact_created_at == t) & _O.contact_hash.in_(h) for t, h in by_time.items()))
        )


def _per_contact(
    query: sa.Select[Any], columns: Mapping[str, Sequence[Any]], *conditions: sa.ColumnElement[bool]
) -> sa.Select[Any]:
    """PostgreSQL: ``query`` run once per row of the arrays ``columns`` (outcome columns equal to that
    row's values), in a LATERAL subquery the planner may not merge into a join (``OFFSET 0``).

    So each contact is one search of the index on those columns, whatever the table's statistics say. As a
    join, a young table's (not analysed yet: its filters' rows guessed at one) was planned as a loop over
    the ledger's launched outcomes of the window comparing each with every contact of the claim: 1.5 s for
    a chunk of 1,000 returning contacts after 8,000 launches for the window, and growing with each.
    """
    values = _unnest(outcomes_table, columns)
    matched = [outcomes_table.c[name] == values.c[name] for name in columns]
    each = query.where(*conditions, *matched).offset(0).lateral()
    return sa.select(each).select_from(values).join(each, sa.true())


def columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """Rows of values in ``names`` order, as one sequence per name."""
    return dict(zip(names, zip(*rows, strict=True), strict=True))


def insert_rows(
    conn: Connection, table: sa.Table, shared: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]
) -> None:
    """INSERT one row per position of the equal-length ``columns``, each with the ``shared`` values.

    PostgreSQL: ``INSERT ... SELECT ... FROM unnest(...)``, one statement with a fixed number of
    parameters. Elsewhere an executemany of plain rows (SQLAlchemy's fastest: no bound values in the
    statement).
    """
    if _arrays(conn):
        statement = _insert_from_arrays(table, tuple(shared), tuple(columns))
        params = {f"shared_{name}": value for name, value in shared.items()}
        for name, values in columns.items():
            params.update(_array_params(table.c[name], f"array_{name}", values))
        conn.execute(statement, params)
        return
    names = [*shared, *columns]
    rows = [
        dict(zip(names, (*shared.values(), *row), strict=True)) for row in zip(*columns.values(), strict=True)
    ]
    conn.execute(sa.insert(table), rows)


@lru_cache(maxsize=16)
def _insert_from_arrays(table: sa.Table, shared: tuple[str, ...], columns: tuple[str, ...]) -> sa.Insert:
    """PostgreSQL's ``INSERT ... SELECT :shared_<name>, ... FROM unnest(:array_<name>, ...)`` for these
    names, built once: building it on every call (and walking it for SQLAlchemy's cache key) cost more CPU
    than the rest of a thousand-row insert. The arrays are bound as `_array` binds them."""
    values = [sa.bindparam(f"shared_{name}", type_=table.c[name].type) for name in shared]
    arrays = [_array_param(table.c[name], f"array_{name}") for name in columns]
    new = sa.func.unnest(*arrays).table_valued(*columns).render_derived()
    return sa.insert(table).from_select([*shared, *columns], sa.select(*values, *new.c))


def _per_row(column: sa.Column[Any], values: Mapping[str, Any]) -> Any:
    """A SET value for ``column``: a constant when all rows agree, else ``CASE contact_hash WHEN ...``."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return sa.literal(distinct.pop(), column.type)
    return sa.cast(sa.case(dict(values), value=_C.contact_hash), column.type)


def update_contacts(
    conn: Connection,
    common: Mapping[str, Any],
    per_row: Mapping[str, Mapping[str, Any]],
    hashes: Sequence[str],
    *,
    batch_id: str | None = None,
) -> int:
    """UPDATE the contact rows ``hashes`` to the plain values ``common`` (`set_values`) and ``per_row``;
    with ``batch_id``, only those its claim still holds unsettled (`rules.SETTLEABLE`). Returns the rows
    matched.

    Without per-row values: a statement built once per column names (SQLAlchemy walks a statement built
    anew for its cache key on every call), one on PostgreSQL, one per ``IN`` chunk elsewhere. With them:
    on PostgreSQL one statement, per-row values joined from ``unnest``; elsewhere one per chunk, per-row
    values as ``CASE``.
    """
    if not hashes:
        return 0
    arrays = _arrays(conn)
    if not per_row:
        statement = _update_rows(tuple(common), arrays, batch_id is not None)
        params = {f"set_{name}": value for name, value in common.items()}
        if batch_id is not None:
            params["guard_batch_id"] = batch_id
        if arrays:
            params.update(_array_params(_C.contact_hash, "hashes", sorted(hashes)))
            return conn.execute(statement, params).rowcount
        return sum(
            conn.execute(statement, {**params, "hashes": chunk}).rowcount
            for chunk in _chunks(sorted(hashes), PARAMS_PER_STATEMENT)
        )
    guards = () if batch_id is None else _settleable(batch_id)
    if arrays:
        ordered = sorted(hashes)
        columns = {name: [values[h] for h in ordered] for name, values in per_row.items()}
        new = _unnest(contacts_table, {"contact_hash": ordered, **columns})
        statement = (
            sa.update(contacts_table)
            .where(_C.contact_hash == new.c.contact_hash, *guards)
            .values({**set_values(common), **{name: new.c[name] for name in per_row}})
        )
        return conn.execute(statement).rowcount
    matched = 0
    size = PARAMS_PER_STATEMENT // (1 + 2 * len(per_row))
    for chunk, condition in matching(conn, _C.contact_hash, hashes, size):
        values = set_values(common)
        for name, by_hash in per_row.items():
            values[name] = _per_row(_C[name], {h: by_hash[h] for h in chunk})
        matched += conn.execute(sa.update(contacts_table).where(condition, *guards).values(values)).rowcount
    return matched


def _settleable(batch_id: str | sa.BindParameter[str]) -> tuple[sa.ColumnElement[bool], ...]:
    """The rows a settlement of claim ``batch_id`` may change: still that claim's, and not settled.

    The statuses are one bound parameter each, as the ``IN`` list of plain values renders them at execution:
    that list is an expanding parameter, rendered anew on every execution of a statement built once (15 us
    of every settle)."""
    statuses = [
        sa.bindparam(f"settleable_{status.value}", status.value, type_=_C.status.type)
        for status in SETTLEABLE
    ]
    return _C.batch_id == batch_id, _C.status.in_(statuses)


@lru_cache(maxsize=32)
def _update_rows(names: tuple[str, ...], arrays: bool, guarded: bool) -> sa.Update:
    """``UPDATE ... SET <name> = :set_<name>, ... WHERE contact_hash`` among ``:hashes`` (an array on
    PostgreSQL, as `_array` binds it; else an ``IN`` list), and with ``guarded`` `_settleable` by
    ``:guard_batch_id``, built once per column names."""
    values = set_values({name: sa.bindparam(f"set_{name}", type_=_C[name].type) for name in names})
    among = (
        _C.contact_hash == sa.any_(_array_param(_C.contact_hash, "hashes"))
        if arrays
        else _C.contact_hash.in_(sa.bindparam("hashes", expanding=True))
    )
    guards = _settleable(sa.bindparam("guard_batch_id", type_=_C.batch_id.type)) if guarded else ()
    return sa.update(contacts_table).where(among, *guards).values(values)


def change_values(change: Change, at: datetime) -> dict[str, Any]:
    """The plain values a contact row :class:`~altcraft.ledger.rules.Change` made at ``at`` sets (see
    `set_values`)."""
    values: dict[str, Any] = {"error_text": change.error_text}
    if change.status is None:
        return values
    values |= {"status": change.status.value, "error_code": change.error_code, "updated_at": at}
    if change.launch is not None:
        values |= {
            "first_launched_at": change.launch.at,
            "last_launched_at": change.launch.at,
            "last_run_key": change.launch.run_key,
            "last_window_key": change.launch.window_key,
        }
    return values


def set_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The SET clause of plain values (or bound parameters) of contact columns: a ``first_launched_at``
    is a launch, which counts one more launch and keeps the time of an earlier first launch."""
    clause = dict(values)
    if "first_launched_at" in clause:
        first = clause["first_launched_at"]
        if not isinstance(first, sa.BindParameter):
            first = sa.literal(first, UtcDateTime())
        clause["first_launched_at"] = sa.func.coalesce(_C.first_launched_at, first)
        clause["launch_count"] = _C.launch_count + 1
    return clause


def apply_changes(
    conn: Connection, changes: Mapping[str, Change], at: datetime, *, batch_id: str | None = None
) -> int:
    """Apply each row's change (by contact hash), with ``batch_id`` only to rows that claim holds unsettled
    (see `update_contacts`); returns the rows matched.

    Rows whose changes differ only in their error code and text share one statement, those two columns
    set per row.
    """
    groups: dict[tuple[Any, ...], dict[str, Change]] = {}
    firsts: dict[tuple[Any, ...], Change] = {}
    mixed: set[tuple[Any, ...]] = set()  # groups of more than one Change object: codes and texts may differ
    last: Change | None = None
    for contact_hash, change in changes.items():
        if change is not last:  # runs of rows share one Change (a settlement's launches): found once a run
            key = (change.status, change.launch)
            group = groups.setdefault(key, {})
            if firsts.setdefault(key, change) is not change:
                mixed.add(key)
            last = change
        group[contact_hash] = change
    matched = 0
    for key, group in groups.items():
        common = change_values(firsts[key], at)
        per_row: dict[str, dict[str, Any]] = {}
        for name in ("error_code", "error_text") if key in mixed else ():
            if name in common and len({getattr(change, name) for change in group.values()}) > 1:
                per_row[name] = {h: getattr(change, name) for h, change in group.items()}
                del common[name]
        matched += update_contacts(conn, common, per_row, list(group), batch_id=batch_id)
    return matched


#: An outcome row's own values: (contact_key, contact_hash, source_key, code, reason, profile_id,
#: contact_created_at).
Entry = tuple[str | None, str | None, str, int | None, str | None, str | None, datetime | None]
_ENTRY_COLUMNS = (
    "contact_key",
    "contact_hash",
    "source_key",
    "code",
    "reason",
    "profile_id",
    "contact_created_at",
)


def insert_outcomes(
    conn: Connection, scope: Scope, run: RunRef, outcome: Outcome, at: datetime, entries: Sequence[Entry]
) -> None:
    """Insert ``outcome`` rows of this try, one per entry."""
    if entries:
        insert_outcome_rows(conn, scope, run, outcome, at, columns(_ENTRY_COLUMNS, entries))


def insert_outcome_rows(
    conn: Connection,
    scope: Scope,
    run: RunRef,
    outcome: Outcome,
    at: datetime,
    rows: Mapping[str, Sequence[Any]],
) -> None:
    """Insert ``outcome`` rows of this try given column by column (an `Entry`'s names, equal lengths; a
    column whose rows all agree may come as one value in ``shared`` instead)."""
    shared = {
        "platform": scope.platform,
        "scenario_id": scope.scenario_id,
        "dag_id": run.dag_id,
        "task_id": run.task_id,
        "run_id": run.run_id,
        "window_key": run.window_key,
        "try_number": run.try_number,
        "outcome": outcome.value,
        "recorded_at": at,
    }
    origins = rows.get("contact_created_at")
    if origins and origins.count(origins[0]) == len(origins):  # e.g. one claim's new contacts
        shared["contact_created_at"] = origins[0]
        rows = {name: values for name, values in rows.items() if name != "contact_created_at"}
    insert_rows(conn, outcomes_table, shared, rows)
    days = tally(conn)
    days.add(
        scope.platform, scope.scenario_id, run.dag_id, run.task_id, outcome.value, at, len(rows["source_key"])
    )


# --- the per-day counts (altcraft_outcome_days) -------------------------------------------------------

#: (day, platform, scenario_id, dag_id, outcome, shard): one row of ``altcraft_outcome_days``
DayKey = tuple[date, str, int, str, str, int]
#: Rows per day, pipeline and outcome that the tasks' counts are spread over (see `shard`).
SHARDS = 32


def shard(task_id: str) -> int:
    """The row a task's counts go to: partitions of one run (``send[0]``, ``send[1]``, ...) writing at
    once mostly update different rows, instead of waiting for each other's COMMIT on one."""
    return zlib.crc32(task_id.encode()) % SHARDS


_TALLY = "altcraft_outcome_days"


class ActivityTally:
    """What one transaction's outcome writes change in ``altcraft_outcome_days``, applied at its end.

    Applied in key order just before COMMIT, so concurrent transactions lock the rows of that small
    table in one order and hold them only while they commit.
    """

    def __init__(self) -> None:
        self.counts: dict[DayKey, int] = {}
        self.latest: dict[DayKey, datetime] = {}

    def add(
        self, platform: str, scenario_id: int, dag_id: str, task_id: str, outcome: str, at: datetime, n: int
    ) -> None:
        """``n`` (negative: fewer) outcome rows of a task recorded at ``at`` (their ``recorded_at``)."""
        at = utc(at)
        key = (at.date(), platform, int(scenario_id), dag_id, outcome, shard(task_id))
        self.counts[key] = self.counts.get(key, 0) + n
        self.latest[key] = max(at, self.latest.get(key, at))

    def rows(self) -> list[tuple[Any, ...]]:
        """(*DayKey, count, latest recorded_at) in key order, as `upsert_days` takes them."""
        return [(*key, self.counts[key], self.latest[key]) for key in sorted(self.counts)]

    def apply(self, conn: Connection) -> None:
        upsert_days(conn, self.rows(), add=True)


def begin_tally(conn: Connection) -> ActivityTally:
    """Start counting this transaction's outcome writes (the ledger's write transactions do)."""
    conn.info[_TALLY] = ActivityTally()
    return conn.info[_TALLY]


def drop_tally(conn: Connection) -> None:
    conn.info.pop(_TALLY, None)


def tally(conn: Connection) -> ActivityTally:
    """The running transaction's :class:`ActivityTally`; writing outcomes without one would lose counts."""
    try:
        return conn.info[_TALLY]
    except KeyError:
        raise RuntimeError("outcome rows are written in a Ledger write transaction") from None


def upsert_days(conn: Connection, rows: Sequence[tuple[Any, ...]], *, add: bool) -> None:
    """Rows of ``altcraft_outcome_days`` as (*DayKey, count, latest recorded_at): with ``add``, added to
    the counts there (a new key starts at 0), else replacing them."""
    if not rows:
        return
    names = [column.name for column in activity_table.columns]  # DayKey, count, latest
    values = [dict(zip(names, row, strict=True)) for row in rows]
    upsert = _upsert_days(conn.dialect.name, add)
    if len(values) == 1:  # a transaction's usual tally: one row, as a statement SQLAlchemy compiles once
        conn.execute(upsert, values[0])  # (a multi-row VALUES has no cache key: compiled on every call)
        return
    for chunk in _chunks(values, PARAMS_PER_STATEMENT // len(names)):  # one multi-row statement each
        conn.execute(upsert.values(list(chunk)))


@lru_cache(maxsize=8)
def _upsert_days(dialect: str, add: bool) -> sa.Insert:
    """The dialect's upsert into ``altcraft_outcome_days`` (see `upsert_days`), built once: every write
    transaction runs it."""
    if dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(activity_table)
        new = statement.inserted
        count, latest = _merged(new, add, sa.func.greatest)
        return statement.on_duplicate_key_update(outcome_count=count, last_recorded_at=latest)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(activity_table)
    greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max  # SQLite: max(a, b), scalar
    count, latest = _merged(statement.excluded, add, greatest)
    return statement.on_conflict_do_update(
        index_elements=list(activity_table.primary_key.columns),
        set_={"outcome_count": count, "last_recorded_at": latest},
    )


def _merged(new: Any, add: bool, greatest: Any) -> tuple[Any, Any]:
    """SET values of an upsert into ``altcraft_outcome_days``: added to the row there, or replacing it."""
    if not add:
        return new.outcome_count, new.last_recorded_at
    return _D.outcome_count + new.outcome_count, greatest(_D.last_recorded_at, new.last_recorded_at)


def utc_day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a timestamp column (stored as naive UTC), as the dialect spells it."""
    return sa.cast(column, sa.Date) if dialect == "postgresql" else sa.func.date(column)


def as_date(value: Any) -> date:
    """A DATE as the drivers return it (SQLite: ISO text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def recount_days(conn: Connection) -> int:
    """Set ``altcraft_outcome_days`` to ``COUNT(*) … GROUP BY`` of the outcome rows; returns its rows.

    Holds off outcome writes while it counts (PostgreSQL: a SHARE lock on the table; MySQL/MariaDB: a
    locking read, which needs REPEATABLE READ for its gap locks; SQLite: the write lock), so no write
    falls between the count and the table. Writes the table only with UPDATE and INSERT.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(f"LOCK TABLE {outcomes_table.name} IN SHARE MODE")
    day = utc_day(_O.recorded_at, dialect)
    keys = (day, _O.platform, _O.scenario_id, _O.dag_id, _O.outcome, _O.task_id)
    query = sa.select(*keys, sa.func.count(), sa.func.max(_O.recorded_at)).group_by(*keys)
    if dialect == "mysql":
        query = query.with_for_update(read=True)
    counted = ActivityTally()  # by task, as the writers count them (their latest time is on their day)
    for _, platform, scenario_id, dag_id, outcome, task_id, n, last in conn.execute(query):
        counted.add(platform, scenario_id, dag_id, task_id, outcome, last, n)
    rows = counted.rows()
    conn.execute(sa.update(activity_table).values(outcome_count=0))
    upsert_days(conn, rows, add=False)
    return len(rows)
