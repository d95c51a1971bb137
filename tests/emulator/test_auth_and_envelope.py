"""Authentication, the response envelope, HTTP-level rules and request limits, over real HTTP."""

from __future__ import annotations

import requests

from .helpers import error, ok


def test_token_in_header_or_body_is_accepted(altcraft_emulator):
    ok(altcraft_emulator.post("databases/list", {}))
    ok(altcraft_emulator.post("databases/list", {"token": altcraft_emulator.token}, token=None))


def test_the_journal_says_where_each_launch_carried_its_token(altcraft_emulator):
    token = altcraft_emulator.token
    launch = {"workflow_id": 12, "email": "anna@example.org"}
    ok(altcraft_emulator.post("workflows/import_and_start", launch))
    ok(altcraft_emulator.post("workflows/import_and_start", {**launch, "token": token}, token=None))
    ok(altcraft_emulator.post("workflows/import_and_start", {**launch, "token": token}))
    ok(altcraft_emulator.post("workflows/import_and_start", launch, token=None, params={"token": token}))
    assert [entry["token_in"] for entry in altcraft_emulator.journal(12)] == [
        ["header"],
        ["body"],
        ["header", "body"],
        ["query"],
    ]


def test_missing_token_is_401_and_unknown_token_is_403(altcraft_emulator):
    error(altcraft_emulator.post("databases/list", {}, token=None), 401)
    error(altcraft_emulator.post("databases/list", {}, token="not-a-token"), 403, "Invalid API token")
    error(altcraft_emulator.post("databases/list", {"token": "not-a-token"}, token=None), 403)


def test_token_in_query_string_is_accepted_as_documented_and_refused_when_strict(altcraft_emulator):
    # api-interaction: "Some parameters can be sent in URL (API key, format)." — discouraged, not refused
    query = {"token": altcraft_emulator.token}
    ok(altcraft_emulator.post("databases/list", {}, token=None, params=query))
    altcraft_emulator.config(strict=True)
    error(altcraft_emulator.post("databases/list", {}, params=query), 400, "query string")


def test_restricted_token_sees_only_its_databases_and_scenarios(altcraft_emulator):
    altcraft_emulator.seed(
        databases=[{"id": 2, "name": "Partners"}],
        tokens=[{"token": "limited", "databases": [1], "scenarios": [13]}],
    )
    post = altcraft_emulator.post
    body = {"workflow_id": 12, "email": "anna@example.org"}
    error(post("workflows/import_and_start", body, token="limited"), 403, "No access to workflow 12")
    error(post("databases/get", {"id": 2}, token="limited"), 403, "No access to database 2")
    error(post("profiles/import", {"db_id": 2, "email": "a@b.c", "data": {}}, token="limited"), 403)
    ok(post("databases/get", {"id": 1}, token="limited"))
    assert [s["id"] for s in ok(post("workflows/list", {}, token="limited"))["data"]] == [13]
    assert [d["id"] for d in ok(post("databases/list", {}, token="limited"))["data"]] == [1]
    assert altcraft_emulator.journal() == []


def test_errors_can_come_with_http_200(altcraft_emulator):
    altcraft_emulator.config(error_http_status="always_200")
    error(altcraft_emulator.post("databases/list", {}, token=None), 401, http_status=200)
    error(
        altcraft_emulator.post("workflows/start", {"id": 999, "email": "x@y.z"}),
        404,
        "workflow not found",
        200,
    )


def test_every_method_answers_with_and_without_trailing_slash(altcraft_emulator):
    for endpoint in ("databases/list", "databases/list/", "workflows/list/", "databases/fields_get/"):
        ok(altcraft_emulator.post(endpoint, {"db_id": 1}))


def test_unknown_method_not_post_and_malformed_bodies(altcraft_emulator):
    error(altcraft_emulator.post("workflows/explode", {}), 404, "unknown API method")
    response = requests.get(altcraft_emulator.api_url("databases/list"), timeout=5)
    error(response, 405)
    headers = {"Authorization": f"Bearer {altcraft_emulator.token}", "Content-Type": "application/json"}
    url = altcraft_emulator.api_url("databases/list")
    error(requests.post(url, data=b'{"from_id": 1', headers=headers, timeout=5), 400, "malformed JSON")
    error(requests.post(url, data=b"[1, 2]", headers=headers, timeout=5), 400, "JSON object")


def test_every_response_has_a_request_id_and_the_callers_one_is_kept(altcraft_emulator):
    answers = [
        altcraft_emulator.post("databases/list", {}),
        altcraft_emulator.post("databases/list", {}, token=None),
        requests.get(f"{altcraft_emulator.url}/_emulator/state", timeout=5),
    ]
    ids = [answer.headers["X-Request-Id"] for answer in answers]
    assert all(ids) and len(set(ids)) == 3
    mine = altcraft_emulator.post("databases/list", {}, headers={"X-Request-Id": "req-42"})
    assert mine.headers["X-Request-Id"] == "req-42"


def test_body_larger_than_the_limit_is_413_and_not_processed(altcraft_emulator):
    altcraft_emulator.config(max_body_bytes=2000)
    body = {"workflow_id": 12, "email": "anna@example.org", "data": {"_fname": "A" * 3000}}
    error(altcraft_emulator.post("workflows/import_and_start", body), 413)
    assert altcraft_emulator.journal() == [] and altcraft_emulator.profiles(1) == []
    body["data"]["_fname"] = "Anna"
    ok(altcraft_emulator.post("workflows/import_and_start", body))


def test_batch_with_too_many_profiles_is_refused_whole_when_strict(altcraft_emulator):
    # the batch pages only say "It is not recommended to transfer more than 10,000 profiles"
    altcraft_emulator.config(max_batch_profiles=3)
    items = [{"email": f"p{i}@example.org"} for i in range(4)]
    assert (
        len(ok(altcraft_emulator.post("profiles/import_batch", {"db_id": 1, "data": items}))["result"]) == 4
    )
    altcraft_emulator.reset()
    altcraft_emulator.config(max_batch_profiles=3, strict=True)
    items = [{"email": f"p{i}@example.org"} for i in range(4)]
    error(
        altcraft_emulator.post("workflows/import_and_start_batch", {"workflow_id": 12, "data": items}),
        400,
        "4 > 3",
    )
    error(altcraft_emulator.post("profiles/import_batch", {"db_id": 1, "data": items}), 400, "too many")
    assert altcraft_emulator.journal() == [] and altcraft_emulator.profiles(1) == []
    assert (
        len(ok(altcraft_emulator.post("profiles/import_batch", {"db_id": 1, "data": items[:3]}))["result"])
        == 3
    )
