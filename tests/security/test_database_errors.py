"""A database's own error text may quote a row: PostgreSQL's ``DETAIL: Failing row contains (...)`` of a
check constraint, a trigger's message naming the row, a value that could not be cast. ``hide_parameters``
hides only SQLAlchemy's copy of the bound values, so the engines made in `altcraft.engines` mask the emails
and phones of every error text at its origin: the exception, its chained driver error and a logged
traceback of either show the contact masked, never in clear. An engine made by hand and given to `Ledger`
or `WebhookStore` had neither protection: they now apply both to any engine they are given."""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from altcraft.engines import sql_engine
from altcraft.ledger import Ledger, RelaunchPolicy, RunRef, Scope
from altcraft.webhooks.store import WebhookStore

EMAIL = "anna.petrova@example.org"
SERVERS = {
    "postgresql": ("postgresql+psycopg2://postgres@127.0.0.1:5432", "postgres", "postgresql"),
    "mariadb": ("mysql+pymysql://root@127.0.0.1:3306", "test", "mysql"),
}
#: What makes each server refuse a ledger row, naming the row in its text as a DBA's rule would.
REFUSALS = {
    "postgresql": [
        "ALTER TABLE altcraft_contacts ADD CONSTRAINT guard CHECK (strpos(contact_key, 'anna') = 0)",
    ],
    "mariadb": [
        "CREATE TRIGGER guard BEFORE INSERT ON altcraft_contacts FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = NEW.source_key",
    ],
}


def _admin(server: str, database: str, statement: str) -> None:
    engine = sa.create_engine(f"{server}/{database}", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture(params=list(SERVERS))
def ledger_database(request, monkeypatch) -> Iterator[tuple[str, str]]:
    """A database of its own on each server (dropped afterwards): the server's name and the database's
    SQLAlchemy URL; the Airflow connection ``pii_ledger`` names it too."""
    server, admin, scheme = SERVERS[request.param]
    name = f"altcraft_pii_{uuid.uuid4().hex[:10]}"
    _admin(server, admin, f"CREATE DATABASE {name}")
    host = server.split("://", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_PII_LEDGER", f"{scheme}://{host}/{name}")
    yield request.param, f"{server}/{name}"
    _admin(server, admin, f"DROP DATABASE IF EXISTS {name}")


def _shown(exc: BaseException) -> str:
    """Everything a task log or a failure callback shows of ``exc``: its text and its whole traceback."""
    return str(exc) + "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("made", ["from_conn_id", "by_hand"])
def test_a_ledger_row_refused_by_the_database_is_named_masked(ledger_database, made):
    server, url = ledger_database
    # by hand: an engine with neither protection, as a user's own code makes it
    ledger = Ledger.from_conn_id("pii_ledger") if made == "from_conn_id" else Ledger(sa.create_engine(url))
    run = RunRef("pii_dag", "import_and_launch", "manual__1", 1, "w")
    try:
        ledger.ensure_schema()
        with ledger.engine.begin() as conn:
            for statement in REFUSALS[server]:
                conn.exec_driver_sql(statement)
        with pytest.raises(sa.exc.DBAPIError) as refused:
            ledger.claim(
                Scope("https://pii.altcraft.test", 7),
                run,
                [(f"email:{EMAIL}", EMAIL)],
                RelaunchPolicy.parse("once"),
            )
    finally:
        ledger.close()
    shown = _shown(refused.value)
    assert EMAIL not in shown, shown
    assert "a***@e***.org" in shown, shown
    assert "parameters hidden" in shown  # the statement is still named, its values are not


PG_TEST = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    "engine_of",
    [
        lambda: sql_engine("pii_pg"),
        lambda: Ledger(sa.create_engine(PG_TEST)).engine,
        lambda: WebhookStore(sa.create_engine(PG_TEST)).engine,
    ],
    ids=["sql_engine", "ledger_by_hand", "webhook_store_by_hand"],
)
def test_a_value_the_database_could_not_cast_is_masked_in_its_error(monkeypatch, engine_of):
    """PostgreSQL's error quotes the value it could not cast, though the parameters are hidden."""
    monkeypatch.setenv("AIRFLOW_CONN_PII_PG", PG_TEST)
    engine = engine_of()
    try:
        with pytest.raises(sa.exc.DBAPIError) as refused, engine.connect() as conn:
            conn.execute(sa.text("SELECT CAST(:email AS integer)"), {"email": EMAIL})
    finally:
        engine.dispose()
    shown = _shown(refused.value)
    assert EMAIL not in shown, shown
    assert "invalid input syntax for type integer" in shown and "a***@e***.org" in shown, shown
    assert "parameters hidden" in shown


ASTRAL = "anna\U0001f600@example.org"
"""An address with a character of 4 bytes in UTF-8, which MySQL's ``utf8`` (utf8mb3) cannot carry."""


@pytest.mark.parametrize("charset", ["utf8", "latin1"])
@pytest.mark.parametrize("driver", ["mysqldb", "pymysql", "mysqlconnector"])
def test_every_mysql_driver_carries_four_byte_characters_whatever_the_connections_charset(driver, charset):
    """A connection in utf8 made MariaDB refuse the value (1366 "Incorrect string value: '\\xF0\\x9F\\x98\\x80
    @e...'", the contact's bytes) and send a stored one back as ``anna?@example.org``; in latin1 neither
    direction carried it either."""
    pure = "&use_pure=true" if driver == "mysqlconnector" else ""  # its C extension may not load
    engine = sql_engine_of(f"mysql+{driver}://root@127.0.0.1:3306/test?charset={charset}{pure}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT @@character_set_connection")).scalar() == "utf8mb4"
            conn.exec_driver_sql("CREATE TEMPORARY TABLE astral (value text) CHARSET utf8mb4")
            conn.execute(sa.text("INSERT INTO astral VALUES (:value)"), {"value": ASTRAL})
            assert conn.execute(sa.text("SELECT value FROM astral")).scalar() == ASTRAL
    finally:
        engine.dispose()


def sql_engine_of(url: str) -> sa.Engine:
    """The engine a ledger or source gets of ``url``: made by hand and given to `Ledger`, which protects it
    as `sql_engine` protects an Airflow connection's."""
    return Ledger(sa.create_engine(url)).engine
