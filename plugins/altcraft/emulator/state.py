"""In-memory state of the Altcraft API emulator and the semantics of every API method.

Pure Python (no web framework): :class:`Emulator` holds databases with their fields, profiles and lookup
indexes, scenarios, tokens, the launch journal and asynchronous tasks, and :meth:`Emulator.call` runs one
API method on a decoded JSON body. Errors are raised as :class:`ApiError` with the Altcraft body code.
The readings of unconfirmed documentation are listed in the package docstring (``altcraft.emulator``).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib import resources
from math import isfinite
from typing import Any

from altcraft.emulator.faults import FaultBook, bounded_number
from altcraft.emulator.matching import Mode, undocumented

#: Full-access token of an emulator started without ``--token`` (a fixed test value, not a secret).
DEFAULT_TOKEN = "emulator-token"  # ruff: ignore[hardcoded-password-string]
OK_TEXT = "Successful operation"
SKIP_MODES = frozenset({"skip", "skip_in_any_case"})
#: ``json`` is emulator-only (stores any JSON value as sent) for custom fields whose Altcraft type is unknown.
CUSTOM_FIELD_TYPES = frozenset({"string", "int", "float", "bool", "date", "datetime", "tags", "json"})
LIST_FIELD_TYPES = frozenset({"tags", "phones"})
CHANNELS = frozenset({"email", "sms", "push", "notify", "viber", "whatsapp", "telegram_bot"})
TASK_ENDPOINT = "workflows/import_and_start_batch_task"
TASK_RESULT_LAYOUTS = ("per_profile", "counts", "none")
#: Request options of the launch pages (automation-scenarios/28934227, 33063492, 33063493: "skip_triggers",
#: "skip_invalid_subscriptions", "detect_geo", "content"): journalled as sent with every launch.
LAUNCH_OPTIONS = ("content", "skip_triggers", "skip_invalid_subscriptions", "detect_geo")

#: (name, title, type) of the fields every database has.
STANDARD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("email", "Email", "string"),
    ("phones", "Phones", "phones"),
    ("_fname", "First name", "string"),
    ("_lname", "Last name", "string"),
    ("_bdate", "Birth date", "date"),
    # "Profile data object" page: "_sex int 0" — the user guide shows "male"/"female": stored as sent
    ("_sex", "Gender", "scalar"),
    ("_regdate", "Registration date", "datetime"),
    ("_regip", "Registration IP", "string"),
    ("_regcity", "Registration city", "string"),
    ("_regcountry", "Registration country", "string"),
    ("_regurl", "Registration URL", "string"),
    ("_ip", "Last IP", "string"),
    ("_city", "City", "string"),
    ("_country", "Country", "string"),
    ("_region", "Region", "string"),
    ("_postal_code", "Postal code", "scalar"),  # "_postal_code int 390000" on the same page
    ("_tz", "Time zone", "string"),
    ("_vendor", "Source", "string"),
    ("_browser", "Web browser", "string"),
    ("_status", "Profile status", "int"),
)

#: Keys of a batch item that are never profile fields (matching keys, per-item options).
_ITEM_ONLY = frozenset(
    {
        "phone",
        "profile_id",
        "field_value",
        "provider",
        "subscription_id",
        "custom_data",
        "custom_request",
        "data",
    }
)
#: Keys of a batch item that has ``data``, which are not profile fields: those above and its matching keys.
_NOT_FIELDS = {mode: _ITEM_ONLY | set(mode.key_names) for mode in Mode}
_EMPTY: frozenset[str] = frozenset()
_MISSING: Any = object()


def demo_seed() -> dict[str, Any]:
    """The bundled seed: database 1 "Customers", active scenario 12 and inactive scenario 13."""
    return json.loads(resources.files("altcraft.emulator").joinpath("demo_seed.json").read_text("utf-8"))


class ApiError(Exception):
    """An Altcraft error answer: body ``error`` code and ``error_text``."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text

    def envelope(self) -> dict[str, Any]:
        return {"error": self.code, "error_text": self.text}


# ------------------------------------------------------------------------------------------ value rules


def norm_email(value: str) -> str:
    return value.strip().lower()


#: What a phone number loses when it is normalised (`norm_phone`): spaces, dashes and parentheses.
_PHONE_SEPARATORS = str.maketrans("", "", " -()")


def norm_phone(value: str) -> str:
    return value.strip().translate(_PHONE_SEPARATORS)


def _string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, str)):
        return int(value)
    raise TypeError


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    number = float(value)
    if not isfinite(number):
        raise ValueError
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError


def _iso_date(value: Any) -> str:
    """ISO 8601 date or date-time (both are accepted for date and datetime fields); stored as sent."""
    if not isinstance(value, str):
        raise TypeError
    try:
        date.fromisoformat(value)
    except ValueError:
        datetime.fromisoformat(value)
    return value


def _str_list(value: Any, split: bool) -> list[str]:
    items = (
        value.split(",") if split and isinstance(value, str) else [value] if isinstance(value, str) else value
    )
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise TypeError
    return list(dict.fromkeys(filter(None, map(str.strip, items))))


def _phones(value: Any) -> list[str]:
    return [norm_phone(phone) for phone in _str_list(value, split=False)]


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError
    return value


def _json(value: Any) -> Any:
    return value


_COERCE = {
    "string": _string,
    "scalar": _scalar,
    "json": _json,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "date": _iso_date,
    "datetime": _iso_date,
    "tags": lambda value: _str_list(value, split=True),
    "phones": _phones,
}


def coerce(name: str, field_type: str, value: Any) -> Any:
    """The stored form of ``value`` for a field; ``None`` clears the field. 400 when the type is wrong."""
    if value is None:
        return None
    try:
        return _COERCE[field_type](value)
    except (TypeError, ValueError):
        raise ApiError(400, f"invalid value for field '{name}': expected {field_type}") from None


# ----------------------------------------------------------------------------------------------- model


@dataclass(slots=True, frozen=True)
class Field:
    name: str
    title: str
    type: str
    is_custom: bool

    def public(self) -> dict[str, Any]:
        """In the layout of the one documented fields answer, ``resources/fields_get`` (resources/2195591):
        ``{"category": "custom", "title": "New_field_1", "name": "api_new_field_1", "required": false,
        "type": "int"}``."""
        category = "custom" if self.is_custom else "system"
        return {
            "category": category,
            "title": self.title,
            "name": self.name,
            "required": False,
            "type": self.type,
        }


@dataclass(slots=True)
class Profile:
    id: str
    db_id: int
    fields: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    index_keys: list[tuple[Hashable, ...]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: now_rfc3339())

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "db_id": self.db_id,
            "fields": self.fields,
            "subscriptions": self.subscriptions,
        }


