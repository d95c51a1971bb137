"""Test session set-up: an isolated AIRFLOW_HOME, set before Airflow is imported anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from altcraft.emulator.app import build_app
from altcraft.emulator.state import DEFAULT_TOKEN, Emulator, demo_seed
from altcraft.ledger import Ledger
from altcraft.ledger.schema import CANONICAL_KEYS, meta_table
from altcraft.testing import EmulatorClient, _free_port

REPO = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="altcraft-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
(_HOME / "dags").mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def migrated_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite metadata database as ``airflow db migrate`` leaves it, migrated once a session (a subprocess
    importing Airflow, most of a minute on a slow machine): a test's Airflow gets a copy (`copy_metadata`)."""
    home = tmp_path_factory.mktemp("airflow-migrated")
    database = home / "airflow.db"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
    }
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=env
    )
    return database


def copy_metadata(migrated: Path, database: Path) -> None:
    """``migrated`` copied to ``database``, which it replaces at once: a connection open on the file there
    keeps reading the old one, never a half-copied file."""
    part = database.with_name(f"{database.name}.part")
    shutil.copyfile(migrated, part)
    part.replace(database)


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path, migrated_metadata: Path) -> Path:
    """A migrated SQLite metadata database, for tests that run DAGs with ``dag.test()``. Connections a test
    opened on the file before (a webhook lookup of tests/webhooks) are closed: they kept reading the
    empty file the copy replaced ("no such table")."""
    from airflow import settings
    from airflow.configuration import conf

    database = airflow_home / "airflow.db"
    assert conf.get("database", "sql_alchemy_conn") == f"sqlite:///{database}", "not the isolated home's"
    copy_metadata(migrated_metadata, database)
    if settings.engine is not None:
        settings.engine.dispose()
    return airflow_home


def as_upgraded_from_an_earlier_version(ledger: Ledger) -> Ledger:
    """``ledger`` as a ledger an earlier version created is once this one upgraded it: without the mark that
    every custom key was written in its one form (`CANONICAL_KEYS`), so a key of a number is looked for under
    the forms an earlier version wrote too."""
    ledger.ensure_schema()
    with ledger.engine.begin() as conn:
        conn.execute(sa.delete(meta_table).where(meta_table.c.name == CANONICAL_KEYS[0]))
    ledger.ensure_schema()  # reads the mark again
    return ledger


#: The shared PostgreSQL database of the tests' ledgers: they keep their rows between runs.
PG_URL = os.environ.get("ALTCRAFT_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
_SCENARIO_BLOCK = 1000
_scenario_block: list[int] = []


def fresh_scenario_id() -> int:
    """A scenario id no test took before, in this run or an earlier one on these databases: blocks of
    `_SCENARIO_BLOCK` ids from a sequence in `PG_URL`'s database, one per process at a time. The ledgers'
    databases keep what each test left, and a test counting a scenario's rows must meet only its own
    (random ids of two runs met: a test counted 24 launches an earlier run had left under its id)."""
    if not _scenario_block:
        engine = sa.create_engine(PG_URL)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('altcraft_test_scenario_ids'))"))
                conn.execute(
                    sa.text(
                        "CREATE SEQUENCE IF NOT EXISTS altcraft_test_scenario_ids "
                        f"START 2000000 INCREMENT {_SCENARIO_BLOCK}"
                    )
                )
                start = conn.execute(sa.text("SELECT nextval('altcraft_test_scenario_ids')")).scalar_one()
        finally:
            engine.dispose()
        _scenario_block.extend(range(start + _SCENARIO_BLOCK - 1, start - 1, -1))
    return _scenario_block.pop()


FAST = {"backoff_initial": 0, "backoff_max": 0.01, "max_retries": 2, "timeout": 5}
"""Connection extras that back off at once and give up soon (a directory's ``altcraft_connection_extra``)."""


@pytest.fixture
def emulator(altcraft_emulator: EmulatorClient) -> EmulatorClient:
    """The shipped ``altcraft_emulator`` (reset, the default connection pointing at it) under a short name;
    a directory sets the connection's extras by overriding ``altcraft_connection_extra``."""
    return altcraft_emulator


@pytest.fixture
def netrc_for_localhost(monkeypatch, tmp_path) -> Path:
    """A ``.netrc`` (``$NETRC``) holding credentials for 127.0.0.1, where the emulator and the fake CRMs
    listen: requests and aiohttp, trusting the environment, would send them in place of our token."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate of 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def https_emulator(certificate) -> Iterator[str]:
    """An emulator served over HTTPS with the self-signed certificate; its URL."""
    cert, key = certificate
    port = _free_port()
    config = uvicorn.Config(
        build_app(Emulator(demo_seed(), token=DEFAULT_TOKEN)),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


#: The browser of the UI tests: Debian's Chromium, driven by Playwright (its own download cannot work here).
CHROMIUM = os.environ.get("ALTCRAFT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()
