"""The mapper as it was before its per-contact fast paths: the reference of tests/test_mapping_reference.py.

Copied as it was at commit 2692d46, unchanged but for names: the coercers, steps and `Mapper` of
`altcraft.mapping`; `key_text`, `normalize_email`, `normalize_phone`, the phone text check (``_phone``,
here `_phone_number`, without its cache) and `_e164_parts` of `altcraft.validation`; `batch_item` of
`altcraft.api.layouts`; profiles made by their constructor, not by ``makers.maker``. What those fast paths
left alone is the live code (imported from it: the coercers of bool and date, lists, steps of a source column
or template, `_Key`, `_identity`, and the custom key's text and float rules `_custom_text`,
`_exact_float`): the spec, `Profile`, `Rejection`, `check_text`, `as_text`, the email check
(``validation._email``) and phone validity (``_impossible``, ``_is_valid_number``), both compared with
email-validator and phonenumbers by tests/test_validation_fast_path.py.

A deliberate change of what the mapper sends or rejects is made here too, or the test fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from altcraft import validation
from altcraft.api.layouts import BatchItemLayout, flat_item, key_as_fields
from altcraft.api.matching import MatchingMode
from altcraft.mapping import (
    INVALID_KEY,
    MISSING_KEY,
    PROFILE,
    FieldSpec,
    FieldType,
    Profile,
    ProfileMapping,
    Rejection,
    SubscriptionSpec,
    _bool,
    _custom_text,
    _date,
    _exact_float,
    _from_epoch,
    _identity,
    _is_number,
    _Key,
    _listed,
    _source_step,
    _template_step,
    encode_json,
)
from altcraft.masking import scrub
from altcraft.records import ERROR_FIELD, ErrorRecord
from altcraft.validation import (
    _PHONE_CHARS,
    _PHONE_SCALARS,
    MAX_KEY_CHARS,
    ValidationError,
    _e164_of,
    _impossible,
    _is_valid_number,
    _national_prefix,
    _national_significant_number,
    _phone_reasons,
    as_text,
    check_text,
    int_text,
    is_finite,
    kind_of,
)

Coercer = Callable[[Any], Any]
_BOOL_TEXT = {
    **dict.fromkeys(("true", "yes", "on", "t", "y", "1"), True),
    **dict.fromkeys(("false", "no", "off", "f", "n", "0"), False),
}
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INT64 = (-(2**63), 2**63 - 1)
# isinstance with a tuple of types, not a union (``list | tuple``): in the per-field path a union costs 0.1 us
_SEQUENCES = (list, tuple)
_NUMBERS = (int, float, Decimal)
_FRACTIONAL = (float, Decimal)


# ------------------------------------------------------------------------------------------- coercion


def _string(field: str, max_chars: int) -> Coercer:
    def coerce(raw: Any) -> str | None:
        return check_text(as_text(raw, field=field).strip(), field=field, max_chars=max_chars) or None

    return coerce


def _int(field: str) -> Coercer:
    def coerce(raw: Any) -> int | None:
        if isinstance(raw, bool):
            raise ValidationError(field, "expected an integer, got bool")
        if isinstance(raw, str):
            text = raw.strip()
            if not text:
                return None
            if not _INT_TEXT.fullmatch(text):
                raise ValidationError(field, "is not an integer")
            value = int(text)
        elif isinstance(raw, int):
            value = raw
        elif isinstance(raw, _FRACTIONAL):
            if not is_finite(raw):
                raise ValidationError(field, "is not a finite number")
            value = raw
        else:
            raise ValidationError(field, f"expected an integer, got {kind_of(raw)}")
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValidationError(field, "is outside the 64-bit integer range")
        if value != int(value):
            raise ValidationError(field, "has a fractional part, expected an integer")
        return int(value)

    return coerce


def _float(field: str) -> Coercer:
    def coerce(raw: Any) -> float | None:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
            raise ValidationError(field, f"expected a number, got {kind_of(raw)}")
        if isinstance(raw, str):
            raw = raw.strip()
            if not raw:
                return None
            if not _FLOAT_TEXT.fullmatch(raw):
                raise ValidationError(field, "is not a number")
        elif isinstance(raw, Decimal) and raw.is_snan():  # float() of a signalling NaN raises ValueError
            raise ValidationError(field, "is not a finite number")
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ValidationError(field, "is not a finite number")
        if not value and Decimal(raw) != 0:  # a deliberate change: an underflow is refused
            raise ValidationError(field, "is too close to 0 for a float")
        return value

    return coerce


def _datetime(field: str, zone: tzinfo) -> Coercer:
    # UTC (the default zone) has no gap or fold: a naive value is placed there as is, without the round
    # trip through UTC that settles them elsewhere (1 us per value)
    fixed = getattr(zone, "key", None) == "UTC"

    def coerce(raw: Any) -> str | None:
        if isinstance(raw, datetime):
            value = raw
        elif isinstance(raw, date):
            value = datetime(raw.year, raw.month, raw.day)
        elif isinstance(raw, str):
            text = raw.strip()
            if not text:
                return None
            try:
                value = validation.iso_datetime(text)  # a deliberate change: text read whole
            except ValueError:
                raise ValidationError(field, "is not an ISO 8601 date-time") from None
        elif _is_number(raw):
            value = _from_epoch(raw, zone, field)
        else:
            raise ValidationError(field, f"expected a date-time, got {kind_of(raw)}")
        try:
            if value.utcoffset() is None:
                value = value.replace(tzinfo=zone)
                if not fixed:
                    value = value.astimezone(UTC).astimezone(zone)
            offset = value.utcoffset()
            if offset.seconds % 60 or offset.microseconds:  # RFC 3339 offsets have whole minutes
                value = value.astimezone(UTC)
        except OverflowError:
            raise ValidationError(field, "is out of range") from None
        return value.isoformat()

    return coerce


def _email(field: str) -> Coercer:
    def coerce(raw: Any) -> str | None:
        if isinstance(raw, str) and not raw.strip():
            return None
        return normalize_email(raw, field=field)

    return coerce


def _phone(field: str, region: str | None) -> Coercer:
    def coerce(raw: Any) -> str | None:
        if isinstance(raw, str) and not raw.strip():
            return None
        return normalize_phone(raw, region, field=field)

    return coerce


def _coercer(mapping: ProfileMapping, target: str, field_type: FieldType) -> Coercer:
    zone = ZoneInfo(mapping.timezone)
    match field_type:
        case "string":
            return _string(target, mapping.max_field_chars)
        case "int":
            return _int(target)
        case "float":
            return _float(target)
        case "bool":
            return _bool(target)
        case "date":
            return _date(target, zone, zone)  # a naive value in the mapping's zone: no source zone here
        case "datetime":
            return _datetime(target, zone)
        case "email":
            return _email(target)
        case "phone" if target == "phones":
            return _listed(_phone(target, mapping.default_region), split=False)
        case "phone":
            return _phone(target, mapping.default_region)
        case "tags":
            return _listed(_string(target, mapping.max_field_chars), split=True)
    raise AssertionError(field_type)


def _key_coercer(mapping: ProfileMapping, key_field: str, label: str) -> Coercer:
    spec = mapping.fields.get(label) if mapping.matching.needs_field_name else None
    if spec is not None and spec.type == "float":  # the key rules of later changes: one form per number
        return _exact_float(label, _float(label))
    if spec is not None and spec.type != "string":
        return _coercer(mapping, label, spec.type)
    if key_field == "email":
        return _email(label)
    if key_field == "phone":
        return _phone(label, mapping.default_region)
    if key_field == "field_value":
        return _custom_text(label)
    return lambda raw: key_text(raw, field=label) or None


# ---------------------------------------------------------------------------------------------- mapper


Step = Callable[[Mapping[str, Any]], Any]
"""Produces one target's value from a record; None means empty."""


