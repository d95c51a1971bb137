from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from altcraft.delivery import Delivery
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Ledger, RunRef
from altcraft.mapping import ProfileMapping

sys.path.insert(0, str(Path(__file__).parent))

from hostile_server import TOKEN, HostileServer


@pytest.fixture
def servers() -> Iterator[list[HostileServer]]:
    """Start hostile servers on demand (``servers.append(HostileServer(...))`` is done by ``serve``)."""
    started: list[HostileServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture
def serve(servers, monkeypatch):
    """``serve(answer, **extra)``: a hostile server, made the default Altcraft connection."""

    def start(answer, *, connect: bool = True, keep_alive: bool = False, **extra) -> HostileServer:
        server = HostileServer(answer, keep_alive=keep_alive)
        servers.append(server)
        if connect:
            extra = {"backoff_initial": 0, "backoff_max": 0.01, "max_retries": 2, "timeout": 5, **extra}
            monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", server.connection(TOKEN, **extra))
        return server

    return start


@dataclass
class LedgerDelivery:
    """A `Delivery` of scenario 4711 through the sync hook of the default connection, into a SQLite ledger."""

    hook: AltcraftHook
    ledger: Ledger
    delivery: Delivery

    def kept(self) -> list[str]:
        """Every reason and contact error text the ledger kept."""
        with self.ledger.engine.connect() as conn:
            kept = [*conn.execute(sa.text("SELECT reason FROM altcraft_outcomes")).scalars()]
            kept += conn.execute(sa.text("SELECT error_text FROM altcraft_contacts")).scalars()
        return kept


@pytest.fixture
def sqlite_delivery(tmp_path):
    """``sqlite_delivery(mapping, **options)``: a `LedgerDelivery` (options go to `Delivery.create`)."""

    def create(mapping: Any, **options: Any) -> LedgerDelivery:
        ledger = Ledger(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
        hook = AltcraftHook()
        hook.get_conn()
        mapping = ProfileMapping.model_validate(mapping)
        run = RunRef("d", "t", "r", 1, "w")
        delivery = Delivery.create(
            hook, ledger, run, scenario_id=4711, mapping=mapping, key_column="id", **options
        )
        return LedgerDelivery(hook, ledger, delivery)

    return create
