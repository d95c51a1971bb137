"""Wire format shared by the sync and async hooks: request bodies in, typed results or errors out.

Transport-independent: the hooks only move bytes; everything about what the bytes mean lives here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from altcraft.api.errors import (
    AltcraftApiError,
    AltcraftError,
    AltcraftRateLimited,
    AltcraftRedirected,
    AltcraftTransportError,
    AltcraftUnexpectedAnswer,
)
from altcraft.api.models import MAX_ID_CHARS, Page, Scenario, TaskStatus, error_code
from altcraft.masking import scrub

T = TypeVar("T")

API_PREFIX = "/api/v1.1/"
_SNIPPET = 200
#: Longest server text kept (in an exception, a log, the ledger): MySQL's TEXT holds 64 KiB, and a text
#: of megabytes would be repeated in every place it goes.
MAX_SERVER_TEXT = 1000
#: NUL and lone surrogates: no database text column takes them (PostgreSQL refuses NUL, and no driver
#: encodes a lone surrogate), nor does JSON for XCom. In JSON they come only as ``\u`` escapes.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")


def api_path(endpoint: str) -> str:
    """``workflows/list`` → ``/api/v1.1/workflows/list``."""
    return API_PREFIX + endpoint.strip("/")


def request_headers(token: str, version: str) -> dict[str, str]:
    """Headers of every API request: bearer auth, JSON both ways, and who is calling."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json; charset=utf-8",
        "Accept": "application/json",
        "User-Agent": f"airflow-provider-altcraft/{version}",
    }


def encode_body(body: Mapping[str, Any], *, token: str | None, raw_data: bytes | None = None) -> bytes:
    """Encode a JSON request body, adding ``token`` when given.

    ``raw_data`` is an already encoded JSON array spliced in as the ``data`` key, so a batch of
    profiles is encoded exactly once (see :class:`altcraft.batching.Chunk`).
    """
    payload = dict(body)
    if token is not None:
        payload["token"] = token
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    if raw_data is None:
        return encoded
    head = encoded[:-1] + (b',"data":' if len(encoded) > 2 else b'"data":')
    return head + raw_data + b"}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); ``0`` is honoured."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_response(
    endpoint: str, status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> dict[str, Any]:
    """Return the decoded JSON of a successful answer, or raise the matching typed error.

    Success means HTTP 2xx **and** ``error == 0``; both are checked because Altcraft may report an error
    with HTTP 200. A 3xx is :class:`AltcraftRedirected`: the hooks never follow redirects.
    """
    if 300 <= status < 400:
        location = headers.get("Location") or headers.get("location") or ""
        raise AltcraftRedirected(status, _clean(_origin(location), secret), endpoint=endpoint)
    document = _decode(body)
    code, text = _envelope(document)
    if status == 429 or code == 429:
        raise AltcraftRateLimited(
            _clean(text or "too many requests", secret),
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            endpoint=endpoint,
        )
    if not 200 <= status < 300:
        if not text:
            text = f"HTTP {status}" + (f": {_snippet(body, secret)}" if body and document is None else "")
        code = code if code is not None and code > 0 else status
        raise AltcraftApiError(
            code,
            _clean(text, secret),
            http_status=status,
            endpoint=endpoint,
            per_profile=_per_profile(document),
        )
    if document is None or not isinstance(document, dict):
        raise AltcraftTransportError(
            f"unreadable response (HTTP {status}, {len(body)} bytes): {_snippet(body, secret)}",
            sent=True,
            endpoint=endpoint,
        )
    if code is None:
        raise AltcraftUnexpectedAnswer(f"`error` is not a code: {_clean(text, secret)}", endpoint=endpoint)
    if code:
        raise AltcraftApiError(
            code,
            _clean(text, secret),
            http_status=status,
            endpoint=endpoint,
            per_profile=_per_profile(document),
        )
    # without a backslash in the raw JSON every decoded string is its raw text: a token absent from the
    # body is absent from every string, and the search for it in each one can be skipped
    maybe_secret = secret if secret and (b"\\" in body or secret.encode() in body) else None
    return clean_document(document, maybe_secret, unstorable=_UNSTORABLE_ESCAPE.search(body) is not None)


#: Keys whose string values are free text written by the server (e.g. ``result[].error_text``).
SERVER_TEXT_KEYS = frozenset(
    {"error_text", "error_message", "message", "detail", "reason", "status", "status_text"}
)


def clean_document(document: Any, secret: str | None, *, unstorable: bool = True) -> Any:
    """The answer with the token removed from every string and contacts masked in every server text, each
    server text cut to `MAX_SERVER_TEXT` characters; with ``unstorable``, NUL and lone surrogates replaced
    in every string.

    Done once here, for both hooks, so no text that came from Altcraft reaches a log, an exception,
    XCom or the ledger with the token or an email/phone in clear, or in a form the ledger cannot store.
    Iterative: any depth is fine.
    """
    variants = [v for v in {secret, json.dumps(secret)[1:-1]} if v] if secret else []
    # without a token to remove or characters to replace, only server texts (and a non-text
    # `error_text`) can change: every other string is passed over without a look
    every_string = bool(variants) or unstorable
    root = [document]
    stack: list[dict[Any, Any] | list[Any]] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, list):
            for index, value in enumerate(container):
                if isinstance(value, dict | list):
                    stack.append(value)
                elif every_string and isinstance(value, str):
                    container[index] = _clean_string(value, variants, unstorable)
            continue
        for key, value in container.items():
            if isinstance(value, str):
                cleaned = _clean_string(value, variants, unstorable) if every_string else value
                if cleaned and key in SERVER_TEXT_KEYS:
                    short = len(cleaned) <= _SCRUB_CACHED_CHARS
                    cleaned = _scrub_short(cleaned) if short else _clean(cleaned, None)
                if cleaned is not value:
                    container[key] = cleaned
            elif key == "error_text" and value is not None:
                # an object, a list or a number that `Envelope` reads as text: cleaned as that text
                container[key] = _clean(_text(value), secret)
            elif isinstance(value, dict | list):
                stack.append(value)
    return root[0]


