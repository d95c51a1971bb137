"""What the CRM presets share: reading modes, the flat contact record, the mapping preset, the spec base.

A preset (`altcraft.sources.crm.amocrm`, ``bitrix24``, ``hubspot``) only says how its CRM pages, filters,
authenticates and names fields; this base turns that into a `Source`:

* **window** (default): contacts created in ``[start, end)`` moved back by ``settle_seconds``
  (`Window.shifted`: consecutive windows still read each contact once), so a window is read once its
  contacts had that long to show in the listing or search. The CRM's own filter narrows the request,
  and every contact is checked against the window here too, so an inclusive bound, a filter the account
  ignores, or a fallback that reads more never puts a contact in two windows (or two partitions).
* **watermark**: contacts whose id is above the highest id committed before (ids grow with creation in
  all three CRMs); the window is ignored. The id is saved by `commit`, as the SQL watermark is, but never
  past a contact created less than ``settle_seconds`` ago: a lower id may still show (committed after a
  higher one was listed, or not yet in the search index), and the next run reads from below it again
  (the ledger skips whoever was launched).
* **webhook** (set by the pipeline when its trigger is a CRM webhook): the contact ids the endpoint stored
  are read past the last delivery handled (`altcraft.sources.webhook.WebhookSource`), and the full contacts
  are fetched from the CRM by id. A contact deleted meanwhile becomes a rejected record, not a failure.

A contact the CRM answers that cannot be read -- an item that is not a JSON object, without a numeric
``id``, without a readable creation time -- becomes that contact's error record (`CrmSource.record`: keyed
by its id, else by ``page <n> item <m>``) and the mapper rejects it; the other contacts are delivered. In
window mode it counts where the CRM's created-time filter put it (amoCRM's fallback places it by its update
time); in watermark mode it is placed by its id, and one without an id is rejected by each run reading it.

Every contact becomes one flat record (`Record`): ``id``, ``email``, ``phone``, ``first_name``,
``last_name``, ``name``, ``created_at`` (ISO 8601, UTC) and ``updated_at``, plus the CRM's own fields (see
each preset). `PRESET_MAPPING` maps those to an Altcraft profile; a spec's ``mapping:`` overrides it
(`merge_mapping`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from altcraft.answer_size import DEFAULT_MAX_ANSWER_BYTES
from altcraft.records import named_twice
from altcraft.sources.base import (
    ErrorRecord,
    Partition,
    Record,
    SourceError,
    Stateful,
    StateStore,
    Window,
    error_record,
    not_an_object,
    partition_window,
    probe_window,
    rechunk,
)
from altcraft.spec_checks import MAX_TIMEOUT_SECONDS, MIN_REQUESTS_PER_SECOND

if TYPE_CHECKING:
    from altcraft.sources.crm.http import CrmHttp
    from altcraft.sources.webhook import WebhookSource

ReadMode = Literal["window", "watermark"]


@dataclass(frozen=True)
class Limits:
    """How fast and how stubbornly one source talks to its CRM (see `altcraft.sources.crm.http`)."""

    requests_per_second: float
    max_retries: int = 8
    backoff_seconds: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 60.0
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES


WATERMARK_KEY = "crm:last_id"
SETTLE_SECONDS = 300
"""How long a new contact may take to show in a CRM's listing or search, unless the spec says: an id
committed after a higher one was listed (Bitrix24), a search index lagging (HubSpot)."""
MAX_SETTLE_SECONDS = 86_400

PRESET_MAPPING: dict[str, Any] = {
    "matching": "email",
    "key": {"email": "email"},
    "fields": {"_fname": "first_name", "_lname": "last_name"},
}
"""The profile every CRM contact record maps to unless the spec's ``mapping:`` says otherwise."""


