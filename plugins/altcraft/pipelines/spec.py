"""The YAML pipeline spec: one file describes one scheduled, backfillable import-and-launch DAG.

`PipelineSpec` is strict (unknown keys are errors) and offline: validating a spec touches no database,
network or user module. Cross-field rules are attached to the later field, so every error names the
field at fault (``partitions: ...``, ``source.table: ...``). `read_spec` turns a file into a spec or a
`SpecError` that names the file, the line and the field.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import chain
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from altcraft.batching import MAX_BATCH_ITEMS
from altcraft.mapping import ProfileMapping, naive_times_moved
from altcraft.modes import DeliveryMode
from altcraft.relaunch import RelaunchPolicy
from altcraft.sources.crm import CRM_SPECS, PRESET_MAPPING, CrmSpec, merge_mapping
from altcraft.sources.python import validate_callable_path
from altcraft.sources.spec import SourceSpec, SqlTableSpec
from altcraft.spec_checks import (
    MAX_BYTES,
    MAX_DURATION,
    MAX_INT32,
    MAX_INT64,
    MAX_LOOKUPS,
    JsonData,
    NoCredentials,
    NoSecretNames,
    Timezone,
    public_base_url,
)
from altcraft.webhooks.kinds import AUTH_FAILURES_PER_MINUTE, KINDS, MAX_RECORDS

_DAG_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_CONN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/ -]{0,99}")
_OWNER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,99}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNLIKE_ITS_TEXT = re.compile(r"[-+]?(?:0[0-7_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)")
"""The numbers YAML 1.1 reads unlike their text: octal (``0123`` is 83) and base 60 (``9:30`` is 570)."""
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CRON_FIELDS = 5
_CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


FIRST_YEAR, LAST_YEAR = 1970, 2999
"""The years a spec's dates may fall in: year 1 or 9999 built DAGs that overflowed or never ran."""


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"2w"`` (or a timedelta) as a positive timedelta.

    At most `MAX_DURATION`.
    """
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a duration such as 30m, 1h, 1d or 2w, got {value!r}")
        duration = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if duration <= timedelta(0):
        raise ValueError("must be positive")
    if duration > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION.days} days, got {value!r}")
    return duration


def duration_text(duration: timedelta) -> str:
    """A duration in spec units, largest first (``15m``, ``1h 15m``, ``3d 15m``)."""
    parts = []
    for unit in "dhms":
        size = timedelta(**{_UNITS[unit]: 1})
        count, duration = divmod(duration, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


_PRESET_LONGEST = {
    "@hourly": timedelta(hours=1),
    "@daily": timedelta(days=1),
    "@weekly": timedelta(weeks=1),
    "@monthly": timedelta(days=31),
    "@quarterly": timedelta(days=92),
    "@yearly": timedelta(days=366),
}
_FIRES_CHECKED = 1000
"""How many fires of a cron expression `longest_interval` looks at (a leap day's expression, 4 years)."""


def longest_interval(schedule: str, start: datetime, timezone: str) -> timedelta:
    """The longest time between two runs of a spec's ``schedule`` (an interval, a preset or a cron
    expression, whose gaps are measured over its first fires from ``start``), plus the clock shift of
    ``timezone`` if it has one: a schedule on its wall clock runs an hour later across the shift."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    offsets = [datetime(start.year, month, 1, tzinfo=zone).utcoffset() or timedelta(0) for month in (1, 7)]
    shift = max(offsets) - min(offsets)
    if _DURATION.fullmatch(schedule):
        return parse_duration(schedule) + shift
    if schedule in _PRESET_LONGEST:
        return _PRESET_LONGEST[schedule] + shift
    from croniter import croniter

    first = start.replace(tzinfo=None)
    fires = croniter(schedule, first)
    previous, longest = fires.get_next(datetime), timedelta(0)
    for _ in range(_FIRES_CHECKED):
        current = fires.get_next(datetime)
        longest, previous = max(longest, current - previous), current
        if current - first > timedelta(days=4 * 366):
            break
    return longest + shift


def _plain_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _as_datetime(value: Any) -> Any:
    """YAML gives ``2024-01-01`` as a date: read it as midnight (in the spec's timezone)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _plausible_year(moment: datetime) -> datetime:
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"the year must be from {FIRST_YEAR} to {LAST_YEAR}, got {moment.year}")
    return moment


def _aware(moment: datetime, zone: str) -> datetime:
    """A spec date-time as an aware one: naive values are in the spec's time zone."""
    from zoneinfo import ZoneInfo

    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def _schedule(value: str) -> str:
    text = value.strip()
    if _DURATION.fullmatch(text):
        parse_duration(text)
        return text
    if text in _CRON_PRESETS:
        return text
    from croniter import CroniterBadDateError, croniter

    fields = len(text.split())
    if fields > _CRON_FIELDS and croniter.is_valid(text):
        raise ValueError(
            f"a cron expression has five fields (minute hour day month weekday), got {fields}: Airflow reads "
            "a sixth as seconds, running it up to every second (Quartz's '0 0 6 * * *' is '0 6 * * *' here)"
        )
    if text.startswith("@") or fields != _CRON_FIELDS or not croniter.is_valid(text):
        raise ValueError(
            f"{value!r} is neither a cron expression (e.g. '0 6 * * *', '@daily') "
            "nor an interval (e.g. 15m, 1h, 1d)"
        )
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{value!r} never fires (a day no month has, such as February 30)") from None
    return text


def _dotted(value: str) -> str:
    """``package.module:attribute`` or ``package.module.attribute``, normalised to the colon form."""
    if ":" not in value and "." in value:
        module, _, attribute = value.rpartition(".")
        value = f"{module}:{attribute}"
    return validate_callable_path(value, field="path")


DagId = Annotated[str, _matching(_DAG_ID, "DAG id (a letter, then letters, digits or _; at most 100)")]
ConnId = Annotated[str, _matching(_CONN_ID, "connection id (letters, digits, _ . -)")]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PlainText = Annotated[str, AfterValidator(_plain_text), NoCredentials]
DottedPath = Annotated[str, AfterValidator(_dotted)]
LocalDatetime = Annotated[datetime, BeforeValidator(_as_datetime), AfterValidator(_plausible_year)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioSpec(_Model):
    """The Altcraft scenario every contact is launched into."""

    id: int = Field(gt=0, le=MAX_INT64, description="scenario (workflow) id")
    db_id: int | None = Field(
        default=None,
        gt=0,
        le=MAX_INT64,
        description="database the scenario must work on; checked before sending",
    )
    launch_marker_field: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="custom string field of that database set to the sending try's id in every launch, "
        "so uncertain contacts can be reconciled (one field per scenario)",
    )
    reconcile_grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=int(MAX_DURATION.total_seconds()),
        description="how long after its answer was lost a request sent single or batch may still be running "
        "in Altcraft: until then a missing marker or profile leaves it uncertain, not 'not processed', and "
        "resend_uncertain does not resend it (default 600)",
    )
    reconcile_max_lookups: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LOOKUPS,
        description="how many uncertain contacts one run checks in Altcraft at most, the longest waiting "
        "first: the others are left as they are, not resent, for later runs, and counted reconciled.deferred "
        "(default 10000)",
    )


