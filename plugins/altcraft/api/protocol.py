"""Wire format shared by the sync and async hooks: request bodies in, typed results or errors out.

Transport-independent: the hooks only move bytes; everything about what the bytes mean lives here.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

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
from altcraft.masking import MASK, MAX_REQUEST_VALUES, mask_values, scrub
from altcraft.retry_after import parse_retry_after
from altcraft.storable import MAX_STORED_CHARS, replace_unstorable, storable

log = logging.getLogger(__name__)

T = TypeVar("T")

API_PREFIX = "/api/v1.1/"
_SNIPPET = 200
#: Longest server text kept (in an exception, a log, the ledger): see `altcraft.storable`.
MAX_SERVER_TEXT = MAX_STORED_CHARS
#: Where a JSON answer may write NUL or a lone surrogate (`altcraft.storable.UNSTORABLE`): a ``\u`` escape;
#: a surrogate's own UTF-8 bytes (json.loads reads bytes with ``surrogatepass``); a NUL byte, in every ASCII
#: character of JSON in UTF-16 or UTF-32, whose escapes are not searched.
_MAY_BE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])|\xed[\xa0-\xbf]|\x00")


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


def header_bytes(headers: Mapping[str, str]) -> dict[str, bytes]:
    """``headers`` as UTF-8, for `requests`, which sends text as Latin-1: a token beyond ASCII then went in
    other bytes than in the JSON body and than aiohttp (UTF-8) sends it, and a server quoting that header
    gave back bytes no form of the token (`token_forms`) matches."""
    return {name: value.encode() for name, value in headers.items()}


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


def parse_response(
    endpoint: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None = None,
    known: Sequence[str] = (),
    about: Callable[[], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Return the decoded JSON of a successful answer, or raise the matching typed error.

    Success means HTTP 2xx **and** ``error == 0``; both are checked because Altcraft may report an error
    with HTTP 200. A 3xx is :class:`AltcraftRedirected`: the hooks never follow redirects. ``known``: the
    values of the one contact the request was about (`altcraft.api.result_identity.contact_values`),
    masked in every server text of the answer (`mask_values`) besides what `scrub` masks. ``about``: the
    values of every contact of a request of several (`altcraft.api.result_identity.request_values`), read
    only when the answer is an error, whose text is about the whole request: masked in it too.
    """
    if 300 <= status < 400:
        location = headers.get("Location") or headers.get("location") or ""
        raise AltcraftRedirected(status, _clean(_origin(location), secret), endpoint=endpoint)
    document = decode_answer(body)
    code, text = _envelope(document)
    per_profile = _reports_on_profiles(document)
    if about is not None and (code != 0 or not 200 <= status < 300):
        known = (*known, *about())  # an error: its text is about the request, any of its contacts
    # a 5xx says the server broke, whatever its body; per-profile output says something was done
    if (status == 429 or (code == 429 and status < 500)) and not per_profile:
        raise AltcraftRateLimited(
            _clean(text or "too many requests", secret, known=known),
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            endpoint=endpoint,
        )
    if not 200 <= status < 300:
        if not text:
            text = f"HTTP {status}" + (
                f": {_snippet(body, secret, known)}" if body and document is None else ""
            )
        coded = code is not None and code > 0
        raise _api_error(
            code if coded else status, text, status, endpoint, per_profile, secret, known, coded=coded
        )
    if document is None or not isinstance(document, dict):
        raise AltcraftTransportError(
            f"unreadable response (HTTP {status}, {len(body)} bytes): {_snippet(body, secret, known)}",
            sent=True,
            endpoint=endpoint,
        )
    if code is None:
        raise AltcraftUnexpectedAnswer(
            f"`error` is not a code: {_clean(text, secret, known=known)}", endpoint=endpoint
        )
    if code:
        raise _api_error(code, text, status, endpoint, per_profile, secret, known)
    maybe_secret = secret if secret and _may_quote(body, token_forms(secret)) else None
    unstorable = _MAY_BE_UNSTORABLE.search(body) is not None
    return clean_document(document, maybe_secret, unstorable=unstorable, known=known)


@dataclass(frozen=True, slots=True)
class TokenForms:
    """Every form in which server text may quote the token, as one pattern that removes them all."""

    pattern: re.Pattern[str]
    needles: tuple[bytes, ...]
    """The forms' UTF-8 bytes with ASCII letters lower-cased (what ``body.lower()`` holds where a form is),
    those holding another left out."""
    longest: int

    def remove(self, text: str) -> str:
        """``text`` with every form of the token replaced by `MASK`."""
        return self.pattern.sub(MASK, text)


