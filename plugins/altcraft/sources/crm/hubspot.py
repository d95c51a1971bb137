"""HubSpot contacts: ``POST /crm/v3/objects/contacts/search``, a private app token, 10,000 results a query.

* **Window**: filters ``createdate GTE start`` and ``createdate LT end`` (epoch milliseconds, the window
  rounded out to whole ones), sorted by ``createdate`` ascending, ``limit`` per page (``page_size``: 100 by
  default, which the community pages give as the cap; the API reference gives 200), ``after`` cursor. A search
  returns at most 10,000 results (``max_results``): a longer window is read as further queries whose lower
  bound moves to the last ``createdate`` read; contacts at that very instant are not repeated (their ids are
  remembered).
* **Watermark**: ``hs_object_id GT <last id>``, sorted by ``hs_object_id``, the same way past 10,000.
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
    contact_id,
    contact_record,
    instant,
    iso_instant,
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
        yield from self._sliding("createdate", _ms(asked.start), [("createdate", "LT", _ms(asked.end))])

    def pages_after(self, last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        yield from self._sliding("hs_object_id", last_id, [], strict=True)

    def _sliding(
        self, prop: str, low: int | None, filters: list[tuple[str, str, int]], *, strict: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Queries sorted by ``prop``, each starting at the last value the one before read (the cap).

        A query that restarts at a value may read again, as its first page, contacts of the query before
        that share it: pages are checked for repeats within one query (`PageLog`), and each query must get
        past the value it starts at.
        """
        at_low: set[int | None] = set()
        while True:
            bound = [(prop, "GT" if strict else "GTE", low)] if low is not None else []
            read, last_value, tail, after = 0, low, set(at_low), None
            log = PageLog(f"{self.crm}: contacts/search")
            while True:
                page, after = self._search([*bound, *filters], prop, after)
                log.add(page)
                fresh = [c for c in page if (number := contact_id(c)) is None or number not in at_low]
                if fresh:
                    yield fresh
                read += len(page)
                for contact in page:
                    value = _sort_value(contact, prop)
                    if value is None:  # unreadable: an error record, no place in the order
                        continue
                    number = contact_id(contact)
                    tail = tail | {number} if value == last_value else {number}
                    last_value = value
                if after is None:
                    return
                if read + self.spec.page_size > self.spec.max_results:
                    break
            if last_value == low:
                raise SourceError(
                    f"{self.crm}: the search read {self.spec.max_results} contacts without getting past "
                    f"{prop} {low}: more than that share it, or the search ignores its lower bound"
                )
            at_low, low = tail, last_value

    def _search(
        self, filters: list[tuple[str, str, int]], prop: str, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        body: dict[str, Any] = {
            "filterGroups": [
                {"filters": [{"propertyName": p, "operator": op, "value": str(v)} for p, op, v in filters]}
            ]
            if filters
            else [],
            "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.spec.page_size,
        }
        if after is not None:
            body["after"] = after
        response = self.http.request("POST", SEARCH, label="contacts/search", json=body)
        answer = self.http.json(response, "contacts/search")
        results = self.http.contacts_at(answer, "results", "contacts/search")
        following = value_at(answer, "paging.next.after")
        return results, (str(following) if following not in (None, "") else None)

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
            raw["id"],
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


def _sort_value(contact: Any, prop: str) -> int | None:
    """The value a search sorts by; None if unreadable (the contact is then an error record)."""
    try:
        value = (contact.get("properties") or {}).get(prop)
        if prop == "hs_object_id":
            return int(value or contact["id"])
        return _ms(iso_instant(value or contact.get("createdAt")))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None


class HubSpotSpec(CrmSpec):
    """``type: hubspot`` -- HubSpot CRM contacts (see `altcraft.sources.crm.hubspot`)."""

    source_class = HubSpotSource
    default_requests_per_second = 4.0

    type: Literal["hubspot"] = Field(description="selects this kind: `hubspot`")
    page_size: int = Field(default=100, ge=1, le=200, description="contacts per search page (`limit`)")
    max_results: int = Field(
        default=10_000, ge=1, le=10_000, description="results one search query can page through"
    )
    properties: list[str] = Field(
        default_factory=list, description="contact properties to read besides email, names, phone, dates"
    )
