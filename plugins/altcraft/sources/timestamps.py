"""A record's timestamp as an instant: ISO 8601 text (naive text is wall-clock time in a zone; a time of the
hour a clock change repeats is its first occurrence) or epoch seconds. Used where a source, not a typed
database column, decides which window a record belongs to: file rows and SQLite tables."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from altcraft.validation import iso_datetime

_EPOCH = re.compile(r"\d+(\.\d+)?")
EPOCH_SECONDS = (10**8, 10**11)
"""The epoch seconds a contact's time can be (1973-03-03 to 5138-11-16): a number outside is in another unit
(milliseconds: 1.7e12) or no epoch at all (a date written as 20240301), which no window would ever hold."""


def epoch_instant(seconds: float) -> datetime:
    """The instant of epoch ``seconds``; ValueError outside `EPOCH_SECONDS`."""
    if not EPOCH_SECONDS[0] <= seconds < EPOCH_SECONDS[1]:
        raise ValueError(f"{seconds} is not epoch seconds of a time between 1973 and 5138")
    return datetime.fromtimestamp(seconds, UTC)


def parse_timestamp(value: Any, timezone: str) -> datetime:
    """An aware timestamp from ISO 8601 text (`iso_datetime`: naive text is in ``timezone``) or epoch seconds;
    ValueError (or OverflowError, OSError for a number out of range) otherwise."""
    if isinstance(value, str) and _EPOCH.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_instant(value)
    if not isinstance(value, str):
        raise ValueError(f"expected ISO 8601 text or epoch seconds, got {type(value).__name__}")
    ts = iso_datetime(value.strip())
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=ZoneInfo(timezone))


def instant_text(value: Any, timezone: str) -> str | None:
    """``value``'s instant as UTC text of one width (``YYYY-MM-DD HH:MM:SS.ffffff``), whose text order is
    time order; None for NULL or a value that is not a timestamp. Never raises (SQLite calls it per row)."""
    if value is None:
        return None
    try:
        return utc_text(parse_timestamp(value, timezone))
    except (ValueError, OverflowError, OSError):
        return None


def utc_text(moment: datetime) -> str:
    """An aware ``moment`` as `instant_text` writes it. An instant a datetime cannot hold in UTC (within a day
    of year 1 in a zone east of UTC, of 9999 in one west) is written so that the text order is still time
    order: ``0000-12-31 21:29:43.000000`` before year 1, ``9999-12-31 28:59:00.000000`` past 9999 (its hours
    go on from 24), never an OverflowError."""
    try:
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    except OverflowError:
        offset, wall = moment.utcoffset(), moment.replace(tzinfo=None)
        assert offset is not None
        day = timedelta(days=1)
        if offset > timedelta(0):  # on the day before year 1: that clock time a day later is on 0001-01-01
            return f"0000-12-31 {(wall + day - offset).time().isoformat('microseconds')}"
        clock = wall - day - offset  # past 9999-12-31 by less than a day: that clock time a day earlier
        return f"9999-12-31 {clock.hour + 24}:{clock:%M:%S.%f}"