@lru_cache(maxsize=16)
def token_forms(secret: str) -> TokenForms:
    """The forms of ``secret`` to remove from server text: as is, lower- and upper-cased, and its
    `base64_forms`, each raw, JSON-escaped (``\\u`` escapes or not, ``/`` escaped or not), URL-quoted (``%20``
    or ``+`` for a space, ``/`` quoted or not) and HTML-escaped; ASCII letters match in any case. Longest
    first, so none is removed only in part."""
    forms = set()
    for plain in {secret, secret.lower(), secret.upper()} | base64_forms(secret):
        escaped = {json.dumps(plain, ensure_ascii=ascii_only)[1:-1] for ascii_only in (True, False)}
        forms |= escaped | {form.replace("/", "\\/") for form in escaped}
        forms |= {plain, quote(plain, safe=""), quote(plain), quote_plus(plain)}
        forms |= {html.escape(plain), html.escape(plain, quote=False)}
    ordered = sorted(forms, key=len, reverse=True)
    return TokenForms(
        pattern=re.compile("|".join(alternative for form in ordered for alternative in _any_case(form))),
        needles=_innermost({form.encode().lower() for form in ordered}),
        longest=len(ordered[0]),
    )


def _any_case(form: str) -> list[str]:
    """Expressions matching ``form`` with its ASCII letters in either case, one for each case of its first
    letter. Alternatives that each start with a literal let `re` skip at once every place where no form can
    start; with ``re.IGNORECASE`` it tried each alternative at each character (3 times slower)."""
    heads = {form[0].lower(), form[0].upper()} if _letter(form[0]) else {form[0]}
    rest = "".join(
        f"[{char.lower()}{char.upper()}]" if _letter(char) else re.escape(char) for char in form[1:]
    )
    return [re.escape(head) + rest for head in sorted(heads)]


def _letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _innermost(needles: set[bytes]) -> tuple[bytes, ...]:
    """The needles that hold no other: where any needle is, one of these is, so looking for them is exact."""
    return tuple(sorted(n for n in needles if not any(other in n for other in needles if other != n)))


#: Fewest characters of a base64 form removed: shorter ones would match unrelated base64 text.
_MIN_BASE64_CHARS = 8
_URL_SAFE = str.maketrans("+/", "-_")


