"""An Altcraft connection read: its extras as typed settings, its URL and token (pure functions, no Airflow
import)."""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from altcraft.answer_size import DEFAULT_MAX_ANSWER_BYTES
from altcraft.api.layouts import BatchItemLayout
from altcraft.api.protocol import API_PREFIX, remove_token
from altcraft.api.retry import RetryPolicy
from altcraft.spec_checks import MAX_BYTES, MAX_TIMEOUT_SECONDS, has_userinfo

log = logging.getLogger(__name__)

_PREFIX = "extra__altcraft__"
_MAX_WAIT_SECONDS = 3600
"""The longest wait between two retries a connection may set (an hour)."""
_SWITCH = TypeAdapter(bool)
_TLS_FILES = {"verify": "CA bundle file or folder", "cert": "certificate file with its key"}


class AltcraftConnectionSettings(BaseModel):
    """What the optional extras of an ``altcraft`` connection may set."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # every number is bounded: a value past its bound (a timeout of 1e12 s) would fail later, deep in a
    # socket or a sleep (OverflowError), instead of here naming the extra
    timeout: float = Field(
        60.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="seconds one HTTP exchange may take in all: connect, send, the whole answer",
    )
    max_answer_bytes: int = Field(
        DEFAULT_MAX_ANSWER_BYTES,
        gt=0,
        le=MAX_BYTES,
        description="largest answer body read (decoded bytes); larger: an error",
    )
    max_retries: int = Field(5, ge=0, le=100, description="retries of a failed call that may be repeated")
    backoff_initial: float = Field(1.0, ge=0, le=_MAX_WAIT_SECONDS)
    backoff_max: float = Field(
        30.0, ge=0, le=_MAX_WAIT_SECONDS, description="cap of the exponential backoff with jitter"
    )
    rate_limit_retries: int = Field(50, ge=0, le=10_000, description="HTTP 429 answers tolerated per call")
    rate_limit_max_wait: float = Field(
        300.0, ge=0, le=MAX_TIMEOUT_SECONDS, description="total Retry-After seconds per call"
    )
    token_in_body: bool = Field(True, description="also send the token as `token` in the JSON body")
    batch_item_layout: BatchItemLayout = Field(
        BatchItemLayout.HEDGED,
        description="scenario batch items: hedged (key on the item and in `data`, default), nested, data "
        "or flat; pin one once `python -m altcraft probe --test-contact` showed what the account accepts",
    )
    scenario_url: str = "{base_url}/workflows/{scenario_id}"
    verify: bool | str = True
    proxies: dict[str, str] | None = Field(None, repr=False)  # a proxy URL may hold its password
    cert: str | None = None

    @field_validator(
        "timeout", "max_answer_bytes", "max_retries", "backoff_initial", "backoff_max", mode="before"
    )
    @classmethod
    def _blank_is_default(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("scenario_url")
    @classmethod
    def _url_pattern(cls, value: str) -> str:
        try:
            value.format(base_url="https://altcraft.example", scenario_id=1)
        except (KeyError, IndexError, ValueError, AttributeError) as error:
            raise ValueError(
                "a pattern of the link with only {base_url} and {scenario_id} in braces, "
                f"e.g. {{base_url}}/workflows/{{scenario_id}} ({type(error).__name__}: {error})"
            ) from None
        return value

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_switch(cls, value: Any) -> Any:
        """``"false"`` (every extra of a connection URI is a string) is the switch, not a CA bundle's path."""
        try:
            return _SWITCH.validate_python(value) if isinstance(value, str) else value
        except ValidationError:
            return value

    @field_validator("verify", "cert")
    @classmethod
    def _tls_file(cls, value: bool | str | None, info: ValidationInfo) -> bool | str | None:
        """A path must be a readable CA bundle (``verify``) or certificate with its key (``cert``) here and
        now: requests failed at the first request with a bare OSError, aiohttp with a FileNotFoundError."""
        if isinstance(value, str):
            verify, cert = (value, None) if info.field_name == "verify" else (False, value)
            try:
                tls_context(verify, cert)
            except OSError as error:  # ssl.SSLError too: not PEM, no key
                what = _TLS_FILES[info.field_name]
                raise ValueError(f"no {what} readable at {value!r} ({error.strerror or error})") from None
        return value

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            rate_limit_retries=self.rate_limit_retries,
            rate_limit_max_wait=self.rate_limit_max_wait,
        )


