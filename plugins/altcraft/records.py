"""What a source yields and the mapper reads: records, and the error record standing for unreadable input.

Neutral ground: `altcraft.sources` and `altcraft.mapping` both import it, neither imports the other.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]

ERROR_FIELD = "__error__"
"""A record holding this field is not data: its value says what is wrong (never the raw content), its key
column says where (``"<file>:<line>"``). The mapper must reject it under this field name."""


def error_record(key_column: str, location: str, reason: str) -> Record:
    """A record standing for unreadable input at ``location``; see `ERROR_FIELD`."""
    return {key_column: location, ERROR_FIELD: reason}