class DeliverySpec(_Model):
    """How profiles are sent to Altcraft."""

    mode: DeliveryMode = Field(
        default=DeliveryMode.BATCH,
        description="single: one request per contact; batch: import_and_start_batch; "
        "async: batch task waited for in the triggerer",
    )
    batch_size: int = Field(
        default=1000, ge=1, le=MAX_BATCH_ITEMS, description="contacts per request and per source read"
    )
    max_request_bytes: int | None = Field(
        default=None,
        gt=0,
        le=MAX_BYTES,
        description="cap of one request's encoded JSON; default just under 10 MB",
    )
    allow_undocumented_matching: bool = Field(
        default=False,
        description="allow a matching mode the Altcraft docs do not list for this mode's endpoint",
    )


class NotificationSpec(_Model):
    """What to call when a run fails: a function or an Airflow notifier class, imported only then."""

    callback: DottedPath | None = Field(
        default=None, description="function called as fn(context, **kwargs), e.g. my_pkg.alerts:on_failure"
    )
    notifier: DottedPath | None = Field(
        default=None,
        description="notifier class instantiated with kwargs and called with the context, e.g. "
        "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
    )
    kwargs: Annotated[dict[str, Any], NoSecretNames, NoCredentials, JsonData] = Field(
        default_factory=dict,
        description="keyword arguments of either, JSON data (quote a date); no credentials: keep them in a "
        "connection",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> NotificationSpec:
        if (self.callback is None) == (self.notifier is None):
            raise ValueError("give exactly one of callback and notifier")
        return self


def _webhook_auth(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown webhook auth {value!r}; one of {', '.join(sorted(KINDS))}")
    return value


class PollTriggerSpec(_Model):
    """``type: poll``: a watcher in the triggerer asks the source for new rows every ``interval``."""

    type: Literal["poll"] = Field(description="selects this kind: `poll`")
    interval: Duration = Field(
        default=timedelta(seconds=5), description="time between two checks of the source"
    )


class WebhookTriggerSpec(_Model):
    """``type: webhook``: the CRM posts new contacts to the API server (with ``source: {type: webhook}``)."""

    type: Literal["webhook"] = Field(description="selects this kind: `webhook`")
    auth: Annotated[str, AfterValidator(_webhook_auth)] = Field(
        default="hmac",
        description="how a delivery proves its sender: hmac (X-Altcraft-Signature over timestamp and body), "
        "secret (X-Altcraft-Webhook-Secret header), or the CRM source's own: amocrm (secret in the URL), "
        "bitrix24 (application token), hubspot (X-HubSpot-Signature-v3)",
    )
    secret_conn_id: ConnId = Field(description="Airflow connection whose password is the webhook's secret")
    max_bytes: int = Field(
        default=1_048_576, ge=1024, le=10_485_760, description="largest accepted body; larger ones get 413"
    )
    max_records: int = Field(
        default=MAX_RECORDS,
        ge=1,
        le=1_000_000,
        description="most contacts in one delivery; more get 413 (read no further)",
    )
    auth_failures_per_minute: int = Field(
        default=AUTH_FAILURES_PER_MINUTE,
        ge=1,
        le=100_000,
        description="failed authentications a client address may make in a minute; then its deliveries get "
        "429 until the minute ends (authenticated ones too, unless auth is secret or amocrm)",
    )
    public_url: Annotated[str, AfterValidator(public_base_url)] | None = Field(
        default=None,
        description="scheme and host the CRM posts to (https://hooks.example.com), for an auth whose "
        "signature covers the URL (hubspot): it is verified against this URL and the request's path and "
        "query only, never the Host or X-Forwarded-* headers the sender chooses; default [altcraft] "
        "webhook_public_url of the API server, else the URL as received or as a proxy's X-Forwarded-Proto "
        "and X-Forwarded-Host name it",
    )
    interval: Duration = Field(
        default=timedelta(seconds=2), description="time between two checks of the stored deliveries"
    )

    @field_validator("public_url")
    @classmethod
    def _url_signed(cls, value: str | None, info: ValidationInfo) -> str | None:
        auth = info.data.get("auth")
        if value is not None and auth in KINDS and not KINDS[auth].covers_url:
            signed = ", ".join(name for name, kind in KINDS.items() if kind.covers_url)
            raise ValueError(
                f"public_url: the proof of auth {auth} does not cover the URL, so it has no use; it is for "
                f"auth {signed}"
            )
        return value


TriggerSpec = Annotated[PollTriggerSpec | WebhookTriggerSpec, Field(discriminator="type")]

#: ``max_active_runs`` of a triggered pipeline that does not set it: an event run starts while others are
#: active (the ledger claims each contact once), instead of after the active run ends.
EVENT_MAX_ACTIVE_RUNS = 2


class PipelineSpec(_Model):
    """One pipeline: where contacts come from, how they map to profiles, which scenario, when."""

    id: DagId = Field(description="DAG id")
    description: PlainText = Field(default="", max_length=1000, description="shown in the DAG list")
    owner: Annotated[str, _matching(_OWNER, "owner")] = Field(
        default="airflow", description="Airflow owner of the tasks"
    )
    tags: list[Annotated[str, _matching(_TAG, "tag")]] = Field(
        default_factory=list,
        description="DAG tags; `altcraft` is always added, and `altcraft-ui:…` for the Altcraft page when "
        "the source keeps a position or reconcile_grace_seconds is set",
    )
    schedule: Annotated[str, AfterValidator(_schedule)] | None = Field(
        default=None,
        description="five-field cron expression or preset ('0 6 * * *', '@daily') or interval (15m, 1h, 1d, "
        "2w; at most 366 days); optional with a trigger",
    )
    timezone: Timezone = Field(description="IANA time zone of the schedule and of naive dates")
    start_date: LocalDatetime = Field(
        description="the first data interval starts at the schedule's first time at or after this (a "
        "contact created before that time is read by no scheduled run; date or date-time; years 1970 to 2999)"
    )
    end_date: LocalDatetime | None = Field(default=None, description="no data interval starts after this")
    catchup: bool = Field(
        default=False,
        description="create runs for every missed interval; with false the intervals missed while the "
        "pipeline was paused or the scheduler down get no run, their contacts are read only by a backfill",
    )
    max_active_runs: int = Field(
        default=1,
        ge=1,
        le=64,
        description=f"concurrent runs of this pipeline; with a trigger {EVENT_MAX_ACTIVE_RUNS} by default, "
        "so rows arriving during a run start the next one at once",
    )
    retries: int = Field(default=2, ge=0, le=20, description="retries of a failed task")
    retry_delay: Duration = Field(default=timedelta(minutes=5), description="wait before a retry")
    pool: Annotated[str, _matching(_NAME, "pool name")] = Field(
        default="default_pool", description="Airflow pool bounding concurrent Altcraft calls"
    )
    pool_slots: int = Field(
        default=1, ge=1, le=MAX_INT32, description="pool slots one import_and_launch task takes"
    )
    source: SourceSpec = Field(description="where contacts come from, by `type` (see Sources)")
    mapping: ProfileMapping = Field(
        description="how a source record becomes a profile (see Mapping); a CRM source's preset when "
        "left out, and what is given overrides the preset (see CRM presets)"
    )
    scenario: ScenarioSpec = Field(description="the scenario contacts are launched into")
    delivery: DeliverySpec = Field(default_factory=DeliverySpec, description="how profiles are sent")
    relaunch_policy: str = Field(
        default="once", description="once, every_run or cooldown:<N><d|h|m> (e.g. cooldown:30d)"
    )
    max_rejected_ratio: float = Field(
        default=0.1, ge=0, le=1, description="fail the run above this share of rejected contacts"
    )
    max_failed_ratio: float = Field(
        default=0, ge=0, le=1, description="fail the run above this share of contacts Altcraft refused"
    )
    max_uncertain_ratio: float = Field(
        default=0, ge=0, le=1, description="fail the run above this share of contacts still uncertain"
    )
    dry_run: bool = Field(default=False, description="map, validate and check the ledger; send nothing")
    lookback: Duration | None = Field(
        default=None,
        description="move the window start back by this much, to catch rows that land late (a source read "
        "by watermark ignores the window: a sql_table takes its own lookback below the watermark)",
    )
    partitions: int = Field(
        default=1, ge=1, le=64, description="split each window into this many mapped tasks (time sub-windows)"
    )
    trigger: TriggerSpec | None = Field(
        default=None, description="run within seconds of new contacts, beside or instead of the schedule"
    )
    altcraft_conn_id: ConnId = Field(default="altcraft_default", description="Altcraft connection")
    ledger_conn_id: ConnId | None = Field(
        default=None,
        description="SQL connection of the sync ledger (and of a webhook's deliveries); default "
        "`[altcraft] ledger_conn_id` where the spec is parsed (set it alike on every component), else a "
        "SQLite file in AIRFLOW_HOME",
    )
    on_failure: NotificationSpec | None = Field(default=None, description="notification of a failed run")

    @model_validator(mode="before")
    @classmethod
    def _crm_mapping_preset(cls, data: Any) -> Any:
        """A CRM source's mapping is its preset with the spec's ``mapping:`` laid over it."""
        source = data.get("source") if isinstance(data, Mapping) else None
        kind = source.get("type") if isinstance(source, Mapping) else None
        if isinstance(kind, str) and kind in CRM_SPECS:
            given = data.get("mapping")
            # anything but mappings is left for the models to reject, naming the field
            fields = given.get("fields") if isinstance(given, Mapping) else None
            if given is None or (isinstance(given, Mapping) and isinstance(fields or {}, Mapping)):
                return {**data, "mapping": merge_mapping(PRESET_MAPPING, given)}
        return data

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start, zone = info.data.get("start_date"), info.data.get("timezone")
        if value is not None and start is not None and zone and _aware(value, zone) <= _aware(start, zone):
            raise ValueError("must be after start_date")
        return value

    @model_validator(mode="after")
    def _documented_matching(self) -> PipelineSpec:
        from altcraft.api.matching import check_launch_matching

        delivery = self.delivery
        check_launch_matching(
            delivery.mode, self.mapping.matching, allow_undocumented=delivery.allow_undocumented_matching
        )
        return self

    @field_validator("relaunch_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        return str(RelaunchPolicy.parse(value))

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        source = info.data.get("source")
        if value is not None and source is not None and source.uses_watermark:
            instead = (
                ": to read again a margin below the watermark, give it as the source's lookback"
                if isinstance(source, SqlTableSpec)
                else ""
            )
            raise ValueError(f"the source reads by watermark, not by window: remove lookback{instead}")
        return value

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, value: int, info: ValidationInfo) -> int:
        source = info.data.get("source")
        if value > 1 and source is not None:
            if source.uses_watermark:
                raise ValueError("the source reads by watermark (one watermark): partitions must be 1")
            if not source.reads_window:
                raise ValueError(
                    f"a {source.type} source that ignores the window cannot be split in time: "
                    "partitions must be 1 (see docs/pipelines.md#what-a-run-does, Partitions)"
                )
            if source.type == "file" and source.window_by == "column":
                raise ValueError(
                    "a file's rows would span partitions, but a file is remembered as processed as a "
                    "whole: with window_by column, partitions must be 1 (window_by mtime can be split)"
                )
        return value

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: Any, info: ValidationInfo) -> Any:
        source = info.data.get("source")
        if value is None or source is None:
            return value
        if info.data.get("partitions", 1) > 1:
            raise ValueError("a triggered pipeline keeps one watermark: partitions must be 1")
        if value.type == "webhook":
            crm = source.type in CRM_SPECS
            if crm and value.auth != source.type:
                raise ValueError(
                    f"a {source.type} source's webhook is verified the {source.type} way: auth: {source.type}"
                )
            if not crm and source.type != "webhook":
                raise ValueError(
                    "a webhook trigger needs `source: {type: webhook, key_column: ...}` or a CRM source "
                    f"({', '.join(CRM_SPECS)})"
                )
            if source.type == "webhook" and value.auth in CRM_SPECS:
                raise ValueError(f"auth {value.auth} sends contact ids: use `source: {{type: {value.auth}}}`")
        if value.type == "poll" and not source.pollable:
            raise ValueError(
                "poll needs a source that reads by creation time: sql_table with created_at_column, "
                "sql_query with :window_start and :window_end, rest with window_params start, or a CRM "
                "source in window mode"
            )
        return value

    @model_validator(mode="after")
    def _overlapping_event_runs(self) -> PipelineSpec:
        """A triggered pipeline's runs overlap unless it sets ``max_active_runs``."""
        if self.trigger is None or "max_active_runs" in self.model_fields_set:
            return self
        return self.model_copy(update={"max_active_runs": EVENT_MAX_ACTIVE_RUNS})

    @model_validator(mode="after")
    def _one_launch_per_read(self) -> PipelineSpec:
        problem = double_launch(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _zone_of_naive_times(self) -> PipelineSpec:
        defaulted = (
            "timezone" in type(self.source).model_fields and "timezone" not in self.source.model_fields_set
        )
        problem = naive_times_moved(self.mapping, defaulted)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _settled_ledger(self) -> PipelineSpec:
        """No ``ledger_conn_id``: ``[altcraft] ledger_conn_id`` where the spec is parsed, recorded in the DAG:
        the API server and the triggerer follow the DAG processor's, whatever their own setting (webhook
        deliveries acknowledged in one database and read from another were never launched). A worker parses
        again; `WebhookSource` fails where it would read another database than the one watched."""
        from altcraft.engines import ledger_conn_id

        if self.ledger_conn_id is not None or (configured := ledger_conn_id(None)) is None:
            return self
        return self.model_copy(update={"ledger_conn_id": configured})

    @model_validator(mode="after")
    def _when(self) -> PipelineSpec:
        if self.schedule is None and self.trigger is None:
            raise ValueError("give a schedule, a trigger, or both")
        if self.source.type == "webhook":
            if self.trigger is None or self.trigger.type != "webhook":
                raise ValueError("a webhook source needs `trigger: {type: webhook, ...}`")
            if self.source.ledger_conn_id not in (None, self.ledger_conn_id):
                raise ValueError(
                    "source.ledger_conn_id: leave it out; deliveries live in the ledger_conn_id database"
                )
            if self.source.endpoint not in (None, self.id):
                raise ValueError(
                    f"source.endpoint: leave it out; the pipeline reads what is posted to its own URL, "
                    f"/altcraft-webhooks/{self.id} (a delivery posted there would be stored, answered 200, "
                    f"and read by nobody)"
                )
            if self.source.endpoint is None or self.source.ledger_conn_id != self.ledger_conn_id:
                source = self.source.model_copy(
                    update={
                        "endpoint": self.source.endpoint or self.id,
                        "ledger_conn_id": self.ledger_conn_id,
                    }
                )
                return self.model_copy(update={"source": source})
        if self.source.type in CRM_SPECS and self.trigger is not None and self.trigger.type == "webhook":
            from altcraft.sources.crm.base import WebhookRead

            read = WebhookRead(endpoint=self.id, ledger_conn_id=self.ledger_conn_id)
            return self.model_copy(update={"source": self.source.model_copy(update={"webhook": read})})
        return self

    @property
    def schedule_interval(self) -> timedelta | None:
        """The schedule as a fixed interval, or None for a cron schedule (or no schedule)."""
        return parse_duration(self.schedule) if self.schedule and _DURATION.fullmatch(self.schedule) else None


def double_launch(spec: PipelineSpec) -> str | None:
    """Why ``spec``'s relaunch policy would launch a row twice because two of its runs read it, or None.

    Under ``once`` no row is launched twice. Otherwise a row read by two runs that the ledger tells
    apart (other windows, and not within the cooldown) is launched by both: runs from two watermarks (event
    runs overlapping), an event run reading back ``lookback`` behind a watermark the previous run read up
    to (however long ago that was), and a scheduled window reading what the previous window or an event
    run read (up to ``lookback`` + the schedule's longest interval earlier), and a SQL watermark's runs
    reading again the rows within its ``lookback`` (for as long as no higher value comes: no cooldown
    covers that). Event runs from one watermark share their ledger window
    (`altcraft.pipelines.factory.event_window_name`), and so do runs of a source that ignores the window
    (a SQL or CRM watermark) starting from one stored position, whatever their data intervals or how many
    run at once (`altcraft.operators.import_and_launch.position_window_name`): nothing to refuse there.
    """
    policy = RelaunchPolicy.parse(spec.relaunch_policy)
    if policy.kind == "once":
        return None
    named = f"relaunch_policy: {policy}"
    if spec.trigger is not None and spec.lookback is not None:
        return (
            f"{named} with a trigger and lookback: {duration_text(spec.lookback)}: each event run reads "
            "back over rows the run before it read, however long ago, and would launch them again. Use "
            "relaunch_policy: once (or no lookback)"
        )
    if spec.trigger is not None and spec.max_active_runs > 1:
        return (
            f"{named} with a trigger and max_active_runs: {spec.max_active_runs}: overlapping event runs "
            "read the same rows from different watermarks, and each would launch them. Use "
            "relaunch_policy: once, or max_active_runs: 1"
        )
    if isinstance(spec.source, SqlTableSpec) and spec.source.rereads:
        return (
            f"{named} with source.lookback: {_margin_text(spec.source.lookback)}: each run reads again the "
            "rows within lookback below the watermark, for as long as no higher value comes (however long "
            "that is), and would launch them again. Use relaunch_policy: once, or no source.lookback"
        )
    by_webhook = spec.trigger is not None and spec.trigger.type == "webhook"  # the stored ids, no watermark
    if isinstance(spec.source, CrmSpec) and spec.source.rereads and not by_webhook:
        return _settling_watermark(spec, named)
    if spec.schedule is None or (spec.lookback is None and spec.trigger is None):
        return None
    span = (spec.lookback or timedelta(0)) + longest_interval(spec.schedule, spec.start_date, spec.timezone)
    if policy.cooldown is not None and policy.cooldown >= span:
        return None
    reread = (
        f"with lookback: {duration_text(spec.lookback)}, consecutive windows overlap"
        if spec.lookback
        else "with a schedule beside the trigger, a scheduled run reads again what event runs read"
    )
    return (
        f"{named}: {reread}, so a row is read again up to {duration_text(span)} after its launch "
        f"({'lookback + ' if spec.lookback else ''}the schedule's longest interval) and would be launched "
        f"again. Use relaunch_policy: once, or {_covering(span)} or longer"
    )


def _margin_text(margin: Any) -> str:
    """A source's lookback as a spec gives it: a duration in spec units, a number as it is."""
    return duration_text(margin) if isinstance(margin, timedelta) else str(margin)


def _covering(span: timedelta) -> RelaunchPolicy:
    """The shortest cooldown, in whole minutes, of at least ``span``."""
    return RelaunchPolicy("cooldown", -(span // -timedelta(minutes=1)) * timedelta(minutes=1))


def _settling_watermark(spec: PipelineSpec, named: str) -> str | None:
    """Why ``spec``'s relaunch policy would launch a contact of its CRM watermark twice, or None: the
    watermark stays behind contacts younger than ``settle_seconds``, so runs read them again up to that long
    + the schedule's longest interval after their launch (and any later manual run)."""
    source = spec.source
    assert isinstance(source, CrmSpec)
    policy, settle = RelaunchPolicy.parse(spec.relaunch_policy), source.settle
    behind = (
        f"{named}: a {source.type} watermark stays behind contacts created less than settle_seconds "
        f"({duration_text(settle)}) before a run, so a contact is read again"
    )
    if spec.schedule is None:
        return (
            f"{behind} by the runs after its launch (no schedule) and would be launched again. Use "
            "relaunch_policy: once, or settle_seconds: 0"
        )
    span = settle + longest_interval(spec.schedule, spec.start_date, spec.timezone)
    if policy.cooldown is not None and policy.cooldown >= span:
        return None
    return (
        f"{behind} up to {duration_text(span)} after its launch (settle_seconds + the schedule's longest "
        f"interval) and would be launched again. Use relaunch_policy: once, or {_covering(span)} or longer, "
        "or settle_seconds: 0"
    )


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class SpecError:
    """Why one spec file produced no DAG; ``message`` names the field(s) at fault.

    ``name`` is how the file is named to the user (its path in the pipelines folder; default its name).
    """

    path: Path
    message: str
    line: int | None = None
    name: str = ""

    def __str__(self) -> str:
        return printable(f"Pipeline spec {self.name or self.path.name} is invalid:\n{self.message}")


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (kept by Python as lone surrogates) would make
    the import error unstorable; its bytes are shown as ``\\udcXX`` escapes instead."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML that also refuses a key given twice in one mapping (YAML would keep the last).

    Every value it cannot build is a YAML error at the value's line: PyYAML's own constructors raise
    plain ValueError, TypeError, KeyError or OverflowError for ``2025-02-30``, ``!!int abc``,
    ``!!bool maybe``, ``!!map [1]`` or a number too long to convert.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as error:
            value = f"{node.value!r:.60} " if isinstance(node, yaml.ScalarNode) else ""
            kind = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value}as {kind}: {error}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read a {node.id} as {node.tag.rpartition(':')[2]}", node.start_mark
            )
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"{key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_number(self, node: yaml.ScalarNode) -> int | float:
        """A YAML int or float, refusing those YAML 1.1 reads unlike their text (`_UNLIKE_ITS_TEXT`): a
        constant ``0123`` or ``9:30`` was sent as "83" or "570", a ``resource_id: 010`` would be 8."""
        number = (self.construct_yaml_float if node.tag.endswith(":float") else self.construct_yaml_int)(node)
        if _UNLIKE_ITS_TEXT.fullmatch(node.value):
            kind = "sexagesimal" if ":" in node.value else "octal"
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"YAML reads {node.value} as the {kind} number {number}: quote it ('{node.value}') or write "
                "the number",
                node.start_mark,
            )
        return number

    def construct_bool(self, node: yaml.ScalarNode) -> bool:
        """A YAML boolean written ``true`` or ``false``: YAML 1.1 also reads yes, no, on and off (any case)
        as booleans, so a constant ``country: NO`` was sent as "False" and a ``vip: on`` passed True."""
        value = self.construct_yaml_bool(node)
        if node.value.lower() not in ("true", "false"):
            word = str(value).lower()
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"YAML 1.1 reads {node.value} as {word}: quote it ('{node.value}') for text, or write {word}",
                node.start_mark,
            )
        return value

    @classmethod
    def load(cls, text: str) -> Any:
        """The document in ``text``; its node graph is checked (`check_expansion`) before it is built."""
        loader = cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_number)
