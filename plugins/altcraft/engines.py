"""The one way from an Airflow connection id to a SQLAlchemy engine.

Used by the ledger, the webhook store, the Altcraft page and the SQL sources (also when a watcher trigger
probes them). Airflow is imported only when a connection is looked up.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, ExceptionContext

from altcraft.masking import scrub

log = logging.getLogger(__name__)

#: SQLite virtual machine instructions between two looks at the clock of `time_limited` (microseconds apart)
_SQLITE_STEPS = 10_000


class NotASqlConnection(ValueError):
    """The connection's hook is not a SQL database hook."""


def sql_engine(conn_id: str, field: str = "conn_id") -> Engine:
    """The engine of an Airflow connection: its hook's ``get_sqlalchemy_engine()`` (a ``postgres``,
    ``mysql``, ``sqlite``... connection). A connection type without an installed hook falls back to
    ``create_engine(conn.get_uri())``; a hook that is not a SQL database hook is refused. ``field`` is the
    argument or spec field that named ``conn_id``: a connection not defined, or a database that cannot be
    connected to (`named`), is an error naming both."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    label = f"{field} {conn_id!r}"
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise AirflowNotFoundException(f"{label}: no Airflow connection of that id is defined") from exc
    try:
        hook = conn.get_hook()
    except Exception as exc:  # no hook for this connection type: its URI may still work
        log.info("No hook for connection %s (%s); using its URI", conn_id, type(exc).__name__)
        return named(protected(sa.create_engine(_sqlalchemy_url(conn.get_uri()))), label)
    get_engine = getattr(hook, "get_sqlalchemy_engine", None)
    if not callable(get_engine):
        raise NotASqlConnection(f"{label}: not a SQL database (its hook is {type(hook).__name__})")
    return named(protected(get_engine()), label)


def ledger_conn_id(conn_id: str | None = None) -> str | None:
    """The ledger's connection: ``conn_id``, else ``[altcraft] ledger_conn_id`` of the Airflow config, else
    None (the SQLite file). The one place that decides, so the operator, the webhook endpoint and store, and
    the Altcraft page always use one database."""
    if conn_id:
        return conn_id
    from airflow.sdk import conf

    return conf.get("altcraft", "ledger_conn_id", fallback="") or None


def ledger_engine(conn_id: str | None) -> Engine:
    """The ledger's database (see :func:`ledger_conn_id`): :func:`sql_engine` of its connection, or the
    SQLite file ``$AIRFLOW_HOME/altcraft_ledger.db`` (``~/airflow`` if ``AIRFLOW_HOME`` is unset)."""
    conn_id = ledger_conn_id(conn_id)
    if conn_id is not None:
        return sql_engine(conn_id, "ledger_conn_id")
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{home / 'altcraft_ledger.db'}", connect_args={"timeout": 60})
    return named(protected(engine), "ledger_conn_id not set (the SQLite file in AIRFLOW_HOME)")


#: The port a URL naming none means, per dialect: one database whichever way a connection writes it.
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def database_location(engine: Engine) -> dict[str, str]:
    """Where ``engine`` points, to tell two databases apart: its dialect, host (lower case), port and
    database (MySQL/MariaDB: schema) name, or a SQLite file's absolute path; never its user, password or
    options. Two connections of one id defined differently on two components have different locations."""
    url = engine.url
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        name = url.database or ""
        path = name if name in ("", ":memory:") or name.startswith("file:") else str(Path(name).resolve())
        return {"dialect": dialect, "path": path}
    port = url.port or _DEFAULT_PORTS.get(dialect)
    return {
        "dialect": dialect,
        "host": (url.host or "").lower(),
        "port": "" if port is None else str(port),
        "database": url.database or "",
    }


def protected(engine: Engine) -> Engine:
    """``engine``, whoever made it, kept from writing contact data into its errors; idempotent.

    SQLAlchemy writes a failed statement's bound values (contact keys with their emails and phones, source
    rows) into its error messages, which reach task logs: ``hide_parameters`` is set. The database's own
    text of the error is masked by `_mask_error`, listening to the engine's errors once. On MySQL/MariaDB
    every new connection speaks utf8mb4 (`_utf8mb4`). The engines made here are protected, and so is an
    engine given to `Ledger` or `WebhookStore` by hand."""
    engine.hide_parameters = True
    if not sa.event.contains(engine, "handle_error", _mask_error):
        sa.event.listen(engine, "handle_error", _mask_error)
    if engine.dialect.name in ("mysql", "mariadb") and not sa.event.contains(engine, "connect", _utf8mb4):
        sa.event.listen(engine, "connect", _utf8mb4)
    return engine


#: How an error names each dialect's server.
_PRODUCTS = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB", "mariadb": "MariaDB", "sqlite": "SQLite"}


def named(engine: Engine, label: str) -> Engine:
    """``engine``, whose failures to connect name ``label`` (the field and the Airflow connection id that
    gave it: ``ledger_conn_id 'altcraft_ledger'``) and where it connects, never its user or password:
    ``ledger_conn_id 'altcraft_ledger': cannot connect to PostgreSQL at 127.0.0.1:1/test: (...) Connection
    refused``. The error stays the SQLAlchemy error it was (every ``except DBAPIError`` still holds), raised
    from the driver's."""
    sa.event.listen(engine, "handle_error", _ConnectFailure(label))
    return engine