class Index(dict[tuple[Hashable, ...], "str | set[str]"]):
    """A database's lookup keys, as a dict the garbage collector never untracks (it untracks only plain
    dicts): holding only tuples of text and numbers, and ids, a plain dict was untracked by each pass,
    tracked again as young by the next new key, and so walked whole by the pass after every API call."""

    __slots__ = ()


@dataclass(slots=True)
class Database:
    """A profile database: its fields, its profiles and an index of their lookup keys to profile ids."""

    id: int
    name: str
    ui_tags: list[str]
    groups: list[dict[str, Any]]
    description: str
    suppress_id: int | None
    fields: dict[str, Field]
    profiles: dict[str, Profile] = field(default_factory=dict)
    #: lookup key → the id of the one profile it finds, or the set of ids when several share it (a new set
    #: for each key of each new profile was a third of the cost of indexing it)
    index: Index = field(default_factory=Index)
    #: the fields whose values the index holds (its ``("field", name, value)`` keys): those a ``custom``
    #: lookup asked for so far (`lookup_field`). Indexing every field of every profile was most of the index
    #: updates of a batch, for a mode most requests never use.
    indexed_fields: set[str] = field(default_factory=set)

    @classmethod
    def from_seed(cls, raw: dict[str, Any]) -> Database:
        custom = {}
        for spec in raw.get("fields", []):
            if spec.get("type", "string") not in CUSTOM_FIELD_TYPES:
                raise ValueError(
                    f"field {spec.get('name')!r}: type must be one of {sorted(CUSTOM_FIELD_TYPES)}"
                )
            custom[spec["name"]] = Field(
                spec["name"], spec.get("title", spec["name"]), spec.get("type", "string"), True
            )
        standard = {name: Field(name, title, kind, False) for name, title, kind in STANDARD_FIELDS}
        return cls(
            id=int(raw["id"]),
            name=str(raw.get("name", f"Database {raw['id']}")),
            ui_tags=list(raw.get("ui_tags", [])),
            groups=list(raw.get("groups", [])),
            description=str(raw.get("description", "")),
            suppress_id=raw.get("suppress_id"),
            fields=standard | custom,
        )

    def field_type(self, name: str) -> str:
        known = self.fields.get(name)
        return known.type if known else "string"

    def public(self) -> dict[str, Any]:
        groups = [{"Id": g.get("id"), "Name": g.get("name")} for g in self.groups]
        return {"id": self.id, "name": self.name, "ui_tags": self.ui_tags, "Groups": groups}

    def details(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "suppress_id": self.suppress_id,
            "description": self.description,
        }

    def add(self, profile: Profile) -> None:
        self.profiles[profile.id] = profile
        # once each: a profile may list one key twice (an address under two resources), and `remove`
        # takes the profile out of each key's ids once
        profile.index_keys = list(dict.fromkeys(_index_keys(self, profile)))
        for key in self._held(profile.index_keys):
            self._hold(key, profile.id)

    def remove(self, profile: Profile) -> None:
        del self.profiles[profile.id]
        for key in self._held(profile.index_keys):
            self._release(key, profile.id)

    def lookup(self, key: tuple[Hashable, ...]) -> set[str] | frozenset[str]:
        ids = self.index.get(key, _EMPTY)
        return frozenset((ids,)) if isinstance(ids, str) else ids

    def lookup_field(self, name: str, value: Hashable) -> set[str] | frozenset[str]:
        """`lookup` of a field's value; the field's values are indexed at its first lookup."""
        if name not in self.indexed_fields:
            self.indexed_fields.add(name)
            for profile in self.profiles.values():
                for key in profile.index_keys:
                    if key[0] == "field" and key[1] == name:
                        self._hold(key, profile.id)
        return self.lookup(("field", name, value))

    def _held(self, keys: list[tuple[Hashable, ...]]) -> Iterator[tuple[Hashable, ...]]:
        """Those of a profile's ``keys`` the index holds."""
        indexed = self.indexed_fields
        return (key for key in keys if key[0] != "field" or key[1] in indexed)

    def _hold(self, key: tuple[Hashable, ...], profile_id: str) -> None:
        ids = self.index.setdefault(key, profile_id)
        if isinstance(ids, set):
            ids.add(profile_id)
        elif ids != profile_id:
            self.index[key] = {ids, profile_id}

    def _release(self, key: tuple[Hashable, ...], profile_id: str) -> None:
        ids = self.index[key]
        if isinstance(ids, set) and len(ids) > 1:
            ids.discard(profile_id)
        else:  # the profile's own id, or a set of it alone
            del self.index[key]


@dataclass(slots=True)
class Scenario:
    id: int
    name: str
    db_id: int
    is_active: bool
    mode: str
    ui_tags: list[str]
    groups: list[dict[str, Any]]
    nodes: list[dict[str, Any]]

    @classmethod
    def from_seed(cls, raw: dict[str, Any]) -> Scenario:
        return cls(
            id=int(raw["id"]),
            name=str(raw.get("name", f"Scenario {raw['id']}")),
            db_id=int(raw["db_id"] if "db_id" in raw else raw["list_id"]),
            is_active=bool(raw.get("is_active", True)),
            mode=str(raw.get("mode", "skip")),
            ui_tags=list(raw.get("ui_tags", [])),
            groups=list(raw.get("groups", [])),
            nodes=list(
                raw.get("nodes", [{"name": "DEFAULT_START_NODE_TITLE", "type": "start", "node_id": 0}])
            ),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "list_id": self.db_id,
            "is_active": self.is_active,
            "mode": self.mode,
            "ui_tags": self.ui_tags,
            "groups": [{"ID": g.get("id"), "title": g.get("name")} for g in self.groups],
            "nodes": self.nodes,
        }


@dataclass(slots=True)
class Trigger:
    """An API-launched trigger campaign (``campaigns/triggers/*``): only what a launch needs."""

    id: int
    db_id: int
    is_active: bool

    @classmethod
    def from_seed(cls, raw: dict[str, Any]) -> Trigger:
        return cls(int(raw["id"]), int(raw["db_id"]), bool(raw.get("is_active", True)))


@dataclass(slots=True, frozen=True)
class Token:
    """An API token; ``None`` means access to every database / scenario."""

    value: str
    databases: frozenset[int] | None = None
    scenarios: frozenset[int] | None = None

    @classmethod
    def from_seed(cls, raw: dict[str, Any]) -> Token:
        def scope(value: Any) -> frozenset[int] | None:
            return None if value in (None, "*") else frozenset(int(v) for v in value)

        return cls(str(raw["token"]), scope(raw.get("databases")), scope(raw.get("scenarios")))

    def check_db(self, db_id: int) -> None:
        if self.databases is not None and db_id not in self.databases:
            raise ApiError(403, f"No access to database {db_id}")

    def check_scenario(self, scenario_id: int) -> None:
        if self.scenarios is not None and scenario_id not in self.scenarios:
            raise ApiError(403, f"No access to workflow {scenario_id}")


