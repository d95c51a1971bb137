"""The webhook endpoint: ``POST /altcraft-webhooks/<pipeline id>``, a FastAPI app mounted in the API server.

Per request, in this order (nothing is stored unless every step passes):

1. the pipeline's webhook settings (`WebhookConfig`: which kind, the secret's connection, the ledger's
   connection, the size limit) -- unknown pipeline: 404; its secret missing or unreadable, or held by
   another active webhook's connection where a proof names no pipeline (`shared_secret`; one unreadable
   now is compared as last read, one never read refuses: `SecretUnknown`): 503, the log says why;
2. the kind's `verify_head` against the secret, before a byte of the body is read (a header or query
   secret is compared here, a signature's header and timestamp checked) -- wrong or missing: 401;
3. the body, read up to ``max_bytes`` -- larger: 413; not whole within `BODY_SECONDS`: 408;
4. the kind's `verify` of the whole request, constant-time -- wrong: 401. A proof covering the URL is
   checked against the pipeline's ``public_url`` (`pinned_url`) with the request's path and query; without
   one, against the URL the request and its X-Forwarded-* headers name (a warning, once per pipeline).
   A client address that failed ``auth_failures_per_minute`` times for the pipeline in its current
   minute (`_Failures`) gets 429 with Retry-After instead, before its body is read: also when its
   delivery would be authenticated, unless the kind's `verify_head` alone proves it (``needs_body``
   False: a secret header or query parameter). Authenticated deliveries are never counted;
5. the kind's `parse` into records -- more than ``max_records``: 413, read no further; not what the kind
   sends: 400;
6. the delivery committed to the store in the ledger's database the pipeline's DAG names (settled when the
   DAG processor parsed it; none while ``[altcraft] ledger_conn_id`` here names one, or a database other
   than the one its watcher watches, as the connections point: 503, `StoreMismatch`; where it is stored is
   recorded for the workers, `record_placement`) -- then 200 ``accepted``, or 200
   ``duplicate`` for a delivery stored before (a replay is acknowledged, not stored again), or 422 when
   its key was stored with other contacts (`KeyConflict`: the ``Idempotency-Key`` is not signed, so a
   key alone never makes a delivery a duplicate of another's contacts); the store
   failing (database down): 503, so the sender retries.

The pipeline's watcher trigger sees the new delivery at its next check and fires the pipeline's asset.
Neither the body nor the secret is ever logged.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from altcraft.masking import scrub
from altcraft.sources.webhook import ALIGN, STORED_KEY, WATCHED_KEY, misplaced, placement
from altcraft.spec_checks import public_base_url
from altcraft.webhooks.kinds import (
    AUTH_FAILURES_PER_MINUTE,
    KINDS,
    MAX_RECORDS,
    BadPayload,
    TooManyRecords,
    Unauthorized,
    WebhookRequest,
    may_share_a_secret,
)
from altcraft.webhooks.store import KeyConflict, StoreMismatch, WebhookStore

log = logging.getLogger(__name__)

_PIPELINE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
#: Seconds a pipeline's settings and secret are reused before they are looked up again.
CACHE_SECONDS = 10.0
#: Most pipelines whose answers are kept (the least recently asked go first).
CACHE_ENTRIES = 1024
#: Sent with a 503: the delivery was not stored.
RETRY = {"Retry-After": "30"}
#: Sent with a 422: the delivery's key (``Idempotency-Key``, else what identifies it) was stored before.
KEY_REUSED = (
    "a delivery with this key (Idempotency-Key) was stored with other contacts; not stored: a retry must "
    "send the same contacts, a new delivery needs a new key"
)
#: Seconds a client has to send its whole body: one trickling it held a connection and its buffer as long as
#: it liked (before its proof is checked, where that needs the body).
BODY_SECONDS = 30
#: Seconds of the windows in which a client's failed authentications are counted.
FAILURE_WINDOW = 60
#: Most (client address, pipeline) pairs whose failures are counted (the least recently failing go first).
FAILURE_ENTRIES = 4096


@dataclass(frozen=True)
class WebhookConfig:
    """One pipeline's webhook: the settings the spec put in its event asset's ``extra``, and the secret."""

    pipeline: str
    auth: str
    secret: str = field(repr=False)
    ledger_conn_id: str | None = None
    max_bytes: int = 1_048_576
    max_records: int = MAX_RECORDS
    auth_failures_per_minute: int = AUTH_FAILURES_PER_MINUTE
    #: The pipeline's event asset, whose state store records where deliveries are stored and watched (None:
    #: not recorded, e.g. settings a test gives).
    asset_id: int | None = None
    #: The scheme and host its sender posts to (`pinned_url`), against which alone a proof covering the URL
    #: is checked; None: the request's URL and X-Forwarded-* headers, which the sender chooses.
    public_url: str | None = None


ConfigLookup = Callable[[str], WebhookConfig | None]
Found = TypeVar("Found")


class SharedSecret(LookupError):
    """Another active webhook's connection holds the pipeline's secret (`shared_secret`)."""


class SecretUnknown(LookupError):
    """Another active webhook's connection, never read, may hold the pipeline's secret (`shared_secret`)."""


def airflow_config(pipeline: str, digests: _Cached[bytes] | None = None) -> WebhookConfig | None:
    """The settings of an active pipeline's event asset (metadata database) and its secret (connection);
    `SharedSecret` where another active webhook may take its deliveries (`SecretUnknown`: may, its secret
    never read); `LookupError` naming its connection where that cannot be read. ``digests`` keeps the
    `_digest` of each secret connection read, its own too (`create_app` keeps them for `CACHE_SECONDS`, and
    while a connection cannot be read: `_Held`; each lookup read every other webhook's, N² secrets-backend
    calls for N busy webhooks); by default they are read afresh."""
    from airflow.models.connection import Connection

    webhooks = _active_webhooks()
    settings = webhooks.get(pipeline)
    if not settings:
        return None
    conn_id = settings["secret_conn_id"]
    try:
        secret = Connection.get_connection_from_secrets(conn_id).password
    except Exception as error:
        raise LookupError(
            # the error's type only: a secrets backend's text may quote what it holds, the secret too
            f"connection {conn_id!r} of webhook {pipeline} could not be read: {type(error).__name__}"
        ) from None
    if not secret:
        raise LookupError(f"connection {conn_id!r} of webhook {pipeline} has no password")
    digests = digests or _Held(_password_digest)
    digests.keep(conn_id, own := _digest(secret))
    if (problem := shared_secret(pipeline, own, webhooks, digests)) is not None:
        raise problem
    return WebhookConfig(
        pipeline=pipeline,
        auth=settings["auth"],
        secret=secret,
        ledger_conn_id=settings.get("ledger_conn_id"),
        max_bytes=int(settings["max_bytes"]),
        max_records=int(settings.get("max_records", MAX_RECORDS)),
        auth_failures_per_minute=int(settings.get("auth_failures_per_minute", AUTH_FAILURES_PER_MINUTE)),
        asset_id=settings["asset_id"],
        public_url=pinned_url(settings),
    )


def pinned_url(settings: Mapping[str, Any]) -> str | None:
    """The scheme and host a webhook's sender posts to where its proof covers the URL: its spec's
    ``trigger.public_url``, else this API server's ``[altcraft] webhook_public_url`` (`ValueError` naming it
    where it is no such URL), else None (None too for the other kinds, which have no use for it)."""
    from airflow.configuration import conf

    kind = KINDS.get(settings["auth"])
    if kind is None or not kind.covers_url:
        return None
    if settings.get("public_url"):
        return settings["public_url"]
    configured = conf.get("altcraft", "webhook_public_url", fallback="")
    return public_base_url(configured, "[altcraft] webhook_public_url") if configured else None


_EVENTS_URI = re.compile(r"altcraft-pipeline://([^/]+)/events")


def _active_webhooks() -> dict[str, Mapping[str, Any]]:
    """The webhook settings of every active pipeline event asset (`pipeline_event_asset`), by pipeline, with
    the asset's id (``asset_id``)."""
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(AssetModel.id, AssetModel.uri, AssetModel.extra)
        .join(AssetActive, (AssetActive.name == AssetModel.name) & (AssetActive.uri == AssetModel.uri))
        .where(AssetModel.uri.like("altcraft-pipeline://%/events"))
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return {
        matched[1]: {**(extra or {})["webhook"], "asset_id": asset_id}
        for asset_id, uri, extra in rows
        if (matched := _EVENTS_URI.fullmatch(uri)) and (extra or {}).get("webhook")
    }


