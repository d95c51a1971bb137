"""`clean_document` passes over strings that cannot change (no token to remove, nothing unstorable to
replace: only server texts are looked at); this compares it with the plain walk that cleans every string,
over well-formed and hostile answers, with and without a token and unstorable characters.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from altcraft.api import protocol
from altcraft.api.protocol import SERVER_TEXT_KEYS, clean_document
from altcraft.masking import scrub

SEED = 20261205
SECRETS = [None, "", "emulator-token", 'to"ken\\x', "Tok3n/ü"]
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
]
KEYS = [*sorted(SERVER_TEXT_KEYS), "profile_id", "email", "data", "result", "note", "Error_Text"]


def _plain_clean(document: Any, secret: str | None, *, unstorable: bool = True) -> Any:
    """The plain walk: every string cleaned of the token (and unstorable characters), then server texts
    scrubbed (and, when long, cut)."""
    variants = [v for v in {secret, json.dumps(secret)[1:-1]} if v] if secret else []
    root = [document]
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        for key, value in container.items() if isinstance(container, dict) else enumerate(container):
            if key == "error_text" and value is not None and not isinstance(value, str):
                container[key] = protocol._clean(protocol._text(value), secret)
            elif isinstance(value, str):
                cleaned = value
                for variant in variants:
                    cleaned = cleaned.replace(variant, "***")
                if unstorable:
                    cleaned = protocol._UNSTORABLE.sub("\ufffd", cleaned)
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
        return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(5))}
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
    ]
    generated = [{rng.choice(KEYS): _value(rng, 0) for _ in range(6)} for _ in range(400)]
    return [_emulator_answer(50), *hostile, *generated]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("unstorable", [False, True])
def test_clean_document_agrees_with_the_plain_walk(secret: str | None, unstorable: bool) -> None:
    for document in _corpus():
        expected = _plain_clean(copy.deepcopy(document), secret, unstorable=unstorable)
        assert clean_document(copy.deepcopy(document), secret, unstorable=unstorable) == expected
