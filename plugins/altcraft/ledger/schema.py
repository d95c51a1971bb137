"""The ledger's tables (``docs/ledger.md#tables``), their creation and the upgrade of older ledgers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from altcraft.ledger.model import ID_LEN, KEY_LEN, MARKER_LEN, MODE_LEN, PLATFORM_LEN, aware_utc, naive_utc

log = logging.getLogger(__name__)


class LedgerSchemaError(RuntimeError):
    """The ledger's tables could not be created or brought up to this version (the database user may not
    create or alter them)."""


def schema_error(exc: sa.exc.DBAPIError, tables: str = "The sync ledger's tables") -> LedgerSchemaError:
    """The failure of a statement creating or upgrading ``tables`` of the ledger's database, saying what to
    do. A database that could not be reached (no statement ran, or the connection was lost) is no such
    failure: ``exc`` is raised as it is."""
    if exc.statement is None or exc.connection_invalidated:
        raise exc
    said = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    statement = " ".join(str(exc.statement or "").split())[:300]
    return LedgerSchemaError(
        f"{tables} could not be created or upgraded to this version: {said} (in "
        f"{statement}). Where the ledger connection's user may not create or alter the tables, give it "
        "that right for one run (PostgreSQL: CREATE on the schema, and be the tables' owner; "
        "MySQL/MariaDB: CREATE, ALTER and INDEX), or run that statement and those of docs/ledger.md, "
        "'Upgrading an existing ledger', as the database's administrator."
    )


def check_encoding(
    engine: Engine, tables: Iterable[sa.Table], what: str = "The sync ledger's tables"
) -> None:
    """Refuse (`LedgerSchemaError`) a database that cannot hold every text ``tables`` store: one a claim or a
    webhook delivery would fail on part-way, the chunk's other contacts with it, and every retry after it.
    A PostgreSQL database whose encoding is not UTF8 (LATIN1 holds no Cyrillic email: a bare
    UnicodeEncodeError), before anything is created in it; a MySQL/MariaDB text column of ``tables`` (which
    this project creates utf8mb4) that a DBA made or converted in another character set (utf8mb3 holds no
    emoji: 1366 "Incorrect string value"). Connections speak utf8mb4 (`altcraft.engines.protected`);
    SQLite stores UTF-8."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            found = conn.exec_driver_sql("SHOW server_encoding").scalar()
            problem = None if found == "UTF8" else f"this PostgreSQL database's encoding is {found}"
            fix = "Create a database with ENCODING 'UTF8' and point the connection at it"
        elif dialect in ("mysql", "mariadb"):
            column = conn.execute(_NOT_UTF8MB4, {"names": [table.name for table in tables]}).first()
            problem = None if column is None else f"{column[0]}.{column[1]} is in {column[2]}"
            fix = "Convert the table: ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        else:
            problem = None
    if problem:
        raise LedgerSchemaError(
            f"{what} need a database that stores any text, and {problem}: a contact's key or a webhook "
            f"delivery it cannot hold would fail its run part-way. {fix} (docs/ledger.md, 'Database "
            "specifics')."
        )


_NOT_UTF8MB4 = sa.text(
    "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names AND CHARACTER_SET_NAME <> 'utf8mb4' "
    "ORDER BY TABLE_NAME, ORDINAL_POSITION"
).bindparams(sa.bindparam("names", expanding=True))


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as naive UTC (microseconds on every backend)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else naive_utc(value)

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], datetime | None]:
        """Made aware (`aware_utc`) after the dialect's own processing, if any: one call per value, not the
        three of ``TypeDecorator``'s ``process_result_value`` (a claim reads four per returning contact)."""
        inner = self.impl_instance.result_processor(dialect, coltype)
        if inner is None:
            return lambda value: None if value is None else aware_utc(value)
        return lambda value: None if (value := inner(value)) is None else aware_utc(value)


def _identifier(length: int) -> sa.types.TypeEngine[str]:
    """A column of keys, hashes, ids and statuses: compared byte by byte, as MySQL/MariaDB (``utf8mb4_bin``)
    and SQLite (``BINARY``) compare them; on PostgreSQL ``COLLATE "C"``, else the database's collation
    (``C.UTF-8``, ``en_US.UTF-8``...) makes every B-tree comparison a ``strcoll`` (claim + settle of 1,000
    new contacts: server CPU 22.7 -> 20.0 us per contact, wall 40.5 -> 34.6 us). Python's sorted order.
    """
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


metadata = sa.MetaData()
_MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