class _ConnectFailure:
    """The ``handle_error`` listener of `named`: prefixes an error of opening a connection (none was
    open, and it was no pre-ping of a pooled one) with the label and where (`database_location`: no user,
    password or options)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, context: ExceptionContext) -> None:
        error = context.sqlalchemy_exception
        if error is None or context.connection is not None or context.is_pre_ping:
            return
        at = database_location(context.engine)
        product = _PRODUCTS.get(at["dialect"], at["dialect"])
        where = (
            f"open the {product} file {at['path']}"
            if "path" in at
            else f"connect to {product} at {at['host']}:{at['port']}/{at['database']}"
        )
        said = error.args[0] if error.args and isinstance(error.args[0], str) else str(error.orig)
        error.args = (f"{self.label}: cannot {where}: {said}", *error.args[1:])


def _utf8mb4(dbapi_connection: Any, _record: Any) -> None:
    """Switch a new MySQL/MariaDB connection to utf8mb4, the server's and the driver's side both. A
    connection in MySQL's ``utf8`` (utf8mb3, as many Airflow connections are defined: ``charset=utf8``)
    holds no character of 4 bytes (emoji, rarer CJK): the server refused a ledger row holding one (1366
    "Incorrect string value", quoting the contact's bytes: the run failed, nobody delivered), and sent a
    source's as ``?``, which made another, valid email address of ``anna😀@example.org``.
    mysqlclient and PyMySQL name the set ``character_set_name``, mysql-connector-python ``charset``; a
    driver with neither (MariaDB Connector/Python) speaks utf8mb4 always."""
    named = getattr(dbapi_connection, "character_set_name", None)
    current = named() if callable(named) else getattr(dbapi_connection, "charset", "utf8mb4")
    if current == "utf8mb4":
        return
    switch = getattr(dbapi_connection, "set_character_set", None) or dbapi_connection.set_charset_collation
    switch("utf8mb4")


def _mask_error(context: ExceptionContext) -> None:
    """Mask the emails and phones in the texts of a database error, the driver's exception and SQLAlchemy's
    (which is raised from it, so a traceback prints both): the database quotes the row it refused
    (PostgreSQL's ``DETAIL: Failing row contains (...)``), a value it could not cast, a trigger's message,
    whatever ``hide_parameters`` hides. Codes (MySQL's first argument) and attributes are kept."""
    for error in (context.original_exception, context.sqlalchemy_exception):
        if error is not None:
            error.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in error.args)


def _sqlalchemy_url(uri: str) -> str:
    """Airflow writes PostgreSQL URIs as ``postgres://``; SQLAlchemy only knows ``postgresql://``."""
    return re.sub(r"^postgres(?=://|\+)", "postgresql", uri)


@contextmanager
def time_limited(conn: sa.Connection, seconds: float) -> Generator[None]:
    """Have the database cancel what ``conn`` runs in the block once it ran ``seconds``: PostgreSQL's
    ``statement_timeout`` for the transaction (``SET LOCAL``), MariaDB's ``max_statement_time`` and MySQL's
    ``max_execution_time`` (SELECTs only) for the session, reset after the block; SQLite's query
    interrupted by a progress handler. A statement cancelled so raises `TimeoutError` naming ``seconds``. A
    connection that died without a word is no statement the server runs: only the caller's wait sees it."""
    dialect = conn.dialect.name
    driver: Any = conn.connection.driver_connection
    reset = None
    if dialect == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(seconds * 1000))}")
    elif dialect in ("mysql", "mariadb"):
        name, value = (
            ("max_statement_time", f"{seconds:.6f}")
            if getattr(conn.dialect, "is_mariadb", False)
            else ("max_execution_time", str(max(1, round(seconds * 1000))))
        )
        conn.exec_driver_sql(f"SET SESSION {name} = {value}")
        reset = f"SET SESSION {name} = DEFAULT"
    started = time.monotonic()
    if dialect == "sqlite":
        driver.set_progress_handler(lambda: time.monotonic() - started > seconds, _SQLITE_STEPS)
    try:
        yield
    except sa.exc.DBAPIError:
        if time.monotonic() - started < seconds:
            raise
        raise TimeoutError(
            f"no answer within {seconds:g}s: the database cancelled the query (statement timeout)"
        ) from None
    finally:
        if dialect == "sqlite":
            driver.set_progress_handler(None, _SQLITE_STEPS)
        elif reset is not None and not conn.invalidated:
            conn.exec_driver_sql(reset)
