"""Batch launches (per-item results in order), the asynchronous task variant, and batch throughput."""

from __future__ import annotations

import json
import time

import pytest
import requests

from .helpers import error, ok


def _items(count, start=0):
    return [
        {"email": f"p{i}@example.org", "data": {"_fname": f"P{i}", "LOYALTY": i}}
        for i in range(start, start + count)
    ]


def test_batch_answers_one_entry_per_item_in_order_and_launches_only_good_items(altcraft_emulator):
    altcraft_emulator.seed(
        profiles=[
            {"db_id": 1, "fields": {"email": "twin@example.org"}},
            {
                "db_id": 1,
                "subscriptions": [{"channel": "email", "resource_id": 1, "email": "twin@example.org"}],
            },
        ]
    )
    items = [
        {"email": "a@example.org", "data": {"_fname": "A"}},
        {"email": "b@example.org", "data": {"NOPE": 1}},
        {"data": {"_fname": "no key"}},
        {"email": "twin@example.org"},
        "not an object",
        {"email": "c@example.org", "data": {"LOYALTY": "7"}},
    ]
    body = {"workflow_id": 12, "matching": "email", "skip_triggers": True, "content": {"x": 1}, "data": items}
    response = altcraft_emulator.post("workflows/import_and_start_batch", body)
    result = ok(response)["result"]
    assert [r["error"] for r in result] == [0, 400, 400, 409, 400, 0]
    assert "NOPE" in result[1]["error_text"] and "needs 'email'" in result[2]["error_text"]
    launched = altcraft_emulator.journal(12)
    assert [e["key"] for e in launched] == ["a@example.org", "c@example.org"]
    assert [e["profile_id"] for e in launched] == [result[0]["profile_id"], result[5]["profile_id"]]
    assert {e["request_id"] for e in launched} == {response.headers["X-Request-Id"]}
    assert {e["endpoint"] for e in launched} == {"workflows/import_and_start_batch"}
    assert len(altcraft_emulator.profiles(1)) == 4


def test_custom_matching_batch_with_top_level_field_name(altcraft_emulator):
    items = [{"field_value": f"A-{i}", "data": {"_fname": f"N{i}"}} for i in range(3)]
    body = {"workflow_id": 12, "matching": "custom", "field_name": "CRM_ID", "data": items}
    assert [
        r["error"] for r in ok(altcraft_emulator.post("workflows/import_and_start_batch", body))["result"]
    ] == [0] * 3
    assert sorted(p["fields"]["CRM_ID"] for p in altcraft_emulator.profiles(1)) == ["A-0", "A-1", "A-2"]


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"workflow_id": 99, "data": _items(2)}, 404, "workflow not found"),
        ({"workflow_id": 13, "data": _items(2)}, 400, "workflow is not active"),
        ({"workflow_id": 12, "db_id": 3, "data": _items(2)}, 400, "db_id"),
        ({"workflow_id": 12, "data": {"email": "x@example.org"}}, 400, "array"),
        ({"data": _items(2)}, 400, "'workflow_id' is required"),
        (
            {"workflow_id": 12, "matching": "custom", "field_name": "NOPE", "data": _items(2)},
            400,
            "unknown field 'NOPE'",
        ),
    ],
)
@pytest.mark.parametrize(
    "endpoint", ["workflows/import_and_start_batch", "workflows/import_and_start_batch_task"]
)
def test_whole_request_problems_are_top_level_and_nothing_is_processed(
    altcraft_emulator, endpoint, body, code, text
):
    error(altcraft_emulator.post(endpoint, body), code, text)
    assert altcraft_emulator.state()["tasks"] == []
    assert altcraft_emulator.journal() == [] and altcraft_emulator.profiles() == []


def _statuses_until_done(emulator, task_id, timeout=10.0):
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = ok(emulator.post("tasks/status", {"task_id": task_id}))["data"]
        if not seen or seen[-1] != data["status"]:
            seen.append(data["status"])
        if data["status"] not in ("queued", "running"):
            return seen, data
        time.sleep(0.02)
    raise AssertionError(f"task still {seen[-1]} after {timeout} s")