_SpecLoader.add_constructor("tag:yaml.org,2002:float", _SpecLoader.construct_number)
_SpecLoader.add_constructor("tag:yaml.org,2002:bool", _SpecLoader.construct_bool)

MAX_SPEC_BYTES = 256 * 1024
"""A spec file larger than this (256 KiB; specs are a few KiB) is refused before it is parsed."""
MAX_EXPANDED_SIZE = 1 << 20
"""Nodes plus scalar characters of a spec with every alias expanded (1 Mi): bounds what any later
copy, dump or repr of a spec value costs, wherever the value ends up (REST params, notifier kwargs)."""


def check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand beyond `MAX_EXPANDED_SIZE`, or refer to themselves.

    Linear in the size of the graph (each node's expanded size is computed once).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "a recursive alias (a value that contains itself)", node.start_mark
            )
        if isinstance(node, yaml.ScalarNode):
            total = 1 + len(node.value)
        else:
            open_nodes.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else chain.from_iterable(node.value)
            total = 1
            for child in children:
                total += size(child)
                if total > MAX_EXPANDED_SIZE:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"aliases expand this value beyond {MAX_EXPANDED_SIZE:,} nodes and characters "
                        "(an alias bomb?)",
                        node.start_mark,
                    )
            open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def read_spec(path: Path) -> PipelineSpec | SpecError:
    """The validated spec in ``path``, or a `SpecError` naming the file, the line and the field.

    Bounded in time and memory whatever the file holds: its size and its alias expansion are capped.
    Never raises: an error no check foresaw still costs this spec only (named by its type and text).
    """
    try:
        return _read_spec(path)
    except RecursionError:
        return SpecError(path, "  values are nested too deeply")
    except Exception as error:
        return SpecError(path, f"  cannot read the spec: {type(error).__name__}: {error}")


