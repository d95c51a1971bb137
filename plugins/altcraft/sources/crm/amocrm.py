"""amoCRM / Kommo contacts: ``GET /api/v4/contacts``, 250 a page, OAuth 2.0 or a long-lived token.

* **Window**: ``filter[created_at][from|to]`` (Unix seconds), ``order[id]=asc``, ``page``/``limit``. The
  filters page says filtering "is available to a limited list of accounts": an account that refuses the
  filter (HTTP 400) or ignores it (a contact outside the window comes back) is read by
  ``order[updated_at]=desc`` with ``If-Modified-Since: <window start>`` instead, down to the first contact
  updated before the window (a contact is updated no earlier than it is created), and the window is
  applied here; a contact without a readable ``created_at`` (an error record) is placed by its
  ``updated_at``, and is no sign of an ignored filter. A contact updated while that listing is read moves
  to its top, above the pages read: the newest updates are read again until a pass finds nothing new.
* **Watermark**: ``order[id]=desc`` down to the last id read (all pages ``order[id]=asc`` the first time).
* **Pages overlap**: ``page`` is an offset (``(page - 1) * limit``), and amoCRM has no id range to page by
  instead. A contact deleted or merged (in update order: updated) before the offset while a listing is
  read moves every later one a place up, and the one first on the next page was never read (in watermark
  mode below the new watermark: lost for good). So every page after the first is asked with a ``limit``
  (at most ``page_size``) whose offset falls before the end of the contacts read, and must start with one
  of them; else contacts moved up past the overlap, and the read steps back a page (at most 50 times).
  Each contact is given once.
* **Webhook**: ``GET /api/v4/contacts/{id}`` per stored id.
* **Auth**: ``Authorization: Bearer <connection password>`` -- a long-lived token, or an OAuth access
  token. With ``client_id``, ``client_secret``, ``refresh_token`` and ``redirect_uri`` in the extras, an
  HTTP 401 exchanges the refresh token at ``POST /oauth2/access_token`` (``grant_type=refresh_token``).
  amoCRM answers with a *new* refresh token, so the pair is kept -- encrypted with Airflow's Fernet key,
  like a connection password -- in the pipeline's source state, and used until the connection's own
  refresh token changes; both tokens are registered with Airflow's secret masker. An empty page is HTTP 204.
* **Limit**: 7 requests per second; HTTP 429 is retried with backoff.

The record: ``id``, ``name``, ``first_name``, ``last_name``, ``email`` and ``phone`` (first value of the
fields with ``field_code`` EMAIL / PHONE), ``created_at``, ``updated_at``, ``responsible_user_id``, and
each custom field's first value as ``cf_<field_id>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

from pydantic import Field

from altcraft.sources.base import PageLog, Record, SourceError, Window, fingerprint, value_at
from altcraft.sources.crm.base import (
    CrmSource,
    CrmSpec,
    account_url,
    contact_id,
    contact_record,
    epoch,
    in_id_order,
    instant,
    widened,
)

CONTACTS = "/api/v4/contacts"
TOKEN_PATH = "/oauth2/access_token"  # ruff: ignore[hardcoded-password-string] -- a URL path
OAUTH_EXTRAS = ("client_id", "client_secret", "refresh_token", "redirect_uri")
TOKENS_KEY = "crm:amocrm:oauth"
MIN_PAGE = 50
"""The smallest ``page_size``: pages overlap (`overlapping`), which needs limits to choose from."""
MAX_STEPS_BACK = 50
"""Steps back (`AmoCrmSource._pages`) one listing may take before the read fails: contacts keep moving."""
MAX_PASSES = 10
"""Passes over the newest updates (`AmoCrmSource._updated_since`) before the read fails."""


class AmoCrmSource(CrmSource):
    crm = "amoCRM"
    spec: AmoCrmSpec

    def connect(self, conn: Any) -> Any:
        from altcraft.sources.crm.http import CrmHttp

        if not conn.password:
            raise SourceError(f"{self.crm}: connection {conn.conn_id!r} has no token in its password")
        extra = conn.extra_dejson
        oauth = {name: extra.get(name) for name in OAUTH_EXTRAS}
        refreshable = all(oauth.values())
        token = (refreshable and self._stored_tokens(oauth["refresh_token"]).get("access")) or conn.password
        http = CrmHttp(
            self.crm,
            account_url(conn, self.crm),
            {"Authorization": f"Bearer {token}", "Accept": "application/hal+json"},
            self.limits(),
        )
        if refreshable:
            http.reauthorize = lambda: self._refresh(http, oauth)
        return http

    # --- OAuth: the newest token pair lives in the source state, encrypted -----------------------

    def _stored_tokens(self, connection_refresh: str) -> dict[str, str]:
        from airflow.sdk.crypto import get_fernet

        if getattr(self, "_renewed", None):
            return self._renewed
        stored = self.state.get(TOKENS_KEY) if self.state is not None else None
        if not stored or stored.get("from") != _fingerprint(connection_refresh):
            return {}
        fernet = get_fernet()
        return _masked(
            {name: fernet.decrypt(stored[name].encode()).decode() for name in ("access", "refresh")}
        )

    def _refresh(self, http: Any, oauth: dict[str, str]) -> dict[str, str] | None:
        from airflow.sdk.crypto import get_fernet

        from altcraft.sources.crm.http import CrmHttpError

        refresh = self._stored_tokens(oauth["refresh_token"]).get("refresh") or oauth["refresh_token"]
        body = {**oauth, "grant_type": "refresh_token", "refresh_token": refresh}
        try:
            response = http.request("POST", TOKEN_PATH, label="oauth2/access_token", json=body)
        except CrmHttpError as error:  # not the contact list's status: a 400 here is no filter refusal
            raise SourceError(
                f"{self.crm}: the token refresh was refused (HTTP {error.status}): authorize the integration "
                "again and put its refresh token in the connection"
            ) from None
        answer = http.json(response, "oauth")
        if not isinstance(answer, dict) or not all(
            isinstance(answer.get(name), str) and answer[name] for name in ("access_token", "refresh_token")
        ):
            raise SourceError(f"{self.crm}: the token refresh answered without a token pair")
        self._renewed = _masked({"access": answer["access_token"], "refresh": answer["refresh_token"]})
        if self.state is not None:
            fernet = get_fernet()
            self.state.set(
                TOKENS_KEY,
                {
                    "from": _fingerprint(oauth["refresh_token"]),
                    "access": fernet.encrypt(answer["access_token"].encode()).decode(),
                    "refresh": fernet.encrypt(answer["refresh_token"].encode()).decode(),
                },
            )
        return {"Authorization": f"Bearer {answer['access_token']}"}

    # --- reading ----------------------------------------------------------------------------------

    def created_pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        asked = widened(window, timedelta(seconds=1))  # Unix seconds
        span = {
            "filter[created_at][from]": int(asked.start.timestamp()),
            "filter[created_at][to]": int(asked.end.timestamp()),
            "order[id]": "asc",
        }
        try:
            for page in self._pages(span):
                if any(not _near(window, _seconds(contact, "created_at")) for contact in page):
                    break  # the account ignores the filter: read by update time instead
                yield page
            else:
                return
        except SourceError as error:
            if getattr(error, "status", None) != 400:
                raise
        yield from self._updated_since(window)

    def _updated_since(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        """The window's contacts among those updated since its start, in id order. A contact updated while
        the pages are read moves to the top, above the pages read: so the listing is read again from the
        newest update read (amoCRM's clock, a second early), until a pass finds no contact of the window
        not read yet (at most `MAX_PASSES`)."""
        found: dict[bytes, dict[str, Any]] = {}
        since = window.start
        for passes in range(MAX_PASSES + 1):
            listed = self._updated_pass(since, window)
            fresh = {_key(c): c for c in listed if _placed(window, c) and _key(c) not in found}
            if passes and not fresh:
                yield in_id_order(found.values())
                return
            found.update(fresh)
            newest = max((s for s in (_seconds(c, "updated_at") for c in listed) if s is not None), default=0)
            since = max(since, epoch(newest) - timedelta(seconds=1))
        raise SourceError(
            f"{self.crm}: contacts: contacts of the window kept being updated while read; read again"
        )

    def _updated_pass(self, since: datetime, window: Window) -> list[dict[str, Any]]:
        """Contacts updated since ``since``, newest first, down to the first page reaching before it."""
        header = {"If-Modified-Since": format_datetime(since, usegmt=True)}
        listed: list[dict[str, Any]] = []
        for page in self._pages({"order[updated_at]": "desc"}, headers=header):
            listed += page
            updated = [s for s in (_seconds(contact, "updated_at") for contact in page) if s is not None]
            if updated and min(updated) < since.timestamp():
                break
        return listed

    def pages_after(self, last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        if last_id is None:
            yield from self._pages({"order[id]": "asc"})
            return
        newer: list[dict[str, Any]] = []
        for page in self._pages({"order[id]": "desc"}):
            ids = [contact_id(contact) for contact in page]
            newer += [
                contact
                for contact, number in zip(page, ids, strict=True)
                if number is None or number > last_id
            ]
            if any(number is not None and number <= last_id for number in ids):
                break
        yield in_id_order(newer)

    def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        found = []
        for asked in ids:
            try:
                response = self.http.request("GET", f"{CONTACTS}/{int(asked)}", label="contacts/{id}")
            except SourceError as error:
                if getattr(error, "status", None) == 404:
                    continue
                raise
            contact = self.http.json(response, "contacts/{id}")
            if contact:
                found.append(contact)
        return found

    def _pages(
        self, params: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The listing's pages, each contact once. ``page`` is an offset: a contact deleted or merged (or
        updated, in update order) before the offset moves every later one a place up, and the contact
        first on the next page was never read. So each page after the first overlaps the contacts read
        (`overlapping`) and must start with one of them; one that does not (or an empty answer before the
        end read) shows contacts moved up past the overlap, and the read steps back a page."""
        log, size = PageLog(f"{self.crm}: contacts"), self.spec.page_size
        read: dict[bytes, int] = {}  # each contact read (`_key`) -> the page it was first read on
        end = furthest = steps_back = 0  # the listing's positions read, up to `end`; the furthest read
        while True:
            page, limit = overlapping(end, size)
            query = {**params, "page": page, "limit": limit}
            response = self.http.request("GET", CONTACTS, label="contacts", params=query, headers=headers)
            empty = response.status_code == 204  # amoCRM's empty page
            body = None if empty else self.http.json(response, "contacts")
            contacts = [] if empty else self.http.contacts_at(body, "_embedded.contacts", "contacts")
            offset = (page - 1) * limit
            if offset and (not contacts or _key(contacts[0]) not in read):
                steps_back += 1
                if steps_back > MAX_STEPS_BACK:
                    raise SourceError(f"{log.what}: contacts kept moving up past the pages read; read again")
                end = max(0, end - size)
                continue
            log.add(contacts)
            fresh = [contact for contact in contacts if _key(contact) not in read]
            more = bool(contacts) and bool(value_at(body, "_links.next"))
            if more and not fresh and offset + limit > furthest:
                raise log.repeats(min(read[_key(contact)] for contact in contacts))
            read.update((_key(contact), log.count) for contact in fresh)
            if fresh:
                yield fresh
            end = offset + len(contacts)
            furthest = max(furthest, end)
            if not more:
                return

    def flatten(self, raw: dict[str, Any]) -> Record:
        custom, coded = {}, {}
        for field in raw.get("custom_fields_values") or []:
            values = [item.get("value") for item in field.get("values") or []]
            first = values[0] if values else None
            custom[f"cf_{field.get('field_id')}"] = first
            if field.get("field_code"):
                coded.setdefault(str(field["field_code"]).upper(), first)
        return contact_record(
            raw,
            created_at=instant("created_at", raw.get("created_at"), epoch),
            updated_at=instant("updated_at", raw["updated_at"], epoch) if raw.get("updated_at") else None,
            email=coded.get("EMAIL"),
            phone=coded.get("PHONE"),
            first_name=raw.get("first_name") or None,
            last_name=raw.get("last_name") or None,
            name=raw.get("name"),
            extra={"responsible_user_id": raw.get("responsible_user_id"), **custom},
        )


def overlapping(end: int, size: int) -> tuple[int, int]:
    """``page`` and ``limit`` (at most ``size``) of the request reading on from listing position ``end``
    (the positions before it read): its offset, ``(page - 1) * limit``, falls before ``end``, so the page
    starts with a contact read already, and it reads as many positions past ``end`` as such a limit can.
    Some limit of 2 to `MIN_PAGE` reads past any position below their least common multiple (~10^21)."""
    if end == 0:
        return 1, size
    limit = max(range(2, size + 1), key=lambda limit: (limit - 1 - (end - 1) % limit, limit))
    return (end - 1) // limit + 1, limit


def _key(contact: Any) -> bytes:
    """What tells a listed contact from the others: its id, or (without one) the whole item."""
    number = contact_id(contact)
    return fingerprint(contact if number is None else number)


def _seconds(contact: Any, name: str) -> int | None:
    """A raw contact's Unix seconds in field ``name``; None if unreadable (the contact is then an error
    record)."""
    try:
        return int(epoch(contact[name]).timestamp())
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def _near(window: Window, created: int | None) -> bool:
    """Whether a filtered answer's contact created at ``created`` lies in the window, give or take the
    filter's rounding; one without a readable creation time is where the filter put it."""
    return created is None or window.start.timestamp() - 1 <= created <= window.end.timestamp() + 1


def _placed(window: Window, contact: Any) -> bool:
    """Whether a contact read by update time belongs to the window: by its creation time; one without a
    readable creation time (an error record) by its update time, so one window rejects it, and one
    without either in every window that reads it."""
    created, updated = _seconds(contact, "created_at"), _seconds(contact, "updated_at")
    if created is not None or updated is None:
        return _near(window, created)
    return window.start.timestamp() <= updated < window.end.timestamp()


def _masked(tokens: dict[str, str]) -> dict[str, str]:
    """``tokens``, registered with Airflow's secret masker: a token obtained at runtime (refreshed, or
    decrypted from the source state) is no connection field Airflow masks by itself, and a request line or
    header logged at DEBUG (http.client's ``send:``, a proxy's log) would show it."""
    from airflow.sdk.log import mask_secret

    for token in tokens.values():
        mask_secret(token)
    return tokens


def _fingerprint(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:16]


class AmoCrmSpec(CrmSpec):
    """``type: amocrm`` -- amoCRM / Kommo contacts (see `altcraft.sources.crm.amocrm`)."""

    source_class = AmoCrmSource
    default_requests_per_second = 7.0

    type: Literal["amocrm"] = Field(description="selects this kind: `amocrm`")
    page_size: int = Field(
        default=250,
        ge=MIN_PAGE,
        le=250,
        description="contacts per page at most (amoCRM allows 250); pages overlap by a few contacts",
    )
