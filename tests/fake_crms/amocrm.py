"""Fake amoCRM / Kommo account: ``GET /api/v4/contacts`` (HAL), ``/api/v4/contacts/{id}``, OAuth refresh.

Shapes from https://www.amocrm.com/developers/content/api_v4/contacts-2/ (contact model: ``id``, ``name``,
``first_name``, ``last_name``, ``responsible_user_id``, ``group_id``, ``created_by``, ``updated_by``,
``created_at``, ``updated_at``, ``closest_task_at``, ``custom_fields_values``, ``account_id``; list in
``_embedded.contacts`` with ``_page`` and ``_links``), at most 250 a page, HTTP 204 for an empty page,
``order[id|updated_at|created_at]``, ``filter[created_at][from|to]`` (``filter_mode``: ``apply``,
``refuse`` with HTTP 400, or ``ignore`` -- the "limited accounts" notice), ``If-Modified-Since``, and the
token exchange of https://developers.kommo.com/reference/get-token (a refresh token works once).
Limit answer: HTTP 429.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fake_crms.server import FakeCrm, Person, problem

MAX_LIMIT = 250
ACCOUNT_ID = 28805383


def contact(person: Person) -> dict[str, Any]:
    custom = [
        {
            "field_id": 3,
            "field_name": "Email",
            "field_code": "EMAIL",
            "field_type": "multitext",
            "values": [{"value": person.email, "enum_id": 5, "enum_code": "WORK"}],
        },
        {
            "field_id": 77,
            "field_name": "Loyalty",
            "field_code": None,
            "field_type": "numeric",
            "values": [{"value": str(person.id % 5)}],
        },
    ]
    if person.phone:
        custom.append(
            {
                "field_id": 1,
                "field_name": "Phone",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [{"value": person.phone, "enum_id": 2, "enum_code": "WORK"}],
            }
        )
    return {
        "id": person.id,
        "name": f"{person.first_name} {person.last_name}",
        "first_name": person.first_name,
        "last_name": person.last_name,
        "responsible_user_id": 504141,
        "group_id": 0,
        "created_by": 504141,
        "updated_by": 504141,
        "created_at": int(person.created.timestamp()),
        "updated_at": int(person.updated.timestamp()),
        "closest_task_at": None,
        "custom_fields_values": custom,
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": f"/api/v4/contacts/{person.id}"}},
        "_embedded": {"tags": [], "companies": []},
    }


@dataclass
class FakeAmoCrm(FakeCrm):
    created_fields: ClassVar[tuple[str, ...]] = ("created_at",)
    filter_mode: str = "apply"
    access_tokens: set[str] = field(default_factory=lambda: {"amo-token"})
    refresh_tokens: set[str] = field(default_factory=set)
    client: tuple[str, str] = ("client-id", "client-secret")
    refreshes: int = 0
    refusal: int = 400
    """The status of a refused token exchange."""

    def limited(self) -> Response:
        return problem(429, title="Too Many Requests", status=429)

    def routes(self, app: FastAPI) -> None:
        def authorized(request: Request) -> bool:
            given = request.headers.get("authorization", "")
            return given.startswith("Bearer ") and given[7:] in self.access_tokens

        @app.get("/api/v4/contacts")
        def contacts(request: Request) -> Response:
            if not authorized(request):
                return problem(401, title="Unauthorized", status=401, detail="Invalid access token")
            q = request.query_params
            limit, page = int(q.get("limit", 50)), 1 if self.deaf else int(q.get("page", 1))
            if limit > MAX_LIMIT:
                return problem(400, title="Bad Request", status=400, detail="limit is above 250")
            found = self.listed()
            filtered = any(k.startswith("filter[") for k in q)
            if filtered and self.filter_mode == "refuse":
                return problem(400, title="Bad Request", status=400, detail="Filter is not available")
            if filtered and self.filter_mode == "apply":
                low = int(q.get("filter[created_at][from]", 0))
                high = int(q.get("filter[created_at][to]", 2**40))
                found = [p for p in found if low <= p.created.timestamp() <= high]
            since = request.headers.get("if-modified-since")
            if since:
                found = [p for p in found if p.updated >= parsedate_to_datetime(since)]
            for key, prop in (
                ("order[id]", "id"),
                ("order[updated_at]", "updated"),
                ("order[created_at]", "created"),
            ):
                if key in q:
                    found.sort(key=lambda p: getattr(p, prop), reverse=q[key] == "desc")
            chunk = found[(page - 1) * limit : page * limit]
            if not chunk:
                return Response(status_code=204)
            base = f"/api/v4/contacts?limit={limit}"
            links = {"self": {"href": f"{base}&page={page}"}}
            if page * limit < len(found):
                links["next"] = {"href": f"{base}&page={page + 1}"}
            body = {
                "_page": page,
                "_links": links,
                "_embedded": {"contacts": [self.shown(p, contact(p)) for p in chunk]},
            }
            return JSONResponse(body, media_type="application/hal+json")

        @app.get("/api/v4/contacts/{contact_id}")
        def one(contact_id: int, request: Request) -> Response:
            if not authorized(request):
                return problem(401, title="Unauthorized", status=401)
            person = self.by_id().get(contact_id)
            if person is None:
                return Response(status_code=204)
            return JSONResponse(self.shown(person, contact(person)), media_type="application/hal+json")

        @app.post("/oauth2/access_token")
        async def token(request: Request) -> Response:
            body = await request.json()
            known = (body.get("client_id"), body.get("client_secret")) == self.client
            refused = {"title": "Bad Request", "status": self.refusal}
            if not known or body.get("grant_type") != "refresh_token":
                return problem(self.refusal, **refused, detail="invalid client")
            if body.get("refresh_token") not in self.refresh_tokens:
                return problem(self.refusal, **refused, detail="Refresh token has been revoked")
            self.refresh_tokens.discard(body["refresh_token"])  # one use
            self.refreshes += 1
            access, refresh = secrets.token_hex(8), secrets.token_hex(8)
            self.access_tokens = {access}
            self.refresh_tokens.add(refresh)
            return JSONResponse(
                {
                    "token_type": "Bearer",
                    "expires_in": 86400,
                    "access_token": access,
                    "refresh_token": refresh,
                }
            )
