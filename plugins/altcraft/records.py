"""What a source yields and the mapper reads: records, and the error record standing for unreadable input.

Neutral ground: `altcraft.sources` and `altcraft.mapping` both import it, neither imports the other.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

ERROR_FIELD = "__error__"
"""The field an `ErrorRecord` holds its reason under, and its rejection names. Only the type makes a record
an error record: a row's own column of this name (a table's, a file's, a sender's) is data like any other."""


class ErrorRecord(dict[str, Any]):
    """A record that is not data but stands for unreadable input: its key column says where
    (``"<file>:<line>"``), `ERROR_FIELD` what is wrong (never the raw content). Made by `error_record` (the
    webhook endpoint's, keyless, by its store): being of this type, which no source reads from its data, is
    what makes it one, so a row holding an ``__error__`` column cannot pose as one. The mapper rejects it
    under `ERROR_FIELD`."""


def error_record(key_column: str, location: str, reason: str) -> ErrorRecord:
    """A record standing for unreadable input at ``location``; see `ErrorRecord`."""
    return ErrorRecord({key_column: location, ERROR_FIELD: reason})


#: The decoding error handler that reads each invalid byte as a lone surrogate, U+DC00 plus the byte: a value
#: holding one is that record's rejection (`altcraft.validation.check_text`), the other records are read.
#: ``surrogateescape`` keeps only bytes from 0x80 and raised on the invalid code units of UTF-16 and UTF-32,
#: which hold lower ones (a lone surrogate ``00 D8``), failing the whole read on one of them.
UNDECODABLE = "altcraft.undecodable"
#: The lone surrogates `UNDECODABLE` reads invalid bytes as: no valid text decodes to one.
UNDECODABLE_CHARS = "[\udc00-\udcff]"


def _undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(chr(0xDC00 + byte) for byte in error.object[error.start : error.end]), error.end


codecs.register_error(UNDECODABLE, _undecodable)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A value the database holds and Python cannot (a PostgreSQL date or time of ``infinity``, ``-infinity``
    or before year 1), as the database writes it: the mapper rejects a record mapping its column, naming
    the column and the value (`altcraft.validation.kind_of`); a record that does not map it is delivered."""

    text: str
    column: str = ""

    def __str__(self) -> str:
        of = f" of column {self.column!r}" if self.column else ""
        return f"the value {self.text!r}{of}, a date or time beyond Python's (years 1 to 9999)"


class NamedTwice(dict[str, Any]):
    """A JSON object naming a key more than once, its last value kept (as `json.loads` keeps it) and the key
    in ``twice``: which value its sender meant is ambiguous, so a reader refuses it (`named_twice`)."""

    twice: str


def json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of a JSON decoder: the object's dict, a `NamedTwice` if it names a key twice."""
    made = dict(pairs)
    if len(made) == len(pairs):
        return made
    twice = NamedTwice(made)
    twice.twice = str(repeated(key for key, _ in pairs))
    return twice


#: The JSON decoder of records read from files, REST pages and CRM answers: an object naming a key twice
#: decodes to a `NamedTwice`.
JSON_DECODER = json.JSONDecoder(object_pairs_hook=json_object)


def repeated(names: Iterable[str]) -> str | None:
    """The first of ``names`` that comes more than once, or None."""
    return next((name for name, count in Counter(names).items() if count > 1), None)


def named_twice(value: Any, skip: Any = None) -> str | None:
    """The first key an object in ``value`` (nested objects and arrays too) names twice, or None; ``skip`` (an
    object or array of ``value``, by identity) is not looked into. Iterative: a value nested past Python's
    recursion limit, which the JSON decoder still reads, is no RecursionError (a webhook delivery's 500)."""
    stack = [value]
    while stack:
        value = stack.pop()
        if value is skip and skip is not None:
            continue
        if isinstance(value, NamedTwice):
            return value.twice
        if isinstance(value, dict | list):
            stack.extend(reversed(value.values() if isinstance(value, dict) else value))
    return None
