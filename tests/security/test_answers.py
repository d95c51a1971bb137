"""Defect 3: every answer that does not parse is a typed error; after a launch, delivery-uncertain."""

from __future__ import annotations

import pytest
from hostile_server import TOKEN, http_answer, run_async

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftError
from altcraft.api.models import BatchLaunchRequest, BatchResult, ImportAndStartRequest, ProfileResult
from altcraft.hooks.altcraft import AltcraftHook
from tests.async_calls import launch_batch

ODD_SHAPES = {
    "result is a dict": {"error": 0, "result": {"error": 0}},
    "result is null": {"error": 0, "result": None},
    "a result item is a string": {"error": 0, "result": ["ok"]},
    "error is text": {"error": "invalid token", "error_text": f"bad {TOKEN}"},
    "a number where text is expected": {"error": 0, "error_text": 5, "profile_id": {"id": 1}, "result": [1]},
    "a result item's error is text": {"error": 0, "result": [{"error": "no", "error_text": []}]},
    "data is a list of numbers": {"error": 0, "data": [1, 2], "result": [{"error": 0}], "next_from_id": "x"},
    "a JSON array": [{"error": 0}],
}
KEYS = ["email:a@example.org"]


def _batch() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


def _single() -> ImportAndStartRequest:
    return ImportAndStartRequest(workflow_id=12, matching="email", email="a@example.org")


@pytest.fixture(params=ODD_SHAPES)
def odd(request, serve):
    return serve(lambda seen: http_answer(200, ODD_SHAPES[request.param]), max_retries=0)


def test_unexpected_answer_after_a_launch_is_delivery_uncertain(request, odd):
    hook = AltcraftHook()
    launches = {
        "batch": lambda: hook.import_and_start_batch(_batch(), keys=KEYS),
        "single": lambda: hook.import_and_start(_single(), keys=KEYS),
        "task": lambda: hook.submit_import_and_start_batch_task(_batch(), keys=KEYS),
        "async batch": lambda: run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS)),
    }
    for name, launch in launches.items():
        try:
            result = launch()
        except AltcraftDeliveryUncertain as uncertain:
            assert uncertain.keys == KEYS
            assert TOKEN not in str(uncertain)
        else:  # the shape is a valid answer for this endpoint (e.g. `result` is not read by a single launch)
            assert "batch" not in name or request.node.callspec.params["odd"] == "data is a list of numbers"
            assert isinstance(result, BatchResult | ProfileResult | str), (name, result)


def test_unexpected_answer_to_a_read_is_a_typed_error(odd):
    hook = AltcraftHook()
    for read in (
        hook.get_scenario,
        lambda _: hook.list_scenarios(),
        lambda _: hook.list_databases(),
        hook.get_database_fields,
        lambda _: hook.get_task_status("t1").profile_results(),
    ):
        try:
            read(12)
        except AltcraftError as exc:
            assert TOKEN not in str(exc)
    _, message = hook.test_connection()
    assert TOKEN not in message
