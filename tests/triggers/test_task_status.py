"""The deferrable wait for Altcraft tasks (`AltcraftTaskTrigger`) against the HTTP emulator."""

from __future__ import annotations

import asyncio
import logging

from airflow.triggers.base import TriggerEvent

from altcraft.triggers.task_status import AltcraftTaskTrigger, timed_out


async def _events(trigger: AltcraftTaskTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def test_a_task_status_we_do_not_recognise_is_waited_on_until_the_timeout_which_names_it(emulator, caplog):
    """Never guessed finished or failed: the task is waited for as running; the timeout's event and the
    try's failure name the status it last reported, and it is warned of once."""
    emulator.config(task_success_status="completed_with_errors", task_delay_seconds=0.01)
    answer = emulator.post(
        "workflows/import_and_start_batch_task", {"workflow_id": 12, "data": [{"email": "a@example.org"}]}
    )
    task_id = answer.json()["data"]["task_id"]
    trigger = AltcraftTaskTrigger([task_id], poll_interval=0.02, max_poll_interval=0.05, timeout=0.3)

    with caplog.at_level(logging.WARNING, logger="altcraft.api.protocol"):
        [event] = asyncio.run(_events(trigger))

    assert event.payload == {
        "status": "timeout",
        "pending": [task_id],
        "states": {},
        "unrecognised": {task_id: "'completed_with_errors'"},
    }
    assert timed_out(event.payload, 0.3) == (
        f"1 Altcraft task(s) still running after 0.3 s; task {task_id} still reported unrecognised status "
        "'completed_with_errors' after 0.3 s; the next try re-attaches to them instead of submitting again"
    )
    warned = [r.getMessage() for r in caplog.records if r.name == "altcraft.api.protocol"]
    assert len(warned) == 1 and task_id in warned[0], warned