@dataclass(slots=True, frozen=True)
class Call:
    """One authorised API request."""

    endpoint: str
    request_id: str
    at: str
    token: Token
    body: dict[str, Any]
    #: where the request carried a token: ``header`` (Authorization: Bearer), ``body``, ``query``
    token_in: tuple[str, ...] = ("header",)
    #: the request's launch options as sent (`LAUNCH_OPTIONS`), journalled with each launch
    options: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        options = {name: self.body[name] for name in LAUNCH_OPTIONS if name in self.body}
        object.__setattr__(self, "options", options)  # once per request, not per launch


@dataclass(slots=True, frozen=True)
class MatchSpec:
    """How the profiles of one request are found (matching mode and its request-level parameters)."""

    mode: Mode
    field_name: str | None
    field_type: str
    resource_id: int | None
    skip_invalid_subscriptions: bool

    def keys(self, source: dict[str, Any]) -> dict[str, Any]:
        """The matching key(s) of one profile, read from a request body or a batch item."""
        names, any_of = self.mode.key_names, self.mode.any_of
        present = {}
        for name in names:
            value = source.get(name)
            if value is not None and value != "":
                present[name] = value
            elif not any_of:
                raise ApiError(400, f"matching '{self.mode}' needs '{name}'")
        if not present:
            raise ApiError(400, f"matching '{self.mode}' needs {' or '.join(names)}")
        for name, value in present.items():
            if name != "field_value" and not isinstance(value, str):
                raise ApiError(400, f"'{name}' must be a string")
        return present

    def journal_key(self, keys: dict[str, Any]) -> Any:
        return keys[self.mode.key_names[0]] if len(self.mode.key_names) == 1 else keys


@dataclass(slots=True)
class Task:
    """An ``import_and_start_batch_task`` task; :meth:`Emulator.advance_task` processes its items later."""

    id: str
    call: Call
    scenario_id: int
    spec: MatchSpec
    items: list[Any]
    status: str = "queued"
    progress: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def public(self, layout: str = "per_profile") -> dict[str, Any]:
        """The ``tasks/status`` payload. ``result`` of this task type is not documented
        (docs/api-conformance.md): ``layout`` picks our per-profile list, export-task-like counts
        (``errors``/``total``, as the documented "Uploading profiles to a file" task answers) or nothing."""
        done = self.status not in ("queued", "running")
        result: dict[str, Any] | None = None
        if done and layout == "per_profile":
            result = {"total": len(self.items), "result": self.results}
            if self.errors:
                result["errors"] = self.errors
        elif done and layout == "counts":
            failed = [r for r in self.results if r.get("error")]
            result = {"errors": [*self.errors, *failed], "total": len(self.items), "type": "workflow"}
        return {"task_id": self.id, "status": self.status, "progress": self.progress, "result": result}


_CONFIG_CHOICES: dict[str, tuple[Any, ...]] = {
    "error_http_status": ("mirror", "always_200"),
    "total_key": (None, "total", "total_count"),
    # the status a finished task reports: the two documented, or one the client does not recognise
    "task_success_status": ("completed", "success", "completed_with_errors"),
    "task_result": TASK_RESULT_LAYOUTS,
    "strict": (False, True),
    "tasks_held": (False, True),
}
_CONFIG_NUMBERS: dict[str, tuple[type, float]] = {
    "task_delay_seconds": (float, 0),
    "max_batch_profiles": (int, 1),
    "max_body_bytes": (int, 1),
    "latency_ms": (float, 0),
}


@dataclass(slots=True, frozen=True)
class Config:
    """Switches between documented variants, limits and timing (``total_key=None``: per-endpoint key)."""

    error_http_status: str = "mirror"
    total_key: str | None = None
    task_success_status: str = "completed"
    task_result: str = "per_profile"
    strict: bool = False
    task_delay_seconds: float = 0.2
    #: tasks stay ``queued`` past their delay until this is switched off: "still queued" without a wait
    tasks_held: bool = False
    max_batch_profiles: int = 10_000
    max_body_bytes: int = 10 * 1024 * 1024
    latency_ms: float = 0

    def updated(self, changes: dict[str, Any]) -> Config:
        """A copy with ``changes`` applied; ``ValueError`` names an unknown key or a bad value."""
        known = {f.name for f in fields(self)}
        checked = dict(changes)
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown config key {name!r}")
            # by type too: 1 == True, but a config of {"strict": 1} is a mistake to say, not to take
            choices = _CONFIG_CHOICES.get(name)
            if choices is not None and not any(type(value) is type(c) and value == c for c in choices):
                raise ValueError(f"{name} must be one of {list(choices)}")
            if name in _CONFIG_NUMBERS:
                kind, minimum = _CONFIG_NUMBERS[name]
                if value is None:
                    raise ValueError(f"'{name}' must be a finite number")
                checked[name] = bounded_number(changes, name, kind, None, minimum)
        return replace(self, **checked)

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------- indexing


def _index_keys(db: Database, profile: Profile) -> Iterator[tuple[Hashable, ...]]:
    """Every lookup key under which ``profile`` can be found (see :meth:`Emulator._find`)."""
    fields = db.fields
    for name, value in profile.fields.items():
        known = fields.get(name)
        if known is not None and known.type in LIST_FIELD_TYPES:
            for item in value:
                yield ("field", name, item)
        elif isinstance(value, (str, int, float, bool)):  # a "json" field's list or object is not a key
            yield ("field", name, value)
        if name == "email":
            yield ("email", norm_email(value))
        elif name == "phones":
            for phone in value:
                yield ("phone", phone)
    for sub in profile.subscriptions:
        channel, resource = sub["channel"], sub["resource_id"]
        if channel == "email":
            yield ("email_sub", norm_email(sub["email"]))
            yield ("email_sub", resource, norm_email(sub["email"]))
        elif channel == "sms":
            yield ("phone_sub", sub["phone"])
            yield ("phone_sub", resource, sub["phone"])
        elif channel == "push":
            yield ("push_sub", sub["provider"], sub["subscription_id"])
        for extra in (sub.get("cc_data"), sub.get("custom_fields")):
            for name, value in (extra or {}).items():
                if isinstance(value, (str, int, float)):
                    yield ("custom_sub", name, str(value))


