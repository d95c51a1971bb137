"""The token is removed from server text in every form a server may quote it: other letter cases, JSON
escapes, URL quoting, HTML escapes, and with spaces in it (before a quoted body's whitespace is collapsed)."""

from __future__ import annotations

import html
import json
from urllib.parse import quote, quote_plus

import pytest

from altcraft.api.errors import AltcraftError
from altcraft.api.protocol import parse_response

TOKENS = [
    "TOKEN-plain-5b1e0c",
    'tok"en\\quote-5b1e',
    "tök-én-ünicode-5b1e",
    "tok en  two\tspaces",
    "tok<&>/+=5b1e",
]


def _forms(token: str) -> dict[str, str]:
    return {
        "raw": token,
        "upper": token.upper(),
        "lower": token.lower(),
        "json": json.dumps(token)[1:-1],
        "json-unicode": json.dumps(token, ensure_ascii=False)[1:-1],
        "url": quote(token, safe=""),
        "url-plus": quote_plus(token),
        "html": html.escape(token),
    }


def _answers(token: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    url = quote(token.lower(), safe="")
    return {
        "error_text": (401, {}, json.dumps({"error": 401, "error_text": f"bad {token}"}).encode()),
        "error_text object": (401, {}, json.dumps({"error": 5, "error_text": {"token": [token]}}).encode()),
        "error_text url": (401, {}, json.dumps({"error": 401, "error_text": f"GET /?t={url}"}).encode()),
        "html body": (502, {}, f"<pre>bad token {html.escape(token)}</pre>".encode()),
        "text body": (500, {}, f"upstream refused token={token} at once".encode()),
        "redirect": (302, {"Location": f"https://{url}.evil.example/x"}, b""),
        "per-item upper": (
            200,
            {},
            json.dumps(
                {"error": 0, "result": [{"error": 400, "error_text": f"bad {token.upper()}"}]}
            ).encode(),
        ),
    }


@pytest.mark.parametrize("token", TOKENS)
def test_no_form_of_the_token_survives_in_what_an_answer_becomes(token):
    for name, (status, headers, body) in _answers(token).items():
        try:
            kept = json.dumps(parse_response("x", status, headers, body, secret=token), ensure_ascii=False)
        except AltcraftError as error:
            kept = str(error)
        assert "***" in kept, (name, kept)
        leaked = [form for form, text in _forms(token).items() if text in kept]
        assert not leaked, (name, leaked, kept)
