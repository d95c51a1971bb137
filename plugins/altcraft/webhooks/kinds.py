"""How a webhook delivery is authenticated and turned into contact records, per kind.

A `WebhookKind` knows four things about one kind of sender: `verify_head` (what the headers and query
alone disprove, checked before the body is read), `verify` (the whole request; constant-time; both raise
`Unauthorized`), `parse` (the body as a list of records; raises `BadPayload`) and `delivery_key` (what
identifies a delivery, so a replay is stored once). The endpoint only calls these, so each CRM preset is
one more `WebhookKind` registered in `KINDS`:

* ``amocrm`` -- form-encoded ``contacts[add][0][id]=...``; amoCRM documents no signature, so the secret
  is a ``secret`` query parameter of the URL given to amoCRM; the delivery is identified by its body;
* ``bitrix24`` -- form-encoded ``event=ONCRMCONTACTADD&data[FIELDS][ID]=...&auth[application_token]=...``;
  the application token of the outgoing webhook is the secret (inside the body, so the body is read
  before it is checked); identified by the contact id (an event is sent once per contact, so a replay
  with another ``ts`` is still a duplicate), a rejected contact's by the event's ``data[...]`` fields;
* ``hubspot`` -- a JSON array of ``contact.creation`` events, ``X-HubSpot-Signature-v3``: base64 of the
  HMAC-SHA256, with the app's client secret, over method + URI + body + ``X-HubSpot-Request-Timestamp``
  (the URI's scheme and host are the pipeline's ``public_url`` where set, else the request's: `_public_uris`);
  older than 5 minutes is refused; identified by the events' ``eventId`` values (an event without one by
  its content but its ``attemptNumber``).

The CRM kinds store only ``{"id": ...}`` records: the pipeline's CRM source fetches the full contacts. A
contact whose id is no number of 1 to 20 digits, or that has none, or whose form names one of its fields
twice, is stored as its reason (`rejected`) naming the field, as a JSON item that is no object, names a
key twice, holds a number no JSON or Python holds or nests too deep is (`_flaw`): its run rejects it, the
delivery's other contacts are read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from altcraft.records import ERROR_FIELD, ErrorRecord, json_object, named_twice, repeated

SECRET_HEADER = "x-altcraft-webhook-secret"  # ruff: ignore[hardcoded-password-string]
SIGNATURE_HEADER = "x-altcraft-signature"
TIMESTAMP_HEADER = "x-altcraft-timestamp"
IDEMPOTENCY_HEADER = "idempotency-key"
#: A signed delivery further than this (seconds) from now is refused: a captured one cannot be replayed later.
SIGNATURE_TOLERANCE = 300
#: Deepest JSON nesting accepted (the array of contacts is level 1): a deeper item, which the endpoint may
#: still parse but a run, deeper in its stack, may not, is stored as its rejection (`_flaw`) instead.
MAX_DEPTH = 32
#: Most fields a Bitrix24 form may have: its token is looked for before the sender is known.
MAX_FORM_FIELDS = 1000
#: Failed authentications a client address may make per minute and pipeline (``auth_failures_per_minute``
#: of a webhook trigger) before its deliveries get 429.
AUTH_FAILURES_PER_MINUTE = 30
#: Records one delivery may hold unless its pipeline says otherwise (``trigger.max_records``).
MAX_RECORDS = 10_000


class Unauthorized(Exception):
    """The delivery is not from the pipeline's sender: answer 401 and store nothing."""


class BadPayload(ValueError):
    """The body is not what this kind sends: answer 400 and store nothing."""


class TooManyRecords(BadPayload):
    """A delivery of more records than its pipeline takes (``trigger.max_records``): answered 413."""