def _parse_subscription(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError("must be an object")
    channel = raw.get("channel")
    if channel is None:
        # The "Import and engage profile in scenario" example sends {"email": …, "resource_id": 1} without a
        # channel: read it from the address given (emulator reading, docs/emulator.md).
        channel = "email" if "email" in raw or "email_data" in raw else "sms" if "phone" in raw else None
        raw = {**raw, "channel": channel} if channel else raw
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {sorted(CHANNELS)}")
    if isinstance(raw.get("resource_id"), bool) or not isinstance(raw.get("resource_id"), int):
        raise ValueError("resource_id (int) is required")
    sub = dict(raw)
    # "Add multiple profiles" / "Import multiple profiles" examples nest the address:
    # "subscriptions": [{"channel": "email", "email_data": {"email": "john@example.com"}, "resource_id": 1}]
    # while the single import pages put "email" on the subscription; both are accepted and stored as sent.
    nested = raw.get("email_data")
    if nested is not None:
        if not isinstance(nested, dict):
            raise ValueError("email_data must be an object")
        if channel == "email" and "email" not in raw:
            sub["email"] = nested.get("email")
    needed = {"email": ("email",), "sms": ("phone",), "push": ("provider", "subscription_id")}.get(
        channel, ()
    )
    for key in needed:
        if not isinstance(sub.get(key), str) or not sub[key].strip():
            raise ValueError(f"{key} is required for channel {channel}")
    for key in ("cc_data", "custom_fields"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ValueError(f"{key} must be an object")
    if channel == "sms":
        sub["phone"] = norm_phone(sub["phone"])
    return sub


#: Where ``profiles/get`` answers a subscription's address: "Channel data is stored in separate objects:
#: "email_data" - for Email subscriptions, "phone_data" - for SMS/Viber/WhatsApp"
#: (developer-guide/objects/Subscription-status_2195807; profiles/2195482 shows ``email_data``).
_READ_BACK_NESTING = {"email": ("email_data", "email"), "sms": ("phone_data", "phone")}


def _read_back(sub: dict[str, Any]) -> dict[str, Any]:
    """A stored subscription as ``profiles/get`` answers it: its address moved into its channel's object."""
    nesting = _READ_BACK_NESTING.get(sub["channel"])
    if nesting is None:
        return sub
    container, name = nesting
    flat = {key: value for key, value in sub.items() if key != name}
    return {**flat, container: {**(sub.get(container) or {}), name: sub[name]}}


def _subscription_identity(sub: dict[str, Any]) -> tuple[Hashable, ...]:
    channel, resource = sub["channel"], sub["resource_id"]
    if channel == "email":
        return (channel, resource, norm_email(sub["email"]))
    if channel == "sms":
        return (channel, resource, sub["phone"])
    if channel == "push":
        return (channel, resource, sub["provider"], sub["subscription_id"])
    return (channel, resource, json.dumps(sub.get("cc_data"), sort_keys=True))


def merge_subscriptions(current: list[dict[str, Any]], new: Iterable[dict[str, Any]]) -> None:
    """Update subscriptions with the same channel/resource/address in place; append the others."""
    by_identity = {_subscription_identity(sub): sub for sub in current}
    for sub in new:
        known = by_identity.get(_subscription_identity(sub))
        if known is None:
            current.append(sub)
            by_identity[_subscription_identity(sub)] = sub
        else:
            known.update(sub)


# --------------------------------------------------------------------------------------- request helpers


def _keys_from_fields(spec: MatchSpec, fields: dict[str, Any]) -> dict[str, Any]:
    """The matching keys of ``spec``'s mode readable from a batch item's profile fields (flat and data-only
    layouts)."""
    keys: dict[str, Any] = {}
    names = spec.mode.key_names
    subs = fields.get("subscriptions") if isinstance(fields.get("subscriptions"), list) else []
    subs = [sub for sub in subs if isinstance(sub, dict)]
    email = fields.get("email") if "email" in names else None
    if "email" in names and (not isinstance(email, str) or not email):
        email = next((_sub_address(sub, "email") for sub in subs if sub.get("channel") == "email"), None)
    if email:
        keys["email"] = email
    phones = fields.get("phones") if "phone" in names else None
    phone = phones if isinstance(phones, str) else phones[0] if isinstance(phones, list) and phones else None
    if "phone" in names and (not isinstance(phone, str) or not phone):
        phone = next((sub.get("phone") for sub in subs if sub.get("channel") == "sms"), None)
    if phone:
        keys["phone"] = phone
    if spec.mode is Mode.CUSTOM and fields.get(spec.field_name or "") not in (None, ""):
        keys["field_value"] = fields[spec.field_name or ""]
    return keys


def _sub_address(sub: dict[str, Any], name: str) -> Any:
    nested = sub.get(f"{name}_data")
    return sub.get(name) or (nested.get(name) if isinstance(nested, dict) else None)


#: JSON type of each top-level request parameter, as the developer guide's parameter tables give it:
#: "workflow_id Int", "skip_triggers Bool", "content Object" (automation-scenarios/33063492, 33063493,
#: 28934227); "id int", "custom_data JSON object", "resource_id int", "custom_request JSON object",
#: "subscription_filter JSON object", "matching string", "field_name string" (automation-scenarios/2195668);
#: "id int" (databases/2195565); "from_id int", "limit int" (automation-scenarios/95715617); "task_id
#: string" (profiles/3115796). A value of another type (a number as text included) is a 400; null is absent.
PARAMETER_TYPES: dict[str, tuple[type, str]] = {
    **dict.fromkeys(
        ("workflow_id", "id", "db_id", "resource_id", "trigger_id", "from_id", "limit"), (int, "an integer")
    ),
    **dict.fromkeys(
        ("skip_triggers", "skip_invalid_subscriptions", "detect_geo", "skip_profiles"), (bool, "a bool")
    ),
    **dict.fromkeys(("content", "custom_data", "subscription_filter", "custom_request"), (dict, "an object")),
    **dict.fromkeys(("matching", "field_name", "format", "task_id"), (str, "a string")),
}


def check_parameter_types(body: dict[str, Any]) -> None:
    """Refuse (400) a request whose documented parameters are not of their documented type."""
    for name, value in body.items():
        expected = PARAMETER_TYPES.get(name)
        if expected is None or value is None:
            continue
        kind, label = expected
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            raise ApiError(400, f"'{name}' must be {label}")


def _int_param(body: dict[str, Any], name: str, default: Any = _MISSING) -> Any:
    """An integer parameter (its type already checked by `check_parameter_types`), or ``default``."""
    value = body.get(name)
    if value is None:
        if default is _MISSING:
            raise ApiError(400, f"'{name}' is required")
        return default
    return value


def now_rfc3339() -> str:
    """The time now in UTC, to the millisecond: ``2026-12-07T06:05:14.123Z``."""
    return _rfc3339_millisecond(time.time_ns() // 1_000_000)


@lru_cache(maxsize=1)
def _rfc3339_millisecond(millisecond: int) -> str:
    """`now_rfc3339` of one millisecond since the epoch, formatted once for every profile created in it
    (formatting was 5% of a batch's CPU)."""
    seconds, rest = divmod(millisecond, 1000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: API method → name of the :class:`Emulator` method that serves it.
ENDPOINTS: dict[str, str] = {
    "workflows/start": "_workflows_start",
    "workflows/import_and_start": "_import_and_start",
    "workflows/import_and_start_batch": "_import_and_start_batch",
    TASK_ENDPOINT: "_import_and_start_batch_task",
    "tasks/status": "_tasks_status",
    "workflows/list": "_workflows_list",
    "workflows/activate": "_workflows_activate",
    "workflows/deactivate": "_workflows_deactivate",
    "profiles/import": "_profiles_import",
    "profiles/import_batch": "_profiles_import_batch",
    "databases/list": "_databases_list",
    "databases/get": "_databases_get",
    "databases/fields_get": "_databases_fields_get",
    "profiles/get": "_profiles_get",
    "campaigns/triggers/start_batch": "_triggers_start_batch",
    "campaigns/triggers/import_and_start_batch": "_triggers_import_and_start_batch",
}


#: API methods answering per-profile results: what ``profile_error`` and ``reorder_results`` rules act on.
BATCH_ENDPOINTS = frozenset(
    {
        "workflows/import_and_start_batch",
        TASK_ENDPOINT,
        "profiles/import_batch",
        "campaigns/triggers/start_batch",
        "campaigns/triggers/import_and_start_batch",
    }
)


class Emulator:
    """All state of one emulator instance. Not thread-safe: use it from one event loop."""

    def __init__(
        self, seed: dict[str, Any], *, token: str, config: Config | None = None, random_seed: int = 0
    ):
        self._seed = seed
        self._master_token = token
        self._initial_config = config or Config()
        self.faults = FaultBook(random_seed, frozenset(ENDPOINTS), BATCH_ENDPOINTS)
        self._resets = itertools.count()
        self.reset()

    # ----------------------------------------------------------------------------------- control API

    def reset(self) -> None:
        """Back to the initial seed: profiles, journal, tasks, faults and config included; a request that
        arrived before is never processed after (`generation`)."""
        #: how many resets so far: a request delayed across one (a latency rule) is dropped, not processed
        self.generation = next(self._resets)
        self.config = self._initial_config
        self.databases: dict[int, Database] = {}
        self.scenarios: dict[int, Scenario] = {}
        self.triggers: dict[int, Trigger] = {}
        self.tokens: dict[str, Token] = {self._master_token: Token(self._master_token)}
        self.members: dict[int, set[str]] = {}
        self.journal: list[dict[str, Any]] = []
        self.tasks: dict[str, Task] = {}
        self._profile_numbers = itertools.count(1)
        self.faults.reset()
        self.apply_seed(self._seed)

    def configure(self, changes: dict[str, Any]) -> Config:
        self.config = self.config.updated(changes)
        return self.config

    def apply_seed(self, seed: dict[str, Any]) -> None:
        """Add or replace databases, scenarios, profiles and tokens; all or nothing."""
        unknown = set(seed) - {"databases", "scenarios", "profiles", "tokens", "triggers"}
        if unknown:
            raise ValueError(f"unknown seed keys: {sorted(unknown)}")
        try:
            databases = {db.id: db for db in map(Database.from_seed, seed.get("databases", []))}
            scenarios = [Scenario.from_seed(raw) for raw in seed.get("scenarios", [])]
            tokens = [Token.from_seed(raw) for raw in seed.get("tokens", [])]
            triggers = [Trigger.from_seed(raw) for raw in seed.get("triggers", [])]
            for db_id, db in databases.items():
                if db_id in self.databases:
                    old = self.databases[db_id]
                    db.profiles, db.index, db.indexed_fields = old.profiles, old.index, old.indexed_fields
            all_dbs = self.databases | databases
            for what, objects in (("scenario", scenarios), ("trigger", triggers)):
                for obj in objects:
                    if obj.db_id not in all_dbs:  # every launch of it would be a 404 "database not found"
                        raise ValueError(f"{what} {obj.id}: unknown db_id {obj.db_id}")
            profiles = [self._seed_profile(all_dbs, raw) for raw in seed.get("profiles", [])]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"invalid seed item: missing or wrong {exc}") from None
        self.databases = all_dbs
        self.scenarios.update((sc.id, sc) for sc in scenarios)
        self.triggers.update((t.id, t) for t in triggers)
        self.tokens.update((t.value, t) for t in tokens)
        for profile in profiles:
            db = self.databases[profile.db_id]
            if profile.id in db.profiles:
                db.remove(db.profiles[profile.id])
            db.add(profile)

    def _seed_profile(self, databases: dict[int, Database], raw: dict[str, Any]) -> Profile:
        db = databases.get(raw.get("db_id"))
        if db is None:
            raise ValueError(f"profile {raw.get('id')!r}: unknown db_id {raw.get('db_id')!r}")
        try:
            values, subs = self._parse_data(
                db, {**raw.get("fields", {}), "subscriptions": raw.get("subscriptions", [])}
            )
        except ApiError as exc:
            raise ValueError(f"profile {raw.get('id')!r}: {exc.text}") from None
        return Profile(str(raw.get("id") or self._new_profile_id()), db.id, values, subs)

    def snapshot(self) -> dict[str, Any]:
        return {
            "databases": [
                {
                    **db.public(),
                    **db.details(),
                    "fields": [f.public() for f in db.fields.values()],
                    "profiles": len(db.profiles),
                }
                for db in self.databases.values()
            ],
            "scenarios": [sc.public() for sc in self.scenarios.values()],
            "profiles": sum(len(db.profiles) for db in self.databases.values()),
            "launches": len(self.journal),
            "tasks": [{k: v for k, v in t.public().items() if k != "result"} for t in self.tasks.values()],
            "config": self.config.public(),
            "faults": self.faults.snapshot(),
        }

    def launches(self, scenario_id: int | None = None) -> list[dict[str, Any]]:
        return [e for e in self.journal if scenario_id is None or e["scenario_id"] == scenario_id]

    def profiles(self, db_id: int | None = None) -> list[dict[str, Any]]:
        return [
            p.public()
            for db in self.databases.values()
            if db_id is None or db.id == db_id
            for p in db.profiles.values()
        ]

    # ------------------------------------------------------------------------------------------- API

    def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        token: Any,
        request_id: str,
        token_in: tuple[str, ...] = ("header",),
    ) -> dict[str, Any]:
        """Run one API method; the success envelope is added here. Raises :class:`ApiError`.

        ``token_in``: where the request carried a token (journalled with each launch).
        """
        if not token:
            raise ApiError(401, "API token is missing")
        known = self.tokens.get(token) if isinstance(token, str) else None
        if known is None:
            raise ApiError(403, "Invalid API token")
        check_parameter_types(body)
        handler = getattr(self, ENDPOINTS[endpoint])
        answer = handler(Call(endpoint, request_id, now_rfc3339(), known, body, token_in))
        return {"error": 0, "error_text": OK_TEXT, **answer}

    def advance_task(self, task_id: str, steps: int = 10) -> bool:
        """Process the next of ``steps`` equal parts of a task; False once the task is over (or gone)."""
        task = self.tasks.get(task_id)
        if task is None or task.status not in ("queued", "running"):
            return False
        try:
            scenario, db = self._launch_target(task.call, {"workflow_id": task.scenario_id})
        except ApiError as exc:
            task.status, task.progress, task.errors = "failed", 100, [exc.text]
            return False
        task.status = "running"
        done, total = len(task.results), len(task.items)
        part = task.items[done : done + max(1, -(-total // steps))]
        task.results.extend(
            self._run_items(replace(task.call, at=now_rfc3339()), db, scenario, task.spec, part)
        )
        task.progress = 100 if not total else len(task.results) * 100 // total
        if len(task.results) < total:
            return True
        task.results = self.faults.ordered(TASK_ENDPOINT, task.results)
        task.status = self.config.task_success_status
        return False

    # -------------------------------------------------------------------------------------- methods

    def _workflows_start(self, call: Call) -> dict[str, Any]:
        scenario = self._scenario(call, _int_param(call.body, "id"))
        self._check_active(scenario)
        db = self._database(call, scenario.db_id)
        spec = self._spec(db, call.body, call.endpoint)
        keys = spec.keys(call.body)
        found = self._find(db, spec, keys)
        if not found:
            raise ApiError(404, "profile not found")
        profile = db.profiles[self._single(found)]
        self._launch(call, scenario, profile, spec, keys)
        return {"profile_id": profile.id}

    def _import_and_start(self, call: Call) -> dict[str, Any]:
        scenario, db = self._launch_target(call, call.body)
        spec = self._spec(db, call.body, call.endpoint)
        keys = spec.keys(call.body)
        profile = self._import(db, spec, keys, call.body.get("data"))
        self._launch(call, scenario, profile, spec, keys)
        return {"profile_id": profile.id}

    def _import_and_start_batch(self, call: Call) -> dict[str, Any]:
        scenario, db = self._launch_target(call, call.body)
        spec = self._spec(db, call.body, call.endpoint)
        return {"result": self._run_items(call, db, scenario, spec, self._items(call.body))}

    def _import_and_start_batch_task(self, call: Call) -> dict[str, Any]:
        scenario, db = self._launch_target(call, call.body)
        task = Task(
            f"task_{uuid.uuid4()}",
            call,
            scenario.id,
            self._spec(db, call.body, call.endpoint),
            self._items(call.body),
        )
        self.tasks[task.id] = task
        return {"data": {"task_id": task.id}}

    def _tasks_status(self, call: Call) -> dict[str, Any]:
        task_id = call.body.get("task_id")
        if not task_id:
            raise ApiError(400, "'task_id' is required")
        task = self.tasks.get(task_id) if isinstance(task_id, str) else None
        if task is None:
            raise ApiError(404, "task not found")
        return {"data": task.public(self.config.task_result)}

    def _workflows_list(self, call: Call) -> dict[str, Any]:
        visible = [
            sc
            for sc in self.scenarios.values()
            if call.token.scenarios is None or sc.id in call.token.scenarios
        ]
        return self._page(call.body, visible, "total")

    def _workflows_activate(self, call: Call) -> dict[str, Any]:
        scenario = self._scenario(call, _int_param(call.body, "id"))
        scenario.is_active = True
        if call.body.get("skip_profiles"):
            self.members.pop(scenario.id, None)
        return {"data": None}

    def _workflows_deactivate(self, call: Call) -> dict[str, Any]:
        self._scenario(call, _int_param(call.body, "id")).is_active = False
        return {"data": None}

    def _profiles_import(self, call: Call) -> dict[str, Any]:
        db = self._database(call, _int_param(call.body, "db_id"))
        if call.body.get("data") is None:
            raise ApiError(400, "'data' is required")
        spec = self._spec(db, call.body, call.endpoint)
        return {"profile_id": self._import(db, spec, spec.keys(call.body), call.body["data"]).id}

    def _profiles_import_batch(self, call: Call) -> dict[str, Any]:
        db = self._database(call, _int_param(call.body, "db_id"))
        spec = self._spec(db, call.body, call.endpoint)
        return {"result": self._run_items(call, db, None, spec, self._items(call.body))}

    def _databases_list(self, call: Call) -> dict[str, Any]:
        visible = [
            db
            for db in self.databases.values()
            if call.token.databases is None or db.id in call.token.databases
        ]
        return self._page(call.body, visible, "total_count")

    def _databases_get(self, call: Call) -> dict[str, Any]:
        return {"data": self._database(call, _int_param(call.body, "id")).details()}

    def _databases_fields_get(self, call: Call) -> dict[str, Any]:
        db_id = _int_param(call.body, "db_id", None)
        db = self._database(call, db_id if db_id is not None else _int_param(call.body, "id"))
        return {"data": [f.public() for f in db.fields.values()]}

    def _profiles_get(self, call: Call) -> dict[str, Any]:
        """``profiles/get``: the profile's fields with ``id``, ``db_id``, ``subscriptions`` (the guide's
        *Get profile data* page)."""
        db = self._database(call, _int_param(call.body, "db_id"))
        spec = self._spec(db, call.body, call.endpoint)
        found = self._find(db, spec, spec.keys(call.body))
        if not found:
            raise ApiError(404, "profile not found")
        profile = db.profiles[self._single(found)]
        # developer guide, Profiles → "Get profile data": the answer also has "_createtime"
        data = {
            **profile.fields,
            "_createtime": profile.created_at,
            "id": profile.id,
            "db_id": db.id,
            "subscriptions": [_read_back(sub) for sub in profile.subscriptions],
        }
        return {"data": data}

    def _trigger(self, call: Call) -> tuple[Trigger, Database]:
        trigger = self.triggers.get(_int_param(call.body, "trigger_id"))
        if trigger is None:
            raise ApiError(404, "trigger campaign not found")
        if not trigger.is_active:
            raise ApiError(400, "trigger campaign is not active")
        return trigger, self._database(call, trigger.db_id)

    def _triggers_start_batch(self, call: Call) -> dict[str, Any]:
        """``campaigns/triggers/start_batch``: existing profiles found by the Data array's keys."""
        _trigger, db = self._trigger(call)
        spec = self._spec(db, call.body, call.endpoint)
        results = []
        for item in self._items(call.body):
            try:
                self._item_fault(call)
                keys = spec.keys(item if isinstance(item, dict) else {})
                found = self._find(db, spec, keys)
                if not found:
                    raise ApiError(404, "profile not found")
                profile = db.profiles[self._single(found)]
                self._send_trigger(call, profile, spec, keys)
                results.append({"error": 0, "error_text": OK_TEXT, "profile_id": profile.id})
            except ApiError as exc:
                results.append(exc.envelope())
        return {"result": self.faults.ordered(call.endpoint, results)}

    def _triggers_import_and_start_batch(self, call: Call) -> dict[str, Any]:
        _trigger, db = self._trigger(call)
        spec = self._spec(db, call.body, call.endpoint)
        return {"result": self._run_items(call, db, None, spec, self._items(call.body))}

    def _send_trigger(self, call: Call, profile: Profile, spec: MatchSpec, keys: dict[str, Any]) -> None:
        self._journal(call, profile, spec, keys, scenario_id=None, trigger_id=call.body["trigger_id"])

    # -------------------------------------------------------------------------------------- pieces

    def _scenario(self, call: Call, scenario_id: int) -> Scenario:
        scenario = self.scenarios.get(scenario_id)
        if scenario is None:
            raise ApiError(404, "workflow not found")
        call.token.check_scenario(scenario_id)
        return scenario

    def _database(self, call: Call, db_id: int) -> Database:
        db = self.databases.get(db_id)
        if db is None:
            raise ApiError(404, "database not found")
        call.token.check_db(db_id)
        return db

    @staticmethod
    def _check_active(scenario: Scenario) -> None:
        if not scenario.is_active:
            raise ApiError(400, "workflow is not active")

    def _launch_target(self, call: Call, body: dict[str, Any]) -> tuple[Scenario, Database]:
        """Scenario and database of an import-and-launch request, after every whole-request check."""
        scenario = self._scenario(call, _int_param(body, "workflow_id"))
        db_id = _int_param(body, "db_id", None)
        if db_id is not None and db_id != scenario.db_id:
            raise ApiError(400, f"db_id {db_id} is not the database of workflow {scenario.id}")
        self._check_active(scenario)
        return scenario, self._database(call, scenario.db_id)

    def _spec(self, db: Database, body: dict[str, Any], endpoint: str = "") -> MatchSpec:
        raw = body.get("matching") or "email"
        try:
            mode = Mode(raw)
        except ValueError:
            raise ApiError(400, f"unknown matching mode {raw!r}") from None
        # The pages list fewer modes for the scenario endpoints; whether a real server refuses the others
        # is not documented, so only --strict refuses them.
        why = undocumented(endpoint, mode) if self.config.strict else None
        if why:
            raise ApiError(400, why)
        field_name = body.get("field_name")
        if mode.needs_field_name and (not field_name or not isinstance(field_name, str)):
            raise ApiError(400, f"matching '{mode}' needs 'field_name'")
        if mode is Mode.CUSTOM and field_name not in db.fields:
            raise ApiError(400, f"unknown field '{field_name}' in database {db.id}")
        field_type = db.field_type(field_name) if mode is Mode.CUSTOM else "string"
        resource_id = _int_param(body, "resource_id", None)
        return MatchSpec(
            mode, field_name, field_type, resource_id, bool(body.get("skip_invalid_subscriptions"))
        )

    def _items(self, body: dict[str, Any]) -> list[Any]:
        items = body.get("data")
        if not isinstance(items, list):
            raise ApiError(400, "'data' must be an array of profiles")
        # "It is not recommended to transfer more than 10,000 profiles in one request" (batch pages): a
        # recommendation, so only --strict refuses more.
        if self.config.strict and len(items) > self.config.max_batch_profiles:
            raise ApiError(
                400, f"too many profiles in one request: {len(items)} > {self.config.max_batch_profiles}"
            )
        return items

    def _run_items(
        self, call: Call, db: Database, scenario: Scenario | None, spec: MatchSpec, items: list[Any]
    ) -> list[dict[str, Any]]:
        """One result per item, in order; a failed item is neither imported nor launched.

        Each result is ``{"error", "error_text", "profile_id"}`` and nothing else: the only per-profile
        result the developer guide shows, "Add multiple profiles" (profiles/2195496): 'Server response will
        contain "result" parameter with occurring errors and profile IDs', example ``"result": [{"error": 0,
        "error_text": "Successful operation", "profile_id": "663a138cee44bb50a67115cd"}]``. No index, no
        matching value, no id of the request's: nothing but the order says which item a result answers.
        The import_batch (profiles/2195504) and scenario batch pages (automation-scenarios/33063492,
        33063493) show no response example in what we could read; the ``reorder_results`` fault answers in
        another order.
        """
        results = []
        for item in items:
            try:
                self._item_fault(call)
                keys, data = self._item_parts(db, spec, item)
                profile = self._import(db, spec, keys, data)
                if scenario is not None:
                    self._launch(call, scenario, profile, spec, keys)
                elif isinstance(call.body.get("trigger_id"), int):
                    self._send_trigger(call, profile, spec, keys)
                results.append({"error": 0, "error_text": OK_TEXT, "profile_id": profile.id})
            except ApiError as exc:
                results.append(exc.envelope())
        return results if call.endpoint == TASK_ENDPOINT else self.faults.ordered(call.endpoint, results)

    def _item_fault(self, call: Call) -> None:
        """Raise the error of a ``profile_error`` rule that fires for this batch item, if one does."""
        fault = self.faults.item_fault(call.endpoint) if self.faults.rules else None
        if fault is not None:
            raise ApiError(fault.code, fault.text or "Injected profile error")

    def _item_parts(self, db: Database, spec: MatchSpec, item: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Matching key(s) and profile fields of one batch item, in any documented layout.

        * flat — "Import multiple profiles" (profiles/2195504): fields and the matching key side by side,
          ``{"_fname": "John", "email": "john@example.com", "subscriptions": [...]}``;
        * nested — key on the item, fields in ``data`` (trigger "Data array" page + our old reading);
        * data-only — "Bulk profiles import + trigger campaign launch" (trigger-campaigns/37847473):
          ``{"data": {"_fname": "John", "email": "profile4@example.com", "phones": "+790000000000"}}``.

        A key missing on the item is read from the fields: ``email`` (or an email subscription), the
        first of ``phones`` (or an SMS subscription) or the ``field_name`` field. Every other item key is a
        profile field: stored, or refused with an error naming it. ``--strict`` wants the key on the item.
        """
        if not isinstance(item, dict):
            raise ApiError(400, "each profile must be an object")
        nested = item.get("data")
        if nested is None:
            fields = {k: v for k, v in item.items() if k not in _ITEM_ONLY}
        elif isinstance(
            nested, dict
        ):  # the item's own key names are only keys here, as in the Data array page
            fields = {k: v for k, v in item.items() if k not in _NOT_FIELDS[spec.mode]}
            fields.update(nested)
        else:
            raise ApiError(400, "'data' of a profile must be an object")
        if self.config.strict:
            return spec.keys(item), fields
        on_item = {k: item[k] for k in spec.mode.key_names if k in item}
        return spec.keys({**_keys_from_fields(spec, fields), **on_item}), fields

    def _parse_data(
        self, db: Database, data: Any, skip_invalid_subscriptions: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if data is None:
            return {}, []
        if not isinstance(data, dict):
            raise ApiError(400, "'data' must be an object")
        values: dict[str, Any] = {}
        subs: list[dict[str, Any]] = []
        for name, value in data.items():
            if name == "subscriptions":
                subs = self._parse_subscriptions(value, skip_invalid_subscriptions)
                continue
            known = db.fields.get(name)
            if known is None:
                raise ApiError(400, f"unknown field '{name}' in database {db.id}")
            values[name] = coerce(name, known.type, value)
        return values, subs

    @staticmethod
    def _parse_subscriptions(raw: Any, skip_invalid: bool) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise ApiError(400, "'subscriptions' must be an array")
        subs = []
        for number, item in enumerate(raw):
            try:
                subs.append(_parse_subscription(item))
            except ValueError as exc:
                if not skip_invalid:
                    raise ApiError(400, f"invalid subscription #{number}: {exc}") from None
        return subs

    def _find(self, db: Database, spec: MatchSpec, keys: dict[str, Any]) -> set[str] | frozenset[str]:
        """Ids of the profiles that match ``keys`` in ``spec.mode`` (each lookup is a dict access)."""
        mode, look = spec.mode, db.lookup
        within = () if spec.resource_id is None else (spec.resource_id,)
        email = norm_email(keys["email"]) if "email" in keys else None
        phone = norm_phone(keys["phone"]) if "phone" in keys else None
        match mode:
            case Mode.EMAIL:
                return look(("email", email)) | look(("email_sub", *within, email))
            case Mode.EMAIL_PROFILE:
                return look(("email", email))
            case Mode.EMAIL_SUB:
                return look(("email_sub", *within, email))
            case Mode.PHONE:
                return look(("phone", phone)) | look(("phone_sub", *within, phone))
            case Mode.PHONE_SUB:
                return look(("phone_sub", *within, phone))
            case Mode.PROFILE_ID:
                return {keys["profile_id"]} if keys["profile_id"] in db.profiles else _EMPTY
            case Mode.PUSH_SUB:
                return look(("push_sub", keys["provider"], keys["subscription_id"]))
            case Mode.CUSTOM:
                value = coerce(spec.field_name or "", spec.field_type, keys["field_value"])
                values = value if spec.field_type in LIST_FIELD_TYPES else [value]
                if not all(isinstance(v, (str, int, float)) for v in values):  # a "json" field's list/object
                    raise ApiError(
                        400, f"'field_value' to match field '{spec.field_name}' must be text or a number"
                    )
                found = [db.lookup_field(spec.field_name or "", v) for v in values]
                return set.intersection(*map(set, found)) if found else _EMPTY
            case Mode.CUSTOM_SUB:
                return look(("custom_sub", spec.field_name, str(keys["field_value"])))
            case Mode.EMAIL_PHONE:
                return (look(("email", email)) if email else _EMPTY) | (
                    look(("phone", phone)) if phone else _EMPTY
                )
            case Mode.EMAIL_PHONE_SUB:
                by_email = look(("email_sub", *within, email)) if email else _EMPTY
                return by_email | (look(("phone_sub", *within, phone)) if phone else _EMPTY)
        raise AssertionError(mode)  # pragma: no cover - every mode is handled above

    @staticmethod
    def _single(found: set[str] | frozenset[str]) -> str:
        if len(found) > 1:
            raise ApiError(409, "more than one profile matches")
        return next(iter(found))

    def _import(self, db: Database, spec: MatchSpec, keys: dict[str, Any], data: Any) -> Profile:
        """Upsert one profile: update the matching profile, or create one (never for ``profile_id``)."""
        values, subs = self._parse_data(db, data, spec.skip_invalid_subscriptions)
        found = self._find(db, spec, keys)
        if found:
            profile = db.profiles[self._single(found)]
            db.remove(profile)
            for name, value in values.items():
                if value is None:
                    profile.fields.pop(name, None)
                else:
                    profile.fields[name] = value
            merge_subscriptions(profile.subscriptions, subs)
        elif spec.mode is Mode.PROFILE_ID:
            raise ApiError(404, "profile not found")
        else:
            values = self._key_fields(spec, keys) | values
            merged: list[dict[str, Any]] = []
            merge_subscriptions(merged, subs)
            profile = Profile(
                self._new_profile_id(), db.id, {k: v for k, v in values.items() if v is not None}, merged
            )
        db.add(profile)
        return profile

    @staticmethod
    def _key_fields(spec: MatchSpec, keys: dict[str, Any]) -> dict[str, Any]:
        """Profile fields a new profile takes from its matching key, so the same key finds it again."""
        mode = spec.mode
        values: dict[str, Any] = {}
        if "email" in keys and mode in (
            Mode.EMAIL,
            Mode.EMAIL_PROFILE,
            Mode.EMAIL_PHONE,
        ):
            values["email"] = keys["email"]
        if "phone" in keys and mode in (Mode.PHONE, Mode.EMAIL_PHONE):
            values["phones"] = [norm_phone(keys["phone"])]
        if mode is Mode.CUSTOM:
            values[spec.field_name or ""] = coerce(
                spec.field_name or "", spec.field_type, keys["field_value"]
            )
        return values

    def _launch(
        self, call: Call, scenario: Scenario, profile: Profile, spec: MatchSpec, keys: dict[str, Any]
    ) -> None:
        members = self.members.get(scenario.id)
        if members is None:
            members = self.members[scenario.id] = set()
        entered = scenario.mode not in SKIP_MODES or profile.id not in members
        members.add(profile.id)
        self._journal(call, profile, spec, keys, scenario_id=scenario.id, entered=entered)

    def _journal(
        self,
        call: Call,
        profile: Profile,
        spec: MatchSpec,
        keys: dict[str, Any],
        *,
        scenario_id: int | None,
        trigger_id: Any = None,
        entered: bool = True,
    ) -> None:
        """One journal entry per profile launched; ``options`` are the request's launch options as sent."""
        self.journal.append(
            {
                "seq": len(self.journal) + 1,
                "at": call.at,
                "request_id": call.request_id,
                "endpoint": call.endpoint,
                "scenario_id": scenario_id,
                **({} if trigger_id is None else {"trigger_id": trigger_id}),
                "db_id": profile.db_id,
                "profile_id": profile.id,
                "matching": str(spec.mode),
                "key": spec.journal_key(keys),
                "entered": entered,
                "options": dict(call.options),
                "token_in": list(call.token_in),
            }
        )

    def _page(self, body: dict[str, Any], objects: list[Any], documented_total_key: str) -> dict[str, Any]:
        from_id = _int_param(body, "from_id", 1)
        limit = _int_param(body, "limit", 1000)
        if limit < 1:
            raise ApiError(400, "'limit' must be positive")
        rest = sorted((o for o in objects if o.id >= from_id), key=lambda o: o.id)
        answer: dict[str, Any] = {
            "data": [o.public() for o in rest[:limit]],
            self.config.total_key or documented_total_key: len(objects),
        }
        if len(rest) > limit:
            answer["next_from_id"] = rest[limit].id
        return answer

    def _new_profile_id(self) -> str:
        return f"{0x65A0C0FF << 64 | next(self._profile_numbers):024x}"
