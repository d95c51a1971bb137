"""The demos' environment settings, each read and checked once before anything starts.

A value that does not fit is a usage error naming its variable, never a traceback and never read as the
default (``DEMO_KEEP_RUNNING=false`` must stop the demo, not keep it running). An unset or empty variable
takes the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from altcraft.operators.arguments import flag as _flag

MAX_PORT = 65535


class SettingError(ValueError):
    """An environment setting the demo cannot use; its text names the variable."""


def _text(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(f"{value[:37]}...")


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no variable: true/false, 1/0, yes/no or on/off, in any case."""
    value = _text(environ, name)
    if value is None:
        return default
    try:
        return _flag(name, value)
    except ValueError:
        raise SettingError(f"{name} must be true or false (1/0, yes/no), got {_shown(value)}") from None


def whole(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole number in ``[low, high]``, in decimal digits (``_`` may group them: ``100_000``)."""
    value = _text(environ, name)
    if value is None:
        return default
    digits = value.replace("_", "")
    if not digits.isascii() or not digits.isdigit() or not low <= int(digits) <= high:
        raise SettingError(f"{name} must be a whole number from {low:,} to {high:,}, got {_shown(value)}")
    return int(digits)


def port(environ: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port number."""
    return whole(environ, name, default, 1, MAX_PORT)


def folder(environ: Mapping[str, str], name: str, default: Path, *, must_exist: bool) -> Path:
    """A folder, resolved; one that must exist, or a path that is a file, is refused."""
    value = _text(environ, name)
    path = Path(value).expanduser().resolve() if value else default.resolve()
    if path.exists() and not path.is_dir():
        raise SettingError(f"{name} must name a folder, and {path} is a file")
    if must_exist and not path.is_dir():
        raise SettingError(f"{name} names {path}, which does not exist")
    return path
