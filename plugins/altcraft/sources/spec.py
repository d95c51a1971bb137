"""Pipeline spec models of the sources: the ``source:`` block of a YAML pipeline, ``type`` discriminated.

Parsing is cheap and offline (no database, network or user module is touched) but strict: unknown
keys, bad SQL identifiers, non-SELECT queries, unknown time zones and malformed callables fail at
parse time, naming the field. ``build(state)`` makes the `Source`.

What a configuration can do is a property of its spec (`uses_watermark`, `keeps_state`, `reads_window`,
`pollable`): the pipeline spec checks partitions, lookback and triggers against them, and the DAG factory
gives a source that keeps state its state asset.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, model_validator

from altcraft.answer_size import DEFAULT_MAX_ANSWER_BYTES
from altcraft.sources.base import Source, StateStore
from altcraft.sources.crm import AmoCrmSpec, Bitrix24Spec, HubSpotSpec
from altcraft.sources.files import (
    MAX_SETTLE_SECONDS,
    SETTLE_SECONDS,
    FileFormat,
    FileSource,
    WindowBy,
    check_delimiter,
    check_encoding,
)
from altcraft.sources.python import PythonSource, validate_callable_path
from altcraft.sources.rest import Paginator, RestSource, WindowFormat
from altcraft.sources.sql import (
    WINDOW_PARAMS,
    Lookback,
    SqlQuerySource,
    SqlTableSource,
    bound_names,
    check_lookback,
    validate_identifier,
    validate_select,
)
from altcraft.sources.webhook import WebhookSource
from altcraft.spec_checks import (
    MAX_BYTES,
    MAX_TIMEOUT_SECONDS,
    JsonData,
    NoCredentials,
    NoSecretNames,
    NoSecretQuery,
    Timezone,
)


def _identifier(field: str) -> AfterValidator:
    return AfterValidator(lambda value: validate_identifier(value, field))


NonEmpty = Annotated[str, Field(min_length=1)]


def parse_lookback(value: Any) -> Lookback:
    """A watermark's margin (`check_lookback`): text as a spec duration (``15m``), a number as it is."""
    from altcraft.pipelines.spec import parse_duration  # the spec's durations; it imports this module

    return check_lookback(parse_duration(value) if isinstance(value, str) else value)


class _SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, state: StateStore | None = None) -> Source:
        """The source; ``state`` is where stateful sources keep watermarks and processed files."""
        raise NotImplementedError

    @property
    def uses_watermark(self) -> bool:
        """Whether it remembers a watermark (a column, the last webhook delivery), ignoring the window."""
        return False

    @property
    def keeps_state(self) -> bool:
        """Whether it remembers progress between runs (a watermark, the files already read)."""
        return self.uses_watermark

    @property
    def reads_window(self) -> bool:
        """Whether it restricts what it reads to the window it is given (one reading a watermark does not)."""
        return not self.uses_watermark

    @property
    def pollable(self) -> bool:
        """Whether a ``poll`` trigger can watch it: it reads by creation time and answers `probe`."""
        return False


class SqlTableSpec(_SourceSpec):
    """``type: sql_table`` -- see `SqlTableSource`."""

    type: Literal["sql_table"]
    conn_id: NonEmpty
    table: Annotated[str, _identifier("table")]
    db_schema: Annotated[str, _identifier("schema")] | None = Field(None, alias="schema")
    key_column: Annotated[str, _identifier("key_column")]
    created_at_column: Annotated[str, _identifier("created_at_column")] | None = None
    watermark_column: Annotated[str, _identifier("watermark_column")] | None = None
    columns: list[Annotated[str, _identifier("columns")]] | None = None
    timezone: Timezone = "UTC"
    lookback: Annotated[timedelta | float, PlainValidator(parse_lookback)] | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> SqlTableSpec:
        if (self.created_at_column is None) == (self.watermark_column is None):
            raise ValueError("set exactly one of created_at_column (window mode) and watermark_column")
        if self.lookback is not None and self.watermark_column is None:
            raise ValueError(
                "lookback: a margin below a watermark (watermark_column); in window mode give the "
                "pipeline's lookback, which moves the window start back"
            )
        return self

    @property
    def uses_watermark(self) -> bool:
        return self.watermark_column is not None

    @property
    def rereads(self) -> bool:
        """Whether runs read rows again: those within ``lookback`` below the watermark."""
        return self.uses_watermark and bool(self.lookback)

    @property
    def pollable(self) -> bool:
        return self.reads_window

    def build(self, state: StateStore | None = None) -> SqlTableSource:
        return SqlTableSource(
            self.conn_id,
            self.table,
            key_column=self.key_column,
            created_at_column=self.created_at_column,
            watermark_column=self.watermark_column,
            schema=self.db_schema,
            columns=self.columns,
            timezone=self.timezone,
            state=state,
            lookback=self.lookback,
        )


