"""The connection form's Test button: Airflow copies the form into a connection under a random id
(``get_random_string()``) and runs our ``test_connection`` on it. Its messages named that meaningless id
("Connection 'aB3dE9xQ' has no API token"), and the HTTP sessions it opened in the long-lived API server
were never closed, leaving their sockets connected to the platform."""

from __future__ import annotations

import psutil
import pytest
from airflow.models.connection import Connection

RANDOM_ID = "qZ7wXk2P"  # what the API server's `get_random_string()` gives the copy


def pressed(monkeypatch, **fields) -> tuple[bool, str]:
    """Test a connection as the API server's test route does: a transient copy under a random id, in the
    environment, tested by ``Connection.test_connection`` (which builds the hook of its type)."""
    conn = Connection(conn_id=RANDOM_ID, conn_type="altcraft", **fields)
    monkeypatch.setenv(f"AIRFLOW_CONN_{RANDOM_ID.upper()}", conn.get_uri())
    return conn.test_connection()


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"password": ""}, "The connection has no API token (password field)"),
        ({"password": " token "}, "The connection: the API token (password field) holds a line break"),
        ({"password": "t", "extra": '{"timeout": "soon"}'}, "timeout"),
    ],
    ids=["no_token", "token_with_spaces", "wrong_extra"],
)
def test_a_refused_connection_is_named_by_its_fields_not_by_the_random_id(
    emulator, monkeypatch, fields, said
):
    ok, message = pressed(monkeypatch, host=emulator.url, **fields)

    assert not ok and said in message, message
    assert RANDOM_ID not in message


def test_a_platform_url_without_a_scheme_is_named_by_its_field(emulator, monkeypatch):
    host = emulator.url.removeprefix("http://")
    ok, message = pressed(monkeypatch, host=host, password=emulator.token)

    assert not ok and f"write http://{host} in that field" in message, message
    assert RANDOM_ID not in message and emulator.token not in message


def _connected_to(port: int) -> int:
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_each_test_closes_its_connections_to_the_platform(emulator, monkeypatch):
    port = int(emulator.url.rsplit(":", 1)[1])
    kept = []
    for _ in range(3):
        ok, message = pressed(monkeypatch, host=emulator.url, password=emulator.token)
        assert ok, message
        kept.append(_connected_to(port))

    assert kept == [0, 0, 0]