def _read_regular(path: Path, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of ``path``, or None when it is not a regular file.

    Opened non-blocking: opening a named pipe waits for a writer, which would hang the whole DAG file.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        data = b""
        while len(data) < limit and (chunk := os.read(descriptor, limit - len(data))):
            data += chunk
        return data
    finally:
        os.close(descriptor)


def _read_spec(path: Path) -> PipelineSpec | SpecError:
    try:
        raw = _read_regular(path, MAX_SPEC_BYTES + 1)
        if raw is None:
            return SpecError(path, "  not a regular file (a folder, a pipe or a device): remove it")
        if len(raw) > MAX_SPEC_BYTES:
            return SpecError(path, f"  the file is larger than {MAX_SPEC_BYTES:,} bytes")
        text = raw.decode("utf-8-sig")  # a byte order mark (Windows editors) is no part of the spec
        data = _load_json(text) if path.suffix.lower() == ".json" else _SpecLoader.load(text)
    except OSError as error:
        return SpecError(path, f"  cannot read the file: {error.strerror or error}")
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        byte = error.object[error.start]
        return SpecError(
            path, f"  line {line}: not UTF-8 text (byte {byte:#04x}); save the file as UTF-8", line
        )
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        return SpecError(path, f"  {where}: invalid JSON: {error.msg}", error.lineno)
    except _KeyTwice as error:
        return SpecError(path, f"  invalid JSON: {error}")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        where = f"line {line}, column {mark.column + 1}: " if mark is not None else ""
        context, started = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and started is not None and mark is not None and started.line != mark.line:
            problem += f" ({context} started on line {started.line + 1})"
        return SpecError(path, f"  {where}invalid YAML: {problem}", line)
    if data is None:
        return SpecError(path, "  the file holds no spec: it is empty, or only comments")
    if not isinstance(data, Mapping):
        return SpecError(path, "  the file must hold a mapping of spec fields (id, schedule, source, ...)", 1)
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as error:
        lines = _error_lines(text, data, error)
        return SpecError(path, "\n".join(message for message, _ in lines), lines[0][1] if lines else None)


class _KeyTwice(ValueError):
    """A JSON object with a key given twice (JSON would keep the last)."""


def _load_json(text: str) -> Any:
    """The document of a ``.json`` spec: JSON, not read as YAML (which takes ``1e3`` for a string and
    refuses tab indentation); a key given twice in one object is an error, as in YAML."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _KeyTwice(f"{key!r} is given twice in one object")
            seen.add(key)
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


MAX_LISTED_ERRORS = 20
"""The errors of one spec listed, the first in file order; the import error says how many more there are."""
_UNKNOWN_FIELD = "unknown field"


def _error_lines(text: str, data: Mapping[str, Any], error: ValidationError) -> list[tuple[str, int | None]]:
    """Each error as a line naming its line and field, in file order; linear in the number of errors."""
    root, keys = _compose(text), {}
    found: dict[tuple[tuple[str | int, ...], str], int | None] = {}
    locations: dict[tuple[str | int, ...], tuple[str | int, ...]] = {}
    for item in error.errors(include_url=False, include_input=False):
        field = _field_path(data, item["loc"])
        locations.setdefault(field, item["loc"])
        found.setdefault((field, _message(item, field, data)), _line_of(root, field, keys))
    ordered = sorted(found.items(), key=lambda entry: (entry[1] is None, entry[1] or 0))
    listed = [
        _listed(field, message, line, data, locations[field])
        for (field, message), line in ordered[:MAX_LISTED_ERRORS]
    ]
    if len(ordered) > MAX_LISTED_ERRORS:
        listed.append((f"  ... and {len(ordered) - MAX_LISTED_ERRORS:,} more errors", None))
    return listed


def _message(item: Any, field: tuple[str | int, ...], data: Mapping[str, Any]) -> str:
    """What is wrong, in words, without the field (`_listed` names it)."""
    if item["type"] == "extra_forbidden":
        return _UNKNOWN_FIELD
    if item["type"] == "missing":
        return "required field is missing"
    message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if field:  # a check shared with the sources names its field itself (`timezone: unknown ...`)
        message = message.removeprefix(f"{field[-1]}: ")
    return message + _read_as(data, field) if item["type"] == "string_type" else message


def _listed(
    field: tuple[str | int, ...],
    message: str,
    line: int | None,
    data: Mapping[str, Any],
    loc: Sequence[str | int],
) -> tuple[str, int | None]:
    """One error's line of the import error; an unknown field gets its likely name (only those listed:
    finding it costs a fuzzy match over the field names)."""
    if message == _UNKNOWN_FIELD:
        message += _suggestion(field, loc, data)
    name = ".".join(str(part) for part in field) or "spec"
    return f"  {'line ' + str(line) + ', ' if line else ''}{name}: {message}", line


def _field_path(data: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """``loc`` without the parts pydantic adds that are not in the file (union tags such as ``sql_table``)."""
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        present = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        )
        if present:
            node = node[part]
            path.append(part)
        elif index == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _read_as(data: Any, field: tuple[str | int, ...]) -> str:
    """What the value at ``field``, where text is expected, was read as, if the file's author likely wrote
    text there (YAML reads an unquoted ``NULL`` as null, ``2025-01-01`` as a date), or ""."""
    value = data
    for part in field:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return ""
    if value is None:
        return ", got null (an unquoted null, Null, NULL or ~ is read so): quote it"
    if isinstance(value, bool):
        return ", got true or false: quote it"
    if isinstance(value, date):
        return ", got a date or time (an unquoted 2025-01-01 is read so): quote it"
    return ", got a number: quote it" if isinstance(value, int | float) else ""


def _suggestion(field: tuple[str | int, ...], loc: Sequence[str | int], data: Mapping[str, Any]) -> str:
    """`` (did you mean 'name'?)`` for an unknown field at ``field`` (pydantic's ``loc``) close to a field the
    spec takes there and does not give, at any depth (``source.created_at_colum``), or ""."""
    if not field or not isinstance(field[-1], str):
        return ""
    import difflib

    given: Any = data
    for part in field[:-1]:
        given = given[part]
    close = difflib.get_close_matches(field[-1], sorted(_names_at(loc[:-1])), n=1)
    return f" (did you mean {close[0]!r}?)" if close and close[0] not in given else ""


def model_tag(model: type[BaseModel]) -> str | None:
    """The value of the model's ``type: Literal[...]`` discriminator, if it has one."""
    annotation = model.model_fields["type"].annotation if "type" in model.model_fields else None
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    return values[0] if len(values) == 1 else None


def _names_at(loc: Sequence[str | int]) -> set[str]:
    """The field names a spec takes in the mapping at pydantic's ``loc``, walked from `PipelineSpec` through
    the models' annotations (a union's tag, a mapping's key or a list's index step into what it holds)."""
    annotations: list[Any] = [PipelineSpec]
    for part in loc:
        annotations = [inner for annotation in annotations for inner in _step(annotation, part)]
    return {
        field.alias or name
        for annotation in annotations
        for model in _alternatives(annotation)
        if isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items()
    }


def _alternatives(annotation: Any) -> list[Any]:
    """``annotation`` without ``Annotated`` and ``None``, a union as its members."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _alternatives(args[0])
    if origin in (Union, UnionType):
        return [inner for arg in args if arg is not type(None) for inner in _alternatives(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> list[Any]:
    """What ``part`` of a ``loc`` leads to inside ``annotation``."""
    found = []
    for inner in _alternatives(annotation):
        origin, args = get_origin(inner), get_args(inner)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            fields = {field.alias or name: field for name, field in inner.model_fields.items()}
            if part in fields:
                found.append(fields[part].annotation)
            elif part in (model_tag(inner), inner.__name__):
                found.append(inner)
        elif origin is dict and len(args) == 2:
            found.append(args[1])
        elif origin is list and args and isinstance(part, int):
            found.append(args[0])
    return found


def field_line(path: Path, field: tuple[str | int, ...]) -> int | None:
    """1-based line of ``field`` (e.g. ``("source", "table")``) in the spec file, if it is there (None
    also when the file can no longer be read: it may have changed since it was validated)."""
    try:
        raw = _read_regular(path, MAX_SPEC_BYTES + 1)
        return _line_of(_compose(raw.decode("utf-8")), field) if raw is not None else None
    except (OSError, UnicodeDecodeError):
        return None


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_SpecLoader)
    except yaml.YAMLError:
        return None


def _line_of(
    node: yaml.Node | None,
    field: tuple[str | int, ...],
    keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] | None = None,
) -> int | None:
    """1-based line of the deepest part of ``field`` found in the YAML node tree. ``keys`` keeps each
    mapping's entries by key once read, for the next field: a scan per field made thousands quadratic."""
    keys = {} if keys is None else keys
    line = None
    for part in field:
        if isinstance(node, yaml.MappingNode):
            if id(node) not in keys:
                keys[id(node)] = {}
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode):
                        keys[id(node)].setdefault(key.value, (key, value))
            found = keys[id(node)].get(str(part))
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
