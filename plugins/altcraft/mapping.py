"""Declarative mapping of a source record (column → value) to an Altcraft profile, with type coercion.

`ProfileMapping` is the spec (written in YAML pipeline specs, validated by pydantic with errors that
name the field); `Mapper(mapping, source_key_column=...)` compiles it; its `map(record)` is the hot
path and returns a `Profile` or a `Rejection`. Empty source values (None, blank text, empty list) are
omitted from the profile, unless the target is required (then the record is rejected); so is a column a
record lacks, unless its source's records hold every column (a table, a CSV file): then it is misnamed, and
the record is rejected naming it.

Field types and what they send:

======== ======================================================================================
string   text (str, int, finite float and Decimal in positional notation, UUID), stripped, NFC, no controls
int      int, integral float/Decimal, or decimal text; 64-bit range; bool is refused
float    finite number or decimal text within a float's range (1e999 and 1e-400 are refused, not inf or 0)
bool     bool, 0/1, or true/false/yes/no/on/off/t/f/y/n/1/0 text
date     ``YYYY-MM-DD`` from a date, a datetime (its instant's date in `timezone`; a naive one is read as
         a datetime field reads it, so in a source's own zone it is its own date), ISO text (a date
         alone, with or without an offset, is that date) or epoch seconds (years 1653 to 2286: a
         number beyond, such as epoch milliseconds, is refused)
datetime RFC 3339 with offset from a datetime, a date (midnight), ISO text (a date with an offset,
         ``2024-03-01+03:00``: its midnight there) or epoch seconds (int/float);
         naive values are wall time in the source's zone (`Mapper`'s ``source_zone``; a source
         without one, and constants: `timezone`), written in `timezone` (not given: the source's,
         `in_source_zone`): an ambiguous time (DST fall-back) is its first occurrence, a non-existent
         one (spring-forward gap) moves forward by the gap
email    syntax-checked and normalised address (email-validator, no DNS)
phone    E.164 text; the target ``phones`` always gets a list (one number, or a list of numbers)
tags     list of distinct strings from a list or a comma-separated text
======== ======================================================================================
"""

from __future__ import annotations

import logging
import math
import re
import string
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from altcraft.api.layouts import BatchItemLayout, batch_item, flat_item, item_maker
from altcraft.api.matching import MatchingMode
from altcraft.makers import maker
from altcraft.masking import mask_email, mask_phone, mask_text, scrub, text_of
from altcraft.records import ERROR_FIELD, ErrorRecord
from altcraft.spec_checks import MAX_BYTES, MAX_INT64, Timezone
from altcraft.storable import storable
from altcraft.validation import (
    MAX_FIELD_CHARS,
    MAX_PROFILE_BYTES,
    ValidationError,
    as_text,
    email_identity,
    is_finite,
    iso_datetime,
    iso_day,
    key_text,
    kind_of,
    normalize_email,
    normalize_phone,
    number_key_text,
    stripped_text,
    supported_region,
)

FieldType = Literal["string", "int", "float", "bool", "date", "datetime", "email", "phone", "tags"]
PROFILE = "<profile>"
"""`Rejection.field` of a profile refused as a whole (too large)."""
MISSING_KEY = "<missing>"
"""`Rejection.source_key` of a record without a source key value."""
INVALID_KEY = "<invalid>"
"""`Rejection.source_key` of a record whose source key value is unusable (control characters, ...)."""

_RESERVED_TARGETS = {"subscriptions": "is set by the `subscriptions` section"}
_TARGET_TYPES = {"email": "email", "phones": "phone"}
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
_FLOAT_INPUTS = (str, int, float, Decimal)
log = logging.getLogger(__name__)

#: What a check may raise on a value none of them foresaw (say, an odd object from a Python source): that
#: record's rejection, never the end of the run.
_UNFORESEEN = (ArithmeticError, LookupError, TypeError, ValueError, RecursionError)
encode_json: Callable[[Any], bytes] = msgspec.json.Encoder().encode
"""Compact UTF-8 JSON of a batch item: what ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``
gives, ten times faster (the values are str, int, finite float, bool, lists and dicts of them)."""

Coercer = Callable[[Any], Any]
"""Turns one raw source value into the value sent; None means empty (omit); raises ValidationError."""


