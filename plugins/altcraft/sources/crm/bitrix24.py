"""Bitrix24 contacts: ``crm.item.list`` with ``entityTypeId=3``, 50 a page, through an inbound webhook.

* **Window**: filter ``>=createdTime`` / ``<createdTime`` (the window rounded out to whole seconds), ``order
  {id: ASC}``, and the bulk form the performance page recommends: ``start=-1`` (no count, no offset) with a
  ``>id`` cursor on the last id of the previous page; a page shorter than 50 is the last.
* **Watermark**: the same cursor from the last id read.
* **Webhook**: ``crm.item.list`` with ``@id`` (IN) over the stored ids, 50 per request.
* **Auth**: the connection's password is the inbound webhook URL
  ``https://<portal>/rest/<user>/<secret>/`` (the whole URL is a secret), or the host is the portal and
  login / password the user id and the webhook secret. Methods are POSTed as JSON to ``<url><method>``.
* **Limit**: leaky bucket, 2 requests per second; above the bucket HTTP 503 ``QUERY_LIMIT_EXCEEDED``, and
  a method over its execution-time budget HTTP 429: both are retried with backoff.

The record: ``id``, ``name``, ``last_name``, ``first_name`` (the item's ``name``), ``email`` and ``phone``
(first value of the multi-fields, read from ``fm`` entries with ``typeId`` EMAIL / PHONE, or from
``email`` / ``phone`` / ``EMAIL`` / ``PHONE`` lists -- the item docs do not show which), ``created_at``,
``updated_at``, and every other scalar field of the item under its own name (``ufCrm...`` custom fields,
``assignedById``, ``sourceId`` ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from altcraft.sources.base import PageLog, Record, SourceError, Window, value_at
from altcraft.sources.crm.base import (
    CrmSource,
    CrmSpec,
    contact_id,
    contact_record,
    instant,
    iso_instant,
    widened,
)

CONTACT_TYPE = 3
PAGE = 50
LIST = "crm.item.list"


class Bitrix24Source(CrmSource):
    crm = "Bitrix24"
    spec: Bitrix24Spec
    fetch_chunk = PAGE

    def connect(self, conn: Any) -> Any:
        from airflow.sdk.log import mask_secret

        from altcraft.sources.crm.http import CrmHttp

        secret = conn.password or ""
        if secret.startswith(("https://", "http://")):
            url = secret
        elif conn.host and conn.login and secret:
            host = conn.host if "://" in conn.host else f"https://{conn.host}"
            url = f"{host.rstrip('/')}{':' + str(conn.port) if conn.port else ''}/rest/{conn.login}/{secret}/"
        else:
            raise SourceError(
                f"{self.crm}: connection {conn.conn_id!r}: put the inbound webhook URL in its password"
            )
        path = urlsplit(url).path.rstrip("/")
        if not path.count("/") >= 3:
            raise SourceError(
                f"{self.crm}: connection {conn.conn_id!r}: no /rest/<user>/<secret>/ in the URL"
            )
        # Airflow redacts the password, the whole URL, from task logs; a request line urllib3 logs at DEBUG
        # holds only the path, with the secret in it
        mask_secret(path.rpartition("/")[2])
        return CrmHttp(self.crm, url.rstrip("/") + "/", {"Accept": "application/json"}, self.limits())

    def created_pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        asked = widened(window, timedelta(seconds=1))  # the portal keeps whole seconds
        span = {">=createdTime": asked.start.isoformat(), "<createdTime": asked.end.isoformat()}
        yield from self._after(span, None)

    def pages_after(self, last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        yield from self._after({}, last_id)

    def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        return self._list({"@id": [int(i) for i in ids]}) if ids else []

    def _after(self, filters: dict[str, Any], last_id: int | None) -> Iterator[list[dict[str, Any]]]:
        log = PageLog(f"{self.crm}: {LIST}")
        while True:
            page = self._list({**filters, **({">id": last_id} if last_id is not None else {})})
            log.add(page)
            if page:
                yield page
            if len(page) < PAGE:
                return
            ids = [number for number in map(contact_id, page) if number is not None]
            if not ids:
                raise SourceError(f"{self.crm}: {LIST}: a full page without one contact id to read past")
            last_id = max(ids)

    def _list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        body = {
            "entityTypeId": CONTACT_TYPE,
            "select": ["*"],
            "filter": filters,
            "order": {"id": "ASC"},
            "start": -1,
        }
        answer = self.http.json(self.http.request("POST", LIST, label=LIST, json=body), LIST)
        listed = isinstance(value_at(answer, "result"), list)  # the older methods' form
        return self.http.contacts_at(answer, "result" if listed else "result.items", LIST)

    def flatten(self, raw: dict[str, Any]) -> Record:
        extra = {k: v for k, v in raw.items() if not isinstance(v, (dict, list))}
        return contact_record(
            raw,
            created_at=instant("createdTime", raw.get("createdTime"), iso_instant),
            updated_at=instant("updatedTime", raw["updatedTime"], iso_instant)
            if raw.get("updatedTime")
            else None,
            email=_multi(raw, "EMAIL"),
            phone=_multi(raw, "PHONE"),
            first_name=raw.get("name") or None,
            last_name=raw.get("lastName") or None,
            name=" ".join(p for p in (raw.get("name"), raw.get("lastName")) if p) or None,
            extra=extra,
        )


def _multi(raw: dict[str, Any], type_id: str) -> Any:
    """The first value of a multi-field (EMAIL, PHONE) in either documented form."""
    for entry in raw.get("fm") or []:
        if str(entry.get("typeId", "")).upper() == type_id and entry.get("value"):
            return entry["value"]
    for key in (type_id.lower(), type_id):
        for entry in raw.get(key) or []:
            value = entry.get("value", entry.get("VALUE")) if isinstance(entry, dict) else entry
            if value:
                return value
    return None


class Bitrix24Spec(CrmSpec):
    """``type: bitrix24`` -- Bitrix24 CRM contacts (see `altcraft.sources.crm.bitrix24`)."""

    source_class = Bitrix24Source
    default_requests_per_second = 2.0

    type: Literal["bitrix24"] = Field(description="selects this kind: `bitrix24`")
