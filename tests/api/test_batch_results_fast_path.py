"""`batch_results` reads the usual batch answer without a `ProfileResult` per result; this compares it with
`BatchResult`'s reading over well-formed and hostile answers: the same values of the same types, or the same
unexpected-answer message.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

from altcraft.api.errors import AltcraftUnexpectedAnswer
from altcraft.api.models import MAX_ID_CHARS, BatchResult, batch_results
from altcraft.api.protocol import parse_answer
from tests.api.test_error_code_fast_path import VALUES

SEED = 20261205
ENDPOINT = "workflows/import_and_start_batch"


class _Text(str):
    pass


OK = {"error": 0, "error_text": "Successful operation", "profile_id": "65a0c0ff0000000000000001"}
FAILED = {"error": 400, "error_text": "invalid email anna@example.org"}
TEXTS: list[Any] = [
    "Successful operation",
    "",
    "nul\x00inside",
    "lone \ud800 surrogate",
    "Ошибка",
    _Text("a str subclass"),
    None,
    0,
    1.5,
    True,
    [],
    ["x", 1],
    {"message": "a@b.org"},
]
IDS: list[Any] = [
    "65a0c0ff0000000000000001",
    "",
    "x" * MAX_ID_CHARS,
    "x" * (MAX_ID_CHARS + 1),
    "ü" * 10,
    "ü" * MAX_ID_CHARS,
    "ü" * (MAX_ID_CHARS + 1),
    "\ud800",
    "id\x00",
    _Text("65a0"),
    None,
    0,
    7,
    -1,
    2**70,
    True,
    1.0,
    [],
    {"id": 1},
]
EXTRA: list[Any] = ["note", "Error", "profile", 1, None, ("t",)]


def _emulator_answer(n: int, failed_every: int = 0) -> dict[str, Any]:
    result = [{**OK, "profile_id": f"65a0c0ff{i:016x}"} for i in range(n)]
    for i in range(0, n, failed_every or n + 1):
        result[i] = dict(FAILED)
    return {"error": 0, "error_text": "Successful operation", "result": result}


def _item(rng: random.Random) -> Any:
    if rng.randrange(12) == 0:
        return rng.choice(["ok", 0, None, [OK], OrderedDict(OK), ()])
    item = dict(rng.choice([OK, FAILED]))
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        change = rng.randrange(5)
        if change == 0:
            item["error"] = rng.choice(VALUES)
        elif change == 1:
            item["error_text"] = rng.choice(TEXTS)
        elif change == 2:
            item["profile_id"] = rng.choice(IDS)
        elif change == 3:
            item.pop(rng.choice(["error", "error_text", "profile_id"]), None)
        else:
            item[rng.choice(EXTRA)] = rng.choice(TEXTS)
    return item


def _answer(rng: random.Random) -> Any:
    answer: dict[Any, Any] = {"error": 0, "error_text": "", "result": [_item(rng) for _ in range(3)]}
    change = rng.randrange(8)
    if change == 0:
        answer["error"] = rng.choice(VALUES)
    elif change == 1:
        answer["error_text"] = rng.choice(TEXTS)
    elif change == 2:
        answer["result"] = rng.choice([None, {"error": 0}, "ok", (OK,), [], 3])
    elif change == 3:
        answer[rng.choice(EXTRA)] = rng.choice(TEXTS)
    elif change == 4:
        del answer[rng.choice(["error", "error_text", "result"])]
    return answer


def _corpus() -> list[Any]:
    rng = random.Random(SEED)
    well_formed = [_emulator_answer(n, every) for n in (0, 1, 50) for every in (0, 1, 7)]
    single = [
        {**_emulator_answer(0), "result": [item]}
        for item in (
            *({**OK, "error": value} for value in VALUES),
            *({**FAILED, "error_text": text} for text in TEXTS),
            *({**OK, "profile_id": profile_id} for profile_id in IDS),
            *({**OK, key: "x"} for key in EXTRA),
            {"error": 0},
            {"error_text": "x"},
            {"profile_id": "p"},
            {},
        )
    ]
    envelopes = [
        *({**_emulator_answer(2), "error": value} for value in VALUES),
        *({**_emulator_answer(2), "error_text": text} for text in TEXTS),
        OrderedDict(_emulator_answer(2)),
        [OK],
        "ok",
        None,
    ]
    return [*well_formed, *single, *envelopes, *(_answer(rng) for _ in range(2000))]


def _outcome(parse: Any, answer: Any) -> Any:
    try:
        read = parse_answer(ENDPOINT, parse, answer)
    except AltcraftUnexpectedAnswer as error:
        return "unexpected answer", str(error)
    return [tuple((type(value).__name__, value) for value in result) for result in read]


def _by_the_model(answer: Any) -> list[tuple[int, str, str | None]]:
    return [result.read for result in BatchResult.model_validate(answer).result]


def test_batch_results_agree_with_the_model() -> None:
    for answer in _corpus():
        assert _outcome(batch_results, answer) == _outcome(_by_the_model, answer), answer


def test_the_corpus_holds_usual_and_refused_answers() -> None:
    outcomes = [_outcome(_by_the_model, answer) for answer in _corpus()]
    refused = sum(isinstance(outcome, tuple) for outcome in outcomes)
    assert 200 < refused < len(outcomes) - 200