@pytest.mark.parametrize("terminal", ["completed", "success"])
def test_task_goes_queued_running_terminal_with_per_item_results(altcraft_emulator, terminal):
    altcraft_emulator.config(task_delay_seconds=0.4, task_success_status=terminal)
    items = [*_items(9), {"email": "bad@example.org", "data": {"NOPE": 1}}]
    response = altcraft_emulator.post(
        "workflows/import_and_start_batch_task", {"workflow_id": 12, "data": items}
    )
    task_id = ok(response)["data"]["task_id"]
    assert task_id.startswith("task_")
    seen, data = _statuses_until_done(altcraft_emulator, task_id)
    assert seen == ["queued", "running", terminal]
    assert data["progress"] == 100 and data["task_id"] == task_id
    assert data["result"]["total"] == 10
    assert [r["error"] for r in data["result"]["result"]] == [0] * 9 + [400]
    launched = altcraft_emulator.journal(12)
    assert [e["key"] for e in launched] == [f"p{i}@example.org" for i in range(9)]
    assert {(e["endpoint"], e["request_id"]) for e in launched} == {
        ("workflows/import_and_start_batch_task", response.headers["X-Request-Id"])
    }


def test_task_fails_when_its_scenario_is_deactivated_before_it_starts(altcraft_emulator):
    altcraft_emulator.config(task_delay_seconds=0.3)
    task_id = ok(
        altcraft_emulator.post(
            "workflows/import_and_start_batch_task", {"workflow_id": 12, "data": _items(3)}
        )
    )["data"]["task_id"]
    ok(altcraft_emulator.post("workflows/deactivate", {"id": 12}))
    _seen, data = _statuses_until_done(altcraft_emulator, task_id)
    assert data["status"] == "failed" and data["result"]["errors"] == ["workflow is not active"]
    assert altcraft_emulator.journal() == []


def test_a_held_task_stays_queued_past_its_delay_until_released(altcraft_emulator):
    altcraft_emulator.config(task_delay_seconds=0, tasks_held=True)
    task_id = ok(
        altcraft_emulator.post(
            "workflows/import_and_start_batch_task", {"workflow_id": 12, "data": _items(3)}
        )
    )["data"]["task_id"]
    for _ in range(5):
        time.sleep(0.05)
        assert ok(altcraft_emulator.post("tasks/status", {"task_id": task_id}))["data"]["status"] == "queued"
    assert altcraft_emulator.journal() == []
    altcraft_emulator.config(tasks_held=False)
    seen, _data = _statuses_until_done(altcraft_emulator, task_id)
    assert seen[-1] == "completed" and len(altcraft_emulator.journal(12)) == 3


def test_task_status_refusals(altcraft_emulator):
    error(altcraft_emulator.post("tasks/status", {"task_id": "task_nope"}), 404, "task not found")
    error(altcraft_emulator.post("tasks/status", {}), 400, "task_id")


def test_ten_thousand_profile_batch_is_answered_in_full(altcraft_emulator):
    """A maximum-size batch is answered item by item (its speed is a benchmark's business, not a test's)."""
    body = json.dumps({"workflow_id": 12, "matching": "email", "data": _items(10_000)})
    headers = {"Authorization": f"Bearer {altcraft_emulator.token}", "Content-Type": "application/json"}
    ok(altcraft_emulator.post("profiles/import_batch", {"db_id": 1, "data": _items(5_000, start=5_000)}))
    response = requests.post(
        altcraft_emulator.api_url("workflows/import_and_start_batch"), data=body, headers=headers, timeout=60
    )
    result = ok(response)["result"]
    assert len(result) == 10_000 and all(r["error"] == 0 for r in result)
    assert len(altcraft_emulator.profiles(1)) == 10_000
    assert len(altcraft_emulator.journal(12)) == 10_000
