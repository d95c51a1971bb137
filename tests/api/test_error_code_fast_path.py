"""`error_code` returns a plain 32-bit integer as it is, before its checks; this compares it with the plain
reading over every kind of value an answer can hold there, well-formed and hostile, and the batch answers
parsed from them (the same results, or the same unexpected-answer message).
"""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest

from altcraft.api.errors import AltcraftUnexpectedAnswer
from altcraft.api.models import BatchResult, error_code, read_error_code
from altcraft.api.protocol import parse_answer


class _Code(enum.IntEnum):
    FAILED = 400


class _Int(int):
    pass


VALUES: list[Any] = [
    0,
    1,
    -1,
    400,
    429,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**40,
    -(2**63),
    10**100,
    True,
    False,
    _Code.FAILED,
    _Int(7),
    _Int(2**31),
    None,
    "",
    "0",
    "12",
    " 12 ",
    "-3",
    "1e3",
    "abc",
    "2147483648",
    "١٢",
    0.0,
    12.0,
    -0.0,
    0.5,
    2.0**31,
    math.nan,
    math.inf,
    -math.inf,
    [],
    {},
    [0],
    {"code": 0},
    b"0",
]


def _outcome(read: Any, value: Any) -> tuple[str, Any]:
    try:
        code = read(value)
    except ValueError as error:
        return "error", str(error)
    return type(code).__name__, code


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_error_code_agrees_with_the_plain_reading(value: Any) -> None:
    assert _outcome(error_code, value) == _outcome(read_error_code, value)


ENDPOINT = "workflows/import_and_start_batch"


def _parsed(answer: dict[str, Any]) -> Any:
    try:
        return parse_answer(ENDPOINT, BatchResult.model_validate, answer).model_dump()
    except AltcraftUnexpectedAnswer as error:
        return str(error)


def _result_code(value: Any) -> int:
    """A per-profile result's code: as the plain reading, but a null or empty one is no code at all."""
    if value is None or value == "":
        raise ValueError("the error code is missing")
    return read_error_code(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_batch_answers_parse_as_with_the_plain_reading(value: Any) -> None:
    ok = {"error": 0, "error_text": "Successful operation", "profile_id": "65a0c0ff0000000000000001"}
    answer = {"error": 0, "error_text": "", "result": [ok, {**ok, "error": value}, ok]}
    expected = _outcome(_result_code, value)
    parsed = _parsed(answer)
    if expected[0] == "error":
        assert parsed == f"unexpected answer: result.1.error: value_error ({ENDPOINT})"
    else:
        assert parsed["result"][1]["error"] == expected[1]
        assert type(parsed["result"][1]["error"]) is int


def test_a_result_without_an_error_code_is_an_unexpected_answer() -> None:
    ok = {"error": 0, "error_text": "Successful operation", "profile_id": "65a0c0ff0000000000000001"}
    answer = {"error": 0, "result": [ok, {"error_text": "Successful operation", "profile_id": "x"}]}
    assert _parsed(answer) == f"unexpected answer: result.1.error: missing ({ENDPOINT})"
