"""Every fault kind, rule selection (every / probability / count / endpoint) and connection aborts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from altcraft.testing import emulator_process

from .helpers import error, ok

LAUNCH = "workflows/import_and_start"


def _launch(emulator, email="anna@example.org"):
    return emulator.post(LAUNCH, {"workflow_id": 12, "email": email})


@pytest.mark.parametrize(
    ("status", "retry_after", "header"), [(429, 0, "0"), (503, 2.5, "2.5"), (500, None, None)]
)
def test_status_fault_answers_without_processing(altcraft_emulator, status, retry_after, header):
    altcraft_emulator.add_faults(
        {"endpoint": LAUNCH, "kind": "status", "status": status, "retry_after": retry_after, "count": 1}
    )
    response = _launch(altcraft_emulator)
    error(response, status)
    assert response.headers.get("Retry-After") == header and response.headers["X-Request-Id"]
    assert altcraft_emulator.journal() == []
    ok(_launch(altcraft_emulator))
    [rule] = altcraft_emulator.state()["faults"]
    assert (rule["remaining"], rule["hits"]) == (0, 1)


def test_every_selects_every_nth_matching_request_and_endpoint_filters(altcraft_emulator):
    altcraft_emulator.add_faults({"endpoint": "databases/list/", "kind": "status", "status": 502, "every": 2})
    codes = [altcraft_emulator.post("databases/list", {}).status_code for _ in range(5)]
    assert codes == [200, 502, 200, 502, 200]
    assert altcraft_emulator.post("workflows/list", {}).status_code == 200
    assert altcraft_emulator.state()["faults"][0]["remaining"] is None


def test_probability_is_reproducible_with_a_random_seed(altcraft_emulator):
    def pattern():
        altcraft_emulator.clear_faults()
        altcraft_emulator.add_faults({"kind": "status", "status": 500, "probability": 0.5}, random_seed=7)
        return [altcraft_emulator.post("databases/list", {}).status_code for _ in range(16)]

    first = pattern()
    assert first == pattern()
    assert {200, 500} == set(first)


def test_latency_rule_and_latency_config_delay_requests(altcraft_emulator):
    altcraft_emulator.add_faults(
        {"endpoint": "databases/list", "kind": "latency", "latency_ms": 300, "count": 1}
    )
    started = time.perf_counter()
    ok(altcraft_emulator.post("databases/list", {}))
    assert time.perf_counter() - started >= 0.3
    altcraft_emulator.config(latency_ms=200)
    started = time.perf_counter()
    ok(altcraft_emulator.post("workflows/list", {}))
    assert time.perf_counter() - started >= 0.2


def test_a_slow_request_is_processed_even_after_the_client_gave_up(altcraft_emulator):
    altcraft_emulator.add_faults({"endpoint": LAUNCH, "kind": "latency", "latency_ms": 400, "count": 1})
    with pytest.raises(requests.Timeout):
        altcraft_emulator.post(LAUNCH, {"workflow_id": 12, "email": "slow@example.org"}, timeout=0.1)
    deadline = time.monotonic() + 5
    while not altcraft_emulator.journal() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["key"] for e in altcraft_emulator.journal()] == ["slow@example.org"]


def test_malformed_fault_processes_then_cuts_the_json(altcraft_emulator):
    altcraft_emulator.add_faults({"endpoint": LAUNCH, "kind": "malformed", "count": 1})
    response = _launch(altcraft_emulator)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert len(altcraft_emulator.journal()) == 1


def test_html_fault_is_a_gateway_page_and_not_processed(altcraft_emulator):
    altcraft_emulator.add_faults(
        {"endpoint": LAUNCH, "kind": "html"}, {"endpoint": "databases/list", "kind": "html", "status": 504}
    )
    response = _launch(altcraft_emulator)
    assert response.status_code == 502 and response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    assert altcraft_emulator.post("databases/list", {}).status_code == 504
    assert altcraft_emulator.journal() == []


def test_profile_error_fails_selected_batch_items_only(altcraft_emulator):
    altcraft_emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "profile_error",
            "every": 2,
            "code": 500,
            "text": "temporary failure",
        }
    )
    items = [{"email": f"p{i}@example.org"} for i in range(5)]
    result = ok(
        altcraft_emulator.post("workflows/import_and_start_batch", {"workflow_id": 12, "data": items})
    )["result"]
    assert [r["error"] for r in result] == [0, 500, 0, 500, 0]
    assert result[1] == {"error": 500, "error_text": "temporary failure"}
    assert [e["key"] for e in altcraft_emulator.journal()] == [
        "p0@example.org",
        "p2@example.org",
        "p4@example.org",
    ]
    assert altcraft_emulator.state()["faults"][0]["hits"] == 2


@pytest.mark.parametrize(
    "endpoint",
    ["workflows/import_and_start_batch", "profiles/import_batch", "workflows/import_and_start_batch_task"],
)
def test_reorder_results_rotates_the_per_profile_results_by_one(altcraft_emulator, endpoint):
    """Each item is processed as sent; the answer (or the finished task) lists the first result last."""
    altcraft_emulator.add_faults({"endpoint": endpoint, "kind": "reorder_results", "count": 1})
    items: list[Any] = [{"email": f"r{i}@example.org"} for i in range(3)] + ["not a profile"]
    body = {"workflow_id": 12, "db_id": 1, "data": items}
    answer = ok(altcraft_emulator.post(endpoint, body))
    if endpoint.endswith("_task"):
        task_id = answer["data"]["task_id"]
        deadline = time.monotonic() + 30
        while (status := ok(altcraft_emulator.post("tasks/status", {"task_id": task_id}))["data"])[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = status["result"]
    ids = {p["fields"]["email"]: p["id"] for p in altcraft_emulator.profiles(1)}
    expected = [ids["r1@example.org"], ids["r2@example.org"], None, ids["r0@example.org"]]
    assert [r.get("profile_id") for r in answer["result"]] == expected
    assert [r["error"] for r in answer["result"]] == [0, 0, 400, 0]
    assert altcraft_emulator.state()["faults"][0]["hits"] == 1


def _assert_drops(emulator):
    emulator.add_faults({"endpoint": LAUNCH, "kind": "drop_before", "count": 1})
    with pytest.raises(requests.ConnectionError):
        _launch(emulator, "before@example.org")
    assert emulator.journal() == []
    emulator.add_faults({"endpoint": LAUNCH, "kind": "drop_after", "count": 1})
    with pytest.raises(requests.ConnectionError):
        _launch(emulator, "after@example.org")
    [entry] = emulator.journal()
    assert entry["key"] == "after@example.org"
    ok(_launch(emulator, "later@example.org"))
    assert len(emulator.journal()) == 2


def test_drop_before_and_drop_after_abort_the_connection(altcraft_emulator):
    _assert_drops(altcraft_emulator)


def test_connection_aborts_work_with_the_h11_protocol_too():
    with emulator_process("--http", "h11") as emulator:
        _assert_drops(emulator)


def test_bad_fault_rules_are_refused(altcraft_emulator):
    for rule in (
        {"kind": "explode"},
        {"kind": "status", "status": 99},
        {"kind": "latency"},
        {"kind": "status", "probability": 2},
        {"kind": "status", "colour": "red"},
        {"kind": ["status"]},
        "status",
    ):
        with pytest.raises(RuntimeError, match="400"):
            altcraft_emulator.add_faults(rule)
    assert altcraft_emulator.state()["faults"] == []


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"kind": "explode"}, "'kind'"),
        ({"kind": "status", "count": -1}, "'count'"),
        ({"kind": "status", "every": 0}, "'every'"),
        ({"kind": "status", "probability": 1.5}, "'probability'"),
        ({"kind": "status", "probability": -0.1}, "'probability'"),
        ({"kind": "status", "status": 600}, "'status'"),
        ({"kind": "status", "endpoint": "workflows/launch_everything"}, "'endpoint'"),
        ({"kind": "status", "endpoint": "../_emulator/reset"}, "'endpoint'"),
        ({"kind": "profile_error", "endpoint": "workflows/start"}, "'endpoint'"),
        ({"kind": "reorder_results", "endpoint": "workflows/import_and_start"}, "'endpoint'"),
    ],
)
def test_a_bad_fault_rule_is_a_400_naming_its_field(altcraft_emulator, rule, field):
    """A rule that could never fire (an endpoint the API has not, a batch-item kind on a single-profile
    method) is refused, not kept silently: a test relying on it would pass without its fault."""
    response = requests.post(f"{altcraft_emulator.url}/_emulator/faults", json={"rules": [rule]}, timeout=10)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert altcraft_emulator.state()["faults"] == []


@pytest.mark.parametrize(
    "endpoint", ["workflows/import_and_start_batch/", "campaigns/triggers/start_batch", "tasks/status", "*"]
)
def test_fault_rules_for_every_api_method_are_accepted(altcraft_emulator, endpoint):
    altcraft_emulator.add_faults({"kind": "status", "endpoint": endpoint})
    if "batch" in endpoint or endpoint == "*":
        altcraft_emulator.add_faults({"kind": "profile_error", "endpoint": endpoint})


def test_profile_error_fails_selected_items_of_a_trigger_send_too(altcraft_emulator):
    altcraft_emulator.seed(
        triggers=[{"id": 7, "db_id": 1}],
        profiles=[{"db_id": 1, "fields": {"email": f"t{i}@example.org"}} for i in range(3)],
    )
    altcraft_emulator.add_faults(
        {"endpoint": "campaigns/triggers/start_batch", "kind": "profile_error", "every": 2}
    )
    items = [{"email": f"t{i}@example.org"} for i in range(3)]
    result = ok(altcraft_emulator.post("campaigns/triggers/start_batch", {"trigger_id": 7, "data": items}))[
        "result"
    ]
    assert [r["error"] for r in result] == [0, 500, 0]
    assert [e["key"] for e in altcraft_emulator.journal()] == ["t0@example.org", "t2@example.org"]


def test_a_reset_restarts_the_random_source_from_the_command_line_seed():
    """docs/emulator.md: the same seed, rules and requests fire the same faults; `--random-seed` seeds the
    source at start and on every reset."""

    def pattern(emulator) -> list[int]:
        emulator.reset()
        emulator.add_faults({"endpoint": "databases/list", "kind": "status", "probability": 0.5})
        return [emulator.post("databases/list", {}).status_code for _ in range(16)]

    with emulator_process("--random-seed", "5") as five, emulator_process("--random-seed", "6") as six:
        first = pattern(five)
        assert pattern(five) == first and {200, 500} == set(first)
        assert pattern(six) != first


def test_the_emulator_stops_promptly_while_a_latency_rule_holds_a_request():
    """A test that gave up on a held request must not make the teardown wait for the rule's delay (on
    main: SIGTERM waited for it, then `emulator_process` killed the server after 10 s)."""
    with emulator_process() as emulator:
        emulator.add_faults({"endpoint": "databases/list", "kind": "latency", "latency_ms": 60_000})
        with pytest.raises(requests.Timeout):
            emulator.post("databases/list", {}, timeout=0.3)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5
