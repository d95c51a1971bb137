"""AltcraftAsyncHook: same protocol, same retry policy, over aiohttp (launches and reads through `call`)."""

from __future__ import annotations

import asyncio

import pytest

from altcraft.api.errors import AltcraftApiError, AltcraftDeliveryUncertain
from altcraft.api.models import BatchLaunchRequest, TaskState
from altcraft.hooks.altcraft_async import AltcraftAsyncHook
from tests.async_calls import launch_batch, read_scenario, submit_batch_task

WELCOME = 12


def run(coro):
    return asyncio.run(coro)


def _batch(*emails: str) -> BatchLaunchRequest:
    return BatchLaunchRequest(
        workflow_id=WELCOME, matching="email", data=[{"email": e, "data": {}} for e in emails]
    )


def test_submit_and_poll_task(emulator):
    emulator.config(task_delay_seconds=0.05)

    async def scenario():
        async with AltcraftAsyncHook() as hook:
            task_id = await submit_batch_task(hook, _batch("x@example.org", "y@example.org"))
            for _ in range(200):
                status = await hook.get_task_status(task_id)
                if status.state.is_terminal:
                    return status
                await asyncio.sleep(0.05)
            raise AssertionError("task never finished")

    status = run(scenario())
    assert status.state is TaskState.SUCCEEDED
    assert [r.ok for r in status.profile_results()] == [True, True]
    assert len(emulator.journal(scenario_id=WELCOME)) == 2


def test_reads_are_retried(emulator):
    emulator.add_faults(
        {"endpoint": "workflows/list", "kind": "status", "status": 503, "every": 1, "count": 2}
    )

    async def scenario():
        async with AltcraftAsyncHook() as hook:
            return await read_scenario(hook, WELCOME)

    assert run(scenario()).id == WELCOME
    assert emulator.state()["faults"][0]["hits"] == 2


def test_unknown_task_is_a_404(emulator):
    async def scenario():
        async with AltcraftAsyncHook() as hook:
            await hook.get_task_status("task_nope")

    with pytest.raises(AltcraftApiError) as err:
        run(scenario())
    assert err.value.code == 404


def test_launch_dropped_after_processing_is_uncertain(emulator):
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "every": 1, "count": 1}
    )

    async def scenario():
        async with AltcraftAsyncHook() as hook:
            await launch_batch(hook, _batch("u@example.org"), keys=["email:u@example.org"])

    with pytest.raises(AltcraftDeliveryUncertain) as err:
        run(scenario())
    assert err.value.keys == ["email:u@example.org"]
    assert len(emulator.journal(scenario_id=WELCOME)) == 1


@pytest.mark.parametrize(("token_in_body", "token_in"), [(True, ["header", "body"]), (False, ["header"])])
def test_token_in_body_extra_decides_whether_the_body_carries_the_token(
    emulator, monkeypatch, token_in_body, token_in
):
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(token_in_body=token_in_body))

    async def scenario():
        async with AltcraftAsyncHook() as hook:
            return await launch_batch(hook, _batch("t@example.org"))

    assert run(scenario()).result[0].ok
    assert [entry["token_in"] for entry in emulator.journal(scenario_id=WELCOME)] == [token_in]