@dataclass(frozen=True)
class WebhookRequest:
    """What the endpoint received; header names are lower case."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    method: str = "POST"
    url: str = ""
    #: The scheme and host its sender posts to, where the pipeline pins them (`WebhookConfig.public_url`):
    #: a proof covering the URL is checked against it alone (`_public_uris`).
    public_url: str | None = None


class WebhookKind:
    """One kind of sender. Subclasses set `name` and `needs_body`, override `verify_head` (and `verify` if
    the body takes part in the proof, `parse` if it is not JSON)."""

    name: ClassVar[str]
    #: Whether the proof needs the body (a signature over it, a token in it); False: `verify_head` decides.
    needs_body: ClassVar[bool] = True
    #: Whether the proof covers the URL: else a delivery to one pipeline could be posted to another pipeline
    #: with the same secret, so pipelines of such kinds never share one (`altcraft.pipelines.load_pipelines`).
    covers_url: ClassVar[bool] = False

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        """Raise `Unauthorized` on what the headers and query alone disprove (``request.body`` is empty)."""
        raise NotImplementedError

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        """Raise `Unauthorized` unless the whole request proves the sender; by default its head does."""
        self.verify_head(request, secret, now=now)

    def parse(self, request: WebhookRequest, max_records: int | None = None) -> list[dict[str, Any]]:
        """A JSON object (one contact) or a JSON array of objects (`delivery_json`); `TooManyRecords` beyond
        ``max_records`` of them. An item that is no object, names a key twice, holds a number no JSON or
        Python holds or nests deeper than `MAX_DEPTH` is stored as the reason only (`_record`): its run
        rejects it. A body holding no object is `BadPayload`."""
        data = delivery_json(request.body, max_records)
        records = data if isinstance(data, list) else [data]
        if not any(isinstance(record, dict) for record in records):
            raise BadPayload("expected a JSON object (one contact) or an array of objects")
        return [_record(record) for record in records]

    def delivery_key(self, request: WebhookRequest) -> str:
        """SHA-256 of the sender's ``Idempotency-Key`` header if given, else of the body. The key is not
        signed: the store takes a key for a replay only with the same records (else `KeyConflict`)."""
        given = request.headers.get(IDEMPOTENCY_HEADER)
        material = b"key:" + given.encode() if given else b"body:" + request.body
        return hashlib.sha256(material).hexdigest()

    def proof(self, request: WebhookRequest) -> str | None:
        """SHA-256 of what makes this very request verifiable, where it is signed (None otherwise): a
        captured request replayed within `SIGNATURE_TOLERANCE`, under any unsigned header, has the same
        proof, and the store keeps each proof once."""
        return None


def strict_json(body: bytes, *, named_twice: bool = True) -> Any:
    """``body`` parsed as JSON (RFC 8259), or `BadPayload` saying why not, never quoting it: also for what
    Python's parser takes but is no JSON or no finite number (``NaN``, ``Infinity``, ``1e999``), and for
    an integer longer than Python reads (`sys.get_int_max_str_digits`, a ValueError that was a 500).

    An object naming a key twice is a `NamedTwice`; with ``named_twice=False`` a plain dict (its last value
    kept), for a reader that takes it so: no Python call per object, which was 40% of the time parsing an
    emulator batch."""
    decoder = _STRICT if named_twice else _STRICT_PLAIN
    return _read(lambda: decoder.decode(_text(body)))


def delivery_json(body: bytes, max_items: int | None = None) -> Any:
    """``body`` parsed as a webhook delivery: as `strict_json`, but a value no JSON or Python number holds
    is an `_Unreadable` in its place, which makes its item a rejection (`_record`), not the whole body a
    `BadPayload`. A top-level array is read item by item, and `TooManyRecords` raised at the first item
    beyond ``max_items``, before the rest is parsed (ten MiB of ``{},`` are 3.4 million dicts)."""
    return _read(lambda: _items(_text(body), max_items))


def _text(body: bytes) -> str:
    """``body`` as text, in the encoding JSON's first bytes show (as `json.loads` takes bytes)."""
    return body.decode(json.detect_encoding(body), "surrogatepass")