def record_placement(asset_id: int, mine: Mapping[str, str]) -> None:
    """Record where the API server stores a pipeline's deliveries (``mine``, a `placement`) in its event
    asset's state store (`STORED_KEY`, which a worker checks before reading), after checking that its
    watcher watches that database (`WATCHED_KEY`): else `StoreMismatch` naming both connections and the
    parts that differ, and nothing is stored."""
    from airflow.state import AssetScope, get_state_backend

    backend, scope = get_state_backend(), AssetScope(asset_id=asset_id)
    watched = backend.get(scope, WATCHED_KEY)
    problem = misplaced(mine, None if watched is None else json.loads(watched), "watched")
    if problem is not None:
        raise StoreMismatch(f"{problem}: its watcher would never see them. {ALIGN}")
    stored = backend.get(scope, STORED_KEY)
    if stored is None or json.loads(stored) != mine:
        backend.set(scope, STORED_KEY, json.dumps(mine))


#: Key of `_digest`, new in each process: a digest proves nothing elsewhere, and no secret is kept in clear.
_DIGEST_KEY = os.urandom(32)


def _digest(secret: str) -> bytes:
    """A keyed hash of ``secret``, compared in its place (`shared_secret`)."""
    return hmac.new(_DIGEST_KEY, secret.encode(), hashlib.sha256).digest()


