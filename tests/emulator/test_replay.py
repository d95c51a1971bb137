"""The emulator answering in recorded shapes (``--replay``): a probe recording and the documented examples."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from altcraft.api.models import BatchLaunchRequest, ImportAndStartRequest
from altcraft.api.task_results import task_verdict
from altcraft.emulator.replay import reshape
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.testing import emulator_process

RECORDINGS = Path(__file__).parents[1] / "fixtures" / "recordings"


def test_reshape_keeps_real_values_in_the_recorded_shape():
    recorded = {
        "error": 0,
        "data": {"status": "success", "result": {"errors": [], "total": 9, "urls": ["u"]}},
    }
    real = {
        "error": 0,
        "data": {"task_id": "t", "status": "completed", "result": {"total": 2, "result": [{}]}},
    }
    assert reshape(recorded, real) == {
        "error": 0,
        "data": {"status": "success", "result": {"errors": [], "total": 2, "urls": ["u"]}},
    }
    assert reshape(
        {"result": [{"profile_id": "x"}]}, {"result": [{"profile_id": "a", "e": 1}, {"profile_id": "b"}]}
    ) == {"result": [{"profile_id": "a"}, {"profile_id": "b"}]}


def _wait(hook: AltcraftHook, task_id: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = hook.get_task_status(task_id)
        if status.state.is_terminal:
            return status
        time.sleep(0.1)
    raise AssertionError("task did not finish")


@pytest.fixture
def replaying(monkeypatch, request):
    with emulator_process("--replay", str(RECORDINGS / request.param)) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json())
        yield emulator


@pytest.mark.parametrize("replaying", ["probe_emulator_counts.json"], indirect=True)
def test_hook_against_a_probe_recording_with_counts_only_task_results(replaying):
    hook = AltcraftHook()
    items = [{"email": f"r{i}@example.org", "data": {"email": f"r{i}@example.org"}} for i in range(3)]
    request = BatchLaunchRequest(workflow_id=12, matching="email", data=items)
    assert [r.ok for r in hook.import_and_start_batch(request).result] == [True, True, True]
    status = _wait(hook, hook.submit_import_and_start_batch_task(request))
    assert status.status == "success"  # the recorded spelling
    assert status.result == {"errors": [], "total": 3, "type": "workflow"}
    assert task_verdict(status, [f"email:r{i}@example.org" for i in range(3)]).all_launched
    assert len(replaying.journal(12)) == 6


@pytest.mark.parametrize("replaying", ["documented_examples.json"], indirect=True)
def test_hook_against_the_documented_response_examples(replaying):
    hook = AltcraftHook()
    answer = hook.import_and_start(
        ImportAndStartRequest(
            workflow_id=12, matching="email", email="doc@example.org", data={"_fname": "Doc"}
        )
    )
    assert answer.ok and answer.profile_id
    items = [{"email": "d1@example.org", "data": {}}, {"email": "d2@example.org", "data": {}}]
    status = _wait(
        hook,
        hook.submit_import_and_start_batch_task(
            BatchLaunchRequest(workflow_id=12, matching="email", data=items)
        ),
    )
    # the documented task answer: counts and URLs, no per-profile list
    assert status.status == "completed" and status.profile_results() == []
    assert status.result["total"] == 2 and status.result["errors"] == [] and "urls" in status.result
    keys = ["email:d1@example.org", "email:d2@example.org", "email:d3@example.org"]
    assert task_verdict(status, keys[:2]).all_launched
    assert task_verdict(status, keys).uncertain