def _read(parse: Callable[[], Any]) -> Any:
    """What ``parse`` returns; `BadPayload` saying why it failed, never quoting the body."""
    try:
        return parse()
    except BadPayload:
        raise
    except json.JSONDecodeError as error:
        raise BadPayload(f"the body is not JSON: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise BadPayload(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise BadPayload(f"the body nests deeper than {MAX_DEPTH} levels") from None


def _items(text: str, max_items: int | None) -> Any:
    """``text`` decoded (`_DELIVERY`), a top-level array's items one at a time, at most ``max_items``."""
    index = _space(text, 0)
    if not text.startswith("[", index):
        return _DELIVERY.decode(text)
    items: list[Any] = []
    index = _space(text, index + 1)
    closed = text.startswith("]", index)
    while not closed:
        if len(items) == max_items:
            raise TooManyRecords(f"more than {max_items} records in one delivery")
        item, index = _DELIVERY.raw_decode(text, index)
        items.append(item)
        index = _space(text, index)
        closed = text.startswith("]", index)
        if not closed and not text.startswith(",", index):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _space(text, index + 1) if not closed else index
    if _space(text, index + 1) != len(text):
        raise json.JSONDecodeError("Extra data", text, index + 1)
    return items


def _space(text: str, index: int) -> int:
    """Where the JSON whitespace at ``index`` of ``text`` ends."""
    match = _SPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


@dataclass(frozen=True)
class _Unreadable:
    """Read in place of a value no JSON or Python number holds: why."""

    reason: str


def _number(text: str) -> float | _Unreadable:
    value = float(text)
    return value if math.isfinite(value) else _Unreadable(f"a number of {len(text)} characters is too large")


def _integer(text: str) -> int | _Unreadable:
    try:
        return int(text)
    except ValueError:  # more digits than the interpreter's limit
        return _Unreadable(f"a number has more than {sys.get_int_max_str_digits()} digits")


def _constant(name: str) -> _Unreadable:
    return _Unreadable(f"{name} is no JSON value (only finite numbers are)")


def _refused(hook: Callable[[str], Any]) -> Callable[[str], Any]:
    """``hook``, raising `BadPayload` where it reads an `_Unreadable`."""

    def strict(text: str) -> Any:
        value = hook(text)
        if isinstance(value, _Unreadable):
            raise BadPayload(value.reason)
        return value

    return strict


_STRICT = json.JSONDecoder(
    parse_float=_refused(_number),
    parse_int=_refused(_integer),
    parse_constant=_refused(_constant),
    object_pairs_hook=json_object,
)
_STRICT_PLAIN = json.JSONDecoder(
    parse_float=_STRICT.parse_float, parse_int=_STRICT.parse_int, parse_constant=_STRICT.parse_constant
)
_DELIVERY = json.JSONDecoder(
    parse_float=_number, parse_int=_integer, parse_constant=_constant, object_pairs_hook=json_object
)
_SPACE = re.compile(r"[ \t\n\r]*")


def rejected(reason: str) -> ErrorRecord:
    """The record of a contact the endpoint cannot store as it came: ``reason`` alone, no key column (its run
    names the place: `altcraft.sources.webhook`); the store keeps it apart from any object a sender sent."""
    return ErrorRecord({ERROR_FIELD: reason})


def _record(item: Any) -> dict[str, Any]:
    """``item`` of a delivery (`delivery_json`), or its `rejected` reason where it cannot be stored as it
    came (`_flaw`): the run rejects it naming its place (`altcraft.sources.webhook`), delivering the
    delivery's other records."""
    reason = _flaw(item)
    return item if reason is None else rejected(reason)


def _flaw(item: Any) -> str | None:
    """Why a delivery's item cannot be stored as it came, or None: it is no object; it names a key twice (at
    any depth: which value its sender meant is ambiguous, and a parser keeps the last without a word); it
    holds an `_Unreadable`; it nests deeper than `MAX_DEPTH` (an item counts as level 2, inside the array of
    contacts, also when it is the whole body: a run, deeper in its stack, may not read what the endpoint
    can)."""
    if not isinstance(item, dict):
        kind = "null" if item is None else type(item).__name__
        return item.reason if isinstance(item, _Unreadable) else f"not a JSON object but {kind}"
    if (twice := named_twice(item)) is not None:
        return f"an object names {twice!r} twice"
    stack: list[tuple[Any, int]] = [(item, 2)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, _Unreadable):
            return value.reason
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"it nests deeper than {MAX_DEPTH} levels"
            stack.extend(
                (child, depth + 1) for child in (value.values() if isinstance(value, dict) else value)
            )
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class SharedSecret(WebhookKind):
    """``X-Altcraft-Webhook-Secret: <secret>``."""

    name = "secret"
    needs_body = False

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        if not _same(request.headers.get(SECRET_HEADER, ""), secret):
            raise Unauthorized(f"missing or wrong {SECRET_HEADER} header")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with the secret over ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class HmacSignature(WebhookKind):
    """``X-Altcraft-Timestamp: <Unix seconds>`` and ``X-Altcraft-Signature: sha256=<hex>`` (`signature`);
    the hex digits in either case (.NET's ``Convert.ToHexString`` writes upper case), one proof for both."""

    name = "hmac"
    _SHAPE = re.compile(r"sha256=[0-9a-fA-F]{64}")

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        """A signature header of the right shape and a timestamp within `SIGNATURE_TOLERANCE` of now."""
        if not self._SHAPE.fullmatch(request.headers.get(SIGNATURE_HEADER, "")):
            raise Unauthorized(f"missing or malformed {SIGNATURE_HEADER} header")
        _fresh(request.headers.get(TIMESTAMP_HEADER, ""), TIMESTAMP_HEADER, 1, now)

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        self.verify_head(request, secret, now=now)
        expected = signature(secret, request.headers[TIMESTAMP_HEADER], request.body)
        if not _same(request.headers[SIGNATURE_HEADER].lower(), expected):
            raise Unauthorized(f"wrong {SIGNATURE_HEADER} header")

    def proof(self, request: WebhookRequest) -> str | None:
        return _keyed("hmac", request.headers[SIGNATURE_HEADER].lower())


def _fresh(stamp: str, header: str, per_second: int, now: float | None) -> None:
    """Raise `Unauthorized` unless ``stamp`` (``per_second`` units a second) is near enough to now."""
    if not re.fullmatch(r"[0-9]{1,16}", stamp):
        raise Unauthorized(f"missing {header}, or not a Unix time")
    if abs((time.time() if now is None else now) - int(stamp) / per_second) > SIGNATURE_TOLERANCE:
        raise Unauthorized(f"{header} is more than {SIGNATURE_TOLERANCE} s away from now")


def _form(request: WebhookRequest, max_fields: int | None = None) -> list[tuple[str, str]]:
    try:
        text = request.body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        raise BadPayload("the body is not x-www-form-urlencoded") from None


def _ids(records: list[dict[str, Any]], what: str, max_records: int | None) -> list[dict[str, Any]]:
    """The ``{"id": ...}`` of ``records`` (each id once), then their `rejected` reasons (`_contact_id`,
    `_form_contacts`): the run rejects those and the delivery's other contacts are fetched."""
    ids = list(dict.fromkeys(record["id"] for record in records if not isinstance(record, ErrorRecord)))
    refused = [record for record in records if isinstance(record, ErrorRecord)]
    if max_records is not None and len(ids) + len(refused) > max_records:
        raise TooManyRecords(f"more than {max_records} records in one delivery")
    if not ids and not refused:
        raise BadPayload(f"no {what} in the body: subscribe the webhook to contact creation only")
    return [{"id": v} for v in ids] + refused


_CONTACT_ID = re.compile(r"[0-9]{1,20}")


def _contact_id(value: str, where: str) -> dict[str, Any]:
    """``{"id": value}`` (spaces around it dropped) if ``value`` is a contact id, a number of 1 to 20 digits;
    else its `rejected` reason naming ``where`` (the field), never the value."""
    value = value.strip()
    if _CONTACT_ID.fullmatch(value):
        return {"id": value}
    return rejected(f"{where} is {'empty' if not value else 'not a contact id'} (1 to 20 digits)")


def _form_contacts(
    form: list[tuple[str, str]], contact: re.Pattern[str], id_field: str
) -> list[dict[str, Any]]:
    """A record per contact of a form: ``contact`` matches the fields of a contact, its first group naming
    the contact (``contacts[add][0]``), whose ``id_field`` (``[id]``) is its id (`_contact_id`). A contact
    naming a field twice (which value its sender meant is ambiguous, and a form parser keeps one without a
    word), or no id, is its `rejected` reason naming the field."""
    fields: dict[str, list[tuple[str, str]]] = {}
    for key, value in form:
        if matched := contact.fullmatch(key):
            fields.setdefault(matched[1], []).append((key, value))
    return [_form_contact(name + id_field, given) for name, given in fields.items()]


def _form_contact(id_field: str, given: list[tuple[str, str]]) -> dict[str, Any]:
    """The record of one contact of a form (`_form_contacts`), ``given`` its fields, ``id_field`` its id's."""
    if (key := repeated(field for field, _ in given)) is not None:
        return rejected(f"the form names {key!r} twice")
    ids = [value for field, value in given if field == id_field]
    return _contact_id(ids[0], id_field) if ids else rejected(f"the form has no {id_field}")


def _keyed(*parts: str) -> str:
    """A digest of texts a sender chose; a lone surrogate among them (JSON ``"\\ud800"``) is hashed too."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class AmoCrm(WebhookKind):
    """amoCRM: ``?secret=<secret>`` in the URL; ``contacts[add][N][id]`` in a form-encoded body."""

    name = "amocrm"
    needs_body = False
    _ADDED = re.compile(r"(contacts\[add\]\[[0-9]+\])\[.+")

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        if not _same(request.query.get("secret", ""), secret):
            raise Unauthorized("missing or wrong secret query parameter")

    def parse(self, request: WebhookRequest, max_records: int | None = None) -> list[dict[str, Any]]:
        contacts = _form_contacts(_form(request), self._ADDED, "[id]")
        return _ids(contacts, "contacts[add][N][id]", max_records)


class Bitrix24(WebhookKind):
    """Bitrix24: ``auth[application_token]`` is the secret; ``ONCRMCONTACTADD`` with ``data[FIELDS][ID]``."""

    name = "bitrix24"
    _FIELDS = re.compile(r"(data\[FIELDS\])\[.+")

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        """Nothing: the token is inside the body."""

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        try:
            form = _form(request, MAX_FORM_FIELDS)
        except BadPayload:
            raise Unauthorized("no auth[application_token] in a body that is not a form") from None
        tokens = [v for k, v in form if k == "auth[application_token]"]
        if len(tokens) != 1 or not _same(tokens[0], secret):
            raise Unauthorized("missing or wrong auth[application_token]")

    def parse(self, request: WebhookRequest, max_records: int | None = None) -> list[dict[str, Any]]:
        form = _form(request, MAX_FORM_FIELDS)
        events = {v.upper() for k, v in form if k == "event"}
        if events != {"ONCRMCONTACTADD"}:
            raise BadPayload("expected event ONCRMCONTACTADD")
        return _ids(_form_contacts(form, self._FIELDS, "[ID]"), "data[FIELDS][ID]", max_records)

    def delivery_key(self, request: WebhookRequest) -> str:
        """The contact id; for a rejected contact (no id names it) the event's ``event`` and ``data[...]``
        fields: Bitrix24 sends an event again with another ``ts``, a rejection as an accepted contact."""
        records = self.parse(request)
        if not any(isinstance(record, ErrorRecord) for record in records):
            return _keyed("bitrix24", *(record["id"] for record in records))
        form = _form(request, MAX_FORM_FIELDS)
        data = sorted((k, v) for k, v in form if k == "event" or k.startswith("data["))
        return _keyed("bitrix24 event", *(part for field in data for part in field))


HUBSPOT_SIGNATURE = "x-hubspot-signature-v3"
HUBSPOT_TIMESTAMP = "x-hubspot-request-timestamp"


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 over ``method + uri + body + timestamp``."""
    material = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), material, hashlib.sha256).digest()).decode()


