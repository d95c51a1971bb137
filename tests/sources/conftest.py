"""Fixtures of the source tests: Airflow connections given as env vars, scratch tables, the fake CRM."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from fake_crm import FakeCrm, running_crm

POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB_URI = "mysql://root@127.0.0.1:3306/test"


@dataclass
class Database:
    """A live database known to Airflow as ``conn_id``; ``engine`` is for test set-up only."""

    dialect: str
    conn_id: str
    engine: sa.Engine

    def new_table(self) -> str:
        return f"src_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Database]]:
    sqlite_file = tmp_path_factory.mktemp("sqlite") / "sources.db"
    uris = {
        "postgresql": (POSTGRES_URI, "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        "mysql": (MARIADB_URI, "mysql+mysqldb://root@127.0.0.1:3306/test"),
        "sqlite": (f"sqlite:///{sqlite_file}", f"sqlite:///{sqlite_file}"),
    }
    found = {}
    with pytest.MonkeyPatch.context() as env:
        for dialect, (airflow_uri, sqlalchemy_uri) in uris.items():
            conn_id = f"src_test_{dialect}"
            env.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", airflow_uri)
            found[dialect] = Database(dialect, conn_id, sa.create_engine(sqlalchemy_uri))
        yield found
    for database in found.values():
        database.engine.dispose()


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def database(request: pytest.FixtureRequest, databases: dict[str, Database]) -> Database:
    return databases[request.param]


@pytest.fixture
def postgres(databases: dict[str, Database]) -> Database:
    return databases["postgresql"]


@pytest.fixture(scope="session")
def crm() -> Iterator[FakeCrm]:
    with running_crm() as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_SRC_TEST_CRM", server.url)
        yield server


@pytest.fixture
def drop_tables(databases: dict[str, Database]) -> Iterator[list[tuple[Database, str]]]:
    """Tables to drop after the test: append ``(database, name)``."""
    created: list[tuple[Database, str]] = []
    yield created
    for database, name in created:
        with database.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def urllib3_debug_lines() -> Iterator[list[str]]:
    """The messages urllib3 logs at DEBUG during the test (each request's line among them), as logged."""
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())
    urllib3 = logging.getLogger("urllib3")
    level = urllib3.level
    urllib3.addHandler(handler)
    urllib3.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        urllib3.removeHandler(handler)
        urllib3.setLevel(level)