# --------------------------------------------------------------------------------------------- results


@dataclass(slots=True, frozen=True)
class Profile:
    """One contact ready to send."""

    source_key: str
    match: dict[str, Any]
    ledger_key: str
    data: dict[str, Any]
    encoded: bytes = field(default=b"", compare=False, repr=False)
    """`batch_item()` as compact UTF-8 JSON, when the mapper already encoded it (to check its size)."""
    layout: BatchItemLayout = BatchItemLayout.HEDGED
    key_field: str | None = None

    def batch_item(self) -> dict[str, Any]:
        """The element of a scenario batch's `data` array, in `layout` (see `altcraft.api.layouts`)."""
        return batch_item(self.match, self.data, self.layout, self.key_field)

    def flat_item(self) -> dict[str, Any]:
        """The element of a `profiles/import_batch` `data` array: fields and matching key side by side."""
        return flat_item(self.match, self.data, self.key_field)


_profile = maker(Profile)
"""`Profile` of every field, positional: the mapper's, once per contact (see `altcraft.makers`)."""


@dataclass(slots=True, frozen=True)
class Rejection:
    """A record that cannot be sent; `reason` contains no email/phone in clear."""

    source_key: str
    field: str
    reason: str


# ------------------------------------------------------------------------------------------------ spec


def template_columns(template: str) -> list[tuple[str, str | None]]:
    """`template` split into (literal text, column or None) parts; only plain `{column}` placeholders."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"template is malformed: {error}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, column, spec, conversion in parsed:
        if column is not None:
            if not column or column.isdigit():
                raise ValueError("template placeholders must name a column, e.g. {first_name}")
            if any(char in column for char in ".[]"):
                raise ValueError(
                    f"template placeholder {{{column}}}: attribute and index access are not allowed"
                )
            if conversion or spec:
                raise ValueError(
                    f"template placeholder {{{column}}}: conversions and format specs are not allowed"
                )
        parts.append((literal, column))
    return parts


class FieldSpec(BaseModel):
    """Where one profile field's value comes from (exactly one of source, const, template) and its type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(default=None, min_length=1, description="source column")
    const: str | int | float | bool | datetime | date | list[str] | None = Field(
        default=None, description="fixed value"
    )
    template: str | None = Field(default=None, description="text with {column} placeholders")
    type: FieldType = "string"

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            template_columns(value)
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        given = [name for name in ("source", "const", "template") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of source, const, template (got {', '.join(given) or 'none'})"
            )
        return self


