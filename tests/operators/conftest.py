"""Fixtures for the delivery and operator tests: a fresh scenario, a real ledger, contact generators."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from bench.common import MAPPING

from altcraft.delivery import Delivery
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Ledger, RunRef
from altcraft.mapping import ProfileMapping
from tests.conftest import FAST, PG_URL, fresh_scenario_id

EMAIL_MAPPING = {**MAPPING, "default_region": "RU"}
"""The bench's mapping; the contacts below have no ``loyalty`` column, so ``LOYALTY`` is never sent."""


def contacts(n: int, start: int = 0, domain: str = "example.org") -> list[dict[str, Any]]:
    return [
        {"id": i, "email": f"user{i}@{domain}", "first_name": f"User{i}", "phone": f"+7900{i:07d}"}
        for i in range(start, start + n)
    ]


def in_batches(records: list[dict[str, Any]], size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]


@pytest.fixture
def altcraft_connection_extra() -> dict[str, Any]:
    """The emulator's default connection backs off instantly."""
    return FAST


@pytest.fixture
def scenario_id(emulator) -> int:
    """A fresh active scenario on database 1, so each test has its own exactly-once scope."""
    sid = fresh_scenario_id()
    emulator.seed(
        scenarios=[{"id": sid, "name": f"Welcome {sid}", "db_id": 1, "is_active": True, "mode": "restart"}]
    )
    return sid


#: The launch-marker field of `marker_scenario`'s database.
MARKER = "AF_SYNC"


@pytest.fixture
def marker_scenario(emulator, scenario_id) -> int:
    """The test's scenario moved onto its own database, which has the launch-marker field."""
    db_id = scenario_id
    emulator.seed(
        databases=[
            {
                "id": db_id,
                "name": f"Customers {db_id}",
                "fields": [{"name": "CRM_ID", "type": "string"}, {"name": MARKER, "type": "string"}],
            }
        ],
        scenarios=[
            {"id": scenario_id, "name": "Welcome", "db_id": db_id, "is_active": True, "mode": "restart"}
        ],
    )
    return scenario_id


#: Ledgers a test can ask for with ``@pytest.mark.parametrize("ledger", [...], indirect=True)``; SQLite
#: is a file of the test's own.
LEDGER_URLS = {"postgresql": PG_URL, "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test"}


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger(request, tmp_path) -> Iterator[Ledger]:
    """A ledger per test; its engine's pooled connections are closed after it (kept open, the idle ones of
    a few dozen tests used up PostgreSQL's 100 connections)."""
    url = LEDGER_URLS.get(request.param) or f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(tagged(url))
    ledger = Ledger(engine)
    ledger.ensure_schema()
    yield ledger
    engine.dispose()


@pytest.fixture
def proxy(emulator, monkeypatch):
    """The default connection goes through an `AnswerProxy` in front of the emulator."""
    from altcraft.testing import CONNECTION_ENV, EmulatorClient
    from tests.conftest import FAST

    from .answer_proxy import AnswerProxy

    answers = AnswerProxy(emulator.url)
    monkeypatch.setenv(CONNECTION_ENV, EmulatorClient(answers.url, emulator.token).connection_json(**FAST))
    yield answers
    answers.close()


@pytest.fixture
def make_delivery(emulator, ledger, scenario_id):
    """Build a Delivery for one simulated task try."""

    def build(
        *,
        mode: str = "batch",
        run: RunRef | None = None,
        mapping: dict | None = None,
        batch_size: int = 1000,
        policy: str = "once",
        **options: Any,
    ) -> Delivery:
        hook = AltcraftHook()
        hook.get_conn()
        return Delivery.create(
            hook,
            ledger,
            run or run_ref(),
            scenario_id=scenario_id,
            mapping=ProfileMapping.model_validate(mapping or EMAIL_MAPPING),
            key_column="id",
            mode=mode,
            policy=policy,
            batch_size=batch_size,
            **options,
        )

    return build


def run_ref(
    run_id: str = "run-1", try_number: int = 1, window: str = "w1", dag_id: str = "welcome"
) -> RunRef:
    return RunRef(
        dag_id=dag_id, task_id="import_and_launch", run_id=run_id, try_number=try_number, window_key=window
    )


def tagged(url: str) -> str:
    """``url`` with an ``application_name`` of its own on PostgreSQL, so that `open_claims` counts only the
    connections made with it, not those of suites sharing the server."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    name = f"altcraft-test-{uuid.uuid4().hex[:12]}"
    return parsed.update_query_dict({"application_name": name}).render_as_string(hide_password=False)


def pg_open_claims(url: str) -> str:
    """FROM … WHERE of the PostgreSQL backends connected with ``url``'s ``application_name`` (a `tagged`
    url) that hold a claim opened ahead: in a transaction whose last statement inserted contacts."""
    name = sa.make_url(url).query["application_name"]
    assert isinstance(name, str) and name.isascii() and "'" not in name
    return (
        "FROM pg_stat_activity WHERE state = 'idle in transaction' "
        f"AND query LIKE 'INSERT INTO altcraft_contacts%%' AND application_name = '{name}'"
    )


def open_claims(url: str) -> int:
    """Transactions of other connections that wrote to a ledger at ``url`` and are still open: on
    PostgreSQL those of `pg_open_claims` (``url`` is `tagged`), on MySQL/MariaDB any that changed a row."""
    engine = sa.create_engine(url)
    query = (
        f"SELECT count(*) {pg_open_claims(url)}"
        if engine.dialect.name == "postgresql"
        else "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_rows_modified > 0"
    )
    with engine.connect() as conn:
        count = conn.exec_driver_sql(query).scalar_one()
    engine.dispose()
    return count


def launch_counts(emulator, scenario_id: int) -> dict[str, int]:
    """How many times each profile was launched into the scenario, from the emulator's journal."""
    counts: dict[str, int] = {}
    for entry in emulator.journal(scenario_id=scenario_id):
        counts[entry["profile_id"]] = counts.get(entry["profile_id"], 0) + 1
    return counts
