"""`clean_document` passes over strings that cannot change (no token to remove, nothing unstorable to
replace: only server texts are looked at), and `parse_response` skips the search for the token when no form
of it can be in the body; this compares both with the plain walk that cleans every string, over well-formed
and hostile answers, with and without a token (in any of its forms) and unstorable characters.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import random
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from altcraft.api import protocol
from altcraft.api.protocol import SERVER_TEXT_KEYS, clean_document, parse_response, remove_token
from altcraft.masking import scrub
from altcraft.storable import replace_unstorable

SEED = 20261205
SECRETS = [None, "", "emulator-token", 'to"ken\\x', "Tok3n/ü", "tök en\t<&>+/5b1e"]


def _forms(secret: str) -> list[str]:
    """How a server may quote the token: other letter cases, escaped, quoted, base64-encoded."""
    json_forms = [
        json.dumps(cased, ensure_ascii=a)[1:-1] for cased in (secret, secret.upper()) for a in (1, 0)
    ]
    return [
        secret.upper(),
        secret.lower(),
        secret.swapcase(),
        *json_forms,
        quote(secret, safe=""),
        quote_plus(secret).lower(),
        quote(secret),
        html.escape(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(f"u:{secret}".encode()).decode().rstrip("="),
        base64.b64encode(f"Bearer {secret}!".encode()).decode(),
    ]


FORM_TEXTS = [f"token {form} refused" for secret in SECRETS if secret for form in _forms(secret)]
TEXTS = [
    "Successful operation",
    "",
    "anna.petrova@example.org is blocked",
    "call +7 900 123-45-67 or 89001234567",
    "token emulator-token leaked",
    'escaped to\\"ken\\\\x and to"ken\\x',
    "TOK3N/Ü upper",
    "nul\x00inside",
    "lone \ud800 surrogate",
    "x" * 199 + " a@b.c",
    "y" * 1500 + " anna@example.org " + "z" * 300,
    "Ошибка: профиль user@пример.рф",
    *FORM_TEXTS,
]
KEYS = [*sorted(SERVER_TEXT_KEYS), "profile_id", "email", "data", "result", "note", "Error_Text"]
#: keys a hostile server may choose: the token, a contact, what no database stores
ODD_KEYS = ["emulator-token", "EMULATOR-TOKEN x", "anna@example.org", "89001234567", "nul\x00key", "k" * 1200]


def _plain_clean(document: Any, secret: str | None, *, unstorable: bool = True) -> Any:
    """The plain walk: every key cleaned as a server text, every string cleaned of the token (and unstorable
    characters), then server texts scrubbed (and, when long, cut)."""
    root = [document]
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            items = list(container.items())
            container.clear()
            container.update((protocol._clean(key, secret), value) for key, value in items)
        for key, value in container.items() if isinstance(container, dict) else enumerate(container):
            if key == "error_text" and value is not None and not isinstance(value, str):
                container[key] = protocol._clean(protocol._text(value), secret)
            elif isinstance(value, str):
                cleaned = remove_token(value, secret)
                if unstorable:
                    cleaned = replace_unstorable(cleaned)
                if cleaned and isinstance(key, str) and key in SERVER_TEXT_KEYS:
                    short = len(cleaned) <= protocol._SCRUB_CACHED_CHARS
                    cleaned = scrub(cleaned) if short else protocol._clean(cleaned, None)
                container[key] = cleaned
            elif isinstance(value, dict | list):
                stack.append(value)
    return root[0]


def _emulator_answer(n: int) -> dict[str, Any]:
    ok = "Successful operation"
    result = [{"error": 0, "error_text": ok, "profile_id": f"65a0c0ff{i:016x}"} for i in range(n)]
    result[n // 2] = {"error": 400, "error_text": "invalid email anna@example.org"}
    return {"error": 0, "error_text": "Successful operation", "result": result}


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind < 3:
        return rng.choice(TEXTS)
    if kind == 3:
        return rng.choice([None, True, 0, -1, 2**40, 0.5, float("inf")])
    if kind in (4, 5):
        return rng.choice([{"code": 1, "text": rng.choice(TEXTS)}, [rng.choice(TEXTS), 3], {}, []])
    if kind < 8:
        return {
            rng.choice(KEYS + ODD_KEYS[: rng.randrange(2) * 6]): _value(rng, depth + 1)
            for _ in range(rng.randrange(5))
        }
    return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def _corpus() -> list[Any]:
    rng = random.Random(SEED)
    hostile = [
        {"error": 0, "error_text": {"message": "a@b.org"}, "result": [{"error_text": ["x", "+79001234567"]}]},
        {"error": 0, "error_text": 12, "status": "emulator-token", "data": {"status": ["emulator-token"]}},
        {"error": 0, "result": [[["deep", {"reason": "nested a@b.org"}]]], "message": None},
        {"error": 0, "data": {"result": {"result": [{"error": 1, "error_text": TEXTS[10]}]}}},
        [{"error_text": "in a list at the top"}, "emulator-token", "nul\x00"],
        "just a string emulator-token",
        {"detail": "", "reason": " ", "status_text": TEXTS[3], "Error_Text": TEXTS[2]},
        {key: [{key: key}] for key in ODD_KEYS},
        {"anna@example.org": 1, "alex@example.org": 2, "emulator-token": {"EMULATOR-TOKEN": 3}},
    ]
    generated = [{rng.choice(KEYS): _value(rng, 0) for _ in range(6)} for _ in range(400)]
    return [_emulator_answer(50), *hostile, *generated]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("unstorable", [False, True])
def test_clean_document_agrees_with_the_plain_walk(secret: str | None, unstorable: bool) -> None:
    for document in _corpus():
        expected = _plain_clean(copy.deepcopy(document), secret, unstorable=unstorable)
        assert clean_document(copy.deepcopy(document), secret, unstorable=unstorable) == expected


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_parse_response_skips_the_search_only_where_no_form_of_the_token_can_be(secret, ensure_ascii):
    """The check on the raw body (no form of the token in it, case-insensitively) agrees with the plain walk
    over the decoded answer, whether the server escapes non-ASCII characters or not."""
    for document in _corpus():
        if not isinstance(document, dict) or document.get("error") not in (None, 0):
            continue
        body = json.dumps(document, ensure_ascii=ensure_ascii).encode(errors="replace")
        expected = _plain_clean(json.loads(body), secret)
        assert parse_response("x", 200, {}, body, secret=secret) == expected


def test_clean_document_removes_every_form_of_the_token_from_every_string():
    for secret in filter(None, SECRETS):
        document = {"note": [f"a {form} b" for form in _forms(secret)], "error_text": {"t": secret}}
        cleaned = json.dumps(clean_document(document, secret), ensure_ascii=False)
        assert not any(form in cleaned for form in _forms(secret)), cleaned