def _password_digest(conn_id: str) -> bytes | None:
    """The `_digest` of connection ``conn_id``'s password; None if there is no such connection or password."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        password = Connection.get_connection_from_secrets(conn_id).password
    except AirflowNotFoundException:
        return None
    return _digest(password) if password else None


def shared_secret(
    pipeline: str,
    secret: bytes,
    webhooks: Mapping[str, Mapping[str, Any]],
    digest: Callable[[str], bytes | None],
) -> SharedSecret | SecretUnknown | None:
    """Why webhook ``pipeline`` may take no delivery, or None: the other ``webhooks`` (settings by pipeline)
    whose secret connection holds its ``secret`` too (both as `_digest`s: ``digest`` of a connection id)
    where one of the two proofs names no pipeline (`may_share_a_secret`), so that a delivery to one would be
    taken by the other; else those whose connection ``digest`` could not read (`SecretUnknown`). It names
    the connections and webhooks, never the secret; another webhook's connection missing is that webhook's
    problem, not this one's."""
    own = webhooks[pipeline]
    holders, unread = {}, {}
    for other, settings in sorted(webhooks.items()):
        if other == pipeline or may_share_a_secret(own["auth"], settings["auth"]):
            continue
        try:
            if hmac.compare_digest(digest(settings["secret_conn_id"]) or b"", secret):
                holders[other] = settings
        except Exception as error:
            unread[other] = (
                f"connection {settings['secret_conn_id']!r} of webhook {other} ({type(error).__name__})"
            )
    if holders:
        named = ", ".join(f"connection {s['secret_conn_id']!r} of webhook {o}" for o, s in holders.items())
        auths = {own["auth"], *(settings["auth"] for settings in holders.values())}
        blind = ", ".join(sorted(auth for auth in auths if not may_share_a_secret(auth)))
        return SharedSecret(
            f"its secret (connection {own['secret_conn_id']!r}) is also held by {named}; the proofs of auth "
            f"{blind} name no pipeline, so a delivery to one of them could be taken by another: their "
            "deliveries are refused until each has a secret of its own"
        )
    if unread:
        return SecretUnknown(
            f"the secret of {', '.join(unread.values())} could not be read, so whether it holds this "
            f"webhook's secret (connection {own['secret_conn_id']!r}) is not known: its deliveries are "
            "refused until it is"
        )
    return None


