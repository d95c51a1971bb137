"""Fake HubSpot account: CRM search and batch read of contacts, a private app token.

Shapes from HubSpot's CRM search docs: request ``filterGroups[].filters[]`` (``propertyName``,
``operator`` GT / GTE / LT, ``value``), ``sorts`` (``propertyName``, ``direction``), ``properties``,
``limit``, ``after``; answer ``{"total", "results": [{"id", "properties", "createdAt", "updatedAt",
"archived"}], "paging": {"next": {"after", "link"}}}``. ``max_limit`` (page) and ``max_results`` (10,000
per query) are the caps: beyond them HTTP 400. Limit answer: HTTP 429 ``RATE_LIMIT`` / ``SECONDLY``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fake_crms.server import FakeCrm, Person, problem


def iso(moment: Any) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def properties(person: Person) -> dict[str, Any]:
    return {
        "createdate": iso(person.created),
        "email": person.email,
        "firstname": person.first_name,
        "hs_object_id": str(person.id),
        "lastmodifieddate": iso(person.updated),
        "lastname": person.last_name,
        "phone": person.phone,
        "loyalty": str(person.id % 5),
    }


def result(person: Person, wanted: list[str]) -> dict[str, Any]:
    props = properties(person)
    return {
        "id": str(person.id),
        "properties": {k: props.get(k) for k in wanted},
        "createdAt": iso(person.created),
        "updatedAt": iso(person.updated),
        "archived": False,
    }


def _value(person: Person, name: str) -> int:
    return person.id if name == "hs_object_id" else int(person.created.timestamp() * 1000)


@dataclass
class FakeHubSpot(FakeCrm):
    created_fields: ClassVar[tuple[str, ...]] = ("createdAt", "properties.createdate")
    token: str = "pat-na1-fake"
    max_limit: int = 200
    max_results: int = 10_000

    def limited(self) -> Response:
        return problem(
            429,
            status="error",
            message="You have reached your secondly limit.",
            errorType="RATE_LIMIT",
            correlationId=str(uuid.uuid4()),
            policyName="SECONDLY",
        )

    def routes(self, app: FastAPI) -> None:
        def unauthorized(request: Request) -> Response | None:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return problem(
                    401,
                    status="error",
                    message="Authentication credentials not found.",
                    category="INVALID_AUTHENTICATION",
                )
            return None

        @app.post("/crm/v3/objects/contacts/search")
        async def search(request: Request) -> Response:
            if (refused := unauthorized(request)) is not None:
                return refused
            body = await request.json()
            limit, after = int(body.get("limit", 10)), 0 if self.deaf else int(body.get("after") or 0)
            if limit > self.max_limit:
                return problem(
                    400,
                    status="error",
                    message=f"limit must be at most {self.max_limit}",
                    category="VALIDATION_ERROR",
                )
            if after + limit > self.max_results:
                return problem(
                    400,
                    status="error",
                    message="Cannot page beyond 10000 results",
                    category="VALIDATION_ERROR",
                )
            found = self.listed()
            for group in body.get("filterGroups") or []:
                for f in group["filters"]:
                    if self.deaf and (f["propertyName"], f["operator"]) == ("hs_object_id", "GT"):
                        continue  # deaf to the keyset bound as to ``after``
                    wanted = int(f["value"])
                    test = {"GT": int.__gt__, "GTE": int.__ge__, "LT": int.__lt__, "LTE": int.__le__}[
                        f["operator"]
                    ]
                    found = [p for p in found if test(_value(p, f["propertyName"]), wanted)]
            for sort in body.get("sorts") or []:
                found.sort(
                    key=lambda p: (_value(p, sort["propertyName"]), p.id),
                    reverse=sort.get("direction") == "DESCENDING",
                )
            chunk = found[after : after + limit]
            answer: dict[str, Any] = {
                "total": len(found),
                "results": [
                    self.shown(p, result(p, body.get("properties") or ["email", "firstname", "lastname"]))
                    for p in chunk
                ],
            }
            if after + limit < len(found):
                answer["paging"] = {"next": {"after": str(after + limit), "link": f"?after={after + limit}"}}
            return JSONResponse(answer)

        @app.post("/crm/v3/objects/contacts/batch/read")
        async def batch_read(request: Request) -> Response:
            if (refused := unauthorized(request)) is not None:
                return refused
            body = await request.json()
            known = self.by_id()
            people = [known[int(i["id"])] for i in body["inputs"] if int(i["id"]) in known]
            return JSONResponse(
                {
                    "status": "COMPLETE",
                    "results": [self.shown(p, result(p, body.get("properties") or [])) for p in people],
                    "startedAt": "2024-03-01T00:00:00.000Z",
                    "completedAt": "2024-03-01T00:00:00.100Z",
                }
            )
