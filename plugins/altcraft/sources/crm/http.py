"""HTTP to one CRM account: throttled, retried on the CRM's limit answers, secrets kept out of errors.

Every CRM preset reads (lists, searches, fetches by id): a read may be repeated safely, so a limit answer
(HTTP 429, HTTP 503 -- Bitrix24's ``QUERY_LIMIT_EXCEEDED``), another 5xx or a broken connection is retried
after a backoff (``Retry-After`` when the CRM sends one, else exponential from ``backoff_seconds``; 30 s at
most, whatever the CRM asks), up to ``max_retries`` times. Requests are spaced to at most
``requests_per_second``. Redirects are never followed (they would carry the token to another host). Errors
name the CRM and the method, never the URL (a Bitrix24 inbound-webhook URL *is* the secret), the token or the
answer's body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from altcraft.answer_size import AnswerTooLarge, read_capped
from altcraft.deadline import Deadline, watch_sockets
from altcraft.http_environment import pin_environment
from altcraft.retry_after import RETRY_STATUSES, parse_retry_after
from altcraft.sources.base import SourceError, json_answer, unambiguous, value_at
from altcraft.sources.crm.base import Limits

log = logging.getLogger(__name__)


class CrmHttpError(SourceError):
    """A CRM refused a request (4xx other than its limit answer); ``status`` says how."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CrmHttp:
    """Requests to ``base_url`` (no trailing slash) with ``headers``; ``crm`` names it in errors.

    ``reauthorize`` is called once after an HTTP 401 and returns fresh headers (an OAuth refresh), or
    None when the credentials cannot be renewed; an HTTP 401 to its own request (the token exchange) is
    an error, not another renewal.
    """

    crm: str
    base_url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    limits: Limits
    reauthorize: Callable[[], dict[str, str] | None] | None = field(default=None, repr=False)
    sleep: Callable[[float], None] = time.sleep
    requests_sent: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self._session = watch_sockets(requests.Session())
        pin_environment(self._session, self.base_url)
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._renewing = False

    def close(self) -> None:
        """Close the session's connections."""
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        label: str,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """The 2xx (or 204) answer of ``method path``; `SourceError` after the retries or on 4xx.

        ``label`` (e.g. ``crm.item.list``) names the call in errors and logs instead of the URL.
        """
        failures, renewed = 0, False
        while True:
            self._throttle()
            try:
                response = self._send(method, path, params=params, json=json, headers=headers)
            except AnswerTooLarge as error:
                raise SourceError(f"{self.crm}: {label}: {error}") from None
            except requests.RequestException as error:
                failures += 1
                if failures > self.limits.max_retries:
                    raise SourceError(f"{self.crm}: {label}: no answer ({type(error).__name__})") from None
                self._back_off(label, failures, None, type(error).__name__)
                continue
            status = response.status_code
            if status == 401 and self.reauthorize is not None and not renewed and not self._renewing:
                renewed, self._renewing = True, True
                try:
                    fresh = self.reauthorize()
                finally:
                    self._renewing = False
                if fresh is not None:
                    self.headers = {**self.headers, **fresh}
                    continue
            if status in RETRY_STATUSES:
                failures += 1
                if failures > self.limits.max_retries:
                    raise SourceError(
                        f"{self.crm}: {label}: HTTP {status} after {self.limits.max_retries} retries"
                        + (" (the CRM's request limit)" if status in (429, 503) else "")
                    )
                wait = parse_retry_after(response.headers.get("Retry-After"))
                self._back_off(label, failures, wait, f"HTTP {status}")
                continue
            if response.is_redirect:
                raise SourceError(f"{self.crm}: {label}: HTTP {status} redirect not followed: check the host")
            if not 200 <= status < 300:
                hint = " (check the token)" if status in (401, 403) else ""
                raise CrmHttpError(f"{self.crm}: {label}: HTTP {status}{hint}", status)
            return response

    def json(self, response: requests.Response, label: str) -> Any:
        """The answer's JSON; None for an empty answer (amoCRM's 204 for an empty page)."""
        if response.status_code == 204 or not response.content:
            return None
        try:
            return json_answer(response.content)
        except ValueError:
            raise SourceError(f"{self.crm}: {label}: the answer is not JSON") from None
        except RecursionError:
            raise SourceError(f"{self.crm}: {label}: the answer is JSON nested too deeply to read") from None

    def contacts_at(self, answer: Any, path: str, label: str) -> list[Any]:
        """The list at the dotted ``path`` of a parsed answer; `SourceError` if there is none (an error
        object in an HTTP 200, a list, null): an answer without its list is never read as no contacts; nor one
        whose envelope names a key twice (`unambiguous`: which next page or list counts is unclear)."""
        found = value_at(answer, path)
        if not isinstance(found, list):
            raise SourceError(f"{self.crm}: {label}: no list of contacts at {path} in the answer")
        return unambiguous(answer, found, f"{self.crm}: {label}")

    def _send(
        self, method: str, path: str, *, params: Any, json: Any, headers: dict[str, str] | None
    ) -> requests.Response:
        self.requests_sent += 1
        deadline = Deadline(self.limits.timeout)
        try:
            with deadline:
                response = self._session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json,
                    headers={**self.headers, **(headers or {})},
                    timeout=self.limits.timeout,
                    allow_redirects=False,
                    stream=True,
                )
                read_capped(response, self.limits.max_answer_bytes)
                return response
        except requests.RequestException:
            if deadline.expired:
                raise requests.Timeout("no complete answer in time") from None
            raise

    def _throttle(self) -> None:
        gap = 1.0 / self.limits.requests_per_second
        with self._lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + gap
        if wait > 0:
            self.sleep(wait)

    def _back_off(self, label: str, failures: int, retry_after: float | None, why: str) -> None:
        self.retries += 1
        if retry_after is None:
            retry_after = self.limits.backoff_seconds * 2 ** (failures - 1)
        wait = min(retry_after, self.limits.backoff_max)  # a CRM's Retry-After of a day is not honoured
        log.warning("%s: %s answered %s; retry %d in %.2fs", self.crm, label, why, failures, wait)
        self.sleep(wait)