class _Cached(Generic[Found]):
    """``lookup`` with answers kept for `CACHE_SECONDS` (a burst looks a pipeline up once), at most
    `CACHE_ENTRIES` of them: any client can post to as many made-up pipeline names as it likes. A lookup
    that failed (a secret connection missing) is kept as well and raised again: each delivery to such a
    pipeline cost a metadata query and a secrets backend call."""

    def __init__(self, lookup: Callable[[str], Found | None]) -> None:
        self.lookup = lookup
        self._answers: OrderedDict[str, tuple[float, Found | Exception | None]] = OrderedDict()

    def knows(self, pipeline: str) -> bool:
        """Whether ``pipeline`` has a fresh answer kept here (no lookup), neither None nor an error."""
        found = self._answers.get(pipeline)
        fresh = found is not None and time.monotonic() - found[0] <= CACHE_SECONDS
        return fresh and found[1] is not None and not isinstance(found[1], Exception)

    def __call__(self, pipeline: str) -> Found | None:
        now = time.monotonic()
        found = self._answers.get(pipeline)
        if found is None or now - found[0] > CACHE_SECONDS:
            found = (now, self._look_up(pipeline, None if found is None else found[1]))
        self._keep(pipeline, found)
        if isinstance(found[1], Exception):
            raise found[1]
        return found[1]

    def _look_up(self, key: str, before: Found | Exception | None) -> Found | Exception | None:
        """``lookup(key)``, or the error it raised; ``before`` is the answer kept until now."""
        try:
            return self.lookup(key)
        except Exception as error:
            return error

    def keep(self, key: str, answer: Found) -> None:
        """Keep ``answer`` for ``key`` as if it had just been looked up."""
        self._keep(key, (time.monotonic(), answer))

    def _keep(self, key: str, found: tuple[float, Found | Exception | None]) -> None:
        self._answers[key] = found
        self._answers.move_to_end(key)
        while len(self._answers) > CACHE_ENTRIES:
            self._answers.popitem(last=False)


class _Held(_Cached[bytes]):
    """The `_digest`s of secret connections (`_password_digest`), each kept for `CACHE_SECONDS` and, while
    its connection cannot be read (its secrets backend fails: Airflow reports that as a connection not
    defined, or raises), the last read in this process: one broken connection does not stop every webhook
    checking that none holds its secret (`shared_secret`), nor a webhook holding its secret taking deliveries
    while it is broken. Never read: its error, or None (not defined) as before."""

    def _look_up(self, key: str, before: bytes | Exception | None) -> bytes | Exception | None:
        found = super()._look_up(key, before)
        if isinstance(before, bytes) and not isinstance(found, bytes):
            reason = type(found).__name__ if isinstance(found, Exception) else "not defined, or no password"
            log.warning(
                "Secret connection %r could not be read (%s): its secret as last read is compared",
                key,
                reason,
            )
            return before
        return found


Client = tuple[str, str]  # (address, pipeline)


class _Failures:
    """Failed authentications per (client address, pipeline), counted in fixed `FAILURE_WINDOW` windows,
    for at most `FAILURE_ENTRIES` pairs: any client can post from many addresses to many pipelines."""

    def __init__(self) -> None:
        self._windows: OrderedDict[Client, tuple[float, int]] = OrderedDict()

    def wait(self, client: Client, limit: int) -> int | None:
        """Seconds ``client`` must wait once it failed ``limit`` times in its window; None: it may try."""
        start, count = self._window(client)
        return _seconds_left(start) if count >= limit else None

    def fail(self, client: Client) -> tuple[int, int]:
        """Count a failure of ``client``: how many it made in its window, and the window's seconds left."""
        start, count = self._window(client)
        self._windows[client] = (start, count + 1)
        self._windows.move_to_end(client)
        while len(self._windows) > FAILURE_ENTRIES:
            self._windows.popitem(last=False)
        return count + 1, _seconds_left(start)

    def _window(self, client: Client) -> tuple[float, int]:
        now = time.monotonic()
        start, count = self._windows.get(client, (now, 0))
        return (now, 0) if now - start >= FAILURE_WINDOW else (start, count)


