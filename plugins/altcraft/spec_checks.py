"""Checks shared by every model a pipeline spec holds (pipeline, source, mapping, trigger) and by the
connections: each rule is one function here, so no copy of it can drift.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def check_timezone(name: str) -> str:
    """Validate an IANA time zone name (``UTC``, ``Europe/Berlin``); the error names the field."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones (America), a long name
        raise ValueError(f"timezone: unknown time zone {name[:60]!r}") from None
    return name


Timezone = Annotated[str, AfterValidator(check_timezone)]
