"""Every HTTP client stops reading an answer past its size cap, against a real socket server.

Three shapes of oversized answer: a declared ``Content-Length``, a body streamed without one until the
connection closes, and a small gzip body that inflates past the cap.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
from hostile_server import TOKEN, drip, run_async

from altcraft.api.errors import AltcraftAnswerTooLarge, AltcraftDeliveryUncertain, AltcraftError
from altcraft.api.models import BatchLaunchRequest
from altcraft.hooks.altcraft import AltcraftHook
from tests.async_calls import launch_batch, read_scenario

LIMIT = 1 << 20
KEYS = ["email:a@example.org"]
_PIECE = b" " * (64 * 1024)


def _json_head(extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n".encode()


def declared(seen):
    """A valid JSON answer of 4 MiB, announced by its Content-Length."""
    body = b'{"error":0,"data":[]' + b" " * (4 * LIMIT) + b"}"
    return [(_json_head(f"Content-Length: {len(body)}\r\n"), 0.0), (body, 0.0)]


def endless(seen):
    """No Content-Length: 64 KiB pieces until 64 MiB or until the client hangs up."""
    return [(_json_head() + b'{"error":0,"data":[]', 0.0)] + [(_PIECE, 0.0)] * 1024


def inflating(seen):
    """40 KiB of gzip that inflates to 8 MiB of JSON."""
    body = gzip.compress(b'{"error":0,"data":[]' + b" " * (8 * LIMIT) + b"}")
    head = _json_head(f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n")
    return [(head, 0.0), (body, 0.0)]


def small(seen):
    body = json.dumps({"error": 0, "data": [{"id": 12, "name": "w", "is_active": True}]}).encode()
    return [(_json_head(f"Content-Length: {len(body)}\r\n"), 0.0), (body, 0.0)]


SHAPES = [declared, endless, inflating]


def _batch() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


@pytest.mark.parametrize("answer", SHAPES)
def test_an_oversized_answer_is_refused_once_and_a_launch_stays_uncertain(serve, answer):
    server = serve(answer, max_answer_bytes=LIMIT, max_retries=2)
    hook = AltcraftHook()
    with pytest.raises(AltcraftAnswerTooLarge, match="larger than 1,048,576 bytes") as read:
        hook.get_scenario(12)
    assert len(server.seen) == 1, "the same question gets the same answer: not retried"
    with pytest.raises(AltcraftDeliveryUncertain) as launch:
        hook.import_and_start_batch(_batch(), keys=KEYS)
    hook.close()
    assert launch.value.keys == KEYS
    assert len(server.seen) == 2
    assert TOKEN not in str(read.value) + str(launch.value)


@pytest.mark.parametrize("answer", SHAPES)
def test_an_oversized_answer_is_refused_by_the_async_hook(serve, answer):
    server = serve(answer, max_answer_bytes=LIMIT, max_retries=2)
    with pytest.raises(AltcraftAnswerTooLarge):
        run_async(lambda hook: read_scenario(hook, 12))
    assert len(server.seen) == 1
    with pytest.raises(AltcraftDeliveryUncertain) as launch:
        run_async(lambda hook: launch_batch(hook, _batch(), keys=KEYS))
    assert launch.value.keys == KEYS


def test_an_answer_under_the_cap_is_read_as_before(serve):
    serve(small, max_answer_bytes=LIMIT)
    hook = AltcraftHook()
    assert hook.get_scenario(12).name == "w"
    assert run_async(lambda hook: read_scenario(hook, 12)).name == "w"


@pytest.mark.parametrize("answer", SHAPES)
def test_an_oversized_page_fails_the_rest_source(serve, monkeypatch, answer):
    from altcraft.sources import RestSource, SourceError

    crm = serve(answer, connect=False)
    monkeypatch.setenv("AIRFLOW_CONN_BIG_CRM", f'{{"conn_type": "http", "host": "{crm.url}"}}')
    rest = RestSource("big_crm", "v1/contacts?segment=secret", key_column="id", max_answer_bytes=LIMIT)
    with pytest.raises(SourceError, match="larger than 1,048,576 bytes from v1/contacts") as failure:
        list(rest.batches(None, 10))
    assert "secret" not in str(failure.value)


@pytest.mark.parametrize("answer", SHAPES)
def test_an_oversized_answer_fails_a_crm_preset_call(serve, answer):
    from altcraft.sources import SourceError
    from altcraft.sources.crm.base import Limits
    from altcraft.sources.crm.http import CrmHttp

    crm = serve(answer, connect=False)
    client = CrmHttp("hubspot", crm.url, {}, Limits(requests_per_second=100, max_answer_bytes=LIMIT))
    with pytest.raises(SourceError, match=r"hubspot: crm\.objects\.contacts: the answer is larger than"):
        client.request("GET", "/crm/v3/objects/contacts", label="crm.objects.contacts")
    assert client.requests_sent == 1


@pytest.mark.parametrize("answer", SHAPES)
def test_the_probe_reports_an_oversized_answer(serve, answer):
    from altcraft.probe import Exchanger

    server = serve(answer, connect=False)
    answer_seen = Exchanger(server.url, TOKEN, timeout=5, max_answer_bytes=LIMIT).post(
        "workflows/list", {"limit": 1}
    )
    assert not answer_seen.ok
    assert "larger than 1,048,576 bytes" in answer_seen.error


def test_the_probe_has_one_deadline_per_exchange(serve):
    from altcraft.probe import Exchanger

    server = serve(lambda seen: drip(200, b'{"error":0,"data":[]}' * 4, 0.15), connect=False)
    started = time.monotonic()
    answer = Exchanger(server.url, TOKEN, timeout=1.0).post("workflows/list", {"limit": 1})
    assert time.monotonic() - started < 1.0 + 1.5  # the drip alone would take 12 s
    assert "no complete answer within 1s" in answer.error


#: Content-Length values that int() refuses though str.isdigit() takes them: a number past Python's
#: 4,300-digit limit of int() (a declared size, too large by far), and Latin-1's superscript two (no size).
ODD_LENGTHS = {"5,000 digits": ("9" * 5000, True), "superscript two": ("\u00b2", False)}


def _odd_length(value: str):
    def answer(seen):
        body = json.dumps({"error": 0, "data": [{"id": 12, "name": "w", "is_active": True}]}).encode()
        return [(_json_head(f"Content-Length: {value}\r\n").decode().encode("latin-1") + body, 0.0)]

    return answer


@pytest.mark.parametrize("case", ODD_LENGTHS)
def test_a_content_length_int_refuses_is_no_crash(serve, monkeypatch, case):
    """``_declared_too_large`` read the header with ``int()`` after ``str.isdigit()``: a length of 5,000
    digits or a "²" raised a bare ValueError out of the sync hook (a launch's contacts then left as an
    interrupted try), the REST source and the probe. A length that many digits long is too large; one that
    is no number declares nothing, and the answer is read to its end."""
    from altcraft.probe import Exchanger
    from altcraft.sources import RestSource, SourceError

    value, too_large = ODD_LENGTHS[case]
    server = serve(_odd_length(value), max_answer_bytes=LIMIT)
    hook = AltcraftHook()
    if too_large:
        with pytest.raises(AltcraftAnswerTooLarge):
            hook.get_scenario(12)
        with pytest.raises(AltcraftDeliveryUncertain):
            hook.import_and_start_batch(_batch(), keys=KEYS)
    else:
        assert hook.get_scenario(12).name == "w"
    with pytest.raises(AltcraftError):  # aiohttp's parser refuses both headers: a typed error
        run_async(lambda ahook: read_scenario(ahook, 12))

    monkeypatch.setenv("AIRFLOW_CONN_ODD_CRM", f'{{"conn_type": "http", "host": "{server.url}"}}')
    rest = RestSource("odd_crm", "v1/contacts", key_column="id", record_path="data", max_answer_bytes=LIMIT)
    try:
        list(rest.batches(None, 10))
    except SourceError as failure:
        assert too_large and "larger than" in str(failure)
    probed = Exchanger(server.url, TOKEN, timeout=5, max_answer_bytes=LIMIT).post("workflows/list", {})
    assert probed.ok is not too_large