def _clean_string(value: str, variants: list[str], unstorable: bool) -> str:
    """``value`` with each variant of the token replaced and, with ``unstorable``, NUL and lone surrogates."""
    for variant in variants:
        value = value.replace(variant, "***")
    return _UNSTORABLE.sub("\ufffd", value) if unstorable else value


_SCRUB_CACHED_CHARS = 200
_scrub_short = lru_cache(maxsize=1024)(scrub)
"""`scrub` of short server texts, which repeat in every item of a batch answer (``error_text``)."""


def parse_answer(endpoint: str, parse: Callable[[Any], T], answer: Any) -> T:
    """``parse(answer)``, with anything it raises on an odd shape turned into `AltcraftUnexpectedAnswer`.

    The message lists where the answer did not fit, never the values found there (they may echo
    secrets or contact data).
    """
    try:
        return parse(answer)
    except AltcraftError:
        raise
    except ValidationError as error:
        where = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['type']}" for e in error.errors()[:5]
        )
        raise AltcraftUnexpectedAnswer(where, endpoint=endpoint) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
        raise AltcraftUnexpectedAnswer(type(error).__name__, endpoint=endpoint) from None


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL: where a redirect points, without a path or query to leak."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "an unreadable URL"
    if not parts.hostname:
        return ""
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _envelope(document: Any) -> tuple[int | None, str]:
    """The answer's ``error`` code (None when it is there but not a code) and ``error_text``."""
    if not isinstance(document, dict):
        return 0, ""
    try:
        code = error_code(document.get("error"))
    except ValueError:
        # `"error": "invalid token"`, 0.5, 2**40: an error all the same, in a form the API does not document
        code = None
    return code, _text(document.get("error_text"))


def _per_profile(document: Any) -> bool:
    """Whether an error answer also reports on profiles: a non-empty ``result`` or a ``profile_id``."""
    return isinstance(document, dict) and (
        bool(document.get("result")) or document.get("profile_id") is not None
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value, default=str)


def _snippet(body: bytes, secret: str | None) -> str:
    """The start of a body that is not JSON, cleaned (`_clean`) and cut to `_SNIPPET` characters."""
    window = body[: _SNIPPET + _MARGIN + len(secret or "")]
    text = " ".join(window.decode("utf-8", errors="replace").split())
    return _clean(text, secret, limit=_SNIPPET, more=len(body) > len(window))


#: Characters read past a cut before the text is cleaned: room for an email or a phone across the cut.
_MARGIN = 1024


def _clean(text: str, secret: str | None, *, limit: int = MAX_SERVER_TEXT, more: bool = False) -> str:
    """Server text made safe for logs, exceptions and the ledger: no token (in any letter case: a URL's host
    and scheme come back lower-cased), no email or phone in clear, nothing a database refuses, at most
    ``limit`` characters and "…" where it was cut (``more``: ``text`` is already the start of a longer one).
    Cleaned *before* it is cut: cut first, a token or an email across the cut would keep its first part."""
    window = text[: limit + _MARGIN + len(secret or "")]
    more = more or len(text) > len(window)
    if secret and window:
        window = re.sub(re.escape(secret), "***", window, flags=re.IGNORECASE)
    cleaned = _UNSTORABLE.sub("\ufffd", scrub(window))
    return cleaned[:limit] + ("…" if more or len(cleaned) > limit else "")


def task_id_of(answer: dict[str, Any]) -> str:
    """The task id of a task-creating call (``data.task_id``; ``task_id`` at the top level accepted)."""
    data = answer.get("data")
    task_id = (data.get("task_id") or data.get("id")) if isinstance(data, dict) else None
    task_id = task_id or answer.get("task_id")
    if not task_id or not isinstance(task_id, str | int) or isinstance(task_id, bool):
        raise AltcraftUnexpectedAnswer("no task id (data.task_id)")
    if len(str(task_id)) > MAX_ID_CHARS:
        raise AltcraftUnexpectedAnswer(f"the task id is longer than {MAX_ID_CHARS} characters")
    return str(task_id)


def task_status_of(answer: dict[str, Any], task_id: str) -> TaskStatus:
    """Parse a ``tasks/status`` answer (payload in ``data``, or at the top level); the status of another
    task than ``task_id`` is an unexpected answer."""
    data = answer.get("data") if isinstance(answer.get("data"), dict) else answer
    named = data.get("task_id")
    if named not in (None, "") and str(named) != task_id:
        raise AltcraftUnexpectedAnswer("data.task_id names another task than the one asked for")
    return TaskStatus.model_validate({**data, "task_id": task_id})


def scenario_of(answer: dict[str, Any], scenario_id: int) -> Scenario | None:
    """The scenario ``scenario_id`` from a ``workflows/list`` page asked with ``from_id=scenario_id``."""
    page = Page.model_validate(answer)
    return next((s for s in map(Scenario.model_validate, page.data) if s.id == scenario_id), None)
