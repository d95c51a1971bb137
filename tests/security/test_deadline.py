"""Defect 2: one deadline per call covers connect and the whole answer, against a real dripping socket."""

from __future__ import annotations

import time

import pytest
from hostile_server import TOKEN, drip, run_async

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftTransportError
from altcraft.api.models import BatchLaunchRequest
from altcraft.hooks.altcraft import AltcraftHook
from tests.async_calls import launch_batch, read_scenario

TIMEOUT = 1.0
SLACK = 1.5  # scheduling noise on a busy machine; the drip alone would take 12+ s
ANSWER = b'{"error":0,"error_text":"","data":[{"id":12,"name":"w","is_active":true}],"result":[]}'


def _head_drip(seen):
    """Even the status line and headers come one byte at a time."""
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    return [(whole[i : i + 1], 0.3) for i in range(len(whole))]


def _batch() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


@pytest.fixture(params=["body", "headers"])
def dripping(request, serve):
    answer = (lambda seen: drip(200, ANSWER, 0.15)) if request.param == "body" else _head_drip
    return serve(answer, timeout=TIMEOUT, max_retries=0)


def _timed(call):
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    return caught.value, time.monotonic() - started


def test_slow_drip_server_cannot_hold_a_call_beyond_its_timeout(dripping):
    hook = AltcraftHook()
    hook.get_conn()
    read, read_seconds = _timed(lambda: hook.get_scenario(12))
    launch, launch_seconds = _timed(
        lambda: hook.import_and_start_batch(_batch(), keys=["email:a@example.org"])
    )
    hook.close()
    assert isinstance(read, AltcraftTransportError) and "within 1s" in str(read), read
    assert isinstance(launch, AltcraftDeliveryUncertain) and launch.keys == ["email:a@example.org"]
    assert read_seconds < TIMEOUT + SLACK and launch_seconds < TIMEOUT + SLACK
    assert TOKEN not in str(read) + str(launch)


def test_slow_drip_server_cannot_hold_an_async_call_beyond_its_timeout(dripping):
    read, read_seconds = _timed(lambda: run_async(lambda hook: read_scenario(hook, 12)))
    launch, launch_seconds = _timed(
        lambda: run_async(lambda hook: launch_batch(hook, _batch(), keys=["email:a@example.org"]))
    )
    assert isinstance(read, AltcraftTransportError), read
    assert isinstance(launch, AltcraftDeliveryUncertain)
    assert read_seconds < TIMEOUT + SLACK and launch_seconds < TIMEOUT + SLACK


@pytest.mark.parametrize("call", ["read", "probe"])
def test_slow_drip_crm_cannot_hold_the_rest_source_beyond_its_timeout(serve, monkeypatch, call):
    """The polling trigger's probe had no deadline: a drip held it (and a triggerer thread) for ever."""
    from datetime import UTC, datetime

    from altcraft.sources import RestSource, SourceError

    crm = serve(lambda seen: drip(200, b'{"items": [{"id": 1}, {"id": 2}, {"id": 3}]}', 0.15), connect=False)
    monkeypatch.setenv("AIRFLOW_CONN_DRIPPING_CRM", f'{{"conn_type": "http", "host": "{crm.url}"}}')
    rest = RestSource(
        "dripping_crm",
        "v1/contacts",
        key_column="id",
        record_path="items",
        timeout=TIMEOUT,
        window_params={"start": "created_from"},
    )
    calls = {"read": lambda: list(rest.batches(None, 10)), "probe": lambda: rest.probe(datetime.now(UTC))}
    failure, seconds = _timed(calls[call])
    assert isinstance(failure, SourceError) and "no complete answer within 1s" in str(failure), failure
    assert seconds < TIMEOUT + SLACK
    assert failure.__cause__ is None  # the transport's text may quote the query (a cursor that is an email)


def test_the_connection_test_waits_once_for_a_server_that_does_not_answer(serve):
    """The header's request timed out, then the body's did too: the Test button took twice the timeout (with
    the default 60 s, past Airflow's 60 s for a connection test on a worker, which then said only "timed
    out"). The body's check is skipped when the header's request got no answer at all."""
    server = serve(lambda seen: [(b"", 3 * TIMEOUT)], timeout=TIMEOUT)
    started = time.monotonic()
    ok, message = AltcraftHook().test_connection()
    seconds = time.monotonic() - started

    assert not ok and f"no complete answer within {TIMEOUT:g}s" in message, message
    assert "token (body): skip (no answer to the header's request)" in message
    assert len(server.seen) == 1 and seconds < TIMEOUT + SLACK
