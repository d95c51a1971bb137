"""Checks shared by every model a pipeline spec holds (pipeline, source, mapping, trigger) and by the
connections: each rule is one function or one bound here, so no copy of it can drift.

Numbers are bounded by where they go: a value within its bounds parses, builds and runs (a larger
``pool_slots`` made every run fail to be created: SQLite's INTEGER and PostgreSQL's int4 refused it).
Credentials stay in Airflow connections: a spec's values are stored with the serialized DAG, which the UI
and the REST API show, so a URL with a user name or password, or a header or parameter named like a
credential, is refused where a spec could hold it; a source built in Python refuses the same arguments
(`checked`): they are in the DAG file, whose code the UI shows too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

T = TypeVar("T")

MAX_INT32 = 2**31 - 1
"""An INTEGER column of Airflow's metadata database (pool slots), or a 32-bit API parameter (a page)."""
MAX_INT64 = 2**63 - 1
"""A BIGINT column, where the ledger keeps scenario ids: the largest Altcraft id (scenario, database,
resource) a spec may give."""
MAX_BYTES = 1 << 30
"""The largest size in bytes or characters a spec may set (1 GiB): a request, an answer, a profile or a
value this size is held in a worker's memory."""
MAX_TIMEOUT_SECONDS = 86_400
"""The longest one HTTP request of a source may take (a day); 1e10 seconds overflows the socket's timer."""
MAX_DURATION = timedelta(days=366)
"""The longest duration of a spec or an operator argument: a longer schedule, retry delay, lookback or
wait (999999w is 19,000 years) overflows the dates Airflow and the plan compute from it, failing the DAG's
scheduling or its runs."""
MAX_LOOKUPS = 1_000_000_000
"""The highest ``reconcile_max_lookups`` (uncertain contacts one try checks in Altcraft): in effect none."""
MIN_REQUESTS_PER_SECOND = 0.001
"""The slowest request rate a source may keep to (one request in 1,000 seconds): a rate near zero made
the wait between two requests overflow the sleep."""

_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*@")
_SECRET_WORDS = (
    "authorization",
    "authentication",
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "accesskey",
    "privatekey",
    # keys that open something (a ``sort_key`` or ``partition_key`` is data)
    "authkey",
    "appkey",
    "clientkey",
    "consumerkey",
    "masterkey",
    "licensekey",
    "subscriptionkey",
    "signingkey",
    "encryptionkey",
    "cookie",
    "credential",
    "signature",
    "session",
    "jwt",
    "bearer",
)
_SECRET_NAMES = frozenset({"auth", "xauth", "pass", "pwd", "pw", "key", "sig"})
#: words of a paging parameter, whose "token" is a cursor, not a credential (``page_token``, ``nextToken``)
_CURSOR_WORDS = ("page", "cursor", "next", "continuation", "offset")
#: endings of a name that names a connection, where a credential is kept (``password_conn_id``)
_CONNECTION_IDS = ("connid", "connectionid")
#: credential names a refusal lists, the first in order (then how many more)
_NAMES_LISTED = 5


