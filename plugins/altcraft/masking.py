"""Masks contact data for logs: emails, phones, free text, records, a third party's lines. Never raises.

A leaf module (nothing of the provider imported): the API layer scrubs server texts with it, and
`altcraft.mapping.mask_key` masks ledger keys with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from itertools import islice
from typing import Any

MASK = "***"
SAMPLE_CHARS = 64
"""Longer text in `mask_record` output is cut to this many characters."""

_PHONE_LIKE = re.compile(r"\+?[0-9 ().\-]{6,32}")
_NOT_DIGIT = re.compile(r"\D")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ADDRESS_CHAR = r"[^\s@<>()\[\],;:\"']"
# a match starts only where a run of address characters starts (the lookbehind): tried at every character of
# a long run without ``@``, the search was quadratic (20,000 characters of server text: 1.2 s; now linear).
# A quoted local part opens after a space, a quote or a delimiter (so `"x" and "y"@z` masks `"y"`, not
# `" and "`); the domain may be an IP literal; the ``@`` may be URL-encoded.
_LOCAL_PART = rf'(?<![^\s<(,;:="\'])"[^"\r\n]{{1,64}}"|(?<!{_ADDRESS_CHAR}){_ADDRESS_CHAR}+'
_DOMAIN = rf"\[[^\]\s]{{1,64}}\]|{_ADDRESS_CHAR}+"
_EMAIL_IN_TEXT = re.compile(rf"(?:{_LOCAL_PART})(?:@|%40)(?:{_DOMAIN})")
# A phone: a ``+`` and 7 or more digits (E.164 numbers are as short as that with the country code; no id
# starts with ``+``), or 10 or more digits without it, with up to two of `` .-()`` between digits (`8 (900)
# 123-45-67`, `900.123.4567`). Without a ``+`` it starts where a number starts, never inside a word, an id
# (`a-1234567890`) or a number (the lookbehinds: linear time, as each run is tried once); neither runs into
# a time (`2026-12-02 10:20`).
_SEPARATORS = r" .()\-"
_DIGITS = rf"\(?\d(?:[{_SEPARATORS}]{{1,2}}\d|\d)"
_PHONE_IN_TEXT = re.compile(
    rf"(?:\+{_DIGITS}{{6,}}|(?<![\w+\-])(?<!\d[:{_SEPARATORS}])(?<!\d[{_SEPARATORS}]{{2}}){_DIGITS}{{9,}})"
    r"(?!\d|:\d)"
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


MIN_KNOWN_CHARS = 4
"""A known value shorter than this is not masked in a text (`mask_values`): it would mangle the text."""
MAX_KNOWN_VALUES = 8
"""At most this many of a contact's values are masked in a text about it: bounded work on any text."""
MAX_REQUEST_VALUES = 50_000
"""At most this many values of a request's contacts are masked in a text about the whole request (a batch
of a few thousand contacts, `MAX_KNOWN_VALUES` each): bounded work on any text."""
MAX_KNOWN_CHARS = 320
"""A longer value is not looked for (an email is at most 254 characters): bounded work on any text."""
_MIN_PHONE_DIGITS = 7


def known_forms(values: Iterable[Any], limit: int = MAX_KNOWN_VALUES) -> list[str]:
    """The forms a text may quote ``values`` (a contact's email, phone, key) in, lower-cased, longest
    first: each value as it was sent and, for a phone-like one, its digits (``+4930123``: ``4930123``).
    Of the first ``limit`` only (`MAX_KNOWN_VALUES`: one contact's; `MAX_REQUEST_VALUES`: a request's); none
    shorter than `MIN_KNOWN_CHARS` or longer than `MAX_KNOWN_CHARS`."""
    forms: set[str] = set()
    for value in islice(values, limit):
        text = text_of(value).strip().lower()
        forms.add(text)
        if _PHONE_LIKE.fullmatch(text):
            forms.add(_NOT_DIGIT.sub("", text))
    return sorted((f for f in forms if MIN_KNOWN_CHARS <= len(f) <= MAX_KNOWN_CHARS), key=len, reverse=True)


def contact_like(value: Any) -> str | None:
    """``value`` as text when it reads as an email (an ``@`` between characters) or a phone (digits, a
    leading ``+`` and `` .-()`` only, 7 or more digits, not a date or an IPv4 address): a contact's value
    sent in a data field, which a text about the contact may quote (`mask_values`); else None. A number of
    7 or more digits counts as a phone."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not MIN_KNOWN_CHARS <= len(text) <= MAX_KNOWN_CHARS:
        return None
    if "@" in text:
        return text if 0 < text.rfind("@") < len(text) - 1 else None
    if not _PHONE_LIKE.fullmatch(text) or _NOT_A_PHONE.fullmatch(text) or "+" in text[1:]:
        return None
    return text if len(_NOT_DIGIT.sub("", text)) >= _MIN_PHONE_DIGITS else None


def mask_values(text: Any, values: Iterable[Any], limit: int = MAX_KNOWN_VALUES) -> str:
    """``text`` with every occurrence of the `known_forms` of ``values`` (the first ``limit``) masked (letter
    case aside), wherever it is: for a text about a contact whose values we sent, quoting them in forms
    `scrub` cannot tell (a short phone, its digits without the ``+``), or about a whole request of several
    contacts (``limit`` `MAX_REQUEST_VALUES`). Linear in the text's length and the number of forms: no
    pattern is built from the values, and only a form whose first `MIN_KNOWN_CHARS` characters are in the
    text is looked for."""
    text = text_of(text)
    forms = known_forms(values, limit) if text else []
    if not forms:
        return text
    lowered = _lowered(text)
    if len(forms) > MAX_KNOWN_VALUES:  # many forms: only those that may be in the text are looked for
        heads = {lowered[at : at + MIN_KNOWN_CHARS] for at in range(len(lowered) - MIN_KNOWN_CHARS + 1)}
        forms = [form for form in forms if form[:MIN_KNOWN_CHARS] in heads]
    taken = bytearray(len(text))
    spans = []
    for form in forms:  # longest first: a form inside a longer one (the digits of a phone) is taken with it
        start = lowered.find(form)
        while start >= 0:
            end = start + len(form)
            overlap = taken.rfind(1, start, end)
            if overlap < 0:
                taken[start:end] = b"\x01" * len(form)
                spans.append((start, end))
            start = lowered.find(form, end if overlap < 0 else overlap + 1)  # each character passed once
    if not spans:
        return text
    pieces, at = [], 0
    for start, end in sorted(spans):
        pieces += [text[at:start], _masked_known(text[start:end])]
        at = end
    return "".join(pieces) + text[at:]


def _lowered(text: str) -> str:
    """``text`` lower-cased character by character, so each character stays where it was (``"İ".lower()``
    is two characters: such a character is kept as it is)."""
    lowered = text.lower()
    if len(lowered) == len(text):  # no character lower-cased to more than one: every place kept
        return lowered
    return "".join(low if len(low := char.lower()) == 1 else char for char in text)


def _masked_known(found: str) -> str:
    if "@" in found:
        return mask_email(found)
    return mask_phone(found) if _PHONE_LIKE.fullmatch(found) else mask_text(found)


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
