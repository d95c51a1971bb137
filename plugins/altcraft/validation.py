"""Value validators for contact data: email, phone (E.164), text (control characters, unicode) and sizes.

Every validator returns the normalised value or raises `ValidationError(field, reason)`; the reason
never contains the value itself, so it is safe to log and to store in the ledger.

Text rules:

* lone surrogates are refused, everything else is normalised to NFC;
* free text refuses NUL and the other C0 controls except tab, newline and carriage return, DEL and
  the C1 controls;
* keys (matching keys, the source key) refuse every control character and every invisible format
  character (bidi overrides, zero-width spaces, BOM, ...): keys must look like what they are.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

MAX_FIELD_CHARS = 64 * 1024
"""Default limit of one string field value, in characters (`ProfileMapping.max_field_chars`)."""
MAX_PROFILE_BYTES = 256 * 1024
"""Default limit of one encoded profile (`ProfileMapping.max_profile_bytes`)."""
MAX_KEY_CHARS = 1024
"""Limit of a key value (matching key, source key), in characters."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode categories Cc (controls) and Cf (format: bidi marks and overrides, zero-width, BOM, tags).
_KEY_FORBIDDEN = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_PHONE_CHARS = re.compile(r"\+?[0-9 ().\-]*")
_QUOTED_DETAIL = re.compile(r"\s*\([^)]*['\"][^)]*\)")


@lru_cache(maxsize=1)
def _phone_reasons() -> tuple[dict[int, str], dict[int, str]]:
    """Reasons by phonenumbers' result codes: (not possible, not parsable). Imported on first use, so a
    DAG file that only defines a mapping does not pay for phonenumbers at parse time."""
    import phonenumbers

    possible, parse = phonenumbers.ValidationResult, phonenumbers.NumberParseException
    return (
        {
            possible.INVALID_COUNTRY_CODE: "has an unknown country code",
            possible.TOO_SHORT: "is too short",
            possible.TOO_LONG: "is too long",
            possible.INVALID_LENGTH: "has an impossible length for its country",
            possible.IS_POSSIBLE_LOCAL_ONLY: "is a local-only number",
        },
        {
            parse.INVALID_COUNTRY_CODE: "has an unknown country code",
            parse.TOO_SHORT_AFTER_IDD: "is too short",
            parse.TOO_SHORT_NSN: "is too short",
            parse.TOO_LONG: "is too long",
        },
    )


class ValidationError(ValueError):
    """A value that cannot be sent. `reason` describes the problem without quoting the value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def kind_of(value: Any) -> str:
    """A short, value-free description of a value's type for error reasons."""
    return type(value).__name__


def is_finite(value: Any) -> bool:
    """False for NaN and infinite floats/Decimals, True for anything else."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return not isinstance(value, float) or math.isfinite(value)


def as_text(value: Any, *, field: str) -> str:
    """Text of a scalar source value (str, int, finite float/Decimal, UUID); anything else is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | UUID):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    if not is_finite(value):
        raise ValidationError(field, "is not a finite number")
    return str(value)


def check_text(
    value: str, *, field: str = "value", max_chars: int = MAX_FIELD_CHARS, key: bool = False
) -> str:
    """`value` normalised to NFC, refusing lone surrogates, control characters and oversize text.

    With `key=True` every control and invisible format character is refused, tab and newline included.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    if not value.isascii():
        if _SURROGATE.search(value):
            raise ValidationError(field, "contains a lone surrogate (invalid unicode)")
        if not unicodedata.is_normalized("NFC", value):
            value = unicodedata.normalize("NFC", value)
    if len(value) > max_chars:
        raise ValidationError(field, f"is {len(value)} characters, above the limit of {max_chars}")
    bad = (_KEY_FORBIDDEN if key else _TEXT_FORBIDDEN).search(value)
    if bad:
        raise ValidationError(field, f"contains a control or invisible character (U+{ord(bad.group()):04X})")
    return value


def key_text(value: Any, *, field: str) -> str:
    """A key value as stripped text ("" when blank), checked with the strict key rules."""
    return check_text(as_text(value, field=field).strip(), field=field, max_chars=MAX_KEY_CHARS, key=True)


def normalize_email(value: Any, *, field: str = "email") -> str:
    """The address as the source wrote it, syntax-checked (no DNS): local part NFC, domain lower-cased.

    An IDN domain keeps its form: ``xn--80ak6aa92e.com`` stays ASCII, never becomes the Unicode
    look-alike it encodes; a Unicode domain stays Unicode (NFC, lower case). See `email_identity`.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    try:
        return _email(check_text(value.strip(), max_chars=MAX_KEY_CHARS, key=True))
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


def normalize_phone(value: Any, default_region: str | None = None, *, field: str = "phone") -> str:
    """The phone number in E.164 (`+79001234567`); numbers without `+` need `default_region`."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(field, f"expected a phone number as text, got {kind_of(value)}")
    try:
        return _phone(check_text(str(value).strip(), max_chars=64, key=True), default_region)
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


@lru_cache(maxsize=1024)
def _email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        reason = _QUOTED_DETAIL.sub("", str(error))
        local = value.partition("@")[0]
        if value in reason or (len(local) > 2 and local in reason):
            reason = "is not a valid email address"
        raise ValidationError("email", reason) from None
    given_domain = value.rpartition("@")[2]
    return f"{info.local_part}@{info.ascii_domain if given_domain.isascii() else info.domain}"


def email_identity(email: str) -> str:
    """Who a normalised address is, for the ledger: the domain in Unicode, as both forms name one inbox.

    ``user@xn--e1afmkfd.xn--p1ai`` and ``user@пример.рф`` are one contact (launched once), whichever
    form the source gave; only the form sent differs.
    """
    domain = email.rpartition("@")[2]
    if "xn--" not in domain.lower():
        return email
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        return email


@lru_cache(maxsize=1024)
def _phone(value: str, default_region: str | None) -> str:
    import phonenumbers

    if not _PHONE_CHARS.fullmatch(value):
        raise ValidationError("phone", "contains letters or symbols other than + ( ) - . and spaces")
    if not value.startswith("+") and default_region is None:
        raise ValidationError("phone", "has no +country code and no default_region is set")
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as error:
        reason = _phone_reasons()[1].get(error.error_type, "is not a phone number")
        raise ValidationError("phone", reason) from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise ValidationError("phone", _phone_reasons()[0].get(possible, "is not a possible number"))
    if not phonenumbers.is_valid_number(number):
        raise ValidationError("phone", "is not a valid number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
