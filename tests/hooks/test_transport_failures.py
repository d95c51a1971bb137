"""Both hooks classify a failed exchange the same way (altcraft.api.transport), on real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

import pytest

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftTransportError
from altcraft.api.models import BatchLaunchRequest
from altcraft.api.transport import AltcraftRequestRefused
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.hooks.altcraft_async import AltcraftAsyncHook
from tests.async_calls import launch_batch

KEYS = ["email:a@example.org"]
BATCH = BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


def sync_launch() -> None:
    hook = AltcraftHook()
    try:
        hook.import_and_start_batch(BATCH, keys=KEYS)
    finally:
        hook.close()


def async_launch() -> None:
    async def main() -> None:
        async with AltcraftAsyncHook() as hook:
            await launch_batch(hook, BATCH, keys=KEYS)

    asyncio.run(main())


HOOKS = {"requests": sync_launch, "aiohttp": async_launch}


TOKEN = "token-0123"


def connect_to(monkeypatch, url: str) -> None:
    connection = {"conn_type": "altcraft", "host": url, "password": TOKEN, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps(connection))


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Generator[int]:
    """A plain TCP server on a free port: ``answer`` handles each connection (then it is closed)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def dropping_server() -> Iterator[int]:
    """Accepts, reads the request, closes without an answer: the request reached the server."""
    seen: list[bytes] = []
    with raw_server(lambda conn: seen.append(conn.recv(65536))) as port:
        yield port
    assert seen, "no request reached the server"


@pytest.mark.parametrize("launch", HOOKS.values(), ids=HOOKS)
def test_a_launch_that_could_not_connect_was_never_sent(monkeypatch, closed_port, launch):
    connect_to(monkeypatch, f"http://127.0.0.1:{closed_port}")
    with pytest.raises(AltcraftTransportError) as failure:
        launch()
    assert not failure.value.sent and failure.value.retryable


@pytest.mark.parametrize("launch", HOOKS.values(), ids=HOOKS)
def test_a_launch_dropped_after_sending_may_have_been_processed(monkeypatch, dropping_server, launch):
    connect_to(monkeypatch, f"http://127.0.0.1:{dropping_server}")
    with pytest.raises(AltcraftDeliveryUncertain) as failure:
        launch()
    assert failure.value.keys == KEYS and failure.value.cause.sent


@pytest.mark.parametrize("launch", HOOKS.values(), ids=HOOKS)
def test_a_launch_the_http_library_cannot_build_is_refused(monkeypatch, launch):
    connect_to(monkeypatch, "http://127.0.0.1:99999")  # no such port: neither library builds the request
    with pytest.raises(AltcraftRequestRefused) as failure:
        launch()
    assert not failure.value.sent and not failure.value.retryable


#: Answers the HTTP libraries refuse, quoting the line they choke on in their exception's text.
ECHOING = {
    "status line": f"HTTP/1.1 2x0 {TOKEN} anna.petrova@example.org\r\nContent-Length: 0\r\n\r\n",
    "chunk-size line": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    f"zz {TOKEN} anna.petrova@example.org\r\n",
}


@pytest.fixture(params=ECHOING)
def echoing_server(request) -> Iterator[int]:
    """Reads the request, then answers a line no HTTP library accepts, echoing the token and an email."""

    def answer(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(ECHOING[request.param].encode())

    with raw_server(answer) as port:
        yield port


@pytest.mark.parametrize("launch", HOOKS.values(), ids=HOOKS)
def test_a_broken_answer_quoting_the_token_is_not_in_the_traceback(monkeypatch, echoing_server, launch):
    """The HTTP library's exception quotes the line it refused; it is not chained to ours, so a task log's
    traceback shows neither the token nor the email."""
    connect_to(monkeypatch, f"http://127.0.0.1:{echoing_server}")
    with pytest.raises(AltcraftDeliveryUncertain) as failure:
        launch()
    printed = "".join(traceback.format_exception(failure.value))
    assert "talking to Altcraft" in printed
    assert TOKEN not in printed and "anna.petrova" not in printed