contacts_table = sa.Table(
    "altcraft_contacts",
    metadata,
    sa.Column("contact_hash", _identifier(64), primary_key=True),
    sa.Column("platform", _identifier(PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("contact_key", sa.Text, nullable=False),
    sa.Column("status", _identifier(16), nullable=False),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("launch_count", sa.Integer, nullable=False),
    sa.Column("first_launched_at", UtcDateTime),
    sa.Column("last_launched_at", UtcDateTime),
    sa.Column("last_run_key", _identifier(KEY_LEN)),
    sa.Column("last_window_key", _identifier(KEY_LEN)),
    sa.Column("claim_run_key", _identifier(KEY_LEN), nullable=False),
    sa.Column("claim_try_number", sa.Integer, nullable=False),
    sa.Column("batch_id", _identifier(32), nullable=False),
    sa.Column("claimed_at", UtcDateTime, nullable=False),
    sa.Column("error_code", sa.Integer),
    sa.Column("error_text", sa.Text),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("launch_marker", sa.String(MARKER_LEN)),
    # how the latest claim's request was sent (single, batch, async); NULL in rows claimed before it existed,
    # which reconciliation reads as possibly an Altcraft task still queued (altcraft.reconciliation)
    sa.Column("delivery_mode", _identifier(MODE_LEN)),
    # when the row was made (its first claim); never changed. NULL in rows made before it existed. Copied to
    # the contact's outcome rows (``contact_created_at``), which it places in their contact index
    sa.Column("created_at", UtcDateTime),
    # when a reconciliation last checked the contact (read its evidence, whatever it decided); NULL if none
    # has. A bounded reconciliation takes the uncertain contacts by when each last had its turn, the later
    # of this and ``updated_at``, so one checked and left undecided goes behind the others
    sa.Column("checked_at", UtcDateTime),
    # the contacts not launched (sending, uncertain, failed), for recovery, reconciliation and the standing;
    # on PostgreSQL and SQLite only those rows, so a settle's `launched` adds no entry (PostgreSQL, claim +
    # settle of 1,000 new contacts: server CPU 29 -> 22 us per contact); a query uses it by stating
    # `NOT_LAUNCHED`. MySQL/MariaDB have no partial index: there it holds every row.
    sa.Index(
        "ix_altcraft_contacts_open",
        "status",
        "scenario_id",
        postgresql_where=sa.text("status <> 'launched'"),
        sqlite_where=sa.text("status <> 'launched'"),
    ),
    **_MYSQL_OPTIONS,
)

#: MySQL/MariaDB: InnoDB stores a table in its primary key's order, so keyed by the random hash every new
#: contact went to a random page of the whole table. A ledger created there keys the rows by an increasing
#: ``id`` instead, new contacts at the table's end, and keeps the hash unique in a secondary index. A trade
#: (docs/ledger.md#tables): at 10,000,000 contacts a new one costs 285 instead of 508 us, one seen again
#: 8-40% more (the index, then the row). A ledger created before keeps the hash as its key; the ledger
#: works with both. Not on PostgreSQL or SQLite, whose tables are heaps (SQLite's rowid) whatever the key.
sa.event.listen(
    contacts_table,
    "after_create",
    sa.DDL(
        "ALTER TABLE altcraft_contacts DROP PRIMARY KEY, ADD COLUMN id BIGINT NOT NULL AUTO_INCREMENT FIRST, "
        "ADD PRIMARY KEY (id), ADD UNIQUE KEY uq_altcraft_contacts_hash (contact_hash)"
    ).execute_if(dialect="mysql"),
)

#: Facts about the ledger itself, by name. `CANONICAL_KEYS`: the contacts table was created by a version that
#: writes a custom key's number in one form (`altcraft.validation.number_key_text`), so none of its rows can
#: be under a form an earlier version wrote (`altcraft.ledger.rules.former_keys`) and a claim looks for none.
meta_table = sa.Table(
    "altcraft_ledger_meta",
    metadata,
    sa.Column("name", _identifier(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    **_MYSQL_OPTIONS,
)

#: The mark (name, value), written by whoever creates the contacts table, right after it (on PostgreSQL in
#: the same transaction; MySQL/MariaDB and SQLite commit the table first, and a crash in between leaves the
#: ledger unmarked: lookups kept, nothing lost); never where the table is found (a ledger of an earlier
#: version gets the meta table without it).
CANONICAL_KEYS = ("custom_keys", "canonical")
contacts_table.add_is_dependent_on(meta_table)  # created first, so the mark can follow the contacts table
sa.event.listen(
    contacts_table,
    "after_create",
    sa.DDL(
        f"INSERT INTO {meta_table.name} (name, value) VALUES ('{CANONICAL_KEYS[0]}', '{CANONICAL_KEYS[1]}')"
    ),
)


def keys_canonical(conn: Connection) -> bool:
    """Whether the ledger bears the `CANONICAL_KEYS` mark."""
    name, value = CANONICAL_KEYS
    query = sa.select(meta_table.c.value).where(meta_table.c.name == name)
    return conn.execute(query).scalar_one_or_none() == value


#: The condition of ``ix_altcraft_contacts_open``, as a literal: a query on contacts in a status other than
#: ``launched`` states it too, so the index serves it whatever its bound parameters (a generic plan).
NOT_LAUNCHED = contacts_table.c.status != sa.literal_column("'launched'")

outcomes_table = sa.Table(
    "altcraft_outcomes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("platform", _identifier(PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("dag_id", _identifier(ID_LEN), nullable=False),
    sa.Column("task_id", _identifier(ID_LEN), nullable=False),
    sa.Column("run_id", _identifier(ID_LEN), nullable=False),
    sa.Column("window_key", _identifier(KEY_LEN), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("contact_key", sa.Text),
    sa.Column("contact_hash", _identifier(64)),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("outcome", _identifier(16), nullable=False),
    sa.Column("code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("profile_id", sa.String(255)),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    # the contact row's ``created_at`` when this row was written; NULL when the contact had no row yet (a
    # rejected row, say) or its row has none (made before the column existed)
    sa.Column("contact_created_at", UtcDateTime),
    sa.Index("ix_altcraft_outcomes_run", "dag_id", "run_id", "task_id"),
    # a contact's outcomes (history, window checks, reconciliation), found by its row's created_at and hash:
    # a new contact's outcomes go to the index's newest end, not to a random page of it as by the hash
    # alone (PostgreSQL, claim + settle of new contacts after 10,000,000: WAL 12.5 -> 8.0 KB per contact)
    sa.Index("ix_altcraft_outcomes_by_contact", "contact_created_at", "contact_hash"),
    # recorded_at first (retention, a time range); the rest makes the UI's per-day counts index-only scans
    sa.Index("ix_altcraft_outcomes_activity", "recorded_at", "platform", "scenario_id", "dag_id", "outcome"),
    **_MYSQL_OPTIONS,
)

#: Outcome rows counted per scope, pipeline, UTC day (of ``recorded_at``), outcome (and shard): the UI's
#: 30-day counts without reading a month of outcomes. Kept by the ledger in the transaction that writes or
#: rewrites the outcome rows (see :class:`~altcraft.ledger.statements.ActivityTally`), so it always equals
#: ``COUNT(*) … GROUP BY`` of ``altcraft_outcomes``; a row may reach 0 when reconciliation moves its rows.
activity_table = sa.Table(
    "altcraft_outcome_days",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("platform", _identifier(PLATFORM_LEN), primary_key=True),
    sa.Column("scenario_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dag_id", _identifier(ID_LEN), primary_key=True),
    sa.Column("outcome", _identifier(16), primary_key=True),
    #: which of a few rows per key the task that wrote the outcomes counts in (concurrent partitions of a
    #: run mostly update different rows); the page adds them up
    sa.Column("shard", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("outcome_count", sa.BigInteger, nullable=False),
    #: the latest ``recorded_at`` of the rows counted here (never lowered: a moved row keeps its day)
    sa.Column("last_recorded_at", UtcDateTime, nullable=False),
    **_MYSQL_OPTIONS,
)

aliases_table = sa.Table(
    "altcraft_aliases",
    metadata,
    sa.Column("alias_hash", _identifier(64), primary_key=True),
    sa.Column("contact_hash", _identifier(64), nullable=False),
    sa.Column("platform", _identifier(PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("alias_key", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    **_MYSQL_OPTIONS,
)

#: How each pipeline keys a scope's contacts (``altcraft.mapping.identity_of``: the matching mode, and for
#: custom modes the field), recorded by the pipeline's first task into the scope (``pipeline`` is
#: `RunRef.pipeline`, ``dag_id/task_id``): a later task of the pipeline keying them otherwise is refused
#: (`IdentityChanged`), since none of the contacts it launched before would be known under its keys.
#: Two pipelines of one scope may key them differently.
identities_table = sa.Table(
    "altcraft_identities",
    metadata,
    sa.Column("pipeline_hash", _identifier(64), primary_key=True),
    sa.Column("platform", _identifier(PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("pipeline", _identifier(KEY_LEN), nullable=False),
    sa.Column("identity", sa.Text, nullable=False),
    sa.Column("run_key", _identifier(KEY_LEN), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    **_MYSQL_OPTIONS,
)


#: The Altcraft task each ``async`` claim's request created (``workflows/import_and_start_batch_task``), keyed
#: by the claim's ``batch_id``, with the ledger keys it was sent in request order (a JSON list): its
#: per-contact results are positional. Written once the task id is known, so that reconciliation can read the
#: task's result when the try that submitted it died (the id is otherwise only in that try's Airflow task
#: state) and another run meets its contacts uncertain.
tasks_table = sa.Table(
    "altcraft_tasks",
    metadata,
    sa.Column("batch_id", _identifier(32), primary_key=True),
    sa.Column("platform", _identifier(PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("contact_keys", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # a task id Altcraft answered for two requests proves nothing of either (`Ledger.sent_tasks`)
    sa.Index("ix_altcraft_tasks_task_id", "task_id", mysql_length=64),
    **_MYSQL_OPTIONS,
)


def create_schema(engine: Engine) -> bool:
    """Create the tables and indexes if missing, then add the columns and indexes an older ledger lacks.

    All but ``altcraft_outcome_days``: returns whether it is missing (see :func:`create_days`).
    Idempotent; a concurrent creator is tolerated.
    """
    tables = [table for table in metadata.sorted_tables if table is not activity_table]
    for attempt in range(1, 4):
        try:
            metadata.create_all(engine, tables=tables, checkfirst=True)
            break
        except sa.exc.DBAPIError as exc:
            if attempt == 3:
                raise schema_error(exc) from exc
            log.info("Ledger tables were being created concurrently; checking again")
            time.sleep(0.2 * attempt)
    _add_missing_columns(engine)
    _add_missing_indexes(engine)
    return activity_table.name not in sa.inspect(engine).get_table_names()


def create_days(conn: Connection) -> None:
    """Create ``altcraft_outcome_days`` in the transaction that will fill it (PostgreSQL and SQLite roll
    both back together; MySQL/MariaDB commit DDL at once). A concurrent creator is tolerated."""
    try:
        with conn.begin_nested():
            activity_table.create(conn, checkfirst=True)
    except sa.exc.DBAPIError as exc:
        if not sa.inspect(conn).has_table(activity_table.name):
            raise schema_error(exc) from exc


#: Indexes of older versions (name: columns) that a current index replaces.
_REPLACED_INDEXES = {
    "altcraft_contacts": {"ix_altcraft_contacts_status": ("status", "scenario_id")},
    "altcraft_outcomes": {
        "ix_altcraft_outcomes_recorded_at": ("recorded_at",),
        "ix_altcraft_outcomes_contact": ("contact_hash", "outcome"),
        "ix_altcraft_outcomes_contact_hash": ("contact_hash",),
    },
}


def _add_missing_indexes(engine: Engine) -> None:
    """Create the indexes a ledger of an older version lacks, then drop the ones they replace.

    ``create_all`` adds indexes only with a new table. A concurrent worker creating or dropping the same
    index is fine.
    """
    for table in metadata.tables.values():
        if not table.indexes and table.name not in _REPLACED_INDEXES:
            continue  # none to add or drop (altcraft_outcome_days may not exist yet)
        present = {index["name"] for index in sa.inspect(engine).get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            if index.name in present:
                continue
            try:
                with engine.begin() as conn:
                    index.create(conn)
                log.info("Ledger: created index %s", index.name)
            except sa.exc.DBAPIError as exc:
                if index.name not in {i["name"] for i in sa.inspect(engine).get_indexes(table.name)}:
                    raise schema_error(exc) from exc
        for old, columns in _REPLACED_INDEXES.get(table.name, {}).items():
            if old not in present:
                continue
            try:
                with engine.begin() as conn:
                    former = sa.Table(table.name, sa.MetaData(), *(sa.Column(name) for name in columns))
                    sa.Index(old, *former.c).drop(conn)  # on a copy: the ledger's table keeps its indexes
                log.info("Ledger: dropped index %s (replaced)", old)
            except sa.exc.DBAPIError as exc:
                if old in {i["name"] for i in sa.inspect(engine).get_indexes(table.name)}:
                    raise schema_error(exc) from exc


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger created by an older version up to date: add the nullable columns its contacts and
    outcomes tables lack.

    Only additions, no rewrite of existing rows; a concurrent worker adding the same column is fine.
    """
    for table in (contacts_table, outcomes_table):
        present = {column["name"] for column in sa.inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                log.info("Ledger: added column %s.%s", table.name, column.name)
            except sa.exc.DBAPIError as exc:
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise schema_error(exc) from exc
