"""The wire format and lenient parsing, as pure functions."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import pytest

from altcraft.api.errors import AltcraftApiError, AltcraftError, AltcraftRateLimited, AltcraftTransportError
from altcraft.api.models import BatchResult, Database, Page, Scenario, TaskState, TaskStatus
from altcraft.api.protocol import encode_body, parse_response, parse_retry_after, task_id_of, task_status_of


def test_encode_body_adds_token_and_splices_raw_data():
    body = encode_body({"workflow_id": 1}, token="t0k", raw_data=b'[{"email":"a@b.c"}]')
    assert json.loads(body) == {"workflow_id": 1, "token": "t0k", "data": [{"email": "a@b.c"}]}
    assert json.loads(encode_body({}, token=None, raw_data=b"[]")) == {"data": []}
    assert "token" not in json.loads(encode_body({"a": 1}, token=None))


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0", 0.0), ("1", 1.0), ("2.5", 2.5), ("-3", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_seconds(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0


def test_success_needs_2xx_and_error_zero():
    assert parse_response("x", 200, {}, b'{"error":0,"error_text":"ok","data":1}')["data"] == 1
    with pytest.raises(AltcraftApiError) as err:
        parse_response("x", 200, {}, b'{"error":404,"error_text":"workflow not found"}')
    assert (err.value.code, err.value.http_status, err.value.retryable) == (404, 200, False)
    with pytest.raises(AltcraftApiError) as err:
        parse_response("x", 409, {}, b'{"error":409,"error_text":"more than one"}')
    assert err.value.code == 409 and not err.value.retryable


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 409])
def test_client_errors_are_not_retryable(code):
    with pytest.raises(AltcraftApiError) as err:
        parse_response("x", code, {}, json.dumps({"error": code, "error_text": "no"}).encode())
    assert not err.value.retryable


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_server_errors_are_retryable(code):
    with pytest.raises(AltcraftApiError) as err:
        parse_response("x", code, {}, b"<html>Bad gateway</html>")
    assert err.value.retryable and err.value.server_side
    assert "Bad gateway" in str(err.value)


def test_429_carries_retry_after():
    with pytest.raises(AltcraftRateLimited) as err:
        parse_response("x", 429, {"Retry-After": "0"}, b"")
    assert err.value.retry_after == 0.0 and err.value.retryable


def test_unreadable_2xx_body_is_a_transport_error():
    with pytest.raises(AltcraftTransportError) as err:
        parse_response("x", 200, {}, b'{"error":0,"data":[{"id"')
    assert err.value.sent and err.value.retryable


def test_secret_is_redacted_from_error_text():
    with pytest.raises(AltcraftApiError) as err:
        parse_response(
            "x", 403, {}, b'{"error":403,"error_text":"token s3cr3t has no access"}', secret="s3cr3t"
        )
    assert "s3cr3t" not in str(err.value)


def test_lenient_models():
    assert Page.model_validate({"data": None, "total_count": 3}).total == 3
    assert Page.model_validate({"data": [], "total": 4}).total == 4
    scenario = Scenario.model_validate(
        {"id": 1, "list_id": 7, "is_active": True, "groups": [{"ID": 2, "title": "Sales"}], "nodes": None}
    )
    assert scenario.db_id == 7 and scenario.groups[0].name == "Sales"
    database = Database.model_validate({"id": 1, "name": "d", "Groups": [{"Id": 3, "Name": "G"}]})
    assert database.groups[0].id == 3
    assert (
        BatchResult.model_validate({"error": "0", "result": [{"error": 0, "profile_id": "x"}]}).result[0].ok
    )


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("completed", TaskState.SUCCEEDED),
        ("success", TaskState.SUCCEEDED),
        ("queued", TaskState.PENDING),
        ("running", TaskState.RUNNING),
        ("failed", TaskState.FAILED),
        (None, TaskState.PENDING),
    ],
)
def test_task_states(raw, state):
    assert TaskState.parse(raw) is state


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("running", None),
        (" Completed ", None),
        (None, None),
        ("completed_with_errors", "'completed_with_errors'"),
        ("done\x1b[2J\nfake log line\x00", "'done\\x1b[2J\\nfake log line\\x00'"),
        ("x" * 100, repr("x" * 64 + "…")),
        ("failed for anna.petrova@example.org", "'failed for a***@e***.org'"),
    ],
)
def test_a_status_we_do_not_recognise_is_waited_on_as_running_and_quoted_safely(raw, shown):
    """Never guessed finished or failed; quoted as server text: at most 64 characters, emails and phones
    masked, controls escaped."""
    status = TaskStatus(task_id="t1", status=raw)
    assert status.unrecognised == shown
    if shown is not None:
        assert status.state is TaskState.RUNNING
        assert status.still == f"still reported unrecognised status {shown}"


def test_each_unrecognised_status_of_a_task_is_warned_of_once(caplog):
    """Every poll of a task reads it through `task_status_of`: one WARNING per task and distinct status."""
    a, b = (f"task_{uuid.uuid4().hex}" for _ in range(2))  # warned once per process: ids of this test only
    answers = [(a, "completed_with_errors")] * 3 + [(a, "partial"), (b, "partial"), (a, "running")]
    with caplog.at_level(logging.WARNING, logger="altcraft.api.protocol"):
        for task_id, raw in answers:
            task_status_of({"data": {"status": raw}}, task_id)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned
    assert f"Altcraft task {a} reports status 'completed_with_errors', which we do not recognise" in warned[0]
    assert (
        f"task {a} reports status 'partial'" in warned[1]
        and f"task {b} reports status 'partial'" in warned[2]
    )


def test_task_profile_results_in_either_place():
    nested = TaskStatus.model_validate(
        {"status": "success", "result": {"total": 1, "result": [{"error": 0}]}}
    )
    flat = TaskStatus.model_validate({"status": "completed", "result": [{"error": 400, "error_text": "bad"}]})
    assert [r.ok for r in nested.profile_results()] == [True]
    assert [r.error for r in flat.profile_results()] == [400]


def test_task_id_in_data_or_top_level():
    assert task_id_of({"data": {"task_id": "task_1"}}) == "task_1"
    assert task_id_of({"task_id": "abc"}) == "abc"
    with pytest.raises(AltcraftTransportError):
        task_id_of({"data": None})


def test_contact_data_in_server_text_is_masked():
    with pytest.raises(AltcraftApiError) as err:
        parse_response("x", 409, {}, b'{"error":409,"error_text":"two profiles have anna@example.org"}')
    assert "anna@example.org" not in str(err.value) and "409" in str(err.value)


#: an answer about one contact quoting its phone's digits, which no pattern tells from an id
_QUOTED = "subscriber 4930123 blocked"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"error":400,"error_text":"subscriber 4930123 blocked"}'),
        (409, b'{"error":409,"error_text":"subscriber 4930123 blocked"}'),
        (429, b'{"error":429,"error_text":"subscriber 4930123 blocked"}'),
        (500, b"<html>subscriber 4930123 blocked</html>"),
        (200, b"subscriber 4930123 blocked"),
        (200, b'{"error":"x","error_text":"subscriber 4930123 blocked"}'),
        (200, b'{"error":400,"error_text":{"why":"subscriber 4930123 blocked"}}'),
    ],
)
def test_the_known_values_of_the_contact_an_error_answer_is_about_are_masked(status, body):
    with pytest.raises(AltcraftError) as unknown:
        parse_response("x", status, {}, body)
    assert "4930123" in str(unknown.value)  # an id for all that scrub can tell
    with pytest.raises(AltcraftError) as known:
        parse_response("x", status, {}, body, known=("+4930123",))
    assert "4930123" not in str(known.value) and "blocked" in str(known.value)


def test_the_known_values_are_masked_in_every_server_text_of_a_successful_answer():
    answer = {"error": 0, "error_text": _QUOTED, "result": [{"error": 400, "error_text": _QUOTED.upper()}]}
    body = json.dumps(answer).encode()
    assert "4930123" in json.dumps(parse_response("x", 200, {}, body))
    cleaned = json.dumps(parse_response("x", 200, {}, body, known=("+4930123",)))
    assert "4930123" not in cleaned and "BLOCKED" in cleaned


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, json.dumps({"error": 400, "error_text": _QUOTED}).encode()),
        (200, json.dumps({"error": 500, "error_text": _QUOTED}).encode()),
        (502, f"<html>{_QUOTED}</html>".encode()),
        (429, json.dumps({"error": 429, "error_text": _QUOTED}).encode()),
    ],
)
def test_an_error_answer_to_a_request_of_several_contacts_masks_every_ones_values(status, body):
    values = [f"+4930{n:03d}" for n in range(100, 999)] + ["+4930123"]
    with pytest.raises(AltcraftError) as refused:
        parse_response("x", status, {}, body, about=lambda: values)
    assert "4930123" not in str(refused.value) and "blocked" in str(refused.value)


def test_a_successful_answer_to_a_request_of_several_contacts_does_not_read_their_values():
    def about() -> list[str]:
        raise AssertionError("read on success")

    body = json.dumps({"error": 0, "result": [{"error": 400, "error_text": _QUOTED}]}).encode()
    assert "blocked" in json.dumps(parse_response("x", 200, {}, body, about=about))
