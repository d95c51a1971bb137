"""A database we open from an Airflow connection id that cannot be opened is an error naming the field and
the connection id (and where it tried), with the driver's error chained: the driver's own text names a
host and port, not which Airflow connection to fix. Never the connection's password. Every path opens its
engine through `altcraft.engines`: the ledger (operator, webhook store, Altcraft page), the SQL sources and
their probe."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowNotFoundException

from altcraft.engines import ledger_engine
from altcraft.ledger import Ledger
from altcraft.sources import SqlTableSource, Window
from altcraft.ui.app import ledger_error

PASSWORD = "Sekr1t-pw-42"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = Window(SINCE, datetime(2026, 1, 2, tzinfo=UTC))
#: Airflow URIs that cannot be opened, and what the error says of where.
UNOPENABLE = {
    "pg_closed_port": (
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
        "PostgreSQL at 127.0.0.1:1/test",
    ),
    "pg_no_database": (
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/altcraft_no_such_db",
        "PostgreSQL at 127.0.0.1:5432/altcraft_no_such_db",
    ),
    "maria_closed_port": (f"mysql://root:{PASSWORD}@127.0.0.1:1/test", "MySQL/MariaDB at 127.0.0.1:1/test"),
    "maria_no_database": (
        "mysql://root@127.0.0.1:3306/altcraft_no_such_db",
        "MySQL/MariaDB at 127.0.0.1:3306/altcraft_no_such_db",
    ),
    "sqlite_no_directory": ("sqlite:////nonexistent-altcraft-dir/ledger.db", "SQLite file /nonexistent-"),
}


def _shown(exc: BaseException) -> str:
    """Everything a task log shows of ``exc``: its text and its whole traceback, causes included."""
    return "".join(traceback.format_exception(exc))


@pytest.fixture(params=list(UNOPENABLE))
def unopenable(request, monkeypatch) -> tuple[str, str]:
    """The id of an Airflow connection that cannot be opened, and where it points."""
    uri, where = UNOPENABLE[request.param]
    monkeypatch.setenv(f"AIRFLOW_CONN_{request.param.upper()}", uri)
    return request.param, where


def test_a_ledger_that_cannot_be_opened_names_ledger_conn_id_never_the_password(unopenable, caplog):
    conn_id, where = unopenable
    ledger = Ledger.from_conn_id(conn_id)  # as the operator, the webhook store and the page make it
    with caplog.at_level(logging.DEBUG), pytest.raises(sa.exc.DBAPIError) as raised:
        ledger.now()
    ledger.close()
    said = str(raised.value)
    assert said.startswith(f"ledger_conn_id {conn_id!r}: cannot "), said
    assert where in said
    assert isinstance(raised.value.__cause__, ledger.engine.dialect.loaded_dbapi.Error)  # the driver's
    assert PASSWORD not in _shown(raised.value) + caplog.text
    page = ledger_error(raised.value)  # what the Altcraft page shows and logs
    assert f"ledger_conn_id {conn_id!r}" in page and PASSWORD not in page


def test_a_sql_source_and_its_probe_that_cannot_connect_name_conn_id(unopenable):
    conn_id, where = unopenable
    source = SqlTableSource(conn_id, "contacts", key_column="id", created_at_column="created_at")
    for read in (lambda: list(source.batches(WINDOW, 10)), lambda: source.probe(SINCE)):
        with pytest.raises(sa.exc.DBAPIError, match=f"^conn_id {conn_id!r}: cannot ") as raised:
            read()
        assert where in str(raised.value) and PASSWORD not in _shown(raised.value)
    source.close_probe()


@pytest.mark.parametrize(
    ("open_it", "field"),
    [
        (lambda conn_id: ledger_engine(conn_id), "ledger_conn_id"),
        (
            lambda conn_id: list(
                SqlTableSource(conn_id, "t", key_column="id", created_at_column="c").batches(WINDOW, 1)
            ),
            "conn_id",
        ),
    ],
)
def test_a_connection_id_not_defined_names_the_field(open_it, field):
    with pytest.raises(
        AirflowNotFoundException, match=f"^{field} 'altcraft_undefined': no Airflow connection"
    ):
        open_it("altcraft_undefined")


def test_the_default_sqlite_ledger_that_cannot_be_opened_says_so(monkeypatch, tmp_path: Path):
    home = tmp_path / "home"
    (home / "altcraft_ledger.db").mkdir(parents=True)  # a directory where the file should be
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "")
    engine = ledger_engine(None)
    with pytest.raises(sa.exc.DBAPIError, match=r"^ledger_conn_id not set .*: cannot open the SQLite file"):
        engine.connect()
