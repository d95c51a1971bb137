from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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

    def start(answer, *, connect: bool = True, **extra) -> HostileServer:
        server = HostileServer(answer)
        servers.append(server)
        if connect:
            extra = {"backoff_initial": 0, "backoff_max": 0.01, "max_retries": 2, "timeout": 5, **extra}
            monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", server.connection(TOKEN, **extra))
        return server

    return start
