"""Run the hooks with a distinctive token through success and every error path; find it nowhere."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback

import pytest

from altcraft.api.errors import AltcraftError
from altcraft.api.models import BatchLaunchRequest, ImportAndStartRequest
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.hooks.altcraft_async import AltcraftAsyncHook
from tests.async_calls import read_scenario

CANARY = "TOKEN-canary-7f3a9c1e"
WELCOME = 12

FAULTS = [
    None,
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 429, "retry_after": 0},
    {"kind": "html", "status": 502},
    {"kind": "malformed"},
    {"kind": "drop_before"},
    {"kind": "drop_after"},
    {"kind": "profile_error", "code": 400, "text": "bad profile", "every": 1},
]


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(getattr(exc, "__dict__", {}))


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f["kind"] if f else "success")
def test_token_never_in_logs_errors_or_results(altcraft_emulator, monkeypatch, caplog, capfd, fault):
    altcraft_emulator.seed(tokens=[{"token": CANARY, "databases": "*", "scenarios": "*"}])
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT",
        json.dumps(
            {
                "conn_type": "altcraft",
                "host": altcraft_emulator.url,
                "password": CANARY,
                "extra": {"backoff_initial": 0, "max_retries": 1, "timeout": 2},
            }
        ),
    )
    if fault:
        altcraft_emulator.add_faults({"endpoint": "*", "every": 1, "count": 2, **fault})
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    calls = [
        lambda h: h.test_connection(),
        lambda h: h.list_scenarios(),
        lambda h: h.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="a@example.org")
        ),
        lambda h: h.import_and_start_batch(
            BatchLaunchRequest(
                workflow_id=WELCOME, matching="email", data=[{"email": "b@example.org", "data": {}}]
            )
        ),
        lambda h: h.import_and_start(
            ImportAndStartRequest(workflow_id=999, matching="email", email="c@example.org")
        ),
    ]
    hook = AltcraftHook()
    for call in calls:
        try:
            seen.append(repr(call(hook)))
        except AltcraftError as exc:
            seen.append(_exception_text(exc))

    async def run_async():
        async with AltcraftAsyncHook() as ahook:
            for coro in (read_scenario(ahook, WELCOME), ahook.get_task_status("task_unknown")):
                try:
                    seen.append(repr(await coro))
                except AltcraftError as exc:
                    seen.append(_exception_text(exc))

    asyncio.run(run_async())
    out, err = capfd.readouterr()
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    haystack = "\n".join([*seen, *logged, out, err])
    assert len(seen) == len(calls) + 2, "every call left a result or an error to search"
    requests_logged = {m.split('"POST ')[1].split()[0] for m in logged if '"POST /api/v1.1/' in m}
    assert {"/api/v1.1/workflows/list", "/api/v1.1/workflows/import_and_start"} <= requests_logged, (
        "the DEBUG log lines of the requests (URL and status) were not captured: the test would prove nothing"
    )
    assert CANARY not in haystack