def check_timezone(name: str) -> str:
    """Validate an IANA time zone name (``UTC``, ``Europe/Berlin``); the error names the field."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones (America), a long name
        raise ValueError(f"timezone: unknown time zone {name[:60]!r}") from None
    return name


Timezone = Annotated[str, AfterValidator(check_timezone)]


def has_userinfo(url: str) -> bool:
    """Whether ``url`` (``scheme://user:password@host``) carries a user name or a password."""
    return bool(_USERINFO.match(url.strip()))


def public_base_url(url: str, field: str = "public_url") -> str:
    """``url`` without a trailing slash if it is an http(s) URL of a host (and port) alone: no user name or
    password, path, query or fragment. The error names ``field``, never the value (it may hold a password)."""
    reason = _not_a_base_url(url)
    if reason is not None:
        raise ValueError(
            f"{field}: {reason} (give https://host or https://host:port, as the sender posts to)"
        )
    return url.removesuffix("/")


def _not_a_base_url(url: str) -> str | None:
    """Why ``url`` is no http(s) URL of a host alone (`public_base_url`), or None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number, or out of range, raises ValueError
    except ValueError:
        return "not a URL"
    checks = (
        (any(char.isspace() for char in url), "not a URL: it holds a space"),
        (parts.scheme.lower() not in ("http", "https"), "not an http:// or https:// URL"),
        ("@" in parts.netloc, "a user name or password in the URL: keep credentials out of it"),
        (not parts.hostname, "the URL names no host"),
        (parts.path not in ("", "/"), "a path: give the scheme and host only, the path is the request's"),
        ("?" in url or "#" in url, "a query or fragment: the query is the request's"),
    )
    return next((reason for failed, reason in checks if failed), None)


def secret_like(name: str) -> bool:
    """Whether a header or parameter name says it carries a credential (``Authorization``, ``api_key``)."""
    plain = re.sub(r"[^a-z0-9]", "", name.lower())
    if plain.endswith(_CONNECTION_IDS):
        return False
    if plain in _SECRET_NAMES:
        return True
    found = {word for word in _SECRET_WORDS if word in plain}
    return bool(found) and not (found == {"token"} and any(word in plain for word in _CURSOR_WORDS))


def _entries(value: Any) -> Iterator[tuple[str, Any]]:
    """``value`` and every value inside it (mappings and lists, at any depth), each with its path
    (``db.hosts[0]``; "" for ``value`` itself), in document order. A value met again (a YAML alias) is
    given where it is first met only: the checks cost what the distinct values do, not their expansion."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield where, item
        if isinstance(item, Mapping):
            inner = [(f"{where}.{key}" if where else str(key), each) for key, each in item.items()]
        elif isinstance(item, list | tuple):
            inner = [(f"{where}[{index}]", each) for index, each in enumerate(item)]
        else:
            continue
        stack.extend(reversed(inner))


def _credentials_in(value: Any) -> str | None:
    """Where in ``value`` (text, or mappings and lists of it) a URL with userinfo is, if anywhere."""
    return next(
        (where for where, item in _entries(value) if isinstance(item, str) and _USERINFO.search(item)), None
    )


def no_credentials(value: Any) -> Any:
    """``value`` unless a URL in it carries a user name or password (named by its key, never shown)."""
    where = _credentials_in(value)
    if where is not None:
        at = f" (at {where})" if where else ""
        raise ValueError(
            f"a URL with a user name or password{at}: it would be stored and shown with the DAG; "
            "keep credentials in the Airflow connection"
        )
    return value


def no_secret_names(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """``value`` unless one of its keys, or a key of a mapping inside it (``db.password``), names a
    credential (``Authorization``, ``api_key``, ``token``)."""
    named = sorted(
        f"{where}.{key}" if where else str(key)
        for where, item in _entries(value)
        if isinstance(item, Mapping)
        for key in item
        if secret_like(str(key))
    )
    if named:
        more = f" (and {len(named) - _NAMES_LISTED} more)" if len(named) > _NAMES_LISTED else ""
        raise ValueError(
            f"{', '.join(repr(name[:60]) for name in named[:_NAMES_LISTED])}{more} would carry a credential, "
            "stored and shown with the DAG: keep it in the Airflow connection (its login, password or extra "
            "headers)"
        )
    return value


def no_secret_query(url: str) -> str:
    """``url`` unless a parameter of its query string is named like a credential (`no_secret_names`): an
    ``?api_key=`` in an endpoint is stored and shown as a ``params`` entry would be."""
    no_secret_names(dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)))
    return url


def _not_json(value: Any) -> tuple[str, str] | None:
    """What ``value`` itself (not what it holds) is and why it is not JSON data, or None."""
    if isinstance(value, date):  # a datetime too
        return (
            "a date or time",
            "YAML reads an unquoted 2025-01-01 as one, not as text: quote it to send it as written (in "
            "Python, give the text: isoformat())",
        )
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number", "JSON has none (.inf, .nan)"
    if isinstance(value, Mapping):
        return (
            ("a key that is not text", "quote it") if any(not isinstance(key, str) for key in value) else None
        )
    if value is None or isinstance(value, str | int | float | list | tuple):  # a tuple: a list in JSON
        return None
    return f"a {type(value).__name__}", "not JSON data (text, numbers, true/false, null, lists, mappings)"


def json_data(value: Any) -> Any:
    """``value`` unless something in it is not JSON data (a date YAML read from ``2025-01-01``, ``.inf``, a
    ``!!set``). A spec's free values (REST ``params``, python and notifier ``kwargs``) are sent as a JSON
    body and rebuilt from JSON in the triggerer: anything else failed a POST or was sent otherwise there.
    `RestSource` and `PythonSource` built in Python refuse the same (`checked`)."""
    found = next(((where, problem) for where, item in _entries(value) if (problem := _not_json(item))), None)
    if found is not None:
        where, (what, why) = found
        raise ValueError(f"{what}{f' (at {where})' if where else ''}: {why}")
    return value


def checked(owner: str, argument: str, value: T, *checks: Callable[[T], object]) -> T:
    """``value`` once every check (`no_credentials`, `no_secret_names`) took it: a source or operator built in
    Python refuses what a spec is refused, in the same words, naming ``owner`` and ``argument`` (a check
    never quotes a value)."""
    for check in checks:
        try:
            check(value)
        except ValueError as error:
            raise ValueError(f"{owner} {argument}: {error}") from None
    return value


NoCredentials = AfterValidator(no_credentials)
NoSecretNames = AfterValidator(no_secret_names)
NoSecretQuery = AfterValidator(no_secret_query)
JsonData = AfterValidator(json_data)