CONN_TYPE = "altcraft"


class ConnectionFields(Protocol):
    """What is read of an Airflow connection."""

    conn_type: str | None
    host: str | None
    schema: str | None
    port: int | None
    password: str | None
    extra: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


class AltcraftConnection(NamedTuple):
    settings: AltcraftConnectionSettings
    base_url: str
    token: str


def read_connection(conn_id: str | None, conn: ConnectionFields) -> AltcraftConnection:
    """An ``altcraft`` connection's settings, platform URL and API token, as both hooks and the probe use it.

    ``conn_id`` None: messages name no id (the Test button's copy of the connection has a random one).

    :raises ValueError: naming the connection and what is wrong (its type, URL, token or an extra), never
        quoting the token; nothing has been sent with it then.
    """
    if conn.conn_type != CONN_TYPE:
        # another connection's password (a database's, a CRM's) must not travel as the Altcraft token
        raise ValueError(
            f"{_connection(conn_id)} is of type {conn.conn_type!r}, not {CONN_TYPE!r}: "
            "altcraft_conn_id must name an Altcraft connection (Platform URL and API token)"
        )
    password = conn.password or ""
    return AltcraftConnection(
        connection_settings(connection_extra(conn_id, conn)),
        base_url(conn.host, conn.schema, conn.port, token=password),
        api_token(conn_id, password),
    )


def _connection(conn_id: str | None) -> str:
    """How messages name a connection: by its id, or as "The connection" when it has none worth naming."""
    return "The connection" if conn_id is None else f"Connection {conn_id!r}"


def connection_extra(conn_id: str | None, conn: ConnectionFields) -> dict[str, Any]:
    """The extras of connection ``conn_id``, from its Extra, a JSON object (or nothing).

    :raises ValueError: naming the connection when the Extra is not a JSON object: Airflow read JSON it
        cannot parse as no extra at all (every setting silently dropped: the Test button said all was well),
        and any other JSON value failed here as an AttributeError naming nothing.
    """
    if isinstance(conn.extra, str) and conn.extra.strip():
        try:
            extra = json.loads(conn.extra)
        except ValueError as error:  # its position only: the Extra may hold a proxy's password
            raise ValueError(f"{_connection(conn_id)}: its Extra is not valid JSON ({error})") from None
        if not isinstance(extra, dict | None):
            raise ValueError(
                f"{_connection(conn_id)}: its Extra is a JSON {type(extra).__name__}, not an object such "
                'as {"timeout": 30}'
            )
    return conn.extra_dejson or {}


def connection_settings(extra: Mapping[str, Any] | None) -> AltcraftConnectionSettings:
    """Settings from a connection's extras; UI-prefixed keys and blank form values are accepted. An extra
    this provider does not know (a misspelt ``timout``) changes nothing, and is named in a warning.

    :raises ValueError: naming the extra that is wrong.
    """
    cleaned = {}
    for key, value in (extra or {}).items():
        name = key.removeprefix(_PREFIX)
        if value is None or value == "":
            continue
        cleaned[name] = value
    unknown = sorted(set(cleaned) - set(AltcraftConnectionSettings.model_fields))
    if unknown:
        log.warning(
            "The Altcraft connection's extra has keys this provider does not use, ignored: %s (known: %s)",
            ", ".join(repr(name[:40]) for name in unknown),  # cut: a key pasted by mistake may be long
            ", ".join(AltcraftConnectionSettings.model_fields),
        )
    try:
        return AltcraftConnectionSettings.model_validate(cleaned)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"Invalid extra of the Altcraft connection: {problems}") from None


