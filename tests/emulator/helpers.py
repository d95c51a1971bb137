"""Small assertions shared by the emulator tests."""

from __future__ import annotations

from typing import Any

import requests

OK_TEXT = "Successful operation"


def ok(response: requests.Response) -> dict[str, Any]:
    """The body of a successful Altcraft answer (HTTP 200, error 0)."""
    body = response.json()
    assert response.status_code == 200, body
    assert body["error"] == 0 and body["error_text"] == OK_TEXT, body
    return body


def error(
    response: requests.Response, code: int, text: str = "", http_status: int | None = None
) -> dict[str, Any]:
    """The body of an error answer with ``code`` (mirrored as HTTP status unless told otherwise)."""
    body = response.json()
    assert response.status_code == (code if http_status is None else http_status), body
    assert body["error"] == code, body
    assert text in body["error_text"], body
    return body
