"""What a hostile or broken client sends the emulator itself: a clear 4xx, never a 500, a hang or a body
held in memory whole."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from .helpers import error, ok

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "raw",
    [
        DEEP,
        '{"workflow_id": 12, "email": "a@example.org", "data": {"LOYALTY": NaN}}',
        '{"workflow_id": 12, "email": "a@example.org", "data": {"LOYALTY": Infinity}}',
        '{"workflow_id": 12, "email": "a@example.org", "data": {"LOYALTY": 1e400}}',
        '{"workflow_id": 1' + "0" * 5000 + "}",
    ],
    ids=["deep", "nan", "infinity", "overflow", "long-int"],
)
def test_a_body_that_is_no_json_is_a_400_envelope(altcraft_emulator, raw):
    # "A description of the JSON format can be found in RFC 7159" (api-interaction): no NaN, no Infinity
    response = altcraft_emulator.post(
        "workflows/import_and_start", data=raw, headers={"Content-Type": "application/json"}
    )
    error(response, 400, "malformed JSON body")
    assert altcraft_emulator.journal() == []


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("seed", DEEP),
        ("seed", '{"databases": [{"id": 1e400}]}'),
        ("seed", '{"tokens": [{"token": "t", "databases": [Infinity]}]}'),
        ("config", '{"max_body_bytes": Infinity}'),
        ("config", '{"latency_ms": NaN}'),
        ("config", '{"latency_ms": 1' + "0" * 400 + "}"),
        ("faults", '{"rules": [{"kind": "status", "count": Infinity}]}'),
        ("faults", '{"rules": [{"kind": "status", "probability": NaN}]}'),
        ("faults", '{"rules": [{"kind": "latency", "latency_ms": 1' + "0" * 400 + "}]}"),
    ],
)
def test_a_control_body_that_is_no_json_or_out_of_range_is_a_400(altcraft_emulator, path, raw):
    before = altcraft_emulator.state()
    response = requests.post(f"{altcraft_emulator.url}/_emulator/{path}", data=raw, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert altcraft_emulator.state() == before
    ok(altcraft_emulator.post("databases/list", {}))


def _raw_exchange(url: str, head: bytes, body_part: bytes) -> bytes:
    """Send a request head and part of its body, then read what the server answers (within 10 s)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + body_part)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def test_a_body_announced_larger_than_the_limit_is_413_before_it_is_read(altcraft_emulator):
    """Content-Length of a terabyte: answered at once, not after buffering what the client sends."""
    head = (
        b"POST /api/v1.1/workflows/import_and_start HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + altcraft_emulator.token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
    )
    answer = _raw_exchange(altcraft_emulator.url, head, b'{"workflow_id": 12, "data": "')
    assert answer.startswith(b"HTTP/1.1 413"), answer


@pytest.mark.parametrize("path", ["/_emulator/seed", "/_emulator/config", "/_emulator/faults"])
def test_a_control_body_larger_than_its_limit_is_413_before_it_is_read(altcraft_emulator, path):
    """The control API had no limit: a seed announcing a terabyte was read until memory ran out."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
    )
    answer = _raw_exchange(altcraft_emulator.url, head, b'{"databases": [')
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert altcraft_emulator.config(latency_ms=0)["latency_ms"] == 0, "the control API still answers"


def test_a_chunked_body_growing_past_the_limit_is_413_without_waiting_for_its_end(altcraft_emulator):
    altcraft_emulator.config(max_body_bytes=2000)
    head = (
        b"POST /api/v1.1/workflows/import_and_start HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + altcraft_emulator.token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3))  # never terminated
    answer = _raw_exchange(altcraft_emulator.url, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert altcraft_emulator.journal() == []
    ok(altcraft_emulator.post("databases/list", {}))


def test_an_oversized_request_does_not_count_against_fault_rules(altcraft_emulator):
    altcraft_emulator.config(max_body_bytes=2000)
    altcraft_emulator.add_faults({"endpoint": "workflows/import_and_start", "kind": "status", "count": 1})
    body = {"workflow_id": 12, "email": "anna@example.org", "data": {"_fname": "A" * 3000}}
    error(altcraft_emulator.post("workflows/import_and_start", body), 413)
    [rule] = altcraft_emulator.state()["faults"]
    assert (rule["seen"], rule["hits"]) == (0, 0)


@pytest.mark.parametrize("value", [["a", "b"], {"a": 1}, [{"a": 1}]])
def test_custom_matching_on_a_json_field_needs_a_scalar_value(altcraft_emulator, value):
    altcraft_emulator.seed(databases=[{"id": 1, "fields": [{"name": "DOC", "type": "json"}]}])
    body = {"matching": "custom", "field_name": "DOC", "field_value": value}
    launch = {"workflow_id": 12, **body}
    error(altcraft_emulator.post("workflows/import_and_start", launch), 400, "'field_value'")
    error(altcraft_emulator.post("profiles/get", {"db_id": 1, **body}), 400, "'field_value'")
    batch = {"workflow_id": 12, "matching": "custom", "field_name": "DOC", "data": [{"field_value": value}]}
    [result] = ok(altcraft_emulator.post("workflows/import_and_start_batch", batch))["result"]
    assert result["error"] == 400 and "'field_value'" in result["error_text"]
    assert altcraft_emulator.journal() == []
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 12, **body, "field_value": "k"}))


def test_a_key_named_twice_takes_its_last_value(altcraft_emulator):
    """As Python's parser reads it (RFC 8259 leaves it open): the request's, an item's, its data's."""
    raw = (
        '{"workflow_id": 13, "workflow_id": 12, "data": [{"email": "x@example.org",'
        ' "email": "anna@example.org", "data": {"LOYALTY": "bad", "LOYALTY": 2}}]}'
    )
    response = altcraft_emulator.post(
        "workflows/import_and_start_batch", data=raw, headers={"Content-Type": "application/json"}
    )
    [result] = ok(response)["result"]
    assert result["error"] == 0
    [profile] = altcraft_emulator.profiles(1)
    assert profile["fields"] == {"email": "anna@example.org", "LOYALTY": 2}
    [entry] = altcraft_emulator.journal()
    assert (entry["scenario_id"], entry["key"]) == (12, "anna@example.org")
