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
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, Literal
from uuid import UUID

from altcraft.records import Unreadable

MAX_FIELD_CHARS = 64 * 1024
"""Default limit of one string field value, in characters (`ProfileMapping.max_field_chars`)."""
MAX_PROFILE_BYTES = 256 * 1024
"""Default limit of one encoded profile (`ProfileMapping.max_profile_bytes`)."""
MAX_KEY_CHARS = 1024
"""Limit of a key value (matching key, source key), in characters."""
MAX_NUMBER_DIGITS = 4300
"""Most digits of a Decimal written as text: Python's default limit of an int's (`int_text`)."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode categories Cc (controls) and Cf (format: bidi marks and overrides, zero-width, BOM, tags).
_KEY_FORBIDDEN = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_ISO_TEXT = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}-W[0-9]{2}-[0-9]|[0-9]{4}W[0-9]{3})"
    r"(?P<time>[Tt ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)?"
    r"(?P<offset>Z|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)?"
)
_PHONE_CHARS = re.compile(r"\+?[0-9 ().\-]*")
_QUOTED_DETAIL = re.compile(r"\s*\([^)]*['\"][^)]*\)")
# isinstance with a tuple of types, not a union (``int | float``): in the per-field path a union costs 0.1 us
_TEXT_SCALARS = (int, float, Decimal, UUID)
_PHONE_SCALARS = (str, int)


_REGION_CODES = (
    "AC AD AE AF AG AI AL AM AO AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT "
    "BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER "
    "ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GT GU GW GY HK HN HR HT HU ID IE "
    "IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV "
    "LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP "
    "NR NU NZ OM PA PE PF PG PH PK PL PM PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK "
    "SL SM SN SO SR SS ST SV SX SY SZ TA TC TD TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG US UY UZ VA "
    "VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW"
)
PHONE_REGIONS = frozenset(_REGION_CODES.split())
"""The regions phonenumbers 9.0 parses numbers of (``SUPPORTED_REGIONS``), known without importing it:
that import takes about 13 ms of CPU, paid at every parse of a DAG file whose mapping names a
``default_region`` (tests/test_validation_fast_path.py keeps the two equal)."""


def supported_region(code: str) -> bool:
    """Whether phonenumbers parses numbers of region ``code`` (upper case): one of `PHONE_REGIONS`, else as
    the installed library says (it is imported only then)."""
    if code in PHONE_REGIONS:
        return True
    from phonenumbers import SUPPORTED_REGIONS

    return code in SUPPORTED_REGIONS


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
    """A short, value-free description of a value's type for error reasons; an `Unreadable` value says what
    it is (a date the database holds, no contact's data Python could read)."""
    return str(value) if isinstance(value, Unreadable) else type(value).__name__


def is_finite(value: Any) -> bool:
    """False for NaN and infinite floats/Decimals, True for anything else."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return not isinstance(value, float) or math.isfinite(value)


def as_text(value: Any, *, field: str) -> str:
    """Text of a scalar source value (str, int, finite float/Decimal, UUID); anything else is refused."""
    if isinstance(value, str):
        return value
    if type(value) is int:  # an id column (bool, a subclass of int, is refused below)
        return int_text(value, field=field)
    if isinstance(value, float):  # a float column's value, before the other numbers' checks
        if not math.isfinite(value):
            raise ValidationError(field, "is not a finite number")
        return float_text(value)
    if isinstance(value, bool) or not isinstance(value, _TEXT_SCALARS):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    if not is_finite(value):
        raise ValidationError(field, "is not a finite number")
    if isinstance(value, Decimal):
        return decimal_text(value, field=field)
    return int_text(value, field=field) if isinstance(value, int) else str(value)


def int_text(value: int, *, field: str) -> str:
    """The decimal digits of `value`; Python refuses to write an int of more than
    ``sys.get_int_max_str_digits()`` (4300) digits with a ValueError, which is this value's error."""
    try:
        return str(value)
    except ValueError:
        raise ValidationError(field, "is an integer too long to write as text") from None


def float_text(value: float) -> str:
    """A finite float in positional notation, as a database writes a number: ``0.00001`` and
    ``10000000000000000.0`` where ``str`` writes ``1e-05`` and ``1e+16``. Its shortest digits (``repr``),
    and ``.0`` after an integral one, as ``str`` writes the floats from 1e-4 to 1e16 (those are unchanged)."""
    text = float.__repr__(value)  # a subclass's own repr (numpy's ``np.float64(1.5)``) is not its digits
    if "e" not in text:
        return text
    positional = format(Decimal(text), "f")
    return positional if "." in positional else f"{positional}.0"


def iso_datetime(text: str) -> datetime:
    """ISO 8601 text as a datetime, naive without an offset; a date alone is its midnight, and a date with an
    offset (``2024-03-01+03:00``: XML Schema's ``xs:date``, Java's ``ISO_DATE``) its midnight there.

    The text is matched whole first: Python 3.11's ``datetime.fromisoformat`` takes any character between
    date and time (``2024-03-01+03:00`` was 03:00 naive, ``2024-03-01x05:00`` 05:00) and
    ``date.fromisoformat`` ignores two characters after ``YYYYMMDD`` (``2024030199`` was March 1).

    :raises ValueError: not ISO 8601 text, or no such date or time (the message may quote the text).
    """
    shape = _iso_shape(text)
    if shape.group("time") is None:  # a date alone, or with an offset
        text = f"{shape.group('date')}T00:00{shape.group('offset') or ''}"
    return datetime.fromisoformat(text)


def in_utc_range(moment: datetime) -> bool:
    """Whether a datetime holds the aware ``moment`` in UTC: not so within a day of year 1 in a zone east of
    UTC, or of 9999 in one west, where converting it raises OverflowError."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def iso_day(text: str) -> date | datetime:
    """ISO 8601 text as the day it names: a date alone (an offset after it, xs:date's, is the zone of that
    very day) as its date, a date-time as `iso_datetime` reads it.

    :raises ValueError: as `iso_datetime`.
    """
    shape = _iso_shape(text)
    return datetime.fromisoformat(text) if shape.group("time") else date.fromisoformat(shape.group("date"))


def _iso_shape(text: str) -> re.Match[str]:
    shape = _ISO_TEXT.fullmatch(text)
    if shape is None:
        raise ValueError("not ISO 8601 text")
    return shape


def decimal_text(value: Decimal, *, field: str) -> str:
    """A finite Decimal in positional notation, as a database writes its numeric column: ``0.0000000000``
    and ``1000``, where ``str`` writes ``0E-10`` and ``1E+3``. One of more than `MAX_NUMBER_DIGITS` digits
    before or after the point is refused, as an int is."""
    if max(value.adjusted() + 1, -value.as_tuple().exponent) > MAX_NUMBER_DIGITS:
        raise ValidationError(field, "is a number too long to write as text")
    return format(value, "f")


def number_key_text(value: int | float | Decimal, *, field: str) -> str:
    """A finite number as a matching key writes it, one text per value whatever type holds it: an integral
    one as its digits (``1``, ``1.0`` and ``Decimal('1.00')`` are ``1``), any other in its shortest
    positional digits (``1.5``, ``0.00001``), zero without a sign. `decimal_text`'s limits apply."""
    if type(value) is int:
        return int_text(value, field=field)
    number = Decimal(float.__repr__(value)) if isinstance(value, float) else value
    text = decimal_text(number, field=field)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def number_key(value: Any) -> str | None:
    """`number_key_text` of a finite number (a bool is none) that a key can write; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not is_finite(value):
        return None
    try:
        return number_key_text(value, field="value")
    except ValidationError:  # too long to write
        return None


def text_number_key(text: str) -> str | None:
    """`number_key` of the number ``text`` writes (``1.00``, ``1e16``); None for text that is no number."""
    try:
        return number_key(Decimal(text.strip()))
    except (ArithmeticError, ValueError):  # decimal.InvalidOperation is an ArithmeticError
        return None


def check_text(
    value: str, *, field: str = "value", max_chars: int = MAX_FIELD_CHARS, key: bool = False
) -> str:
    """`value` normalised to NFC, refusing lone surrogates, control characters and oversize text.

    With `key=True` every control and invisible format character is refused, tab and newline included.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    is_ascii = value.isascii()
    if not is_ascii:
        if _SURROGATE.search(value):
            raise ValidationError(field, "contains a lone surrogate (invalid unicode)")
        if not unicodedata.is_normalized("NFC", value):
            value = unicodedata.normalize("NFC", value)
    if len(value) > max_chars:
        raise ValidationError(field, f"is {len(value)} characters, above the limit of {max_chars}")
    if is_ascii and value.isprintable():  # ASCII without C0 controls or DEL: nothing either rule refuses
        return value
    bad = (_KEY_FORBIDDEN if key else _TEXT_FORBIDDEN).search(value)
    if bad:
        raise ValidationError(field, f"contains a control or invisible character (U+{ord(bad.group()):04X})")
    return value


def stripped_text(value: Any, *, field: str, max_chars: int, key: bool = False) -> str:
    """`value`'s text (`as_text`) stripped and checked by `check_text` with `max_chars` and `key`.

    Text `check_text` returns as is (ASCII without control characters, within the limit), the common
    value of a field or key, is returned without calling it; an int is written without `as_text`.
    """
    if type(value) is str:
        text = value.strip()
    elif type(value) is int:  # an id column: its digits need no strip
        text = int_text(value, field=field)
    else:
        text = as_text(value, field=field).strip()
    if text.isascii() and text.isprintable() and len(text) <= max_chars:
        return text
    return check_text(text, field=field, max_chars=max_chars, key=key)


def key_text(value: Any, *, field: str) -> str:
    """A key value as stripped text ("" when blank), checked with the strict key rules."""
    return stripped_text(value, field=field, max_chars=MAX_KEY_CHARS, key=True)


def normalize_email(value: Any, *, field: str = "email") -> str:
    """The address as the source wrote it, syntax-checked (no DNS): local part NFC, domain lower-cased.

    An IDN domain keeps its form: ``xn--80ak6aa92e.com`` stays ASCII, never becomes the Unicode
    look-alike it encodes; a Unicode domain stays Unicode (NFC, lower case). See `email_identity`.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected text, got {kind_of(value)}")
    try:
        return _email(stripped_text(value, field=field, max_chars=MAX_KEY_CHARS, key=True))
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


def normalize_phone(value: Any, default_region: str | None = None, *, field: str = "phone") -> str:
    """The phone number in E.164 (`+79001234567`); numbers without `+` need `default_region`."""
    if type(value) is not str:  # a str is its own text: the common value skips these checks
        if isinstance(value, bool) or not isinstance(value, _PHONE_SCALARS):
            raise ValidationError(field, f"expected a phone number as text, got {kind_of(value)}")
        value = int_text(value, field=field) if isinstance(value, int) else str(value)
    try:
        return _phone(stripped_text(value, field=field, max_chars=64, key=True), default_region)
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


def _email(value: str) -> str:
    """The address normalised as email-validator does it; an address of the common shape whose domain was
    seen before skips email-validator (see `_email_fast`), any other goes to `_email_validated`."""
    local, _, domain = value.partition("@")
    simple = _simple_address(value, local, domain)
    if simple and (fast := _email_fast(value, local, _EMAIL_DOMAINS.get(domain))):
        return fast
    return _email_validated(value, simple)


@lru_cache(maxsize=1024)
def _email_validated(value: str, simple: bool) -> str:
    """`_email` by email-validator, noting the domain of a `simple` address seen whole for the fast path.

    Cached, as email-validator takes 10 to 20 us an address; the fast path is not: a cache that misses (a
    run of distinct contacts) cost more than the fast path saves (0.5 us an address, 2026-12-06)."""
    local, _, domain = value.partition("@")
    info = _validated_email(value)
    seen_whole = info.display_name is None and info.original == value and info.local_part == local
    if simple and seen_whole and len(_EMAIL_DOMAINS) < _EMAIL_DOMAINS_MAX:
        _EMAIL_DOMAINS[domain] = (info.ascii_domain, max(len(info.ascii_domain), len(info.domain.encode())))
    return _normalized_email(value, info)


def _email_checked(value: str) -> str:
    """What `_email` returns, by email-validator alone: the reference of the fast path."""
    return _normalized_email(value, _validated_email(value))


def _validated_email(value: str) -> Any:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        reason = _QUOTED_DETAIL.sub("", str(error))
        local = value.partition("@")[0]
        if value in reason or (len(local) > 2 and local in reason):
            reason = "is not a valid email address"
        raise ValidationError("email", reason) from None


def _normalized_email(value: str, info: Any) -> str:
    given_domain = value.rpartition("@")[2]
    return f"{info.local_part}@{info.ascii_domain if given_domain.isascii() else info.domain}"


_EMAIL_DOMAINS: dict[str, tuple[str, int]] = {}
"""Domains email-validator accepted, as given → (ASCII form, bytes of the longer of its ASCII and its
Unicode form in UTF-8); bounded by `_EMAIL_DOMAINS_MAX`.
Every address of the domain that email-validator saw in full had a simple shape, so the domain was split
off and checked as this text (a domain's validity and form do not depend on the local part)."""
_EMAIL_DOMAINS_MAX = 4096
_LOCAL_MAX = 64
_EMAIL_MAX = 254  # email-validator's limit of the address as given, normalised and with an ASCII domain


def _simple_address(value: str, local: str, domain: str) -> bool:
    """ASCII, one ``@``, and a dot-atom local part that email-validator returns unchanged (not one of the
    RFC 2142 names it lower-cases, such as postmaster). ASCII letters and digits alone are a dot-atom without
    asking its pattern (0.3 us)."""
    dot_atom, case_insensitive = _local_part_rules()
    return (
        value.isascii()
        and bool(domain)
        and "@" not in domain
        and 0 < len(local) <= _LOCAL_MAX
        and (local.isalnum() or dot_atom.match(local) is not None)
        and local.lower() not in case_insensitive
    )


@cache
def _local_part_rules() -> tuple[re.Pattern[str], Collection[str]]:
    """email-validator's dot-atom pattern and the mailbox names it lower-cases, imported on first use (an
    import statement in the per-address path would cost a fifth of it)."""
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT

    return DOT_ATOM_TEXT, frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # a list there: a set is looked up faster


def _email_fast(value: str, local: str, known: tuple[str, int] | None) -> str | None:
    """A simple address on a known domain, normalised without email-validator (None: ask it).

    The lengths email-validator checks are checked alike (the address as given, being ASCII, is as long as
    with its ASCII domain); an address over one goes to email-validator for the reason.
    tests/test_validation_fast_path.py compares this path with email-validator over a large corpus.
    """
    if known is None:
        return None
    ascii_domain, domain_bytes = known  # see `_EMAIL_DOMAINS`
    # the local part is ASCII: the address with the Unicode domain is as many bytes as that domain's plus it
    return f"{local}@{ascii_domain}" if len(local) + 1 + domain_bytes <= _EMAIL_MAX else None


def email_identity(email: str) -> str:
    """Who a normalised address is, for the ledger: the domain in Unicode, as both forms name one inbox.

    ``user@xn--e1afmkfd.xn--p1ai`` and ``user@пример.рф`` are one contact (launched once), whichever
    form the source gave; only the form sent differs.
    """
    if "--" not in email:  # no ASCII-encoded label (``xn--``, in any case) anywhere: the common address
        return email
    domain = email.rpartition("@")[2]
    if "xn--" not in domain.lower():
        return email
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        return email


def email_sent_forms(identity: str) -> tuple[str, ...]:
    """The forms an address the ledger knows as ``identity`` (`email_identity`) may have been sent in: itself
    and, for a Unicode domain, the same address with the domain ASCII-encoded (``xn--``), which the source
    may have given. Altcraft keeps the form sent and is not known to equate the two."""
    local, _, domain = identity.rpartition("@")
    if domain.isascii():
        return (identity,)
    from email_validator import EmailNotValidError, validate_email

    try:
        ascii_domain = validate_email(identity, check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return (identity,)
    return (identity, f"{local}@{ascii_domain}")


def _phone(value: str, default_region: str | None) -> str:
    """The number in E.164: ``+`` and digits that `_e164_parts` splits are checked as they are, any other
    text is parsed by `_parsed_phone`; the number accepted just before is answered at once (`_last_phone`)."""
    global _last_phone  # one tuple, replaced whole: a thread reads this one or the one before
    text, region, e164 = _last_phone
    if value == text and default_region == region:
        return e164
    parts = _e164_parts(value) if _E164_TEXT.fullmatch(value) else None
    if parts is None:
        e164 = _parsed_phone(value, default_region)
    else:
        _check_number(*parts)
        e164 = value
    _last_phone = (value, default_region, e164)
    return e164


_last_phone: tuple[str | None, str | None, str] = (None, None, "")
"""(text, default region, E.164) of the number `_phone` accepted last. A record checks one number twice when
its key and its sms subscription (or phones) come from one column: the second check is answered from here.
Not an lru_cache: its miss cost 0.3-0.4 us a number, a fifth of the check, in a run of distinct contacts."""


@lru_cache(maxsize=1024)
def _parsed_phone(value: str, default_region: str | None) -> str:
    """`_phone` by ``phonenumbers.parse``. Cached, as parsing takes several us a number; the fast path is
    not: a cache that misses (a run of distinct contacts) cost more than it saves there (0.3 us a number)."""
    e164 = _E164_TEXT.fullmatch(value) is not None  # "+" and digits pass the next two checks unasked
    if not e164 and not _PHONE_CHARS.fullmatch(value):
        raise ValidationError("phone", "contains letters or symbols other than + ( ) - . and spaces")
    if not e164 and not value.startswith("+") and default_region is None:
        raise ValidationError("phone", "has no +country code and no default_region is set")
    import phonenumbers

    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as error:
        reason = _phone_reasons()[1].get(error.error_type, "is not a phone number")
        raise ValidationError("phone", reason) from None
    _check_number(number.country_code, _national_significant_number()(number))
    return _e164_of(number)


def _check_number(code: int, nsn: str) -> None:
    """Refuse the number of country ``code`` and national significant number ``nsn`` if it is impossible
    or invalid, as phonenumbers would."""
    impossible = _impossible(code, len(nsn))
    if impossible:
        raise ValidationError("phone", impossible)
    if not _is_valid_number(code, nsn):
        raise ValidationError("phone", "is not a valid number for its country")


_E164_TEXT = re.compile(r"\+[1-9][0-9]{3,17}")


def _e164_parts(value: str) -> tuple[int, str] | None:
    """The country code and national significant number ``phonenumbers.parse(value)`` finds in ``+`` and
    digits only, without its generic parsing (text clean-up, extensions, alphabetic numbers, IDD prefixes),
    or None to parse it. Such a number's E.164 form is the value itself, so no number object is built.

    The steps parse takes on such text, in its order: the country code is the shortest prefix of 1-3
    digits that is one; the rest must be 2 to 17 digits; a national prefix the region's metadata would
    strip (``+7 8...``) is left to parse; leading zeros are kept as parse keeps them (the national
    significant number is then the digits as written).
    """
    digits = value[1:]
    codes = _country_codes()
    for size in (1, 2, 3):
        code = codes.get(digits[:size])  # no leading zero: the digits are the code's decimal text
        if code is not None:
            break
    else:
        return None
    national = digits[size:]
    prefix = _national_prefix(code)
    if not 2 <= len(national) <= 17 or prefix is None or (prefix and prefix.match(national)):
        return None
    return code, national


@cache
def _country_codes() -> dict[str, int]:
    """The country codes by their decimal text."""
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    return {str(code): code for code in COUNTRY_CODE_TO_REGION_CODE}


def _e164_of(number: Any) -> str:
    import phonenumbers

    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=4096)
def _impossible(code: int, length: int) -> str | None:
    """Why ``phonenumbers.is_possible_number_with_reason`` refuses a number of country ``code`` whose
    national significant number has ``length`` digits (None: it is possible).

    That function reads nothing else of a number ("It only checks the length of phone numbers", its
    docstring): it is asked once per code and length, for a number of that shape, instead of once per
    contact (1.4 us). tests/test_validation_fast_path.py compares the two on every number of its corpus.
    """
    import phonenumbers

    number = phonenumbers.PhoneNumber(country_code=code, national_number=int("1" * length))
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return _phone_reasons()[0].get(possible, "is not a possible number")


@cache
def _national_prefix(code: int) -> re.Pattern[str] | Literal[""] | None:
    """The national prefix pattern phonenumbers strips for a country code ("" if none; None if the code has
    no metadata, so the number is left to parse)."""
    from phonenumbers import PhoneMetadata, region_code_for_country_code

    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region_code_for_country_code(code))
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    return re.compile(prefix) if prefix else ""


def _is_valid_number(code: int, nsn: str) -> bool:
    """``phonenumbers.is_valid_number`` of the number of country ``code`` and national significant number
    ``nsn``, step for step, on patterns compiled once per country code.

    It finds the number's region (the first of its country code's regions whose leading digits or number
    types match), then whether the national number matches the region's general pattern and one of its
    number types. phonenumbers spends most of its time in the layers around each of those regular
    expressions (6 us per number, this 1 us); tests/test_validation_fast_path.py compares the two.
    """
    regions = _regions(code)
    if not regions:
        return False
    if len(regions) == 1:
        return regions[0].valid and regions[0].typed(nsn)
    for region in regions:  # phonenumbers' _region_code_for_number_from_list
        if not region.listed:
            continue
        if region.leading is None:
            if region.typed(nsn):  # the same test validity makes (one metadata object for a listed region)
                return region.valid
        elif region.leading.match(nsn):
            return region.valid and region.typed(nsn)
    return False


_NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
"""The descriptions phonenumbers' ``_number_type_helper`` tries after the general one, in its order; mobile
comes last, unless the metadata says mobile and fixed-line numbers share one pattern."""


class _Region:
    """What ``is_valid_number`` reads of one region of a country code, compiled once."""

    __slots__ = ("_by_length", "_general", "_types", "leading", "listed", "valid")

    def __init__(self, code: int, region: str) -> None:
        from phonenumbers import REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata

        # finding the region reads metadata_for_region (None for the non-geographic "001": never found
        # that way); validating reads metadata_for_region_or_calling_code, the same object for the others
        listed = PhoneMetadata.metadata_for_region(region.upper(), None)
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region.upper())
        self.listed = listed is not None
        self.leading = (
            re.compile(listed.leading_digits) if listed and listed.leading_digits is not None else None
        )
        #: is_valid_number_for_region's first check: metadata, and the country code is the region's own
        self.valid = metadata is not None and (
            region == REGION_CODE_FOR_NON_GEO_ENTITY or (listed is not None and listed.country_code == code)
        )
        self._general = _desc(metadata.general_desc) if metadata else None
        names = (
            *_NUMBER_TYPES,
            *(() if metadata and metadata.same_mobile_and_fixed_line_pattern else ("mobile",)),
        )
        self._types = [d for d in (_desc(getattr(metadata, name, None)) for name in names) if d]
        self._by_length: dict[int, re.Pattern[str] | None] = {}

    def typed(self, nsn: str) -> bool:
        """``_number_type_helper(nsn, metadata) != UNKNOWN``: the general description and a type match
        (a description matches with one of its possible lengths, if it lists any, and its whole pattern)."""
        size = len(nsn)
        try:
            pattern = self._by_length[size]
        except KeyError:
            pattern = self._by_length[size] = self.pattern_for(size)
        return pattern is not None and pattern.fullmatch(nsn) is not None

    def pattern_for(self, size: int) -> re.Pattern[str] | None:
        """One pattern that fully matches the national numbers of ``size`` digits `typed` accepts (None: no
        such number): the general pattern as a look-ahead over the whole number, then any number type's
        pattern; one match per number instead of two (0.56 -> 0.38 us per Russian mobile number)."""
        if self._general is None:
            return None
        lengths, general = self._general
        if lengths and size not in lengths:
            return None
        types = [f"(?:{p.pattern})" for sizes, p in self._types if not sizes or size in sizes]
        return re.compile(f"(?=(?:{general.pattern})\\Z)(?:{'|'.join(types)})") if types else None


def _desc(desc: Any) -> tuple[frozenset[int], re.Pattern[str]] | None:
    """A number description as (possible lengths, pattern); None where phonenumbers matches nothing."""
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern)


@cache
def _national_significant_number() -> Callable[[Any], str]:
    from phonenumbers import national_significant_number

    return national_significant_number


@cache
def _regions(code: int) -> tuple[_Region, ...]:
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    return tuple(_Region(code, region) for region in COUNTRY_CODE_TO_REGION_CODE.get(code, ()))
