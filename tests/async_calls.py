"""Launches and reads over AltcraftAsyncHook.call, which names only what triggers use (``tasks/status``):
the same endpoints, bodies and answer parsing as AltcraftHook's, to test the aiohttp transport with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from altcraft.api.models import BatchLaunchRequest, BatchResult, Scenario
from altcraft.api.protocol import scenario_of, task_id_of


async def launch_batch(hook: Any, request: BatchLaunchRequest, keys: Sequence[str] = ()) -> BatchResult:
    """``workflows/import_and_start_batch``."""
    return await hook.call(
        "workflows/import_and_start_batch",
        request.to_body(),
        launching=True,
        keys=keys,
        parse=BatchResult.model_validate,
    )


async def submit_batch_task(hook: Any, request: BatchLaunchRequest, keys: Sequence[str] = ()) -> str:
    """``workflows/import_and_start_batch_task``: the Altcraft task id."""
    return await hook.call(
        "workflows/import_and_start_batch_task",
        request.to_body(),
        launching=True,
        keys=keys,
        parse=task_id_of,
    )


async def read_scenario(hook: Any, scenario_id: int) -> Scenario | None:
    """One scenario by id (``workflows/list``)."""
    return await hook.call(
        "workflows/list",
        {"from_id": scenario_id, "limit": 1},
        parse=lambda answer: scenario_of(answer, scenario_id),
    )
