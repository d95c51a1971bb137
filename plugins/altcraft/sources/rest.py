"""Contacts from a paginated JSON HTTP API (a CRM), through the HTTP provider's `HttpHook`.

The connection gives the base URL, credentials and default headers. The window is sent as two request
parameters (``window_params``) in ISO 8601 (UTC) or epoch seconds. With ``window_field`` (the dotted path
of a record's creation time) every record is checked against ``[start, end)`` again and one outside is
left to the window it belongs to, so an API whose end bound is inclusive, or that ignores the bounds,
gives no record to two windows; a record whose time cannot be read is its error record. Without it the
API is trusted to apply ``[start, end)``. GET sends ``params`` as the query string, other methods as a
JSON body. A parameter named by two of ``params``, ``window_params`` and the paginator is refused
(`check_one_owner`).

Records come in the order the API returns them (the key is only used downstream to deduplicate), and are
re-chunked to ``batch_size``. A page answered with a limit answer or server trouble (HTTP 429, 500, 502,
503, 504) is asked again, up to `MAX_RETRIES` times, as ``Retry-After`` says (30 s at most) or after 0.5 s
doubling; a page that still fails fails the run, and its retry starts again from the first page. A
pagination that loops fails the run too: a request made before (a cursor or next link that comes back) or a
page whose records repeat an earlier page's (an API that ignores the page or offset parameter). So do
`MAX_EMPTY_PAGES` empty pages in a row that still point to a next one (each cursor new, so no request
repeats). A paging value of the wrong kind fails it as well: a total the paginator is told to stop at that an
answer leaves out (reading on one page only would look like a clean run), a next link that is no text.

Paginators, in the style of dlt's REST client: each is a small frozen model with one job -- given the
request just made and its answer, say what the next request is, or ``None`` when done. They are pydantic
models with a ``type`` so that pipeline specs can name them directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from altcraft.answer_size import DEFAULT_MAX_ANSWER_BYTES, AnswerTooLarge, read_capped
from altcraft.masking import ScrubbedLog
from altcraft.retry_after import RETRY_STATUSES, parse_retry_after
from altcraft.sources.base import (
    ErrorRecord,
    PageLog,
    Partition,
    Record,
    Source,
    SourceError,
    Window,
    error_record,
    fingerprint,
    json_answer,
    naive_zone,
    objects_or_errors,
    partition_window,
    probe_window,
    rechunk,
    unambiguous,
    value_at,
)
from altcraft.sources.timestamps import parse_timestamp
from altcraft.spec_checks import (
    MAX_INT32,
    checked,
    json_data,
    no_credentials,
    no_secret_names,
    no_secret_query,
)

if TYPE_CHECKING:
    from requests import Response

#: urllib3 logs each request's line at DEBUG, with its query: a cursor or next link may hold a contact's email
_REQUEST_LINES = logging.getLogger("urllib3.connectionpool")
log = logging.getLogger(__name__)
_SCRUBBED = ScrubbedLog()

WindowFormat = Literal["iso", "epoch"]
WINDOW_PARAM_KEYS = ("start", "end")
#: Empty pages in a row after which a paginator still asking for more is taken to loop.
MAX_EMPTY_PAGES = 50
#: Retries of one request answered with a limit answer or server trouble (`RETRY_STATUSES`), the first after
#: ``Retry-After`` (at most `BACKOFF_MAX` seconds) or `BACKOFF_SECONDS`, doubling.
MAX_RETRIES = 4
BACKOFF_SECONDS = 0.5
BACKOFF_MAX = 30.0


class PagingError(ValueError):
    """A paging value of an answer (a total, a next link) is missing or of the wrong kind; names its path,
    never its value."""


def count_at(body: Any, path: str) -> int:
    """The count (of pages, of records) at ``path``; `PagingError` if it is absent or no count: a total
    left out (or null, or negative) would end the listing after this page, the rest unread and the run
    clean."""
    value = value_at(body, path)
    if isinstance(value, str) and value.isascii() and value.isdigit():  # "²" passes isdigit, not int()
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        kind = "absent" if value is None else "negative" if isinstance(value, int) else type(value).__name__
        raise PagingError(f"no count at {path!r} ({kind})")
    return value


class PageRequest(BaseModel):
    """One request: an endpoint (relative to the connection's base URL) and its parameters."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    params: dict[str, Any] = {}

    def with_params(self, **params: Any) -> PageRequest:
        return PageRequest(endpoint=self.endpoint, params={**self.params, **params})


class _Paginator(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def param_names(self) -> tuple[str, ...]:
        """The request parameters this paginator sets."""
        return ()

    def first(self, request: PageRequest) -> PageRequest:
        """The first request."""
        return request

    def next(
        self, request: PageRequest, response: Response, body: Any, records: list[Any]
    ) -> PageRequest | None:
        """The request after ``request`` (answered by ``response``, parsed ``body``); None when done."""
        raise NotImplementedError


class PageNumberPaginator(_Paginator):
    """``?page=1, 2, ...``: stops at an empty page, or after the last page if ``total_pages_path`` is set
    (an answer without a page count there fails the run)."""

    type: Literal["page_number"] = "page_number"
    page_param: str = "page"
    start_page: int = Field(1, ge=0, le=MAX_INT32)
    total_pages_path: str | None = None

    def param_names(self) -> tuple[str, ...]:
        return (self.page_param,)

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_params(**{self.page_param: self.start_page})

    def next(
        self, request: PageRequest, response: Response, body: Any, records: list[Any]
    ) -> PageRequest | None:
        page = request.params[self.page_param]
        if not records:
            return None
        total_path = self.total_pages_path
        if total_path is not None and page - self.start_page + 1 >= count_at(body, total_path):
            return None
        return request.with_params(**{self.page_param: page + 1})


class OffsetPaginator(_Paginator):
    """``?offset=0&limit=100``: advances by the records received; stops at an empty page or at the total
    (an answer without a count at ``total_path`` fails the run)."""

    type: Literal["offset"] = "offset"
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, ge=1, le=MAX_INT32)
    total_path: str | None = None

    def param_names(self) -> tuple[str, ...]:
        return (self.offset_param, self.limit_param)

    def first(self, request: PageRequest) -> PageRequest:
        return request.with_params(**{self.offset_param: 0, self.limit_param: self.limit})

    def next(
        self, request: PageRequest, response: Response, body: Any, records: list[Any]
    ) -> PageRequest | None:
        offset = request.params[self.offset_param] + len(records)
        if not records:
            return None
        if self.total_path is not None and offset >= count_at(body, self.total_path):
            return None
        return request.with_params(**{self.offset_param: offset})


class CursorPaginator(_Paginator):
    """``?cursor=<value at cursor_path>``: stops when the answer has no cursor (50 empty pages in a row
    that still give one fail the run)."""

    type: Literal["cursor"] = "cursor"
    cursor_path: str = "next_cursor"
    cursor_param: str = "cursor"

    def param_names(self) -> tuple[str, ...]:
        return (self.cursor_param,)

    def next(
        self, request: PageRequest, response: Response, body: Any, records: list[Any]
    ) -> PageRequest | None:
        cursor = value_at(body, self.cursor_path)
        if cursor in (None, ""):
            return None
        return request.with_params(**{self.cursor_param: cursor})


class NextLinkPaginator(_Paginator):
    """Follows the next page's URL from the body (``next_path``) or the ``Link: <...>; rel="next"`` header.

    The link carries every parameter; it must stay under the connection's base URL.
    """

    type: Literal["next_link"] = "next_link"
    next_path: str | None = None

    def next(
        self, request: PageRequest, response: Response, body: Any, records: list[Any]
    ) -> PageRequest | None:
        if self.next_path is not None:
            link = value_at(body, self.next_path)
        else:
            link = response.links.get("next", {}).get("url")
        if link in (None, "", False):
            return None
        if not isinstance(link, str):
            raise PagingError(f"no link at {self.next_path!r} ({type(link).__name__})")
        return PageRequest(endpoint=urljoin(response.url, link))


Paginator = Annotated[
    PageNumberPaginator | OffsetPaginator | CursorPaginator | NextLinkPaginator, Field(discriminator="type")
]


def check_one_owner(
    params: dict[str, Any], window_params: dict[str, str], paginator: Paginator | None
) -> None:
    """ValueError if two settings name one request parameter: the later one (the window's bounds over
    ``params``, the paginator's over both) replaced the other in every request, a window bound too -- the
    window then not applied, or no contact read, without a word. (A next link carries every parameter.)"""
    owners: dict[str, str] = {name: "params" for name in params}
    named = [(name, "window_params", f"window_params' {key}") for key, name in window_params.items()]
    named += [(name, "paginator", "the paginator") for name in paginator.param_names()] if paginator else []
    for name, field, owner in named:
        if name in owners:
            raise ValueError(
                f"{field}: {name!r} is also the parameter of {owners[name]}: one would replace the other in "
                "every request"
            )
        owners[name] = owner


def format_bound(ts: datetime, window_format: WindowFormat) -> str | int | float:
    if window_format == "iso":
        return ts.isoformat()
    return int(ts.timestamp()) if ts.microsecond == 0 else ts.timestamp()


class RestSource(Source):
    """Records at ``record_path`` of each page of ``endpoint``; see the module docstring."""

    def __init__(
        self,
        http_conn_id: str,
        endpoint: str,
        *,
        key_column: str,
        method: str = "GET",
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        window_params: dict[str, str] | None = None,
        window_format: WindowFormat = "iso",
        record_path: str | None = None,
        paginator: Paginator | None = None,
        timeout: float = 60.0,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        window_field: str | None = None,
        timezone: str | None = None,
    ):
        unknown = set(window_params or {}) - set(WINDOW_PARAM_KEYS)
        if unknown:
            raise ValueError(f"window_params: keys must be 'start' and/or 'end', got {sorted(unknown)}")
        if window_format not in ("iso", "epoch"):
            raise ValueError(f"window_format: expected 'iso' or 'epoch', got {window_format!r}")
        self.http_conn_id = http_conn_id
        # credentials belong in the connection (login and password, extra headers), not in the DAG
        self.endpoint = checked("RestSource", "endpoint", endpoint, no_credentials, no_secret_query)
        self.key_column = key_column
        self.method = method.upper()
        self.params = checked(
            "RestSource", "params", dict(params or {}), no_secret_names, no_credentials, json_data
        )
        self.headers = checked("RestSource", "headers", dict(headers or {}), no_secret_names, no_credentials)
        self.window_params = dict(window_params or {})
        check_one_owner(self.params, self.window_params, paginator)
        self.window_format = window_format
        self.record_path = record_path
        self.paginator = paginator
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self.window_field = window_field
        self.timezone, self.timezone_defaulted = naive_zone(timezone)
        self._probe_hook: Any = None  # `probe`'s, kept between polls

    def describe(self) -> str:
        pages = self.paginator.type if self.paginator else "one page"
        path = urlsplit(self.endpoint).path
        return f"rest {self.method} {path} on connection {self.http_conn_id!r}, {pages}"

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        if partition is not None and len(self.window_params) < len(WINDOW_PARAM_KEYS):
            raise ValueError("a partitioned rest source needs window_params for both start and end")
        window = partition_window(window, partition)
        records = self._records(window)
        if window is not None and self.window_field:
            records = self._inside(records, window, self.window_field)
        yield from rechunk(records, batch_size)

    def _inside(self, records: Iterator[Any], window: Window, field: str) -> Iterator[Any]:
        """The records whose ``field`` lies in ``window`` (error records pass), and the error record of
        each whose time cannot be read."""
        for record in records:
            if isinstance(record, ErrorRecord):
                yield record
                continue
            try:
                if window.contains(parse_timestamp(value_at(record, field), self.timezone)):
                    yield record
            except (ValueError, OverflowError, OSError):
                key = record.get(self.key_column)
                location = str(key) if isinstance(key, str | int) else "a record"
                yield error_record(self.key_column, location, f"{field}: not ISO 8601 text or epoch seconds")

    def probe(self, since: datetime) -> tuple[int, str | None]:
        """Records on the first page of `probe_window`: one request, for a polling trigger; with
        ``window_field``, those of them a run reads (inside the window, or unreadable: error records).

        Needs ``window_params`` with ``start`` (the API's "created since" parameter).
        """
        if "start" not in self.window_params:
            raise SourceError(f"{self.describe()}: polling needs window_params with 'start'")
        window = probe_window(since)
        if self._probe_hook is None:
            self._probe_hook = self._hook()
        page = self._page(self._json(self._send(self._probe_hook, self._first_request(window))))
        records = objects_or_errors(page, self.key_column, "the first page")
        if self.window_field:
            records = self._inside(records, window, self.window_field)
        return sum(1 for _ in records), None

    def close_probe(self) -> None:
        """Close the connection the probes kept open."""
        if self._probe_hook is not None:
            self._probe_hook.adapter.close()
            self._probe_hook = None

    def _first_request(self, window: Window | None) -> PageRequest:
        params = dict(self.params)
        if window is not None:
            bounds = {"start": window.start, "end": window.end}
            for key, name in self.window_params.items():
                params[name] = format_bound(bounds[key], self.window_format)
        request = PageRequest(endpoint=self.endpoint, params=params)
        return self.paginator.first(request) if self.paginator else request

    def _hook(self) -> Any:
        """The connection's `HttpHook`, its sockets under each request's `Deadline`. Its adapter keeps the
        connections (`_send_once`: each request's session is new, no cookie of an answer goes with the next
        request, but it mounts this adapter): the pages of a read, or the probes of a trigger (`probe`,
        until `close_probe`), go over one connection; close the adapter when done."""
        from airflow.providers.http.hooks.http import HttpHook

        from altcraft.deadline import DeadlineAdapter

        _REQUEST_LINES.addFilter(_SCRUBBED)  # once: a filter added again is not added twice
        return HttpHook(method=self.method, http_conn_id=self.http_conn_id, adapter=DeadlineAdapter())

    def _records(self, window: Window | None) -> Iterator[Any]:
        hook = self._hook()
        try:
            yield from self._pages(hook, window)
        finally:
            hook.adapter.close()

    def _pages(self, hook: Any, window: Window | None) -> Iterator[Any]:
        request: PageRequest | None = self._first_request(window)
        asked: set[bytes] = set()
        pages = PageLog(self.describe())
        empty = 0  # empty pages in a row
        while request is not None:
            query = fingerprint([request.endpoint, request.params])
            if query in asked:
                raise SourceError(
                    f"{pages.what}: page {pages.count + 1} asks for a page read before: it loops"
                )
            asked.add(query)
            response = self._send(hook, request)
            body = self._json(response)
            records = self._page(body, f"page {pages.count + 1}")
            pages.add(records)
            yield from objects_or_errors(records, self.key_column, f"page {pages.count}")
            try:
                request = self.paginator.next(request, response, body, records) if self.paginator else None
            except PagingError as exc:
                raise SourceError(f"{pages.what}: page {pages.count}: {exc}") from None
            empty = 0 if records else empty + 1
            if request is not None and empty >= MAX_EMPTY_PAGES:
                raise SourceError(
                    f"{pages.what}: {empty} empty pages in a row, each pointing to a next one: it loops"
                )

    def _page(self, body: Any, page: str = "the first page") -> list[Any]:
        """The records of an answer's ``body``; `SourceError` if there is no list at ``record_path``, or if
        an object outside the records names a key twice: which value counts (the records' place, the next
        cursor) is ambiguous. Records naming a key twice are their own errors (`objects_or_errors`)."""
        records = value_at(body, self.record_path)
        if not isinstance(records, list):
            raise SourceError(f"{self.describe()}: no list at record_path {self.record_path!r}")
        return unambiguous(body, records, f"{self.describe()}: {page}")

    def _send(self, hook: Any, request: PageRequest) -> Response:
        """The 2xx answer to ``request``; asked again after a limit answer or server trouble
        (`RETRY_STATUSES`, at most `MAX_RETRIES` times): a read may be repeated, while a failed run's retry
        started again from page 1, to meet the API's limit at the same place."""
        path = urlsplit(self._relative(hook, request.endpoint)).path
        for failures in range(MAX_RETRIES + 1):
            response = self._send_once(hook, request)
            status = response.status_code
            if status not in RETRY_STATUSES or failures == MAX_RETRIES:
                break
            wait = parse_retry_after(response.headers.get("Retry-After"))
            wait = min(BACKOFF_SECONDS * 2**failures if wait is None else wait, BACKOFF_MAX)
            log.warning(
                "%s: HTTP %d from %s; retry %d in %.2fs", self.describe(), status, path, failures + 1, wait
            )
            time.sleep(wait)
        if not 200 <= status < 300:
            retried = f" after {MAX_RETRIES} retries" if status in RETRY_STATUSES else ""
            raise SourceError(f"{self.describe()}: HTTP {status} from {path}{retried}")
        return response

    def _send_once(self, hook: Any, request: PageRequest) -> Response:
        endpoint = self._relative(hook, request.endpoint)
        body = {"params": request.params or None} if self.method == "GET" else {"json": request.params}
        # Redirects are not followed: requests keeps custom headers (an API key from the connection's
        # extras) on a redirect to another host. A next page is only taken from a checked link.
        from requests import RequestException

        from altcraft.deadline import Deadline

        path = urlsplit(endpoint).path
        options = {"timeout": self.timeout, "allow_redirects": False, "stream": True}
        deadline = Deadline(self.timeout)  # for the whole answer, not per socket read
        try:
            with deadline:
                # the connection's session, not `hook.run`: that logs a failed request's text, which quotes
                # the URL with its query (a cursor that is a contact's email), and the URL at DEBUG
                session = hook.get_conn(self.headers, options)
                url = hook.url_from_endpoint(endpoint)
                response = session.request(self.method, url, headers=self.headers, **options, **body)
                read_capped(response, self.max_answer_bytes)
        except RequestException as exc:
            # Only the type, never the chain: the text may quote a header value (the API key) or the
            # query (a cursor that is a contact's email).
            what = (
                f"no complete answer within {self.timeout:g}s"
                if deadline.expired
                else f"no answer ({type(exc).__name__})"
            )
            raise SourceError(f"{self.describe()}: {what} from {path}") from None
        except AnswerTooLarge as exc:
            raise SourceError(f"{self.describe()}: {exc} from {path} (max_answer_bytes)") from None
        if response.is_redirect:
            location = urlsplit(response.headers.get("Location", ""))
            raise SourceError(
                f"{self.describe()}: HTTP {response.status_code} redirect from {path} to "
                f"{location.hostname or 'the same host'} not followed: point the connection or endpoint "
                "at the address that answers"
            )
        return response

    def _json(self, response: Response) -> Any:
        try:
            return json_answer(response.content)
        except ValueError:
            raise SourceError(f"{self.describe()}: the answer is not JSON") from None
        except RecursionError:
            raise SourceError(f"{self.describe()}: the answer is JSON nested too deeply to read") from None

    def _relative(self, hook: Any, endpoint: str) -> str:
        """An endpoint for the hook; absolute links must stay under the connection's base URL, and may
        not climb out of it by a dot segment (``/api/../admin``, ``/api/%2e%2e/admin``: the server resolves
        it after our check) or a backslash."""
        if not urlsplit(endpoint).scheme:
            return endpoint
        base = hook.url_from_endpoint("").rstrip("/") + "/"
        path = unquote(urlsplit(endpoint).path)
        if not endpoint.startswith(base) or "\\" in path or {".", ".."} & set(path.split("/")):
            raise SourceError(
                f"{self.describe()}: a next-page link leads away from the connection's base URL"
            )
        return endpoint[len(base) :]
