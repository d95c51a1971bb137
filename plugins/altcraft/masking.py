"""Masks contact data for logs: emails, phones, free text, records, a third party's lines. Never raises.

A leaf module (nothing of the provider imported): the API layer scrubs server texts with it, and
`altcraft.mapping.mask_key` masks ledger keys with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

MASK = "***"
SAMPLE_CHARS = 64
"""Longer text in `mask_record` output is cut to this many characters."""

_PHONE_LIKE = re.compile(r"\+?[0-9 ().\-]{6,32}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ADDRESS_CHAR = r"[^\s@<>()\[\],;:\"']"
# a match starts only where a run of address characters starts (the lookbehind): tried at every character of
# a long run without ``@``, the search was quadratic (20,000 characters of server text: 1.2 s; now linear).
# A quoted local part opens after a space, a quote or a delimiter (so `"x" and "y"@z` masks `"y"`, not
# `" and "`); the domain may be an IP literal; the ``@`` may be URL-encoded.
_LOCAL_PART = rf'(?<![^\s<(,;:="\'])"[^"\r\n]{{1,64}}"|(?<!{_ADDRESS_CHAR}){_ADDRESS_CHAR}+'
_DOMAIN = rf"\[[^\]\s]{{1,64}}\]|{_ADDRESS_CHAR}+"
_EMAIL_IN_TEXT = re.compile(rf"(?:{_LOCAL_PART})(?:@|%40)(?:{_DOMAIN})")
# A phone: 10 or more digits, maybe after a ``+``, with up to two of `` .-()`` between digits (`8 (900)
# 123-45-67`, `900.123.4567`). It starts where a number starts, never inside a word, an id (`a-1234567890`)
# or a number (the lookbehinds: linear time, as each run is tried once), and does not run into a time
# (`2026-12-02 10:20`).
_SEPARATORS = r" .()\-"
_PHONE_IN_TEXT = re.compile(
    rf"(?:\+|(?<![\w+\-])(?<!\d[:{_SEPARATORS}])(?<!\d[{_SEPARATORS}]{{2}}))"
    rf"\(?\d(?:[{_SEPARATORS}]{{1,2}}\d|\d){{9,}}(?!\d|:\d)"
)
# Numbers that look like phones but are not: an IPv4 address, a text holding an ISO date (two dates).
_NOT_A_PHONE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|.*\d{4}-\d\d-\d\d.*", re.DOTALL)
_SAMPLE_MARGIN = 64
_MAX_DEPTH = 4
_MAX_ITEMS = 20


def text_of(value: Any) -> str:
    """``value`` as text; empty when even `str()` fails."""
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:
        return ""


def mask_text(value: Any) -> str:
    """Any identifying text: first and last character kept when it is long enough to stay unguessable."""
    text = text_of(value)
    return f"{text[:1]}{MASK}{text[-1:]}" if len(text) > 6 else MASK


def mask_email(value: Any) -> str:
    """`anna.petrova@example.org` → `a***@e***.org`."""
    text = text_of(value).strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return mask_text(text)
    name, dot, tld = domain.rpartition(".")
    readable_tld = dot and name and len(tld) <= 24 and not domain.startswith("[")  # not an IP literal
    masked_domain = f"{name[:1]}{MASK}.{tld}" if readable_tld else f"{domain[:1]}{MASK}"
    return f"{local[:1]}{MASK}@{masked_domain}"


def mask_phone(value: Any) -> str:
    """`+79001234567` → `+7******4567`; short numbers keep less, very short ones nothing."""
    text = text_of(value).strip()
    if len(text) >= 10:
        head, tail = 2, 4
    elif len(text) >= 7:
        head, tail = 1, 2
    else:
        return MASK
    return text[:head] + "*" * (len(text) - head - tail) + text[-tail:]


def scrub(text: Any) -> str:
    """Free text (e.g. an error message from Altcraft) with every email and phone-like number in it masked."""
    masked = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group()), text_of(text))
    return _PHONE_IN_TEXT.sub(_masked_phone, masked)


class ScrubbedLog(logging.Filter):
    """A logging filter that `scrub`s each record of the logger it is added to: a third party's lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        with suppress(Exception):  # a record that cannot be formatted fails in its handler, as it would have
            record.msg, record.args = scrub(record.getMessage()), ()
        return True


def _masked_phone(match: re.Match[str]) -> str:
    found = match.group()
    return found if _NOT_A_PHONE.fullmatch(found) else mask_phone(found)


def mask_value(value: Any, *, depth: int = 0) -> Any:
    """One source value made safe to log: emails/phones masked (integers of 8+ digits count as phones),
    long text cut, containers bounded, other objects shown by type name only."""
    try:
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return mask_phone(str(value)) if abs(value) >= 10_000_000 else value
        if isinstance(value, str):
            return _sample(value)
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>"
        if depth >= _MAX_DEPTH:
            return f"<{type(value).__name__}>"
        if isinstance(value, Mapping):
            return mask_record(value, depth=depth + 1)
        if isinstance(value, list | tuple | set | frozenset):
            return [mask_value(item, depth=depth + 1) for item in list(value)[:_MAX_ITEMS]]
        return f"<{type(value).__name__}>"
    except Exception:
        return "<unprintable>"


def mask_record(record: Any, *, depth: int = 0) -> dict[str, Any]:
    """A source record (column → value) made safe to log as a sample; see `mask_value`."""
    try:
        items = list(record.items())[: _MAX_ITEMS * 10]
    except Exception:
        return {"<record>": "<unprintable>"}
    return {_sample(text_of(column)): mask_value(value, depth=depth) for column, value in items}


def _sample(text: str) -> str:
    if "@" in text:
        return mask_email(text)
    if _PHONE_LIKE.fullmatch(text.strip()) and sum(char.isdigit() for char in text) >= 6:
        return mask_phone(text)
    # scrubbed before it is cut, so no start of a phone is left where the cut fell
    cut = scrub(text[: SAMPLE_CHARS + _SAMPLE_MARGIN])[:SAMPLE_CHARS]
    cut += f"…(+{len(text) - SAMPLE_CHARS} chars)" if len(text) > SAMPLE_CHARS else ""
    return _UNPRINTABLE.sub(lambda char: f"\\u{ord(char.group()):04x}", cut)
