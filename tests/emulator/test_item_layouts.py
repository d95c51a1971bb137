"""Scenario batch items in every documented layout, strict mode, and the task result layouts."""

from __future__ import annotations

import time

import pytest

from altcraft.api.layouts import BatchItemLayout, batch_item
from tests.emulator.helpers import error, ok


@pytest.mark.parametrize("layout", list(BatchItemLayout))
@pytest.mark.parametrize(
    ("matching", "match", "extra"),
    [
        ("email", {"email": "lay@example.org"}, {}),
        ("phone", {"phone": "+79001112233"}, {}),
        ("custom", {"field_value": "C-9"}, {"field_name": "CRM_ID"}),
    ],
)
def test_every_layout_launches_and_stores_the_fields(altcraft_emulator, layout, matching, match, extra):
    item = batch_item(match, {"_fname": "Lay"}, layout, key_field=extra.get("field_name"))
    body = {"workflow_id": 12, "matching": matching, **extra, "data": [item, item]}
    first, second = ok(altcraft_emulator.post("workflows/import_and_start_batch", body))["result"]
    assert first["error"] == second["error"] == 0 and first["profile_id"] == second["profile_id"]
    [profile] = altcraft_emulator.profiles(1)
    assert profile["fields"]["_fname"] == "Lay"
    assert len(altcraft_emulator.journal(12)) == 2


def test_strict_wants_the_key_on_the_item_and_documented_matching(altcraft_emulator):
    altcraft_emulator.config(strict=True)
    data_only = batch_item({"email": "s@example.org"}, {}, BatchItemLayout.DATA)
    [result] = ok(
        altcraft_emulator.post("workflows/import_and_start_batch", {"workflow_id": 12, "data": [data_only]})
    )["result"]
    assert result == {"error": 400, "error_text": "matching 'email' needs 'email'"}
    body = {"id": 12, "matching": "email_sub", "email": "s@example.org"}
    error(altcraft_emulator.post("workflows/start", body), 400, "not documented for workflows/start")
    altcraft_emulator.config(strict=False)
    error(altcraft_emulator.post("workflows/start", body), 404, "profile not found")


def _finished(emulator, task_id):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = ok(emulator.post("tasks/status", {"task_id": task_id}))["data"]
        if data["status"] not in ("queued", "running"):
            return data
        time.sleep(0.05)
    raise AssertionError("task did not finish")


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (
            "counts",
            {
                "errors": [{"error": 400, "error_text": "unknown field 'NOPE' in database 1"}],
                "total": 2,
                "type": "workflow",
            },
        ),
        ("none", None),
    ],
)
def test_task_result_layouts(altcraft_emulator, layout, expected):
    altcraft_emulator.config(task_result=layout, task_delay_seconds=0.05, task_success_status="success")
    items = [{"email": "t1@example.org"}, {"email": "t2@example.org", "NOPE": 1}]
    answer = ok(
        altcraft_emulator.post("workflows/import_and_start_batch_task", {"workflow_id": 12, "data": items})
    )
    data = _finished(altcraft_emulator, answer["data"]["task_id"])
    assert (data["status"], data["result"]) == ("success", expected)
