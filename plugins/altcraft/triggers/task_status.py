"""Deferrable wait for asynchronous Altcraft tasks (``tasks/status``) in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from altcraft.api.errors import AltcraftApiError, AltcraftError

#: The state an event reports for a task Altcraft answered 404 for.
UNKNOWN = "unknown"


def timed_out(event: Mapping[str, Any], timeout: float) -> str:
    """Why the try fails when the trigger's ``event`` is a timeout after ``timeout`` seconds: how many tasks
    were still running, and what each one last reported that we do not recognise."""
    unrecognised = "".join(
        f"; task {task_id} still reported unrecognised status {shown} after {timeout:g} s"
        for task_id, shown in (event.get("unrecognised") or {}).items()
    )
    return (
        f"{len(event.get('pending', []))} Altcraft task(s) still running after {timeout:g} s{unrecognised}; "
        "the next try re-attaches to them instead of submitting again"
    )


class AltcraftTaskTrigger(BaseTrigger):
    """Fire once every task in ``task_ids`` has reached a terminal state (or is unknown to Altcraft: 404),
    or ``timeout`` seconds passed.

    The event carries only task ids and states (no contact data); the resumed operator reads the
    per-profile results itself. A timeout's event also names the tasks whose last status was one we do
    not recognise (``unrecognised``: task id → the status as `TaskStatus.unrecognised` quotes it).
    """

    def __init__(
        self,
        task_ids: list[str],
        altcraft_conn_id: str = "altcraft_default",
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.task_ids = list(task_ids)
        self.altcraft_conn_id = altcraft_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_ids": self.task_ids,
                "altcraft_conn_id": self.altcraft_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from altcraft.hooks.altcraft_async import AltcraftAsyncHook

        pending = set(self.task_ids)
        states: dict[str, str] = {}
        unrecognised: dict[str, str] = {}
        interval = self.poll_interval
        started = time.monotonic()
        # The first look waits one interval: the tasks were just created, and a trigger that fires within
        # moments of the deferral can race the scheduler (apache/airflow#67287).
        await asyncio.sleep(self.poll_interval)
        async with AltcraftAsyncHook(self.altcraft_conn_id) as hook:
            while pending:
                for task_id in sorted(pending):
                    try:
                        status = await hook.get_task_status(task_id)
                    except AltcraftError as exc:
                        self.log.warning("Reading Altcraft task %s failed: %s", task_id, exc)
                        if isinstance(exc, AltcraftApiError) and exc.code == 404:
                            # Altcraft no longer knows it: waiting cannot help; the operator settles it
                            states[task_id] = UNKNOWN
                            pending.discard(task_id)
                        continue
                    if (shown := status.unrecognised) is not None:
                        unrecognised[task_id] = shown
                    else:
                        unrecognised.pop(task_id, None)
                    if status.state.is_terminal:
                        states[task_id] = status.state.value
                        pending.discard(task_id)
                if pending and self.timeout is not None and time.monotonic() - started > self.timeout:
                    still = {
                        task_id: unrecognised[task_id] for task_id in sorted(pending & unrecognised.keys())
                    }
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "pending": sorted(pending),
                            "states": states,
                            "unrecognised": still,
                        }
                    )
                    return
                if pending:
                    self.log.info(
                        "%d of %d Altcraft task(s) still running after %.0fs",
                        len(pending),
                        len(self.task_ids),
                        time.monotonic() - started,
                    )
                    await asyncio.sleep(interval)
                    interval = min(interval * 1.5, self.max_poll_interval)
        yield TriggerEvent({"status": "done", "states": states})