def _seconds_left(start: float) -> int:
    return max(1, math.ceil(start + FAILURE_WINDOW - time.monotonic()))


def _answer(code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


async def _read_body(request: Request, pipeline: str, limit: int) -> bytes | JSONResponse:
    """The body, or the answer instead: 413 as soon as it is longer than ``limit`` (whatever
    Content-Length said), 408 when it is not whole within `BODY_SECONDS` (however it trickles), 400 when
    the client went away before its end."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(pipeline, limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return _too_large(pipeline, limit)
                chunks.append(chunk)
    except TimeoutError:
        log.warning("Webhook %s: a body not sent whole within %d s was refused", pipeline, BODY_SECONDS)
        return _answer(408, error=f"the body was not sent within {BODY_SECONDS} s")
    except ClientDisconnect:
        log.info("Webhook %s: the client went away before the end of its body", pipeline)
        return _answer(400, error="the body ended early")
    return b"".join(chunks)


def _headers(request: Request) -> dict[str, str]:
    """Header names in lower case, values as UTF-8 text: what a sender writes a non-ASCII secret as, which
    Starlette's Latin-1 text of the bytes never equalled. A value that is no UTF-8 is its Latin-1 text."""
    return {name.decode("latin-1").lower(): _utf8_text(value) for name, value in request.headers.raw}


def _utf8_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _too_large(pipeline: str, limit: int) -> JSONResponse:
    log.warning("Webhook %s: a body over %d bytes was refused", pipeline, limit)
    return _answer(413, error=f"body larger than {limit} bytes")


def create_app(lookup: ConfigLookup | None = None) -> FastAPI:
    """The endpoint app; ``lookup`` finds a pipeline's `WebhookConfig` (tests give their own), by default
    `airflow_config` with the secret connections' digests kept for `CACHE_SECONDS`."""
    app = FastAPI(title="Altcraft webhooks", docs_url=None, redoc_url=None, openapi_url=None)
    config_of = _Cached(lookup or functools.partial(airflow_config, digests=_Held(_password_digest)))
    failures = _Failures()  # used from the event loop only
    unpinned: set[str] = set()  # pipelines warned that their URL is taken from the request (`_warn_unpinned`)
    stores: dict[str | None, WebhookStore] = {}

    def store_of(conn_id: str | None) -> WebhookStore:
        if conn_id not in stores:
            stores[conn_id] = WebhookStore.from_conn_id(conn_id)
            if conn_id is None:
                log.warning(
                    "Webhook deliveries of pipelines without a ledger_conn_id are stored in %s, a file on "
                    "the API server's machine: they are launched only if the triggerer and the workers use "
                    "that very file (one machine, one AIRFLOW_HOME); otherwise give the pipelines a "
                    "ledger_conn_id (or set [altcraft] ledger_conn_id where the DAG processor runs) on a "
                    "database every component reaches",
                    stores[conn_id].engine.url.database,
                )
        return stores[conn_id]

    def placed(pipeline: str) -> bool:
        """Where the pipeline's deliveries are stored is where they are watched, and recorded
        (`record_placement`); kept for `CACHE_SECONDS`, its `StoreMismatch` too."""
        config = config_of(pipeline)
        if config is not None and config.asset_id is not None:
            record_placement(
                config.asset_id, placement(config.ledger_conn_id, store_of(config.ledger_conn_id))
            )
        return True

    placements = _Cached(placed)

    @app.post("/{pipeline}")
    async def receive(pipeline: str, request: Request) -> JSONResponse:
        if not _PIPELINE.fullmatch(pipeline):
            return _answer(404, error="no such webhook")
        # a name that is no webhook costs a metadata lookup: counted per client like a failed authentication
        stranger = (_address(request), "")
        wait = failures.wait(stranger, AUTH_FAILURES_PER_MINUTE)
        if wait is not None and not config_of.knows(pipeline):
            return _too_many(wait)
        try:
            config = await run_in_threadpool(config_of, pipeline)
            kind = KINDS[config.auth] if config is not None else None
        except Exception as error:  # counted like a name that is no webhook: a client cannot flood the log
            failures.fail(stranger)
            log.error("Webhook %s is not usable: %s: %s", pipeline, type(error).__name__, error)
            return _answer(503, error="webhook not configured")
        if config is None or kind is None:
            failures.fail(stranger)
            return _answer(404, error="no such webhook")
        received = WebhookRequest(
            headers=_headers(request),
            query=dict(request.query_params),
            body=b"",
            method=request.method,
            url=str(request.url),
            public_url=config.public_url,
        )
        if kind.covers_url and config.public_url is None and pipeline not in unpinned:
            unpinned.add(pipeline)
            _warn_unpinned(pipeline)
        client, limit = (_address(request), pipeline), config.auth_failures_per_minute
        wait = failures.wait(client, limit)
        try:
            kind.verify_head(received, config.secret)
        except Unauthorized as error:
            return _refused(client, *failures.fail(client), limit, error)
        if wait is not None and kind.needs_body:
            return _too_many(wait)
        body = await _read_body(request, pipeline, config.max_bytes)
        if isinstance(body, JSONResponse):
            return body
        received = replace(received, body=body)
        try:
            kind.verify(received, config.secret)
        except Unauthorized as error:
            return _refused(client, *failures.fail(client), limit, error)
        try:
            records = kind.parse(received, config.max_records)
        except TooManyRecords as error:
            return _answer(413, error=f"{error} (the pipeline's trigger.max_records)")
        except BadPayload as error:
            return _answer(400, error=str(error))
        key, proof = kind.delivery_key(received), kind.proof(received)

        def store() -> bool:
            placements(pipeline)  # StoreMismatch where its watcher watches another database
            return store_of(config.ledger_conn_id).put(pipeline, key, kind.name, records, proof)

        try:
            stored = await run_in_threadpool(store)
        except KeyConflict:
            log.warning("Webhook %s: a delivery from %s reused a stored delivery's key", pipeline, client[0])
            return _answer(422, error=KEY_REUSED)
        except Exception as error:  # not stored: the sender must retry; the message may quote a record
            first_line = next(iter(str(error).splitlines()), "")
            log.error(
                "Webhook %s: a delivery was not stored: %s: %s",
                pipeline,
                type(error).__name__,
                scrub(first_line),
            )
            return JSONResponse({"error": "not stored, retry later"}, status_code=503, headers=RETRY)
        return _answer(200, status="accepted" if stored else "duplicate", records=len(records))

    return app


def _warn_unpinned(pipeline: str) -> None:
    """Say that the pipeline's signature is checked against a URL the request's headers name."""
    log.warning(
        "Webhook %s: its signature covers the URL, but the scheme and host are taken from the request (Host, "
        "X-Forwarded-Proto, X-Forwarded-Host), which its sender chooses: a delivery signed for another "
        "deployment or host name with the same secret and pipeline id is taken here too. Set the pipeline's "
        "trigger.public_url, or [altcraft] webhook_public_url, to the URL the CRM posts to "
        "(docs/pipelines.md#hubspot-type-hubspot)",
        pipeline,
    )


def _refused(client: Client, failed: int, seconds_left: int, limit: int, error: Unauthorized) -> JSONResponse:
    """401 for the first ``limit`` failures of the client's window (each logged), then 429."""
    address, pipeline = client
    if failed > limit:
        return _too_many(seconds_left)
    log.warning("Webhook %s: refused a delivery from %s: %s", pipeline, address, error)
    if failed == limit:
        log.warning(
            "Webhook %s: %d failed authentications from %s: it is refused with 429 for %d s",
            pipeline,
            failed,
            address,
            seconds_left,
        )
    return _answer(401, error="unauthorized")


def _too_many(seconds: int) -> JSONResponse:
    return JSONResponse(
        {"error": "too many failed authentications"}, status_code=429, headers={"Retry-After": str(seconds)}
    )


def _address(request: Request) -> str:
    """The client as failures are counted: its address, an IPv6 one by its /64 (one host is given a whole
    /64 to pick addresses from), an IPv4-mapped one as IPv4."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        return str(mapped) if mapped else str(ipaddress.IPv6Network((address, 64), strict=False))
    return host
