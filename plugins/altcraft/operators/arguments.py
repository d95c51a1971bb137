"""The operator's arguments checked and normalised: pure functions, each error naming the argument.

An argument given as a Jinja template is checked once rendered (`is_template`); every other one when the
DAG is parsed. A value that does not fit is refused, never read as a default: a mistyped ``dry_run`` would
otherwise send for real. Errors quote at most the start of a value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from altcraft.spec_checks import MAX_INT64
from altcraft.validation import in_utc_range, iso_datetime

_HASH = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]+")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NOTHING = ("", "None")
"""What a template renders for a missing or None value."""


def is_template(value: Any) -> bool:
    """Whether ``value`` is text Airflow renders before the task runs."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def identifier(name: str, value: Any, *, optional: bool = False) -> int | None:
    """An Altcraft id: a positive integer or its decimal text; None for nothing when ``optional``."""
    if optional and (value is None or value in _NOTHING):
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT64:
        raise ValueError(f"`{name}` must be a positive integer id, got {_shown(value)}")
    return value


def flag(name: str, value: Any) -> bool:
    """A yes/no argument: a bool, or the text a template renders (``True``, ``false``, ``1``, ``no``...);
    None or empty text is no."""
    if isinstance(value, bool):
        return value
    if value is None or value in _NOTHING:
        return False
    if isinstance(value, str) and (text := value.strip().lower()) in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"`{name}` must be true or false, got {_shown(value)}")


def boolean(name: str, value: Any, *, optional: bool = False) -> bool | None:
    """A bool given in code (not templated); None too when ``optional``."""
    if (value is None and optional) or isinstance(value, bool):
        return value
    raise ValueError(f"`{name}` must be True or False{' or None' if optional else ''}, got {_shown(value)}")


def count(name: str, value: Any, low: int, high: int) -> int:
    """A whole number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"`{name}` must be a whole number between {low} and {high}, got {_shown(value)}")
    return value


def number(name: str, value: Any, low: float, high: float, *, above_low: bool = False) -> float:
    """A number in ``[low, high]`` (``(low, high]`` when ``above_low``)."""
    if not _real(value) or not (low < value if above_low else low <= value) or value > high:
        bound = f"above {low:g}" if above_low else f"at least {low:g}"
        raise ValueError(f"`{name}` must be a number {bound} and at most {high:g}, got {_shown(value)}")
    return float(value)


def duration(name: str, value: Any, *, high: timedelta, positive: bool) -> timedelta:
    """A timedelta or a number of seconds, at most ``high``: above zero when ``positive``, else not
    negative."""
    if _real(value) and abs(value) <= high.total_seconds():
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value > high or value < timedelta(0) or (positive and not value):
        low = "above zero" if positive else "not negative"
        shown = f"{value.total_seconds():g} s" if isinstance(value, timedelta) else _shown(value)
        most = str(high).removesuffix(", 0:00:00")
        raise ValueError(f"`{name}` must be seconds or a timedelta, {low} and at most {most}, got {shown}")
    return value


def _real(value: Any) -> bool:
    """An int or a float that is a number (not a bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def name(argument: str, value: Any, *, optional: bool = False) -> str | None:
    """A non-empty text such as a connection id or a field name; None too when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{argument}` must be a non-empty text, got {_shown(value)}")
    return value


def moment(name: str, value: Any) -> datetime | None:
    """A timezone-aware datetime or its ISO 8601 text; None for nothing."""
    if value is None or value in _NOTHING:
        return None
    if isinstance(value, str):
        try:
            value = iso_datetime(value.strip())
        except ValueError:
            raise ValueError(f"`{name}` must be an ISO 8601 date and time, got {_shown(value)}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"`{name}` must be a datetime or its ISO 8601 text, got {_shown(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"`{name}` must have a time zone, got {value.isoformat()}")
    if not in_utc_range(value):
        raise ValueError(f"`{name}` must be a time of the years 1 to 9999 in UTC, got {value.isoformat()}")
    return value


def hashes(name: str, value: Any) -> frozenset[str] | None:
    """Ledger contact hashes (a list, or its JSON text); None (all contacts) when empty."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text not in _NOTHING else None
        except ValueError:
            raise ValueError(f"`{name}` must be a JSON list of contact hashes") from None
    if not value:
        return None
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(item, str) and _HASH.fullmatch(item) for item in value
    ):
        raise ValueError(f"`{name}` must be a list of ledger contact hashes (64 hex digits)")
    return frozenset(value)


def content(name: str, value: Any) -> Mapping[str, Any] | None:
    """What is passed to Altcraft as the launch's ``content``: a mapping, or None."""
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"`{name}` must be a mapping of names to values, got {type(value).__name__}")
    return value


def records(name: str, value: Any) -> Iterable[Any]:
    """Records given in code: a collection or iterator of mappings, not one record or a text (whose keys or
    characters would each be taken for a record)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValueError(
            f"`{name}` must be a list (or another iterable) of records, each a mapping of column to value; "
            f"got {type(value).__name__}"
        )
    return value


_RENDERED: dict[str, Callable[[str, Any], Any]] = {
    "scenario_id": identifier,
    "db_id": partial(identifier, optional=True),
    "content": content,
    "dry_run": flag,
    "relaunch": flag,
    "resend_uncertain": flag,
    "reconcile": flag,
    "only_contacts": hashes,
    "window_start": moment,
    "window_end": moment,
}
"""The operator's templated arguments and their checks."""


def rendered(values: Mapping[str, Any]) -> dict[str, Any]:
    """The operator's templated arguments in ``values`` (by argument name) checked and normalised."""
    return {argument: _RENDERED[argument](argument, value) for argument, value in values.items()}
