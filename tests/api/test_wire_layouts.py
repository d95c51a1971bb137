"""Batch item layouts, the verdict on a finished task without per-contact results, documented list answers."""

from __future__ import annotations

import json

import pytest

from altcraft.api.layouts import BatchItemLayout, batch_item, flat_item
from altcraft.api.matching import MatchingMode, undocumented_matching
from altcraft.api.models import Page, Scenario, TaskStatus
from altcraft.api.protocol import parse_response
from altcraft.api.task_results import task_verdict

DATA = {"_fname": "Anna", "subscriptions": [{"channel": "email", "email": "a@x.org", "resource_id": 1}]}


def test_flat_item_is_the_documented_import_batch_layout():
    assert flat_item({"email": "a@x.org"}, DATA) == {**DATA, "email": "a@x.org"}
    assert flat_item({"phone": "+79000000001"}, {"_fname": "B"}) == {
        "_fname": "B",
        "phones": ["+79000000001"],
        "phone": "+79000000001",
    }


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("hedged", {"field_value": "A-1", "data": {"_fname": "Anna", "CRM_ID": "A-1"}}),
        ("nested", {"field_value": "A-1", "data": {"_fname": "Anna"}}),
        ("data", {"data": {"_fname": "Anna", "CRM_ID": "A-1"}}),
        ("flat", {"_fname": "Anna", "CRM_ID": "A-1", "field_value": "A-1"}),
    ],
)
def test_scenario_batch_layouts_for_custom_matching(layout, expected):
    assert batch_item({"field_value": "A-1"}, {"_fname": "Anna"}, layout, key_field="CRM_ID") == expected


def test_hedged_keeps_the_mapped_phones_and_adds_the_email():
    item = batch_item({"email": "a@x.org"}, {"phones": ["+7900"]}, BatchItemLayout.HEDGED)
    assert item == {"email": "a@x.org", "data": {"phones": ["+7900"], "email": "a@x.org"}}
    item = batch_item({"phone": "+7901"}, {"phones": ["+7900"]})
    assert item["data"]["phones"] == ["+7900"] and item["phone"] == "+7901"


def test_documented_matching_per_endpoint():
    assert undocumented_matching("workflows/start", MatchingMode.PHONE) is None
    assert "not documented for workflows/start" in undocumented_matching("workflows/start", "email_sub")
    assert undocumented_matching("workflows/import_and_start_batch", "email_profile") is None
    assert undocumented_matching("workflows/import_and_start_batch_task", "custom_sub")
    assert undocumented_matching("profiles/import_batch", "push_sub") is None


def _keys(n: int) -> list[str]:
    return [f"email:user{i}@example.org" for i in range(n)]


def _status(result, status="completed"):
    return TaskStatus.model_validate({"task_id": "t-1", "status": status, "progress": 100, "result": result})


def test_per_profile_results_are_used_one_to_one():
    verdict = task_verdict(_status({"total": 2, "result": [{"error": 0}, {"error": 400}]}), _keys(2))
    assert [r.error for r in verdict.results] == [0, 400] and not verdict.uncertain


def test_counts_prove_success_only_when_total_matches_and_no_errors():
    assert task_verdict(
        _status({"errors": [], "total": 3, "type": "workflow"}, "success"), _keys(3)
    ).all_launched
    short = task_verdict(_status({"errors": [], "total": 2}), _keys(3))
    assert short.uncertain and "total=2" in short.reason and "do not prove" in short.reason
    errored = task_verdict(_status({"errors": [{"error": 400}], "total": 3}), _keys(3))
    assert errored.uncertain and "errors=" in errored.reason


def test_no_result_or_failed_task_is_uncertain_with_a_reason():
    assert "without a result" in task_verdict(_status(None), _keys(1)).reason
    assert "may have launched" in task_verdict(_status(None, "failed"), _keys(1)).reason
    assert (
        "1 per-contact result(s) for 2" in task_verdict(_status({"result": [{"error": 0}]}), _keys(2)).reason
    )


def test_import_batch_request_sends_flat_items():
    from altcraft.api.models import ImportBatchRequest

    request = ImportBatchRequest(
        db_id=1,
        matching="custom",
        field_name="CRM_ID",
        data=[{"field_value": "A-1", "data": {"_fname": "Anna"}}, {"email": "b@x.org", "_fname": "B"}],
    )
    assert request.to_body()["data"] == [
        {"_fname": "Anna", "CRM_ID": "A-1", "field_value": "A-1"},
        {"email": "b@x.org", "_fname": "B"},
    ]


def test_undocumented_matching_for_the_delivery_endpoint_fails_at_parse_time():
    from altcraft.api.matching import check_launch_matching

    check_launch_matching("batch", "email_profile")
    try:
        check_launch_matching("single", "email_sub")
    except ValueError as exc:
        assert "not documented for workflows/import_and_start" in str(exc)
        assert "allow_undocumented_matching" in str(exc)
    else:
        raise AssertionError("email_sub accepted for single")
    check_launch_matching("async", "push_sub", allow_undocumented=True)


#: The two answers of "Get scenarios list" (developer-guide/automation-scenarios/95715617), v74 and current,
#: as the pages print them (v74's "error text" included).
SCENARIO_LISTS = [
    {
        "data": [
            {
                "id": 10,
                "name": "Government tip",
                "list_id": 1,
                "is_active": True,
                "ui_tags": ["B2C"],
                "mode": "skip",
                "groups": [{"ID": 2, "title": "Sales and promotion"}],
                "nodes": [
                    {"name": "DEFAULT_START_NODE_TITLE", "type": "start"},
                    {"title": "Guidelines", "type": "feedback"},
                ],
            }
        ],
        "error": 0,
        "error text": "Operation completed successfully",
        "next_from_id": 11,
        "total": 3,
    },
    {
        "data": [
            {
                "id": 15,
                "name": "Test scenario",
                "list_id": 1,
                "is_active": True,
                "ui_tags": ["tag1", "tag2"],
                "mode": "skip_in_any_case",
                "groups": [{"id": 1, "name": "Test group"}],
                "nodes": [{"name": "Node 1", "type": "campaign"}],
            }
        ],
        "error": 0,
        "error_text": "Successful operation",
        "total_count": 1,
    },
]


@pytest.mark.parametrize(
    ("answer", "total", "next_from_id"), zip(SCENARIO_LISTS, (3, 1), (11, None), strict=True)
)
def test_both_documented_scenario_list_answers_are_read(answer, total, next_from_id):
    page = Page.model_validate(parse_response("workflows/list", 200, {}, json.dumps(answer).encode()))
    assert (page.total, page.next_from_id) == (total, next_from_id)
    [scenario] = [Scenario.model_validate(item) for item in page.data]
    assert (scenario.db_id, scenario.is_active, len(scenario.nodes)) == (
        1,
        True,
        len(answer["data"][0]["nodes"]),
    )
    assert scenario.groups[0].id is not None and scenario.groups[0].name