def base64_forms(secret: str) -> set[str]:
    """``secret`` (UTF-8) inside base64 text (``Basic`` credentials, a JWT, an echoed header), in the standard
    and the URL-safe alphabet, at each of the 3 byte offsets it may start at in the encoded bytes: the
    characters its bytes alone fix (whatever comes before or after), and, for the token at the end of the
    encoded bytes, those with the last character, padded and not. Forms shorter than `_MIN_BASE64_CHARS`
    are left out."""
    raw = secret.encode()
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        first = -(-8 * offset // 6)  # the first character of 6 bits all from the token
        fixed = 8 * (offset + len(raw)) // 6  # past the last such character
        for form in (encoded[first:fixed], encoded[first:].rstrip("="), encoded[first:]):
            forms |= {form, form.translate(_URL_SAFE)}
    return {form for form in forms if len(form) >= _MIN_BASE64_CHARS}


def remove_token(text: str, secret: str | None) -> str:
    """``text`` with the token replaced by `MASK` in each of its `token_forms`."""
    return token_forms(secret).remove(text) if secret and text else text


def _may_quote(body: bytes, forms: TokenForms) -> bool:
    """Whether a string decoded from the JSON ``body`` may hold a form of the token: exact, and fast.

    Without a backslash (no JSON escape) and a NUL (JSON in UTF-16 or UTF-32 has one in every ASCII
    character) every decoded string is a piece of the UTF-8 body, so a form absent from the body with its
    ASCII letters lower-cased, as the pattern matches them, is absent from every string."""
    if b"\\" in body or b"\x00" in body:
        return True
    lowered = body.lower()
    return any(needle in lowered for needle in forms.needles)


#: Keys whose string values are free text written by the server (e.g. ``result[].error_text``).
SERVER_TEXT_KEYS = frozenset(
    {"error_text", "error_message", "message", "detail", "reason", "status", "status_text"}
)


#: Keys of the documented answers (`altcraft.api.models`): no cleaning changes them (no digits, no ``@``,
#: no character a database refuses) unless the token is one of their substrings, which a token longer than
#: the longest of them cannot be. Objects holding only these are not looked at again (`_clean_keys`).
_PLAIN_KEYS = frozenset(
    {"error", "error_text", "profile_id", "data", "result", "task_id", "status", "progress", "id", "total"}
)
_PLAIN_KEY_CHARS = max(map(len, _PLAIN_KEYS))


#: What `clean_document` descends into: a tuple of types, not a union (``dict | list``), which isinstance
#: reads four times slower in Python 3.11: once per value of every answer.
_CONTAINERS = (dict, list)


def clean_document(
    document: Any, secret: str | None, *, unstorable: bool = True, known: Sequence[str] = ()
) -> Any:
    """The answer with every key cleaned as a server text (`_clean`), the token removed from every string
    and contacts masked in every server text (``known``: and those values, `mask_values`), each server text
    cut to `MAX_SERVER_TEXT` characters; with ``unstorable``, NUL and lone surrogates replaced in every
    string.

    Done once here, for both hooks, so no text that came from Altcraft reaches a log, an exception,
    XCom or the ledger with the token or an email/phone in clear, or in a form the ledger cannot store.
    A key is server text too (a reason names the counts of a task's result by their keys). Iterative: any
    depth is fine.
    """
    forms = token_forms(secret) if secret else None
    # without a token to remove or characters to replace, only server texts (and a non-text
    # `error_text`) can change: every other string is passed over without a look
    every_string = forms is not None or unstorable
    shapes: dict[tuple[Any, ...], tuple[Any, ...] | None] = {}
    plain = _PLAIN_KEYS if secret is None or len(secret) > _PLAIN_KEY_CHARS else frozenset()
    texts: dict[str, str] = {}  # each server text met, cleaned: the items of a batch answer repeat theirs
    root = [document]
    stack: list[dict[Any, Any] | list[Any]] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, list):
            if not every_string:  # only the objects and lists in it can hold what changes
                stack += [value for value in container if isinstance(value, _CONTAINERS)]
                continue
            for index, value in enumerate(container):
                if isinstance(value, _CONTAINERS):
                    stack.append(value)
                elif isinstance(value, str):
                    container[index] = _clean_string(value, forms, unstorable)
            continue
        if not container.keys() <= plain:
            _clean_keys(container, secret, shapes)
        for key, value in container.items():
            if isinstance(value, str):
                cleaned = _clean_string(value, forms, unstorable) if every_string else value
                if cleaned and key in SERVER_TEXT_KEYS:
                    cleaned = texts.get(cleaned) or texts.setdefault(cleaned, _server_text(cleaned, known))
                if cleaned is not value:
                    container[key] = cleaned
            elif key == "error_text" and value is not None:
                # an object, a list or a number that `Envelope` reads as text: cleaned as that text
                container[key] = _clean(_text(value), secret, known=known)
            elif isinstance(value, _CONTAINERS):
                stack.append(value)
    return root[0]


def _clean_keys(
    container: dict[Any, Any], secret: str | None, shapes: dict[tuple[Any, ...], tuple[Any, ...] | None]
) -> None:
    """Each key of ``container`` cleaned (`_clean`), in place and in order; two keys cleaned alike keep the
    later value. ``shapes`` holds the cleaned keys of each set of keys met (None: none changes), so the items
    of a batch answer, which share their keys, are looked at once."""
    keys = tuple(container)
    if keys not in shapes:
        cleaned = tuple(_clean(key, secret) if isinstance(key, str) else key for key in keys)
        shapes[keys] = cleaned if cleaned != keys else None
    renamed = shapes[keys]
    if renamed is not None:
        values = list(container.values())
        container.clear()
        container.update(zip(renamed, values, strict=True))


def _clean_string(value: str, forms: TokenForms | None, unstorable: bool) -> str:
    """``value`` with each form of the token replaced and, with ``unstorable``, NUL and lone surrogates."""
    if forms is not None:
        value = forms.remove(value)
    return replace_unstorable(value) if unstorable else value


_SCRUB_CACHED_CHARS = 200
_scrub_short = lru_cache(maxsize=1024)(scrub)
"""`scrub` of short server texts, which repeat in every item of a batch answer (``error_text``)."""


def _server_text(text: str, known: Sequence[str] = ()) -> str:
    """A server text with contacts masked (`scrub`, and the ``known`` values), cut to `MAX_SERVER_TEXT`
    characters when long."""
    if len(text) > _SCRUB_CACHED_CHARS:
        return _clean(text, None, known=known)
    return mask_values(_scrub_short(text), known) if known else _scrub_short(text)


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


