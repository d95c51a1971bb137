"""What a source yields and the mapper reads: records, and the error record standing for unreadable input.

Neutral ground: `altcraft.sources` and `altcraft.mapping` both import it, neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

ERROR_FIELD = "__error__"
"""A record holding this field is not data: its value says what is wrong (never the raw content), its key
column says where (``"<file>:<line>"``). The mapper must reject it under this field name."""


def error_record(key_column: str, location: str, reason: str) -> Record:
    """A record standing for unreadable input at ``location``; see `ERROR_FIELD`."""
    return {key_column: location, ERROR_FIELD: reason}


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
