"""What a person types in the contact search → the ledger keys it may be stored under."""

from __future__ import annotations

from altcraft.api.matching import MatchingMode
from altcraft.ledger.rules import former_keys
from altcraft.validation import (
    ValidationError,
    email_identity,
    normalize_email,
    normalize_phone,
    text_number_key,
)

_EMAIL_MODES = (MatchingMode.EMAIL, MatchingMode.EMAIL_PROFILE, MatchingMode.EMAIL_SUB)
_PHONE_MODES = (MatchingMode.PHONE, MatchingMode.PHONE_SUB)
_BOTH_MODES = (MatchingMode.EMAIL_PHONE, MatchingMode.EMAIL_PHONE_SUB)
_VALUE_MODES = (MatchingMode.CUSTOM, MatchingMode.CUSTOM_SUB, MatchingMode.PROFILE_ID)
_CUSTOM_MODES = (MatchingMode.CUSTOM, MatchingMode.CUSTOM_SUB)


def candidate_keys(text: str, default_region: str | None = None) -> list[str]:
    """Ledger keys (``<matching>:<value>``) that ``text`` can stand for, normalised as the mapper does.

    An email is normalised (an IDN domain in Unicode) and lower-cased, a phone becomes E.164
    (``default_region`` for numbers without ``+``), ``email|phone`` finds contacts matched by both, and a
    full ledger key (``email:anna@example.org``) is taken as it is. Anything else is a custom field value
    or profile id; a number also as the key of a custom field's number and its former forms.
    """
    text = text.strip()
    if not text:
        return []
    mode, sep, rest = text.partition(":")
    if sep and mode in MatchingMode.__members__.values():
        return [f"{mode}:{rest.lower() if 'email' in mode else rest}"]
    keys: list[str] = []
    email = _email(text) if "@" in text else None  # an email's local part may hold "|"
    phone = _phone(text, default_region)
    if email:
        keys += [f"{mode}:{email}" for mode in _EMAIL_MODES] + [f"{mode}:{email}|" for mode in _BOTH_MODES]
    if phone:
        keys += [f"{mode}:{phone}" for mode in _PHONE_MODES] + [f"{mode}:|{phone}" for mode in _BOTH_MODES]
    email_part, bar, phone_part = text.rpartition("|")  # as the mapper splits: a phone never holds "|"
    pair = (_email(email_part), _phone(phone_part, default_region)) if bar else (None, None)
    if any(pair):
        keys += [f"{mode}:{pair[0] or ''}|{pair[1] or ''}" for mode in _BOTH_MODES]
    keys += [f"{mode}:{text}" for mode in _VALUE_MODES]
    keys += [key for mode in _CUSTOM_MODES for key in _custom_number_keys(mode, text)]
    return list(dict.fromkeys(keys))


def _custom_number_keys(mode: MatchingMode, text: str) -> list[str]:
    """The keys a custom field's number ``text`` has (``1.0``: ``custom:1``, as the mapper writes any number
    of an id, and the forms an earlier version wrote it in, which the ledger still finds); none for text
    that is no number."""
    number = text_number_key(text)
    return [] if number is None else [f"{mode}:{number}", *former_keys(f"{mode}:{number}")]


def _email(text: str) -> str | None:
    try:
        return email_identity(normalize_email(text)).lower() if text.strip() else None
    except ValidationError:
        return None


def _phone(text: str, default_region: str | None) -> str | None:
    try:
        return normalize_phone(text, default_region) if text.strip() else None
    except ValidationError:
        return None
