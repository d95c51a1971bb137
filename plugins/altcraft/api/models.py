"""Pydantic models of Altcraft requests and responses.

Pages named ``area/id`` are under https://guides.altcraft.com/en/developer-guide/. Parsing is lenient
where the documentation is unsure (docs/api-conformance.md): ``total`` or
``total_count``, terminal task status ``completed`` or ``success``, group keys ``ID/title`` or
``id/name``, per-profile results at ``data.result`` or ``data.result.result``. Unknown keys are kept
on responses (``extra="allow"``) and dropped from nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from altcraft.api.layouts import flat_item
from altcraft.api.matching import MatchingMode
from altcraft.masking import scrub

# ---------------------------------------------------------------------------------------------- requests


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    def to_body(self, *, without_data: bool = False) -> dict[str, Any]:
        """The JSON body (without the token), omitting unset options and, if asked, ``data``."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"data"} if without_data else None)


class MatchKey(_Request):
    """The key(s) identifying one profile for a matching mode (`altcraft.api.matching`)."""

    email: str | None = None
    phone: str | None = None
    profile_id: str | None = None
    field_value: Any | None = None
    provider: str | None = None
    subscription_id: str | None = None


class LaunchOptions(_Request):
    """Options shared by the import-and-launch calls."""

    skip_triggers: bool | None = None
    skip_invalid_subscriptions: bool | None = None
    detect_geo: bool | None = None
    content: dict[str, Any] | None = None
    custom_data: dict[str, Any] | None = None


class StartRequest(MatchKey):
    """``workflows/start``: put an existing profile into a scenario (guide page
    ``automation-scenarios/2195668``)."""

    id: int = Field(description="scenario id")
    matching: MatchingMode = MatchingMode.EMAIL
    field_name: str | None = None
    resource_id: int | None = None
    subscription_filter: dict[str, Any] | None = None
    content: dict[str, Any] | None = None
    custom_data: dict[str, Any] | None = None


class ImportAndStartRequest(MatchKey, LaunchOptions):
    """``workflows/import_and_start``: import one profile and launch it
    (``automation-scenarios/28934227``)."""

    workflow_id: int
    matching: MatchingMode
    field_name: str | None = None
    resource_id: int | None = None
    db_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class BatchLaunchRequest(LaunchOptions):
    """``workflows/import_and_start_batch`` and its ``_task`` twin (``automation-scenarios/33063492``,
    ``33063493``).

    ``data`` holds one item per profile: its matching key(s) plus a nested ``data`` object of fields,
    e.g. ``{"email": "a@example.org", "data": {"_fname": "Anna"}}``.
    """

    workflow_id: int
    matching: MatchingMode
    field_name: str | None = None
    resource_id: int | None = None
    db_id: int | None = None
    data: list[dict[str, Any]]


class ImportProfileRequest(MatchKey):
    """``profiles/import``: add or update one profile (``profiles/import``)."""

    db_id: int
    matching: MatchingMode = MatchingMode.EMAIL
    field_name: str | None = None
    resource_id: int | None = None
    skip_triggers: bool | None = None
    skip_invalid_subscriptions: bool | None = None
    detect_geo: bool | None = None
    add_to_segments: list[int] | None = None
    remove_from_segments: list[int] | None = None
    data: dict[str, Any]