class SubscriptionSpec(BaseModel):
    """One subscription added to every profile (flat form of ``profiles/import``'s subscription)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["email", "sms"]
    resource_id: int = Field(gt=0, le=MAX_INT64)
    source: str = Field(min_length=1, description="source column holding the email address / phone number")


class ProfileMapping(BaseModel):
    """How a source record becomes an Altcraft profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matching: MatchingMode
    field_name: str | None = Field(
        default=None, validate_default=True, description="custom field to match on"
    )
    resource_id: int | None = Field(default=None, gt=0, le=MAX_INT64, validate_default=True)
    key: dict[str, str] = Field(description="matching key field -> source column")
    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="target field -> value spec")
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)
    timezone: Timezone = Field(
        default="UTC",
        description="zone date-times are written in and instants' dates taken in; not given: the source's "
        "`timezone` (UTC for a source without one). A source's naive values are read in the source's "
        "`timezone`, as its window reads them; constants' and those of a source without one in this zone",
    )
    default_region: str | None = Field(default=None, description="region of phones without +country code")
    required: list[str] = Field(
        default_factory=list, description="field targets or keys that must be present"
    )
    max_field_chars: int = Field(default=MAX_FIELD_CHARS, gt=0, le=MAX_BYTES)
    max_profile_bytes: int = Field(default=MAX_PROFILE_BYTES, gt=0, le=MAX_BYTES)

    @field_validator("field_name")
    @classmethod
    def _field_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        mode = info.data.get("matching")
        if mode is not None and mode.needs_field_name and not value:
            raise ValueError(f"required for matching {mode.value!r}")
        if mode is not None and not mode.needs_field_name and value is not None:
            raise ValueError(f"only allowed for matching custom and custom_sub, not {mode.value!r}")
        return value

    @field_validator("resource_id")
    @classmethod
    def _resource_id(cls, value: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("matching")
        if value is not None and mode is not None and not {"email", "phone"} & set(mode.key_fields):
            raise ValueError(f"narrows email/phone matching only, not {mode.value!r}")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        mode = info.data.get("matching")
        if mode is None:
            return value
        expected = set(mode.key_fields)
        unknown = sorted(set(value) - expected)
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} not a key of matching {mode.value!r}; "
                f"use {' + '.join(mode.key_fields)}"
            )
        if not value or (not mode.any_of and set(value) != expected):
            need = " and/or ".join(mode.key_fields) if mode.any_of else " + ".join(mode.key_fields)
            raise ValueError(f"matching {mode.value!r} needs {need}")
        if not all(value.values()):
            raise ValueError("source columns must not be empty")
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                target: {"source": spec} if isinstance(spec, str) else spec for target, spec in value.items()
            }
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, FieldSpec], info: ValidationInfo) -> dict[str, FieldSpec]:
        for target, spec in value.items():
            if not target.strip() or target != target.strip():
                raise ValueError(f"{target!r}: target names must be non-blank without surrounding spaces")
            if target in _RESERVED_TARGETS:
                raise ValueError(f"{target}: {_RESERVED_TARGETS[target]}")
            if target in _TARGET_TYPES and spec.type != _TARGET_TYPES[target]:
                raise ValueError(f"{target}: must have type {_TARGET_TYPES[target]}")
        mode, field_name, key = info.data.get("matching"), info.data.get("field_name"), info.data.get("key")
        if mode is None or key is None:
            return value
        # a batch item carries the key as this field too (`altcraft.api.layouts.key_as_fields`), which a
        # reading of data alone matches on: from another column, the item would name two profiles
        for key_name, target in (("email", "email"), ("phone", "phones"), ("field_value", field_name)):
            spec = value.get(target) if key_name in mode.key_fields else None
            if spec is None:
                continue
            if key_name not in key:
                raise ValueError(
                    f"{target}: matching {mode.value!r} matches on it, so it must come from key.{key_name}'s "
                    f"column: give key.{key_name}"
                )
            if spec.source != key[key_name]:
                raise ValueError(f"{target}: the matched field must come from key.{key_name}'s column")
        spec = value.get(field_name) if mode.needs_field_name else None
        if spec is not None and spec.type in ("tags", "bool"):
            raise ValueError(f"{field_name}: a {spec.type} field cannot be a matching key")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not supported_region(value.upper()):
            raise ValueError(f"unknown region {value!r}; use a two-letter code such as RU")
        return None if value is None else value.upper()

    @field_validator("required")
    @classmethod
    def _required(cls, value: list[str], info: ValidationInfo) -> list[str]:
        fields, key = info.data.get("fields"), info.data.get("key")
        if fields is not None and key is not None:
            unknown = [name for name in value if name not in fields and name not in key]
            if unknown:
                raise ValueError(f"not a field target or key: {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _constants(self) -> ProfileMapping:
        for target, spec in self.fields.items():
            if spec.const is not None:
                try:
                    value = _coercer(self, target, spec.type)(spec.const)
                except ValidationError as error:
                    raise ValueError(f"fields.{target}.const {error.reason}") from None
                if value is None:
                    raise ValueError(f"fields.{target}.const is empty")
        return self


def in_source_zone(mapping: ProfileMapping, timezone: str | None) -> ProfileMapping:
    """``mapping`` writing date-times (and taking instants' dates) in the source's ``timezone`` (None: the
    source has none) unless it names a zone itself. The source's naive values are read in its zone whatever
    the mapping's (`Mapper`'s ``source_zone``)."""
    if timezone is None or "timezone" in mapping.model_fields_set:
        return mapping
    return mapping.model_copy(update={"timezone": timezone})


@dataclass(frozen=True)
class ZoneNames:
    """How `naive_times_moved` names where the source's zone, the mapping's zone and its fields are set."""

    source_zone: str
    mapping_zone: str
    fields: str


#: The names of a pipeline spec's paths.
SPEC_ZONE_NAMES = ZoneNames("source.timezone", "mapping.timezone", "mapping.fields")


def naive_times_moved(
    mapping: ProfileMapping, source_zone_defaulted: bool, names: ZoneNames = SPEC_ZONE_NAMES
) -> str | None:
    """Why a mapping naming a zone over a source of naive times that names none (``source_zone_defaulted``:
    it took UTC) is refused when it reads date or date-time values from the source: those values were read
    in the mapping's zone until a source's naive times became its own zone's (UTC by default, as its window
    reads them), so it would send other times than it did without saying so. None: nothing moved."""
    if (
        not source_zone_defaulted
        or "timezone" not in mapping.model_fields_set
        or mapping.timezone.upper() in ("UTC", "ETC/UTC")
    ):
        return None
    read = sorted(
        target
        for target, spec in mapping.fields.items()
        if spec.type in ("date", "datetime") and spec.const is None
    )
    if not read:
        return None
    return (
        f"{names.source_zone} is not set while {names.mapping_zone} is {mapping.timezone}: the naive times "
        f"of {names.fields} {', '.join(read)} are read in the source's zone (UTC when not set), no longer in "
        f"the mapping's. Set {names.source_zone} to the zone the source's naive times are in "
        f"(e.g. {mapping.timezone}, which its window then reads them in too; UTC keeps the window as it was)"
    )


# ------------------------------------------------------------------------------------------- coercion


def _string(field: str, max_chars: int) -> Coercer:
    def coerce(raw: Any) -> str | None:
        return stripped_text(raw, field=field, max_chars=max_chars) or None

    return coerce


def _int(field: str) -> Coercer:
    def coerce(raw: Any) -> int | None:
        if type(raw) is int and _INT64[0] <= raw <= _INT64[1]:  # an int column's value, as the checks give it
            return raw
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
        if isinstance(raw, bool) or not isinstance(raw, _FLOAT_INPUTS):
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
        if not value and Decimal(raw) != 0:  # below the smallest float, as 1e999 is above the largest
            raise ValidationError(field, "is too close to 0 for a float")
        return value

    return coerce


def _bool(field: str) -> Coercer:
    def coerce(raw: Any) -> bool | None:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            text = raw.strip().lower()
            if not text:
                return None
            if text in _BOOL_TEXT:
                return _BOOL_TEXT[text]
        elif isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise ValidationError(field, "is not a boolean (true/false, yes/no, 1/0)")

    return coerce


_EPOCH_SECONDS = 10**10
"""Epoch seconds a date or time takes either way of 1970 (1653-02-10 to 2286-11-20). A number beyond is no
time a contact's data holds in seconds but may be one in milliseconds (1975-06-01 is 1.7e11 ms, 7382-11-04
read as seconds): refused, not read as another time."""


def _from_epoch(raw: Any, zone: tzinfo, field: str) -> datetime:
    if not is_finite(raw):
        raise ValidationError(field, "is not a finite number")
    out_of_range = "epoch seconds out of range (years 1653 to 2286; milliseconds are not read)"
    if not -_EPOCH_SECONDS < raw < _EPOCH_SECONDS:
        raise ValidationError(field, out_of_range)
    try:
        return datetime.fromtimestamp(float(raw), zone)
    except (OverflowError, OSError, ValueError):  # a platform's own limits (Windows: none before 1970)
        raise ValidationError(field, out_of_range) from None


def _is_number(raw: Any) -> bool:
    return isinstance(raw, _NUMBERS) and not isinstance(raw, bool)


def _iso_text(
    raw: str, field: str, reason: str, parse: Callable[[str], date | datetime] = iso_datetime
) -> Any:
    """The date or date-time ``raw`` writes in ISO 8601 (`validation.iso_datetime`, or ``parse``); None if
    it is blank."""
    text = raw.strip()
    try:
        return parse(text) if text else None
    except ValueError:
        raise ValidationError(field, reason) from None


def _date(field: str, zone: tzinfo, naive_zone: tzinfo) -> Coercer:
    def coerce(raw: Any) -> str | None:
        if isinstance(raw, str):
            raw = _iso_text(raw, field, "is not an ISO 8601 date (YYYY-MM-DD)", iso_day)
            if raw is None:
                return None
        if isinstance(raw, datetime):  # an instant is on its date in `zone`, a wall time in `naive_zone` too
            try:
                if raw.utcoffset() is not None:
                    raw = raw.astimezone(zone)
                elif naive_zone is not zone:  # in `zone` itself a wall time is on its own date
                    raw = raw.replace(tzinfo=naive_zone).astimezone(zone)
                return raw.date().isoformat()
            except OverflowError:
                raise ValidationError(field, "is out of range") from None
        if isinstance(raw, date):
            return raw.isoformat()
        if _is_number(raw):
            return _from_epoch(raw, zone, field).date().isoformat()
        raise ValidationError(field, f"expected a date, got {kind_of(raw)}")

    return coerce


def _datetime(field: str, zone: tzinfo, naive_zone: tzinfo) -> Coercer:
    # UTC (the default zone) has no gap or fold: a naive value is placed there as is, without the round
    # trip through UTC that settles them elsewhere (1 us per value)
    fixed = naive_zone is zone and getattr(zone, "key", None) == "UTC"

    def coerce(raw: Any) -> str | None:
        if isinstance(raw, str):
            raw = _iso_text(raw, field, "is not an ISO 8601 date-time")
            if raw is None:
                return None
        if isinstance(raw, datetime):
            value = raw
        elif isinstance(raw, date):
            value = datetime(raw.year, raw.month, raw.day)
        elif _is_number(raw):
            value = _from_epoch(raw, zone, field)
        else:
            raise ValidationError(field, f"expected a date-time, got {kind_of(raw)}")
        try:
            offset = value.utcoffset()
            if offset is None:
                value = value.replace(tzinfo=naive_zone)
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


def _listed(item: Coercer, *, split: bool) -> Coercer:
    """A list of distinct non-empty items from a list/tuple (or comma-separated text when `split`)."""

    def coerce(raw: Any) -> list[Any] | None:
        if isinstance(raw, _SEQUENCES):
            items = raw
        elif split and isinstance(raw, str):
            items = raw.split(",")
        else:  # one value
            value = item(raw)
            return None if value is None else [value]
        distinct = dict.fromkeys([item(value) for value in items if value is not None])
        distinct.pop(None, None)  # items empty once coerced (blank text)
        return list(distinct) or None

    return coerce


def _coercer(
    mapping: ProfileMapping, target: str, field_type: FieldType, source_zone: str | None = None
) -> Coercer:
    """How ``target`` coerces a value: date-times written in the mapping's zone, a naive one read in
    ``source_zone`` (that of the values' source; None: the mapping's, as for constants)."""
    zone = ZoneInfo(mapping.timezone)
    naive_zone = zone if source_zone is None else ZoneInfo(source_zone)
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
            return _date(target, zone, naive_zone)
        case "datetime":
            return _datetime(target, zone, naive_zone)
        case "email":
            return _email(target)
        case "phone" if target == "phones":
            return _listed(_phone(target, mapping.default_region), split=False)
        case "phone":
            return _phone(target, mapping.default_region)
        case "tags":
            return _listed(_string(target, mapping.max_field_chars), split=True)
    raise AssertionError(field_type)


def _key_coercer(mapping: ProfileMapping, key_field: str, label: str, source_zone: str | None) -> Coercer:
    spec = mapping.fields.get(label) if mapping.matching.needs_field_name else None
    if spec is not None and spec.type == "float":
        return _exact_float(label, _float(label))
    if spec is not None and spec.type != "string":
        return _coercer(mapping, label, spec.type, source_zone)
    if key_field == "email":
        return _email(label)
    if key_field == "phone":
        return _phone(label, mapping.default_region)
    if key_field == "field_value":
        return _custom_text(label)
    return lambda raw: key_text(raw, field=label) or None


def _custom_text(field: str) -> Coercer:
    """A custom key declared as text (or not declared): text as written (``007`` and ``7`` are two ids), a
    number in `number_key_text`'s one form per value, so an id read as an integer, a decimal or a float
    (a column's type changed, a CSV and a SQL source) is one contact."""

    def coerce(raw: Any) -> str | None:
        if _is_number(raw):
            if not is_finite(raw):
                raise ValidationError(field, "is not a finite number")
            raw = number_key_text(raw, field=field)
        return key_text(raw, field=field) or None

    return coerce


def _exact_float(field: str, coerce: Coercer) -> Coercer:
    """A float key's ``coerce``, refusing a number no float holds: 2**53 + 1 would be sent, and keyed, as
    2**53, another contact's id."""

    def exact(raw: Any) -> float | None:
        value = coerce(raw)
        if value is None or isinstance(raw, float):
            return value
        if Decimal(raw.strip() if isinstance(raw, str) else raw) != Decimal(float.__repr__(value)):
            raise ValidationError(field, "is a number a float cannot hold exactly")
        return value

    return exact


# ---------------------------------------------------------------------------------------------- mapper


Step = Callable[[Mapping[str, Any]], Any]
"""Produces one target's value from a record; None means empty."""


def _source_step(column: str, coerce: Coercer) -> Step:
    def step(record: Mapping[str, Any]) -> Any:
        raw = record.get(column)
        return None if raw is None or (isinstance(raw, _SEQUENCES) and not raw) else coerce(raw)

    return step


def _template_step(target: str, template: str, coerce: Coercer) -> Step:
    parts = template_columns(template)

    def step(record: Mapping[str, Any]) -> Any:
        pieces = []
        for literal, column in parts:
            pieces.append(literal)
            if column is not None:
                raw = record.get(column)
                text = None if raw is None else as_text(raw, field=target).strip()
                if not text:
                    return None
                pieces.append(text)
        return coerce("".join(pieces))

    return step


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


@dataclass(slots=True, frozen=True)
class _Key:
    name: str  # request key: email, phone, profile_id, field_value, provider, subscription_id
    label: str  # name used in rejections and, for custom matching, in data
    column: str
    coerce: Coercer
    required: bool  # a mode's only key or all of its keys; one of email_phone* if `required` names it


@dataclass(slots=True, frozen=True)
class _Field:
    """One target of the profile: its source column's value coerced, or (no column) made from the record.

    `Mapper.map` reads the column itself, not through a step per field (0.07 us less per field)."""

    name: str
    column: str | None
    make: Coercer | Step  # coerces the column's value; with no column, a step of the record
    required: bool


class Mapper:
    """A compiled `ProfileMapping`: `map(record)` is the per-contact hot path."""

    __slots__ = (
        "_columns",
        "_custom_field",
        "_fields",
        "_item",
        "_key_field",
        "_key_names",
        "_keys",
        "_layout",
        "_logged",
        "_max_bytes",
        "_mode",
        "_plan",
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
        complete_records: bool = False,
        source_zone: str | None = None,
    ) -> None:
        """``complete_records``: every record holds every column of its source, NULL or empty ones too (a
        table's, a CSV file's; `altcraft.sources.base.Source.complete_records`), so a column the mapping
        reads that a record lacks is no column of the source: the record is rejected naming it.
        ``source_zone``: the zone of the source's naive times (`altcraft.sources.base.Source.timezone`), in
        which its naive values are read; None (a source without one): the mapping's ``timezone``."""
        self.mapping = mapping
        self._layout = BatchItemLayout(layout)
        self._item = item_maker(self._layout)
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
                _key_coercer(mapping, name, label, source_zone),
                not mode.any_of or name in mapping.required,
            )
            for name in mode.key_fields
            if name in mapping.key
            for label in [self._custom_field if name == "field_value" else name]
        ]
        self._fields = [
            self._field(target, spec, source_zone)
            for target, spec in mapping.fields.items()
            if target != self._key_field
        ]
        # what `map` reads of each field, unpacked from a tuple: four attribute reads of a `_Field` cost more
        self._plan = tuple((f.name, f.column, f.make, f.required) for f in self._fields)
        self._subscriptions = [
            _subscription_step(index, spec, mapping.default_region)
            for index, spec in enumerate(mapping.subscriptions)
        ]
        self._max_bytes = mapping.max_profile_bytes
        self._logged: set[tuple[str, str, type[BaseException]]] = set()  # see `_log_unforeseen`
        self._columns = self._read_columns() if complete_records else {}

    def _read_columns(self) -> dict[str, str]:
        """Each source column the mapping reads, with the first key, target or subscription reading it."""
        read = [(key.column, key.label) for key in self._keys]
        for target, spec in self.mapping.fields.items():
            columns = [c for _, c in template_columns(spec.template)] if spec.template else [spec.source]
            read += [(column, target) for column in columns if column is not None]
        read += [(sub.source, f"subscriptions[{i}]") for i, sub in enumerate(self.mapping.subscriptions)]
        first: dict[str, str] = {}
        for column, label in read:
            first.setdefault(column, label)
        return first

    def _field(self, target: str, spec: FieldSpec, source_zone: str | None) -> _Field:
        """A target's step: a column's or a template's value read as the source's, a constant in the
        mapping's zone (as `ProfileMapping` checked it)."""
        coerce = _coercer(self.mapping, target, spec.type, source_zone)
        required = target in self.mapping.required
        if spec.source is not None:
            return _Field(target, spec.source, coerce, required)
        if spec.template is not None:
            return _Field(target, None, _template_step(target, spec.template, coerce), required)
        value = _coercer(self.mapping, target, spec.type)(spec.const)
        return _Field(target, None, lambda record: value, required)

    def map(self, record: Mapping[str, Any]) -> Profile | Rejection:
        """The profile for `record`, or why it cannot be sent."""
        source_key = self._source_key(record)
        if isinstance(source_key, Rejection):
            return source_key
        if isinstance(record, ErrorRecord):  # the source could not read this record; its reason says why
            # scrubbed and made storable: a reason quoting a library's error may still hold a value's piece
            return Rejection(source_key, ERROR_FIELD, storable(scrub(record[ERROR_FIELD])))
        if self._columns and not record.keys() >= self._columns.keys():  # complete records lacking one
            column, label = next((c, label) for c, label in self._columns.items() if c not in record)
            reason = f"no column {column!r} in the source's rows (names match exactly, case included)"
            return Rejection(source_key, label, reason)
        try:
            match, ledger_key = self._match(record)
            data: dict[str, Any] = {self._key_field: match["field_value"]} if self._key_field else {}
            get = record.get
            for name, column, make, required in self._plan:
                if column is None:
                    value = make(record)
                else:  # what `_source_step` does, inline
                    raw = get(column)
                    empty = raw is None or (isinstance(raw, _SEQUENCES) and not raw)
                    value = None if empty else make(raw)
                if value is not None:
                    data[name] = value
                elif required:
                    raise ValidationError(name, "required value is missing")
            if self._subscriptions:
                subscriptions = [
                    sub for sub in (step(record) for step in self._subscriptions) if sub is not None
                ]
                if subscriptions:
                    data["subscriptions"] = subscriptions
        except ValidationError as error:
            return Rejection(source_key, error.field, error.reason)
        except _UNFORESEEN as error:
            return self._unforeseen(source_key, record, error)
        encoded = encode_json(self._item(match, data, self._key_field))
        if len(encoded) > self._max_bytes:
            return Rejection(
                source_key,
                PROFILE,
                f"encoded profile is {len(encoded)} bytes, above the limit of {self._max_bytes}",
            )
        return _profile(source_key, match, ledger_key, data, encoded, self._layout, self._key_field)

    def _unforeseen(self, source_key: str, record: Mapping[str, Any], error: Exception) -> Rejection:
        """The rejection of a record whose value made a check raise ``error``, naming the key or field
        that raises (the first: every one before it passed in `map`). Logged with where it was raised,
        never the message: it may hold the value."""
        checks = [(key.label, key.column, key.coerce) for key in self._keys]
        checks += [(target.name, target.column, target.make) for target in self._fields]
        field = "subscriptions" if self._subscriptions else PROFILE  # no key or field raises again
        for name, column, check in checks:
            raw = record if column is None else record.get(column)
            try:
                if not (raw is None or (isinstance(raw, _SEQUENCES) and not raw)):
                    check(raw)
            except Exception:
                field = name
                break
        self._log_unforeseen(f"record {scrub(source_key)}: {field}", ("field", field), error)
        return Rejection(source_key, field, f"cannot be read ({type(error).__name__})")

    def _log_unforeseen(self, what: str, where: tuple[str, str], error: BaseException) -> None:
        """Log where ``error`` was raised, once per place (``("field", name)`` or ``("source key", column)``)
        and kind of error: a source whose every row holds such a value would otherwise write a traceback
        per row (each rejection is recorded anyway)."""
        seen = (*where, type(error))
        if seen in self._logged:
            return
        self._logged.add(seen)
        log.warning(
            "Rejected %s raised %s (logged once per field and error; later ones are only recorded) in\n%s",
            what,
            type(error).__name__,
            _where(error),
        )

    def _source_key(self, record: Mapping[str, Any]) -> str | Rejection:
        column = self._source_key_column
        raw = record.get(column)
        try:
            text = None if raw is None else key_text(raw, field=column)
        except ValidationError as error:
            return Rejection(INVALID_KEY, column, error.reason)
        except _UNFORESEEN as error:
            self._log_unforeseen(f"a record's source key {column}", ("source key", column), error)
            return Rejection(INVALID_KEY, column, f"cannot be read ({type(error).__name__})")
        return text or Rejection(MISSING_KEY, column, "source key value is missing")

    def _match(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        if len(self._key_names) == 1:  # every mode but push_sub and email_phone*: one key, required
            return self._match_one(record)
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

    def _match_one(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """`_match` of a mode with one key: no loop, no list of identities to join (a profile_id key
        0.78 -> 0.54 us)."""
        key = self._keys[0]
        raw = record.get(key.column)
        value = None if raw is None else key.coerce(raw)
        if value is None:
            raise ValidationError(key.label, "matching key is missing")
        ledger_key = f"{self._mode}:{_identity(key.name, value)}"
        return {key.name: value}, ledger_key.lower() if key.name == "email" else ledger_key


def _where(error: BaseException) -> str:
    """Where ``error`` was raised: its traceback's frames, without its message."""
    return "".join(traceback.format_tb(error.__traceback__))


def _identity(name: str, value: Any) -> str:
    """A key value as the ledger knows it (an IDN email in one form, whichever form was sent; a custom key's
    number in one form, whichever type holds it: `number_key_text`)."""
    if value is None:
        return ""
    if name == "email":
        return email_identity(value)
    return value if type(value) is str else number_key_text(value, field=name)


def identity_of(mapping: ProfileMapping) -> str:
    """What a mapping's ledger keys know a contact by: the matching mode (the keys' prefix), and for the
    custom modes the field, which the keys leave out (``custom:<value>``). Keys of two identities never
    meet, so the ledger keeps one per pipeline of a scope (`altcraft.ledger.Ledger.identify`)."""
    mode = mapping.matching
    return f"{mode.value}:{mapping.field_name}" if mode.needs_field_name else mode.value


def identity_keys(ledger_key: str) -> tuple[str, ...]:
    """The component keys of a combined-mode (``email_phone``, ``email_phone_sub``) ledger key, e.g.
    ``("email:anna@example.org", "phone:+79001234567")``; empty for every other mode.

    Altcraft finds a combined-mode profile by any of its keys, so a contact matches an earlier one when
    any component matches (the ledger's aliases).
    """
    mode, _, rest = ledger_key.partition(":")
    if not MatchingMode(mode).any_of:
        return ()
    email, _, phone = rest.rpartition("|")  # an email may hold "|", an E.164 phone never does
    return tuple(key for key in (email and f"email:{email}", phone and f"phone:{phone}") if key)


_MODES = frozenset(mode.value for mode in MatchingMode)


def mask_key(ledger_key: Any) -> str:
    """A ledger key (`<matching>:<value>`) with its value masked according to the matching mode."""
    kind, sep, value = text_of(ledger_key).partition(":")
    if not sep or kind not in _MODES:
        return mask_text(ledger_key)
    if kind.startswith("email_phone"):
        email, _, phone = value.rpartition("|")
        masked = f"{mask_email(email) if email else ''}|{mask_phone(phone) if phone else ''}"
    elif kind.startswith("email"):
        masked = mask_email(value)
    elif kind.startswith("phone"):
        masked = mask_phone(value)
    elif kind == MatchingMode.PUSH_SUB:
        provider, _, subscription_id = value.partition("|")
        masked = f"{provider}|{mask_text(subscription_id)}"
    else:
        masked = mask_text(value)
    return f"{kind}:{masked}"