def decode_answer(body: bytes) -> Any:
    """The JSON of ``body`` (None: not JSON, or an object naming a key twice with two values, `_unique`).
    Bytes that are not UTF-8 (a server text in another encoding) are read as U+FFFD: they leave the rest of
    the answer readable, so its codes still tell who was launched, instead of making every contact of a
    launching request uncertain. Read in the encoding json.loads reads (a byte-order mark dropped, UTF-16 or
    32 as such): as UTF-8 a kept mark made the whole answer unreadable."""
    if not body:
        return None
    try:
        return json.loads(body, object_pairs_hook=_unique)
    except UnicodeDecodeError:
        text = body.decode(json.detect_encoding(body), "replace")
    except (ValueError, RecursionError):
        return None
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except (ValueError, RecursionError):
        return None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of an answer; `ValueError` when it names a key twice with two values: json.loads keeps the
    last, the server may have meant either (a result's ``error`` 0 and 400: launched, or sent again)."""
    document = dict(pairs)
    if len(document) < len(pairs) and any(document[key] != value for key, value in pairs):
        raise ValueError("a key twice with two values")
    return document


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


def _reports_on_profiles(document: Any) -> bool:
    """Whether an answer carries per-profile output (a non-empty ``result`` or a ``profile_id``): then,
    whatever its code, it is no refusal of the whole request, nor a rate limit."""
    return isinstance(document, dict) and (
        bool(document.get("result")) or document.get("profile_id") is not None
    )


def _api_error(
    code: int,
    text: str,
    status: int,
    endpoint: str,
    per_profile: bool,
    secret: str | None,
    known: Sequence[str],
    *,
    coded: bool = True,
) -> AltcraftApiError:
    """The error of an answer with an error code or status, its text cleaned (``per_profile``: see
    `_reports_on_profiles`; ``coded``: whether the answer carried ``code`` itself, False: only the HTTP
    status; ``known``: see `parse_response`)."""
    return AltcraftApiError(
        code,
        _clean(text, secret, known=known),
        http_status=status,
        endpoint=endpoint,
        per_profile=per_profile,
        coded=coded,
    )


def _text(value: Any) -> str:
    """A server text that may be any JSON value, as text (JSON; `token_forms` has its escaped forms)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _snippet(body: bytes, secret: str | None, known: Sequence[str]) -> str:
    """The start of a body that is not JSON, cleaned (`_clean`) and cut to `_SNIPPET` characters; the token
    is removed before whitespace is collapsed (a token with spaces would no longer match)."""
    window = body[: _SNIPPET + _margin(secret)]
    text = remove_token(window.decode("utf-8", errors="replace"), secret)
    return _clean(" ".join(text.split()), None, limit=_SNIPPET, more=len(body) > len(window), known=known)


#: Characters read past a cut before the text is cleaned: room for an email or a phone across the cut.
_MARGIN = 1024


def _margin(secret: str | None) -> int:
    """Characters read past a cut: room for an email, a phone or any form of the token across it."""
    return _MARGIN + (token_forms(secret).longest if secret else 0)


def _clean(
    text: str,
    secret: str | None,
    *,
    limit: int = MAX_SERVER_TEXT,
    more: bool = False,
    known: Sequence[str] = (),
) -> str:
    """Server text made safe for logs, exceptions and the ledger: no token (in any of its `token_forms`: a
    URL's host and scheme come back lower-cased), no email or phone in clear (nor the ``known`` values of
    the contact it is about, `mask_values`), nothing a database refuses, at most ``limit`` characters and
    "…" where it was cut (``more``: ``text`` is already the start of a longer one). Cleaned *before* it is
    cut: cut first, a token or an email across the cut would keep its first part."""
    window = text[: limit + _margin(secret)]
    more = more or len(text) > len(window)
    masked = mask_values(scrub(remove_token(window, secret)), known, MAX_REQUEST_VALUES)
    return storable(masked, limit, more=more)


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
    status = TaskStatus.model_validate({**data, "task_id": task_id})
    if (shown := status.unrecognised) is not None:
        _warn_unrecognised(task_id, shown)
    return status


@lru_cache(maxsize=4096)
def _warn_unrecognised(task_id: str, shown: str) -> None:
    """Warn of a task status we do not recognise, once per task and status in a process (the cache
    remembers the last 4096): every reader of a task (the operator's and the trigger's polls,
    reconciliation) reads it through `task_status_of`."""
    log.warning(
        "Altcraft task %s reports status %s, which we do not recognise: it is waited for as running until "
        "task_timeout (never guessed finished or failed: it may have launched its contacts)",
        task_id,
        shown,
    )


def scenario_of(answer: dict[str, Any], scenario_id: int) -> Scenario | None:
    """The scenario ``scenario_id`` from a ``workflows/list`` page asked with ``from_id=scenario_id``."""
    page = Page.model_validate(answer)
    return next((s for s in map(Scenario.model_validate, page.data) if s.id == scenario_id), None)
