"""HubSpot contacts: ``POST /crm/v3/objects/contacts/search``, a private app token, 10,000 results a query.

* **Pages**: sorted by ``hs_object_id`` ascending, ``limit`` per page (``page_size``: 100 by default, which
  the community pages give as the cap; the API reference gives 200), each page its own search for
  ``hs_object_id GT <the last id read>`` (a keyset, not the ``after`` offset: a contact deleted or merged
  while the pages are read shifted the offset, and the contact first on the next page was never read).
  No search pages through more than one page, so HubSpot's 10,000 results a query never bind.
* **Window**: filters ``createdate GTE start`` and ``createdate LT end`` (epoch milliseconds, the window
  rounded out to whole ones).
* **Watermark**: ``hs_object_id GT <last id>`` alone.
* **Webhook**: ``POST /crm/v3/objects/contacts/batch/read`` over the stored ids, 100 per request.
* **Auth**: ``Authorization: Bearer <private app token>`` (the connection's password); the host defaults to
  ``https://api.hubapi.com``.
* **Limit**: search 4 requests per second per token (100 per 10 s overall); HTTP 429 is retried.

The record: ``id``, ``email``, ``phone``, ``first_name`` / ``last_name`` (``firstname`` / ``lastname``),
``created_at`` (``createdate``), ``updated_at``, and every requested property under its HubSpot name.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from altcraft.sources.base import PageLog, Record, SourceError, Window, value_at
from altcraft.sources.crm.base import (
    UNIX_EPOCH,
    CrmSource,
    CrmSpec,
    account_url,
    contact_record,
    instant,
    iso_instant,
    whole_number,
    widened,
)

SEARCH = "/crm/v3/objects/contacts/search"
BATCH_READ = "/crm/v3/objects/contacts/batch/read"
DEFAULT_HOST = "https://api.hubapi.com"
MILLISECOND = timedelta(milliseconds=1)
BASE_PROPERTIES = (
    *("email", "firstname", "lastname", "phone"),
    *("createdate", "lastmodifieddate", "hs_object_id"),
)


class HubSpotSource(CrmSource):
    crm = "HubSpot"
    spec: HubSpotSpec
    fetch_chunk = 100

    def connect(self, conn: Any) -> Any:
        from altcraft.sources.crm.http import CrmHttp

        if not conn.password:
            raise SourceError(f"{self.crm}: connection {conn.conn_id!r} has no app token in its password")
        headers = {"Authorization": f"Bearer {conn.password}", "Accept": "application/json"}
        return CrmHttp(self.crm, account_url(conn, self.crm, DEFAULT_HOST), headers, self.limits())

    @property
    def properties(self) -> list[str]:
        return list(dict.fromkeys([*BASE_PROPERTIES, *self.spec.properties]))

    def created_pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        asked = widened(window, MILLISECOND)
        yield from self._past_ids(
            [("createdate", "GTE", _ms(asked.start)), ("createdate", "LT", _ms(asked.end))]
        )

    def pages_after(self, last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        yield from self._past_ids([], last_id)

    def _past_ids(
        self, filters: list[tuple[str, str, int]], last_id: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages by ascending ``hs_object_id``, each its own search for the ids above the last one read (a
        keyset): a contact deleted or merged meanwhile shifts no other past a page, as it shifted the
        ``after`` offset, and no search pages up to HubSpot's 10,000-result cap."""
        log = PageLog(f"{self.crm}: contacts/search")
        while True:
            bound = [("hs_object_id", "GT", last_id)] if last_id is not None else []
            page, more = self._search([*filters, *bound])
            log.add(page)
            if not page:
                return
            yield page
            if not more:
                return
            ids = [number for number in map(_object_id, page) if number is not None]
            if not ids or (last_id is not None and max(ids) <= last_id):
                raise SourceError(
                    f"{self.crm}: contacts/search: page {log.count} does not get past hs_object_id "
                    f"{last_id}: the search ignores its lower bound"
                )
            last_id = max(ids)

    def _search(self, filters: list[tuple[str, str, int]]) -> tuple[list[dict[str, Any]], bool]:
        """One page of the search sorted by ``hs_object_id``, and whether HubSpot says more follow."""
        body: dict[str, Any] = {
            "filterGroups": [
                {"filters": [{"propertyName": p, "operator": op, "value": str(v)} for p, op, v in filters]}
            ]
            if filters
            else [],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.spec.page_size,
        }
        response = self.http.request("POST", SEARCH, label="contacts/search", json=body)
        answer = self.http.json(response, "contacts/search")
        results = self.http.contacts_at(answer, "results", "contacts/search")
        return results, value_at(answer, "paging.next.after") not in (None, "")

    def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        body = {"properties": self.properties, "inputs": [{"id": i} for i in ids]}
        response = self.http.request("POST", BATCH_READ, label="contacts/batch/read", json=body)
        return self.http.contacts_at(
            self.http.json(response, "contacts/batch/read"), "results", "contacts/batch/read"
        )

    def flatten(self, raw: dict[str, Any]) -> Record:
        props = dict(raw.get("properties") or {})
        created = props.get("createdate") or raw.get("createdAt")
        updated = props.get("lastmodifieddate") or raw.get("updatedAt")
        return contact_record(
            raw,
            created_at=instant("createdate", created, iso_instant),
            updated_at=instant("lastmodifieddate", updated, iso_instant) if updated else None,
            email=props.get("email"),
            phone=props.get("phone"),
            first_name=props.get("firstname") or None,
            last_name=props.get("lastname") or None,
            name=" ".join(p for p in (props.get("firstname"), props.get("lastname")) if p) or None,
            extra=props,
        )


def _ms(moment: datetime) -> int:
    """Epoch milliseconds, cut down (in integers: exact at any date)."""
    return (moment - UNIX_EPOCH) // MILLISECOND


def _object_id(contact: Any) -> int | None:
    """A contact's ``hs_object_id`` (its id when the property is not read); None if unreadable
    (`whole_number`)."""
    if not isinstance(contact, dict) or not isinstance(properties := contact.get("properties") or {}, dict):
        return None
    return whole_number(properties.get("hs_object_id") or contact.get("id"))


class HubSpotSpec(CrmSpec):
    """``type: hubspot`` -- HubSpot CRM contacts (see `altcraft.sources.crm.hubspot`)."""

    source_class = HubSpotSource
    default_requests_per_second = 4.0

    type: Literal["hubspot"] = Field(description="selects this kind: `hubspot`")
    page_size: int = Field(default=100, ge=1, le=200, description="contacts per search page (`limit`)")
    properties: list[str] = Field(
        default_factory=list, description="contact properties to read besides email, names, phone, dates"
    )