class HubSpot(WebhookKind):
    """HubSpot: ``X-HubSpot-Signature-v3`` and ``X-HubSpot-Request-Timestamp`` (milliseconds)."""

    name = "hubspot"
    covers_url = True
    _SHAPE = re.compile(r"[A-Za-z0-9+/]{43}=")  # base64 of the 32 bytes of an HMAC-SHA256

    def verify_head(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        """A signature header of the right shape and a timestamp within `SIGNATURE_TOLERANCE` of now."""
        if not self._SHAPE.fullmatch(request.headers.get(HUBSPOT_SIGNATURE, "")):
            raise Unauthorized(f"missing or malformed {HUBSPOT_SIGNATURE} header")
        stamp = request.headers.get(HUBSPOT_TIMESTAMP, "")
        milliseconds = re.fullmatch(r"[0-9]{12,}", stamp)  # seconds accepted too
        _fresh(stamp, HUBSPOT_TIMESTAMP, 1000 if milliseconds else 1, now)

    def verify(self, request: WebhookRequest, secret: str, *, now: float | None = None) -> None:
        self.verify_head(request, secret, now=now)
        stamp, given = request.headers[HUBSPOT_TIMESTAMP], request.headers[HUBSPOT_SIGNATURE]
        signed = [
            _same(given, hubspot_signature(secret, request.method, uri, request.body, stamp))
            for uri in _public_uris(request)
        ]
        if not any(signed):
            raise Unauthorized(f"wrong {HUBSPOT_SIGNATURE} header")

    def proof(self, request: WebhookRequest) -> str | None:
        return _keyed("hubspot", request.headers[HUBSPOT_SIGNATURE])

    def parse(self, request: WebhookRequest, max_records: int | None = None) -> list[dict[str, Any]]:
        """The ``objectId`` of each ``contact.creation`` event; an event that is no object, names a key twice
        (which contact it names is unclear) or whose ``objectId`` is no contact id is its rejection."""
        events = enumerate(super().parse(request, max_records), start=1)
        created = [_created(number, event) for number, event in events if _may_create(event)]
        return _ids(created, "contact.creation objectId", None)

    def delivery_key(self, request: WebhookRequest) -> str:
        """The events' ``eventId`` values, and each event without one as it reads but its ``attemptNumber``:
        HubSpot sends an event again with the next ``attemptNumber``, a rejection as an accepted contact. The
        body's where an event without an id cannot be written back (nested too deep)."""
        events = delivery_json(request.body)
        events = events if isinstance(events, list) else [events]
        ids = sorted(str(e["eventId"]) for e in events if _event_id(e) is not None)
        try:
            others = sorted(_event_text(e) for e in events if _event_id(e) is None)
        except RecursionError:
            return super().delivery_key(request)
        return _keyed("hubspot", *ids, *others)


def _event_id(event: Any) -> Any:
    """A HubSpot event's ``eventId``, or None (also for an item that is no object)."""
    return event.get("eventId") if isinstance(event, dict) else None


def _event_text(event: Any) -> str:
    """A HubSpot event without an ``eventId`` as JSON, but its ``attemptNumber`` (`HubSpot.delivery_key`)."""
    if isinstance(event, dict):
        event = {key: value for key, value in event.items() if key != "attemptNumber"}
    return json.dumps(event, sort_keys=True, default=repr)


def _may_create(event: dict[str, Any]) -> bool:
    """Whether a HubSpot event is, or may be, a contact's creation: a rejected one may."""
    return (
        isinstance(event, ErrorRecord) or str(event.get("subscriptionType", "")).lower() == "contact.creation"
    )


def _created(number: int, event: dict[str, Any]) -> dict[str, Any]:
    """The record of HubSpot event ``number`` (from 1), which `_may_create`: its contact id or rejection."""
    if isinstance(event, ErrorRecord):
        return rejected(f"event {number}: {event[ERROR_FIELD]}")
    return _contact_id(str(event.get("objectId", "")), f"event {number} objectId")


def _public_uris(request: WebhookRequest) -> list[str]:
    """The URLs a signature covering the URL may be over: the pinned ``public_url`` with the request's path
    and query, and only that; else the URL as received, and as the sender saw it through a proxy
    (``X-Forwarded-Proto`` / ``-Host``) -- headers the sender chooses, so that a delivery signed for another
    host with the same secret is taken too."""
    url = urlsplit(request.url)
    if request.public_url is not None:
        pinned = urlsplit(request.public_url)
        return [urlunsplit((pinned.scheme, pinned.netloc, url.path, url.query, ""))]
    uris = [request.url]
    proto, host = request.headers.get("x-forwarded-proto"), request.headers.get("x-forwarded-host")
    if proto or host:
        uris.append(urlunsplit((proto or url.scheme, host or url.netloc, url.path, url.query, "")))
    return uris


KINDS: dict[str, WebhookKind] = {
    kind.name: kind for kind in (SharedSecret(), HmacSignature(), AmoCrm(), Bitrix24(), HubSpot())
}


def may_share_a_secret(*auths: str) -> bool:
    """Whether webhooks of these kinds (``auth``) may hold one secret: the proof of every one of them covers
    the URL (`WebhookKind.covers_url`), so a delivery to one cannot be posted to another and taken there."""
    return all(kind is not None and kind.covers_url for kind in map(KINDS.get, auths))