class SqlQuerySpec(_SourceSpec):
    """``type: sql_query`` -- see `SqlQuerySource`."""

    type: Literal["sql_query"]
    conn_id: NonEmpty
    sql: Annotated[str, AfterValidator(validate_select)]
    key_column: Annotated[str, _identifier("key_column")]
    timezone: Timezone = "UTC"

    @property
    def reads_window(self) -> bool:
        return set(WINDOW_PARAMS) <= set(bound_names(self.sql))

    @property
    def pollable(self) -> bool:
        return self.reads_window

    def build(self, state: StateStore | None = None) -> SqlQuerySource:
        return SqlQuerySource(self.conn_id, self.sql, key_column=self.key_column, timezone=self.timezone)


class FileSpec(_SourceSpec):
    """``type: file`` -- see `FileSource`."""

    type: Literal["file"]
    path: Annotated[str, Field(min_length=1), NoCredentials]
    key_column: NonEmpty
    format: FileFormat = "csv"
    timestamp_column: NonEmpty | None = None
    window_by: WindowBy = "column"
    encoding: Annotated[str, AfterValidator(check_encoding)] = "utf-8"
    delimiter: Annotated[str, AfterValidator(check_delimiter)] = ","
    pattern: NonEmpty | None = None
    timezone: Timezone = "UTC"
    conn_id: NonEmpty | None = None
    settle_seconds: Annotated[float, Field(ge=0, le=MAX_SETTLE_SECONDS)] = SETTLE_SECONDS
    null_values: list[str] = []

    @model_validator(mode="after")
    def _timestamp_for_column_window(self) -> FileSpec:
        if self.window_by == "column" and self.timestamp_column is None:
            raise ValueError("timestamp_column: required when window_by is 'column'")
        if self.null_values and self.format != "csv":
            raise ValueError("null_values: for CSV only (JSON Lines writes null itself)")
        check_delimiter(self.delimiter, self.encoding)  # one the encoding can write
        return self

    @property
    def keeps_state(self) -> bool:
        return True

    def build(self, state: StateStore | None = None) -> FileSource:
        return FileSource(**self.model_dump(exclude={"type"}), state=state)


class RestSpec(_SourceSpec):
    """``type: rest`` -- see `RestSource`. Secrets stay in the connection: the endpoint, params and headers
    are shown with the DAG, so credentials in them are refused (`altcraft.spec_checks`)."""

    type: Literal["rest"]
    http_conn_id: NonEmpty
    endpoint: Annotated[str, NoCredentials, NoSecretQuery]
    key_column: NonEmpty
    method: Literal["GET", "POST"] = "GET"
    params: Annotated[dict[str, Any], NoSecretNames, NoCredentials, JsonData] = {}
    headers: Annotated[dict[str, str], NoSecretNames, NoCredentials] = {}
    window_params: dict[Literal["start", "end"], NonEmpty] | None = None
    window_format: WindowFormat = "iso"
    record_path: str | None = None
    paginator: Paginator | None = None
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] = 60.0
    max_answer_bytes: Annotated[int, Field(gt=0, le=MAX_BYTES)] = DEFAULT_MAX_ANSWER_BYTES
    window_field: NonEmpty | None = None
    timezone: Timezone = "UTC"

    @property
    def reads_window(self) -> bool:
        return bool(self.window_params) and len(self.window_params) == 2

    @property
    def pollable(self) -> bool:
        return self.reads_window

    def build(self, state: StateStore | None = None) -> RestSource:
        fields = self.model_dump(exclude={"type", "http_conn_id", "endpoint", "paginator"})
        return RestSource(self.http_conn_id, self.endpoint, paginator=self.paginator, **fields)


class PythonSpec(_SourceSpec):
    """``type: python`` -- see `PythonSource`."""

    type: Literal["python"]
    callable: Annotated[str, AfterValidator(validate_callable_path)]
    key_column: NonEmpty
    kwargs: Annotated[dict[str, Any], NoSecretNames, NoCredentials, JsonData] = {}

    def build(self, state: StateStore | None = None) -> PythonSource:
        return PythonSource(self.callable, key_column=self.key_column, kwargs=self.kwargs)


class WebhookSpec(_SourceSpec):
    """``type: webhook`` -- see `WebhookSource`; the pipeline needs ``trigger: {type: webhook}``."""

    type: Literal["webhook"]
    key_column: NonEmpty = Field(description="record field identifying a contact")
    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")] | None = Field(
        default=None,
        description="leave out: the pipeline id, whose endpoint's deliveries are read (no other is allowed)",
    )
    ledger_conn_id: NonEmpty | None = Field(
        default=None, description="leave out: deliveries are stored in the pipeline's ledger_conn_id database"
    )

    @property
    def uses_watermark(self) -> bool:
        return True

    def build(self, state: StateStore | None = None) -> WebhookSource:
        if self.endpoint is None:
            raise ValueError("a webhook source needs its endpoint (the pipeline id)")
        return WebhookSource(
            self.endpoint, key_column=self.key_column, ledger_conn_id=self.ledger_conn_id, state=state
        )


SourceSpec = Annotated[
    SqlTableSpec
    | SqlQuerySpec
    | FileSpec
    | RestSpec
    | PythonSpec
    | WebhookSpec
    | AmoCrmSpec
    | Bitrix24Spec
    | HubSpotSpec,
    Field(discriminator="type"),
]