def tls_context(verify: bool | str, cert: str | None) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` argument for the ``verify`` and ``cert`` extras, read as requests reads them.

    ``verify``: true (the system's CAs), false (no check), or a CA bundle file or folder; ``cert``: a file
    holding the client certificate and its key. aiohttp takes only a bool or an `ssl.SSLContext`.
    """
    if cert is None and isinstance(verify, bool):
        return verify
    if isinstance(verify, str):
        bundle = Path(verify)
        context = ssl.create_default_context(
            cafile=None if bundle.is_dir() else verify, capath=verify if bundle.is_dir() else None
        )
    else:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert)
    return context


#: what no HTTP header value carries as the body does: a line break or another control character (tab
#: aside), a character beyond Latin-1 (a zero-width space pasted in), a space or tab at either end (dropped)
_NOT_IN_A_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]|^[ \t]|[ \t]$")


def api_token(conn_id: str | None, password: str | None) -> str:
    """The API token of connection ``conn_id``: its password.

    :raises ValueError: naming the connection, never the token, when there is none, or when no header can
        carry it as the body does (`_NOT_IN_A_HEADER`: a token read from a file with its last newline, one
        pasted with a space or a zero-width space): requests refused the request as an invalid header or
        with a bare UnicodeEncodeError, aiohttp with a bare ValueError, and a server reading the header (its
        ends stripped) and one reading the body saw two different tokens.
    """
    if not password:
        raise ValueError(f"{_connection(conn_id)} has no API token (password field)")
    if _NOT_IN_A_HEADER.search(password):
        raise ValueError(
            f"{_connection(conn_id)}: the API token (password field) holds a line break, a space at either "
            "end or another character no HTTP header can carry (a control character, one beyond Latin-1 such "
            "as a zero-width space); set it again without"
        )
    return password


def base_url(host: str | None, schema: str | None = None, port: int | None = None, *, token: str = "") -> str:
    """The platform URL from a connection's host (``https://`` assumed when no scheme is given).

    :raises ValueError: when there is none, its scheme is not HTTP(S), or it holds a user name or password,
        a query or a fragment, the API's own path (``/api/v1.1/``, which every call appends), or the API
        ``token`` in any form (`token_forms`): the URL is sent with every request and kept in the ledger, the
        scenario link (XCom) and the Test button's message. Never quoting the URL.
    """
    host = (host or "").strip().rstrip("/")
    if not host:
        raise ValueError("The Altcraft connection has no Platform URL (host)")
    if "://" not in host:
        host = f"{schema or 'https'}://{host}"
    if has_userinfo(host):  # it would be kept in the ledger, the UI and the scenario link; never echoed
        raise ValueError(
            "The Altcraft connection's Platform URL (host) must not hold a user name or password: the API "
            "token goes in the password field, a proxy's credentials in the `proxies` extra"
        )
    if remove_token(host, token) != host:
        raise ValueError(
            "The Altcraft connection's Platform URL (host) holds the API token: it goes in the password "
            "field only (sent in a header, never in a URL)"
        )
    if "?" in host or "#" in host:
        raise ValueError(
            "The Altcraft connection's Platform URL (host) must not hold a query or a fragment (?, #): the "
            "API's paths are appended to it"
        )
    if host.partition("://")[0].lower() not in ("http", "https"):  # requests: "InvalidSchema", naming nothing
        raise ValueError(
            "The Altcraft connection's Platform URL (host) must start with https:// or http://"
            + (" (the schema field, a connection URI's path, is read as the scheme)" if schema else "")
        )
    if API_PREFIX in f"{urlsplit(host).path}/":
        raise ValueError(
            f"The Altcraft connection's Platform URL (host) must not hold the API's path {API_PREFIX}: give "
            "the platform's address (https://ru.altkraft.com), the API's paths are appended to it"
        )
    if port and host.count(":") < 2:
        host = f"{host}:{port}"
    return host