def _subscription_step(index: int, spec: SubscriptionSpec, region: str | None) -> Step:
    field = f"subscriptions[{index}]"
    address, coerce = (
        ("email", _email(field)) if spec.channel == "email" else ("phone", _phone(field, region))
    )
    step = _source_step(spec.source, coerce)

    def subscription(record: Mapping[str, Any]) -> dict[str, Any] | None:
        value = step(record)
        return (
            None
            if value is None
            else {"channel": spec.channel, "resource_id": spec.resource_id, address: value}
        )

    return subscription


class Mapper:
    """A compiled `ProfileMapping`: `map(record)` is the per-contact hot path."""

    __slots__ = (
        "_custom_field",
        "_fields",
        "_key_field",
        "_key_names",
        "_keys",
        "_layout",
        "_max_bytes",
        "_mode",
        "_source_key_column",
        "_subscriptions",
        "mapping",
    )

    def __init__(
        self,
        mapping: ProfileMapping,
        *,
        source_key_column: str,
        layout: BatchItemLayout | str = BatchItemLayout.HEDGED,
    ) -> None:
        self.mapping = mapping
        self._layout = BatchItemLayout(layout)
        mode = mapping.matching
        self._mode = mode.value
        self._source_key_column = source_key_column
        self._custom_field = mapping.field_name if mode.needs_field_name else None
        # custom matching finds profiles by a database field, so the key is also that field's value;
        # custom_sub matches a subscription's field, which is not a profile field
        self._key_field = mapping.field_name if mode is MatchingMode.CUSTOM else None
        self._key_names = mode.key_fields
        self._keys = [
            _Key(
                name,
                label,
                mapping.key[name],
                _key_coercer(mapping, name, label),
                not mode.any_of or name in mapping.required,  # a deliberate change: a required key
            )
            for name in mode.key_fields
            if name in mapping.key
            for label in [self._custom_field if name == "field_value" else name]
        ]
        self._fields = [
            (target, target in mapping.required, self._step(target, spec))
            for target, spec in mapping.fields.items()
            if target != self._key_field
        ]
        self._subscriptions = [
            _subscription_step(index, spec, mapping.default_region)
            for index, spec in enumerate(mapping.subscriptions)
        ]
        self._max_bytes = mapping.max_profile_bytes

    def _step(self, target: str, spec: FieldSpec) -> Step:
        coerce = _coercer(self.mapping, target, spec.type)
        if spec.source is not None:
            return _source_step(spec.source, coerce)
        if spec.template is not None:
            return _template_step(target, spec.template, coerce)
        value = coerce(spec.const)
        return lambda record: value

    def map(self, record: Mapping[str, Any]) -> Profile | Rejection:
        """The profile for `record`, or why it cannot be sent."""
        source_key = self._source_key(record)
        if isinstance(source_key, Rejection):
            return source_key
        if isinstance(record, ErrorRecord):  # the source could not read this record; its reason says why
            return Rejection(source_key, ERROR_FIELD, scrub(record[ERROR_FIELD]))
        try:
            match, ledger_key = self._match(record)
            data: dict[str, Any] = {self._key_field: match["field_value"]} if self._key_field else {}
            for target, required, step in self._fields:
                value = step(record)
                if value is not None:
                    data[target] = value
                elif required:
                    raise ValidationError(target, "required value is missing")
            if self._subscriptions:
                subscriptions = [
                    sub for sub in (step(record) for step in self._subscriptions) if sub is not None
                ]
                if subscriptions:
                    data["subscriptions"] = subscriptions
        except ValidationError as error:
            return Rejection(source_key, error.field, error.reason)
        encoded = encode_json(batch_item(match, data, self._layout, self._key_field))
        if len(encoded) > self._max_bytes:
            return Rejection(
                source_key,
                PROFILE,
                f"encoded profile is {len(encoded)} bytes, above the limit of {self._max_bytes}",
            )
        return Profile(source_key, match, ledger_key, data, encoded, self._layout, self._key_field)

    def _source_key(self, record: Mapping[str, Any]) -> str | Rejection:
        column = self._source_key_column
        raw = record.get(column)
        try:
            text = None if raw is None else key_text(raw, field=column)
        except ValidationError as error:
            return Rejection(INVALID_KEY, column, error.reason)
        return text or Rejection(MISSING_KEY, column, "source key value is missing")

    def _match(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        match: dict[str, Any] = {}
        for key in self._keys:
            raw = record.get(key.column)
            value = None if raw is None else key.coerce(raw)
            if value is not None:
                match[key.name] = value
            elif key.required:
                raise ValidationError(key.label, "matching key is missing")
        if not match:
            raise ValidationError("/".join(key.label for key in self._keys), "matching key is missing")
        parts = [_identity(name, match.get(name)) for name in self._key_names]  # a list joins faster
        ledger_key = f"{self._mode}:{'|'.join(parts)}"
        return match, ledger_key.lower() if "email" in match else ledger_key


# ------------------------------------------------------------------------------------------- validation


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
        return validation._email(check_text(value.strip(), max_chars=MAX_KEY_CHARS, key=True))
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


def normalize_phone(value: Any, default_region: str | None = None, *, field: str = "phone") -> str:
    """The phone number in E.164 (`+79001234567`); numbers without `+` need `default_region`."""
    if isinstance(value, bool) or not isinstance(value, _PHONE_SCALARS):
        raise ValidationError(field, f"expected a phone number as text, got {kind_of(value)}")
    try:
        text = int_text(value, field=field) if isinstance(value, int) else str(value)
        return _phone_number(check_text(text.strip(), max_chars=64, key=True), default_region)
    except ValidationError as error:
        raise ValidationError(field, error.reason) from None


def _phone_number(value: str, default_region: str | None) -> str:
    if not _PHONE_CHARS.fullmatch(value):
        raise ValidationError("phone", "contains letters or symbols other than + ( ) - . and spaces")
    if not value.startswith("+") and default_region is None:
        raise ValidationError("phone", "has no +country code and no default_region is set")
    parts = _e164_parts(value) if _E164_TEXT.fullmatch(value) else None
    number = None  # phonenumbers' number, parsed only when the text is not E.164 as is
    if parts is None:
        import phonenumbers

        try:
            number = phonenumbers.parse(value, default_region)
        except phonenumbers.NumberParseException as error:
            reason = _phone_reasons()[1].get(error.error_type, "is not a phone number")
            raise ValidationError("phone", reason) from None
        parts = number.country_code, _national_significant_number()(number)
    code, nsn = parts
    impossible = _impossible(code, len(nsn))
    if impossible:
        raise ValidationError("phone", impossible)
    if not _is_valid_number(code, nsn):
        raise ValidationError("phone", "is not a valid number for its country")
    return value if number is None else _e164_of(number)


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
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in _country_codes():
            break
    else:
        return None
    national = digits[size:]
    prefix = _national_prefix(code)
    if not 2 <= len(national) <= 17 or prefix is None or (prefix and prefix.match(national)):
        return None
    return code, national


@cache
def _country_codes() -> Collection[int]:
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    return COUNTRY_CODE_TO_REGION_CODE


# ---------------------------------------------------------------------------------------------- layouts


def batch_item(
    match: dict[str, Any],
    data: dict[str, Any],
    layout: BatchItemLayout | str = BatchItemLayout.HEDGED,
    key_field: str | None = None,
) -> dict[str, Any]:
    """A scenario-batch item in ``layout`` (default: hedged)."""
    if not isinstance(layout, BatchItemLayout):  # a member is taken as is: the enum call costs 0.2 us
        layout = BatchItemLayout(layout)
    if layout is BatchItemLayout.FLAT:
        return flat_item(match, data, key_field)
    if layout is BatchItemLayout.NESTED:
        return {**match, "data": data}
    fields = key_as_fields(match, data, key_field)
    return {"data": fields} if layout is BatchItemLayout.DATA else {**match, "data": fields}
