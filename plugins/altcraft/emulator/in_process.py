"""The Altcraft API calls on an in-process :class:`~altcraft.emulator.state.Emulator`: no HTTP, no Airflow.

For fast tests of the delivery: the requests are encoded and the answers parsed exactly as the hook does
(:mod:`altcraft.api.protocol`), only the bytes never leave the process. Transport faults, retries and
timeouts are the HTTP emulator's business; test those against the hook over HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from altcraft.api.calls import AltcraftCalls
from altcraft.api.protocol import encode_body, parse_response
from altcraft.emulator.state import DEFAULT_TOKEN, ApiError, Emulator


class InProcessAltcraft(AltcraftCalls):
    """Every API call of the hook, answered by ``emulator``'s state.

    An asynchronous task moves one tenth of the way on each ``tasks/status`` read (the HTTP emulator
    moves it in the background instead).
    """

    base_url = "http://altcraft.in-process"

    def __init__(self, emulator: Emulator | None = None, *, token: str = DEFAULT_TOKEN) -> None:
        self.emulator = emulator or Emulator({}, token=token)
        self.token = token
        self.requests_made = 0

    def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        *,
        raw_data: bytes | None = None,
        launching: bool = False,
        keys: Sequence[str] = (),
    ) -> dict[str, Any]:
        self.requests_made += 1
        request = json.loads(encode_body(body, token=None, raw_data=raw_data))
        if endpoint == "tasks/status" and isinstance(request.get("task_id"), str):
            self.emulator.advance_task(request["task_id"])
        try:
            status, answer = 200, self.emulator.call(endpoint, request, self.token, uuid.uuid4().hex)
        except ApiError as exc:
            status, answer = exc.code, exc.envelope()
        return parse_response(endpoint, status, {}, json.dumps(answer).encode(), secret=self.token)