def merge_mapping(preset: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` over ``preset``: given keys replace the preset's, ``fields`` merge by target name, and a
    target given as null (``_lname: null``) drops the preset's field."""
    given = dict(given or {})
    fields = {**preset.get("fields", {}), **(given.pop("fields", None) or {})}
    merged = {**preset, **given, "fields": {k: v for k, v in fields.items() if v is not None}}
    if "key" in given and "matching" not in given:
        merged.pop("field_name", None)
    return merged


class WebhookRead(BaseModel):
    """Where a webhook-triggered CRM pipeline's stored contact ids are; set by the pipeline, not by hand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(description="the webhook endpoint: the pipeline id")
    ledger_conn_id: str | None = Field(default=None, description="the pipeline's ledger_conn_id")


class CrmSpec(BaseModel):
    """Fields every CRM preset spec has; subclasses add ``type`` and their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_class: ClassVar[type[CrmSource]]
    default_requests_per_second: ClassVar[float]

    conn_id: str = Field(min_length=1, description="Airflow connection of the CRM account (see docs)")
    mode: ReadMode = Field(
        default="window",
        description="window: contacts created in the run's window; watermark: contacts with an id above "
        "the highest one read before (the window is ignored)",
    )
    requests_per_second: float | None = Field(
        default=None,
        ge=MIN_REQUESTS_PER_SECOND,
        description="requests per second at most; default the CRM's documented limit",
    )
    max_retries: int = Field(default=8, ge=0, le=100, description="retries of a limit answer or 5xx")
    backoff_seconds: float = Field(
        default=0.5, ge=0, le=60, description="first wait after a limit answer, doubled each time"
    )
    timeout: float = Field(
        default=60.0, gt=0, le=MAX_TIMEOUT_SECONDS, description="seconds one request may take in all"
    )
    settle_seconds: int = Field(
        default=SETTLE_SECONDS,
        ge=0,
        le=MAX_SETTLE_SECONDS,
        description="how long a new contact may take to show in the CRM's listing or search: a window reads "
        "the contacts created this much before it (each once); a watermark never moves past a younger one",
    )
    webhook: WebhookRead | None = Field(
        default=None, description="leave out: set from the pipeline's webhook trigger"
    )

    def build(self, state: StateStore | None = None) -> CrmSource:
        return self.source_class(self, state=state)

    @property
    def uses_watermark(self) -> bool:
        """An id watermark, or the webhook's stored ids: the window is ignored."""
        return self.mode == "watermark" or self.webhook is not None

    @property
    def keeps_state(self) -> bool:
        return True

    @property
    def reads_window(self) -> bool:
        return not self.uses_watermark

    @property
    def pollable(self) -> bool:
        return self.reads_window

    @property
    def rate(self) -> float:
        return self.requests_per_second or self.default_requests_per_second

    @property
    def settle(self) -> timedelta:
        return timedelta(seconds=self.settle_seconds)

    @property
    def rereads(self) -> bool:
        """Whether runs read a contact again after it was launched: the watermark stays behind the young."""
        return self.mode == "watermark" and self.webhook is None and self.settle_seconds > 0


class CrmSource(Stateful):
    """A CRM preset as a `Source`; subclasses implement the five hooks at the bottom."""

    crm: ClassVar[str]
    key_column = "id"
    #: Contacts fetched by id per request in webhook mode.
    fetch_chunk: ClassVar[int] = 50

    def __init__(self, spec: CrmSpec, *, state: StateStore | None = None) -> None:
        self.spec = spec
        self.state = state
        self._http: CrmHttp | None = None
        self._webhook: WebhookSource | None = None
        self._watched: WebhookSource | None = None
        self._pending: int | None = None

    def describe(self) -> str:
        how = {
            "window": "contacts created in the window",
            "watermark": "contacts above the last id read",
        }[self.spec.mode]
        if self.spec.webhook is not None:
            how = f"contacts whose ids webhook {self.spec.webhook.endpoint!r} stored"
        return f"{self.crm} ({how}; connection {self.spec.conn_id!r})"

    @property
    def http(self) -> CrmHttp:
        if self._http is None:
            from airflow.sdk import BaseHook

            self._http = self.connect(BaseHook.get_connection(self.spec.conn_id))
        return self._http

    @property
    def tracks_progress(self) -> bool:
        """A watermark or the webhook's stored ids; window mode reads its window and remembers nothing."""
        return self.spec.uses_watermark

    @property
    def ignores_window(self) -> bool:
        """Watermark mode reads past the stored id, webhook mode past the deliveries handled, whatever the
        window."""
        return self.spec.uses_watermark

    def start_position(self) -> str:
        """The stored id, or (webhook mode) the webhook's position, the next read starts from."""
        if self.spec.webhook is not None:
            return self._deliveries().start_position()
        return super().start_position()

    def _stored(self) -> int | None:
        return _stored_id(self._position_store())

    # ------------------------------------------------------------------------------------ reading

    def _read_batches(
        self, window: Window | None, batch_size: int, partition: Partition | None
    ) -> Iterator[list[Record]]:
        self._pending = None
        if self.spec.webhook is not None:
            records = self._from_webhook(batch_size, partition)
        elif self.spec.mode == "watermark":
            if partition is not None and partition[1] > 1:
                raise ValueError(f"{self.describe()}: a watermark cannot be partitioned")
            records = self._past_watermark()
        else:
            part = partition_window(window, partition)
            if part is None:
                raise SourceError(f"{self.describe()}: reads by creation time and needs a window")
            records = self._in_window(part.shifted(self.spec.settle))
        yield from rechunk(records, batch_size)

    def record(self, raw: Any, where: str) -> Record:
        """The flat record of one raw contact, or the error record saying why it cannot be one (keyed by
        its id, else by ``where``; a contact naming a key twice, at any depth, is one): one unreadable
        contact is rejected, the others are delivered."""
        if not isinstance(raw, dict):
            return not_an_object("id", where, raw)
        if (twice := named_twice(raw)) is not None:  # which value the CRM meant is ambiguous
            return error_record("id", where, f"{self.crm} contact names {twice!r} twice")
        if contact_id(raw) is None:
            return error_record("id", where, f"{self.crm} contact without a numeric id")
        try:
            return self.flatten(raw)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ContactError) else f"unreadable ({type(exc).__name__})"
            return error_record("id", str(contact_id(raw)), f"{self.crm} contact: {reason}")

    def _in_window(self, window: Window) -> Iterator[Record]:
        seen: set[str] = set()
        for where, raw in _numbered(self.created_pages(window)):
            record = self.record(raw, where)
            # an error record has no time to check: the CRM's filter (or amoCRM's fallback) placed it
            placed = isinstance(record, ErrorRecord) or window.contains(_instant(record["created_at"]))
            if record["id"] not in seen and placed:
                seen.add(record["id"])
                yield record

    def _past_watermark(self) -> Iterator[Record]:
        last = self._start_value()
        read = -1 if last is None else last
        young, settling = datetime.now(UTC) - self.spec.settle, False
        for where, raw in _numbered(self.pages_after(last)):
            number = contact_id(raw)
            if number is None:  # no id to place it by: rejected where it is read
                yield self.record(raw, where)
            elif number > read:  # ascending; a page repeated on a shift
                read, record = number, self.record(raw, where)
                # a lower id may yet show: the watermark stays behind the first contact created since `young`
                settling = settling or (
                    not isinstance(record, ErrorRecord) and _instant(record["created_at"]) > young
                )
                if not settling:
                    self._pending = number
                yield record

    def _deliveries(self) -> WebhookSource:
        """The webhook's stored contact ids (webhook mode), one reader for the position and the read."""
        from altcraft.sources.webhook import WebhookSource

        hook = self.spec.webhook
        assert hook is not None
        if self._webhook is None:
            self._webhook = WebhookSource(
                hook.endpoint,
                key_column="id",
                ledger_conn_id=hook.ledger_conn_id,
                state=self.state,
                check=not_a_stored_id,
            )
        self._webhook.state = self.state
        return self._webhook

    def _from_webhook(self, batch_size: int, partition: Partition | None) -> Iterator[Record]:
        deliveries = self._deliveries().batches(None, self.fetch_chunk, partition=partition)
        for fetch, stored in enumerate(deliveries, 1):
            # a stored delivery it cannot read
            yield from (item for item in stored if isinstance(item, ErrorRecord))
            ids = list(
                dict.fromkeys(str(contact_id(item)) for item in stored if not isinstance(item, ErrorRecord))
            )
            found: dict[str, Record] = {}
            for item, raw in enumerate(self.by_ids(ids), start=1):
                record = self.record(raw, f"fetch {fetch} item {item}")
                if contact_id(raw) is None:  # cannot be matched to an id asked for
                    yield record
                else:
                    found[record["id"]] = record
            for asked in ids:
                yield found.get(asked) or error_record(
                    "id", asked, f"{self.crm} has no contact {asked} (deleted since the webhook?)"
                )

    def _save(self, state: StateStore) -> None:
        """The watermark, or the webhook position; neither moves back."""
        if self._webhook is not None:
            self._webhook.commit()
        elif self._pending is not None and ((stored := _stored_id(state)) is None or self._pending > stored):
            state.set(WATERMARK_KEY, self._pending)  # never back below an id another run stored since

    # ------------------------------------------------------------------------------ polling trigger

    def probe(self, since: Any) -> tuple[int, str | None]:
        """Contacts on the first page created in the window a run started now reads (`probe_window` moved
        back by ``settle_seconds``), or, for a webhook, stored past ``since``."""
        if self.spec.webhook is not None:
            return self._watched_ids().probe(since)
        window = probe_window(since).shifted(self.spec.settle)
        first = next(iter(self.created_pages(window)), [])
        read = (self.record(raw, "probe") for raw in first)
        records = [
            r for r in read if not isinstance(r, ErrorRecord) and window.contains(_instant(r["created_at"]))
        ]
        newest = max((r["created_at"] for r in records), default=None)
        return len(records), newest

    def _watched_ids(self) -> WebhookSource:
        """The webhook's stored ids as `probe` watches them: one store (engine, connection) for all probes."""
        if self._watched is None:
            from altcraft.sources.webhook import WebhookSource

            hook = self.spec.webhook
            assert hook is not None
            self._watched = WebhookSource(hook.endpoint, key_column="id", ledger_conn_id=hook.ledger_conn_id)
        return self._watched

    def placement(self) -> dict[str, str]:
        """Where the webhook's stored ids are watched (`altcraft.sources.webhook.placement`)."""
        return self._watched_ids().placement()

    def close_probe(self) -> None:
        """Close the HTTP session the probes kept (`http`), and the webhook store's connections."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._watched is not None:
            self._watched.close_probe()

    # ------------------------------------------------------------------------- what a preset gives

    def connect(self, conn: Any) -> CrmHttp:
        """The HTTP client for an Airflow connection (base URL, auth headers, limits)."""
        raise NotImplementedError

    def created_pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        """Pages of raw contacts created in (at least) ``window``, narrowed by the CRM where it can."""
        raise NotImplementedError

    def pages_after(self, last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        """Pages of raw contacts with an id above ``last_id`` (all when None), in ascending id order."""
        raise NotImplementedError

    def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        """The raw contacts with these ids that still exist (at most `fetch_chunk`)."""
        raise NotImplementedError

    def flatten(self, raw: dict[str, Any]) -> Record:
        """One raw contact (an object with a numeric id) as a flat record (see the module docstring);
        `ContactError` (or another ValueError, TypeError, ...) if it cannot be read."""
        raise NotImplementedError

    def limits(self) -> Limits:

        spec = self.spec
        return Limits(
            requests_per_second=spec.rate,
            max_retries=spec.max_retries,
            backoff_seconds=spec.backoff_seconds,
            timeout=spec.timeout,
        )


def contact_record(
    raw: Mapping[str, Any],
    *,
    created_at: datetime,
    updated_at: datetime | None = None,
    email: Any = None,
    phone: Any = None,
    first_name: Any = None,
    last_name: Any = None,
    name: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Record:
    """The flat record every preset yields of the raw contact ``raw`` (its id in one form, `contact_id`);
    ``extra`` (the CRM's own fields) never hides a common one."""
    common = {
        "id": str(contact_id(raw)),
        "email": email,
        "phone": phone,
        "first_name": first_name,
        "last_name": last_name,
        "name": name,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "updated_at": updated_at.astimezone(UTC).isoformat() if updated_at else None,
    }
    return {**(extra or {}), **common}


class ContactError(ValueError):
    """A raw contact that cannot be a record; the text names the field, never its value."""


def contact_id(raw: Any) -> int | None:
    """A raw contact's numeric ``id`` (all three CRMs number contacts); None if it is not an object or has
    no such id (`whole_number`)."""
    return whole_number(raw.get("id")) if isinstance(raw, dict) else None


def whole_number(value: Any) -> int | None:
    """A CRM id as the whole number it is: a JSON integer, a float holding one (``2.0``), or text of ASCII
    digits (``"0002"``); None for anything else. ``int()`` cut a fraction off (``2.5``: 2), read text no CRM
    writes (``1_000``, spaces, other scripts' digits) and raised OverflowError on infinity (``1e999``),
    failing the whole read on one contact."""
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() else None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None  # False for NaN and infinity
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def not_a_stored_id(item: Mapping[str, Any]) -> str | None:
    """Why a stored webhook item is no contact id to fetch (the endpoint stores ``{"id": "<digits>"}``; an
    earlier ``source: {type: webhook}`` of the pipeline stored whole contacts), or None; never its value."""
    if contact_id(item) is not None:
        return None
    return f"not a CRM contact id ({'no id' if item.get('id') is None else type(item['id']).__name__})"


def in_id_order(contacts: Iterable[Any]) -> list[Any]:
    """Raw contacts by numeric id, those without one last (in the order read)."""
    return sorted(contacts, key=lambda raw: (contact_id(raw) is None, contact_id(raw) or 0))


def instant(name: str, value: Any, parse: Callable[[Any], datetime]) -> datetime:
    """A raw contact's time field ``name`` (holding ``value``) parsed; `ContactError` if absent or
    unreadable."""
    if value is None or value == "":
        raise ContactError(f"no {name}")
    try:
        return parse(value)
    except (TypeError, ValueError, AttributeError, OverflowError, OSError):
        raise ContactError(f"{name} is not a time ({type(value).__name__})") from None


def _stored_id(state: StateStore) -> int | None:
    """The id watermark kept in ``state``; None: none yet."""
    last = state.get(WATERMARK_KEY)
    return None if last is None else int(last)


def _numbered(pages: Iterable[list[Any]]) -> Iterator[tuple[str, Any]]:
    """Each raw item with its place, ``page <n> item <m>``."""
    for page, items in enumerate(pages, start=1):
        for item, raw in enumerate(items, start=1):
            yield f"page {page} item {item}", raw


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def widened(window: Window, unit: timedelta) -> Window:
    """The window widened to whole ``unit`` steps, the finest time the CRM keeps and filters by: its start
    cut down, its end rounded up. A partition's bounds fall on microseconds: the contact created at a bound
    cut to the CRM's unit lies in the window before it, which must ask for it (the CRM compares in its own
    unit); `CrmSource` applies the exact window to what comes back."""
    start = UNIX_EPOCH + (window.start - UNIX_EPOCH) // unit * unit
    end = UNIX_EPOCH - (UNIX_EPOCH - window.end) // unit * unit
    return Window(start, end)


def epoch(ts: Any) -> datetime:
    """Unix seconds as an aware UTC datetime; TypeError for true or false (int() read them as 1 and 0)."""
    if isinstance(ts, bool):
        raise TypeError("a boolean is no time")
    return datetime.fromtimestamp(int(ts), UTC)


def iso_instant(text: str) -> datetime:
    """ISO 8601 text (``Z`` or an offset) as an aware UTC datetime; naive text is UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def account_url(conn: Any, crm: str, default: str | None = None) -> str:
    """``scheme://host[:port]`` of a connection's host (https unless the host says otherwise)."""
    host = (conn.host or default or "").strip().rstrip("/")
    if not host:
        raise SourceError(f"{crm}: connection {conn.conn_id!r} has no host (the account's address)")
    if "://" not in host:
        host = f"https://{host}"
    return f"{host}:{conn.port}" if conn.port else host