class ImportBatchRequest(_Request):
    """``profiles/import_batch``: add or update many profiles.

    Items are flat profile objects, as the page's example shows: "data JSON array [{"_fname": "John",
    "_lname": "Doe", "custom_id": …, "email": "john@example.com", "subscriptions": [...]}]"
    (https://guides.altcraft.com/en/developer-guide/profiles/2195504). An item given as matching key(s) plus
    a nested ``data`` object is flattened to that layout (:func:`altcraft.api.layouts.flat_item`).
    """

    db_id: int
    matching: MatchingMode = MatchingMode.EMAIL
    field_name: str | None = None
    resource_id: int | None = None
    skip_triggers: bool | None = None
    skip_invalid_subscriptions: bool | None = None
    detect_geo: bool | None = None
    data: list[dict[str, Any]]

    @field_validator("data")
    @classmethod
    def _flat(cls, items: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        key_field = info.data.get("field_name") if info.data.get("matching") == MatchingMode.CUSTOM else None
        return [
            flat_item({k: v for k, v in item.items() if k != "data"}, item["data"], key_field)
            if isinstance(item.get("data"), dict)
            else item
            for item in items
        ]


# --------------------------------------------------------------------------------------------- responses


#: Longest id kept from an answer (a profile id, a task id): the ledger's ``profile_id`` is VARCHAR(255).
MAX_ID_CHARS = 255
_CODES = range(-(2**31), 2**31)


def error_code(value: Any) -> int:
    """An answer's ``error`` as an integer (null and "" are 0; "12" is 12).

    :raises ValueError: for anything else -- text, a flag, a fraction (0.5 is not "no error"), a number
        beyond 32 bits (the ledger's ``error_code`` column) -- which no documented answer holds.
    """
    if type(value) is int and value in _CODES:
        return value  # the common case, first: what every answer holds in every per-profile result
    return read_error_code(value)


def read_error_code(value: Any) -> int:
    """`error_code` of any value, without its fast path for a plain 32-bit int."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("the error code is not a number")
    if isinstance(value, float):
        if not value.is_integer():  # 0.5, NaN, infinity
            raise ValueError("the error code is not an integer")
        value = int(value)
    try:
        code = int(value)
    except ValueError:
        raise ValueError("the error code is not a number") from None
    if code not in _CODES:
        raise ValueError("the error code is beyond 32 bits")
    return code


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Envelope(_Response):
    """Top-level keys of every response (``api-interaction``: ``error``, ``error_text``)."""

    error: int = 0
    error_text: str = ""

    @field_validator("error", mode="before")
    @classmethod
    def _code(cls, value: Any) -> int:
        return error_code(value)

    @field_validator("error_text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)


class ProfileResult(Envelope):
    """Outcome for one profile: of a single import/launch, or one entry of a batch ``result`` array.

    Its ``error`` is required (each entry has its own ``error``, ``profiles/2195496``): a result without
    a code, or with a null or empty one, says nothing of what happened to the profile, so it does not read
    as success.
    """

    error: int
    profile_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)

    @field_validator("error", mode="before")
    @classmethod
    def _code(cls, value: Any) -> int:
        if value is None or value == "":
            raise ValueError("the error code is missing")
        return error_code(value)

    @field_validator("profile_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def ok(self) -> bool:
        return self.error == 0

    @property
    def read(self) -> ResultRead:
        """``(error, error_text, profile_id)``: what a delivery reads of this result."""
        return self.error, self.error_text, self.profile_id


#: ``(error, error_text, profile_id)`` of one per-profile result.
ResultRead = tuple[int, str, str | None]


class BatchResult(Envelope):
    """A batch response: one :class:`ProfileResult` per input item, in input order."""

    result: list[ProfileResult] = Field(default_factory=list)


def batch_results(answer: Any) -> list[ResultRead]:
    """Each result of a batch answer as its `ProfileResult.read`, with the errors `BatchResult` raises.

    The usual answer -- a 32-bit int ``error`` or none, a text ``error_text`` or none, and a ``result`` list
    of objects holding a 32-bit int ``error``, a text ``error_text`` and an ASCII ``profile_id`` of at most
    `MAX_ID_CHARS` or none, nothing else -- is read as it is, without a model per result (0.8 us a
    contact); any other is read by `BatchResult`.
    """
    results = answer.get("result") if type(answer) is dict and _plain_envelope(answer) else None
    if type(results) is list:
        read: list[ResultRead] = []
        for item in results:
            if type(item) is not dict:
                break
            code, text, profile_id = item.get("error"), item.get("error_text"), item.get("profile_id")
            if (
                type(code) is not int
                or code not in _CODES
                or type(text) is not str
                or len(item) != (2 if profile_id is None else 3)
                or (profile_id is not None and not _plain_id(profile_id))
            ):
                break
            read.append((code, text, profile_id))
        else:
            return read
    return [result.read for result in BatchResult.model_validate(answer).result]


def _plain_envelope(answer: dict[Any, Any]) -> bool:
    """Whether `BatchResult` reads the answer's own keys as they are (and has no key to refuse)."""
    code, text = answer.get("error"), answer.get("error_text")
    return (
        (code is None or (type(code) is int and code in _CODES))
        and (text is None or type(text) is str)
        and all(type(key) is str for key in answer)
    )


def _plain_id(profile_id: Any) -> bool:
    """Whether `ProfileResult` takes ``profile_id`` as it is (ASCII: no lone surrogate, one byte a char)."""
    return type(profile_id) is str and len(profile_id) <= MAX_ID_CHARS and profile_id.isascii()


class Group(_Response):
    id: int | None = Field(default=None, validation_alias=AliasChoices("id", "ID", "Id"))
    name: str | None = Field(default=None, validation_alias=AliasChoices("name", "title", "Name", "Title"))


class ScenarioNode(_Response):
    name: str | None = None
    type: str | None = None
    node_id: int | None = None


class Scenario(_Response):
    """An automation scenario (``workflows/list``, ``automation-scenarios/95715617``).

    ``db_id`` is the documented ``list_id``.
    """

    id: int
    name: str = ""
    db_id: int | None = Field(default=None, validation_alias=AliasChoices("list_id", "db_id"))
    is_active: bool = False
    mode: str | None = None
    ui_tags: list[str] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list, validation_alias=AliasChoices("groups", "Groups"))
    nodes: list[ScenarioNode] = Field(default_factory=list)

    @field_validator("ui_tags", "groups", "nodes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class Database(_Response):
    """A profile database (``databases/list``)."""

    id: int
    name: str = ""
    ui_tags: list[str] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list, validation_alias=AliasChoices("groups", "Groups"))

    @field_validator("ui_tags", "groups", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


#: Field types that hold text: ``unicode`` is the text type of the one documented fields answer
#: (``resources/fields_get``, developer-guide/resources/2195591).
TEXT_FIELD_TYPES = frozenset({"string", "unicode", "text", "str"})


class DatabaseField(_Response):
    """A field of a database (``databases/fields_get``; its own layout is not documented).

    Read in the layout of its documented sister ``resources/fields_get`` (resources/2195591): ``{"category":
    "custom" | "system", "title", "name", "required", "type"}``, ``category`` giving ``is_custom``; or with an
    ``is_custom``/``custom`` flag.
    """

    name: str = Field(validation_alias=AliasChoices("name", "field_name", "key"))
    type: str = Field(default="string", validation_alias=AliasChoices("type", "field_type"))
    title: str | None = None
    is_custom: bool = Field(default=False, validation_alias=AliasChoices("is_custom", "custom"))

    @model_validator(mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        if isinstance(value, dict) and "category" in value and not {"is_custom", "custom"} & value.keys():
            return {**value, "is_custom": value["category"] == "custom"}
        return value

    @property
    def holds_text(self) -> bool:
        return self.type.lower() in TEXT_FIELD_TYPES


class Page(_Response):
    """One page of a list method: ``data`` plus keyset pagination (``next_from_id``)."""

    data: list[dict[str, Any]] = Field(default_factory=list)
    next_from_id: int | None = None
    total: int | None = Field(default=None, validation_alias=AliasChoices("total", "total_count"))

    @field_validator("data", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class TaskState(StrEnum):
    """Normalised state of an asynchronous task; raw values vary between doc versions
    (``profiles/3115796``). A raw value we do not recognise (`TaskStatus.unrecognised`) is read as running:
    it may be a finished task's, but whether that launched anyone is a guess either way."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @classmethod
    def parse(cls, raw: str | None) -> TaskState:
        return _RAW_STATES.get(_normal(raw), cls.RUNNING)

    @property
    def is_terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED)


#: Each raw task status we recognise (stripped, lower case) and its state.
_RAW_STATES = {
    **dict.fromkeys(
        ("completed", "complete", "success", "succeeded", "done", "finished"), TaskState.SUCCEEDED
    ),
    **dict.fromkeys(("failed", "fail", "error", "canceled", "cancelled", "aborted"), TaskState.FAILED),
    **dict.fromkeys(("", "new", "queued", "pending", "waiting", "created"), TaskState.PENDING),
    **dict.fromkeys(("running", "processing", "in_progress", "started"), TaskState.RUNNING),
}
#: How much of an unrecognised status messages quote.
SHOWN_STATUS_CHARS = 64


def _normal(raw: str | None) -> str:
    return (raw or "").strip().lower()


class TaskStatus(_Response):
    """``tasks/status`` payload (``data`` of the response). Its ``progress`` (documented 0-100) is not read:
    a value of any form is kept as given (an extra), never a reason to refuse the answer."""

    task_id: str | None = None
    status: str | None = None
    result: Any = None

    @property
    def state(self) -> TaskState:
        return TaskState.parse(self.status)

    @property
    def unrecognised(self) -> str | None:
        """A status we do not recognise, quoted as messages show it (server-chosen text: at most
        `SHOWN_STATUS_CHARS` characters, emails and phones masked, control characters escaped); None for a
        known one."""
        if _normal(self.status) in _RAW_STATES:
            return None
        raw = self.status or ""
        return repr(scrub(raw[:SHOWN_STATUS_CHARS]) + ("…" if len(raw) > SHOWN_STATUS_CHARS else ""))

    @property
    def still(self) -> str:
        """What a task not over yet still says, for a message after its id: ``is still 'queued'``, or
        ``still reported unrecognised status 'completed_with_errors'``."""
        shown = self.unrecognised
        return f"is still {self.status!r}" if shown is None else f"still reported unrecognised status {shown}"

    def profile_results(self) -> list[ProfileResult]:
        """Per-profile results of an import-and-launch task, wherever the server put them."""
        items = self.result
        if isinstance(items, dict):
            items = next((items[k] for k in ("result", "results", "profiles") if k in items), None)
        if not isinstance(items, list):
            return []
        results = []
        for item in items:
            try:
                results.append(ProfileResult.model_validate(item))
            except ValidationError:
                continue  # an unreadable result: the count no longer matches, so the chunk is uncertain
        return results
