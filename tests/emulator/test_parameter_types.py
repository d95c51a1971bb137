"""Request parameters of another type than the developer guide's tables give are refused, as a 400 in the
guide's error layout, and nothing is imported or launched. Quotes and pages: docs/api-conformance.md
("Request parameter types")."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import error, ok

ANNA = "anna@example.org"
LAUNCH = {"workflow_id": 12, "matching": "email", "email": ANNA, "data": {"email": ANNA}}
BATCH = {"workflow_id": 12, "matching": "email", "data": [{"email": ANNA}]}

#: endpoint, a body the emulator accepts, the parameter, a value of another type than its documented one
WRONG: list[tuple[str, dict[str, Any], str, Any]] = [
    ("workflows/import_and_start", LAUNCH, "workflow_id", "12"),
    ("workflows/import_and_start_batch", BATCH, "workflow_id", "12"),
    ("workflows/import_and_start_batch_task", BATCH, "workflow_id", 12.5),
    ("workflows/import_and_start_batch", BATCH, "skip_triggers", "false"),
    ("workflows/import_and_start_batch", BATCH, "skip_invalid_subscriptions", 1),
    ("workflows/import_and_start", LAUNCH, "detect_geo", "true"),
    ("workflows/import_and_start_batch", BATCH, "content", "promo"),
    ("workflows/import_and_start", LAUNCH, "custom_data", ["x"]),
    ("workflows/import_and_start_batch", BATCH, "resource_id", "1"),
    ("workflows/import_and_start_batch", BATCH, "matching", ["email"]),
    ("workflows/start", {"id": 12, "email": ANNA}, "id", "12"),
    ("workflows/start", {"id": 12, "email": ANNA}, "subscription_filter", "email"),
    ("profiles/import", {"db_id": 1, "email": ANNA, "data": {}}, "db_id", "1"),
    ("profiles/import", {"db_id": 1, "email": ANNA, "data": {}}, "matching", []),
    ("profiles/import_batch", {"db_id": 1, "data": [{"email": ANNA}]}, "field_name", 7),
    ("profiles/get", {"db_id": 1, "email": ANNA}, "db_id", True),
    ("databases/get", {"id": 1}, "id", "1"),
    ("workflows/list", {}, "limit", "1"),
    ("workflows/list", {}, "from_id", "12"),
    ("workflows/activate", {"id": 12}, "skip_profiles", "yes"),
    ("tasks/status", {"task_id": "task_x"}, "task_id", 5),
    # a trigger id given as text used to import the profiles without sending the trigger
    (
        "campaigns/triggers/import_and_start_batch",
        {"trigger_id": 8, "data": [{"email": ANNA}]},
        "trigger_id",
        "8",
    ),
]


@pytest.mark.parametrize(("endpoint", "body", "name", "value"), WRONG)
def test_a_parameter_of_another_type_is_refused(altcraft_emulator, endpoint, body, name, value):
    altcraft_emulator.seed(
        profiles=[{"db_id": 1, "fields": {"email": ANNA}}], triggers=[{"id": 8, "db_id": 1}]
    )
    answer = error(altcraft_emulator.post(endpoint, {**body, name: value}), 400, f"'{name}'")
    assert set(answer) == {"error", "error_text"}
    assert altcraft_emulator.journal() == []


@pytest.mark.parametrize(("endpoint", "body"), [("workflows/import_and_start", LAUNCH)])
def test_the_documented_types_and_null_are_accepted(altcraft_emulator, endpoint, body):
    documented = {"skip_triggers": True, "detect_geo": False, "content": {"a": "1"}, "resource_id": None}
    ok(altcraft_emulator.post(endpoint, {**body, **documented}))
    assert len(altcraft_emulator.journal()) == 1
