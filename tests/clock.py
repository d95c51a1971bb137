"""A worker whose clock is off: the process clock, as the provider's modules read it, set off the real one.

The process clock is a third-party boundary (the standard library's ``datetime.now``), and it is what
differs between two Airflow workers; CPython's ``datetime`` type cannot be patched, so every imported
``altcraft`` module's name ``datetime`` is pointed at a stand-in whose ``now()`` is ``offset`` off (it makes
plain datetimes and takes any for an instance). The databases, the emulator and Airflow keep the real
clock.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, tzinfo

import pytest


def set_clock_off(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """From now until the test ends, this process's clock reads ``offset`` off for the provider's modules."""

    class AnyDatetime(type):
        def __instancecheck__(cls, instance: object) -> bool:
            return isinstance(instance, datetime)

    class OffClock(datetime, metaclass=AnyDatetime):
        off_clock = True  # set off again by a later call

        def __new__(cls, *args: object, **kwargs: object) -> datetime:  # type: ignore[misc]
            return datetime(*args, **kwargs)  # type: ignore[arg-type]

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + offset

    for name, module in list(sys.modules.items()):
        found = getattr(module, "datetime", None)
        if name.split(".")[0] == "altcraft" and (found is datetime or getattr(found, "off_clock", False)):
            monkeypatch.setattr(module, "datetime", OffClock)
