"""Fake Bitrix24 portal: ``crm.item.list`` through an inbound webhook ``/rest/<user>/<secret>/``.

Shapes from https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html and
/settings/how-to-call-rest-api/list-methods-pecularities.html: ``{"result": {"items": [...]}, "total",
"next", "time"}``, a fixed page of 50, ``start`` (``-1``: no count, no ``next``), filter prefixes ``>=``,
``>``, ``<``, ``@`` (IN) over ``id`` and ``createdTime``, ``order``. Contact items use the common fields of
the "CRM Object Fields" page (``id``, ``createdTime``, ``updatedTime``, ``assignedById``) and ``name``,
``lastName``; e-mail and phone as ``fm`` multi-fields (not shown in the docs we found: see the source).
Limit answers: HTTP 503 ``QUERY_LIMIT_EXCEEDED`` (leaky bucket) and, with ``method_budget``, HTTP 429
``OPERATION_TIME_LIMIT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fake_crms.server import FakeCrm, Person, problem

PAGE = 50
MSK = timezone(timedelta(hours=3))


def item(person: Person) -> dict[str, Any]:
    fm = [{"id": person.id * 10, "typeId": "EMAIL", "valueType": "WORK", "value": person.email}]
    if person.phone:
        fm.append({"id": person.id * 10 + 1, "typeId": "PHONE", "valueType": "MOBILE", "value": person.phone})
    return {
        "id": person.id,
        "name": person.first_name,
        "secondName": None,
        "lastName": person.last_name,
        "createdTime": person.created.astimezone(MSK).isoformat(),
        "updatedTime": person.updated.astimezone(MSK).isoformat(),
        "assignedById": 1,
        "sourceId": "WEB",
        "ufCrm1Loyalty": person.id % 5,
        "fm": fm,
    }


def _matches(person: Person, filters: dict[str, Any]) -> bool:
    for key, value in filters.items():
        op = next(p for p in (">=", "<=", ">", "<", "@", "=", "") if key.startswith(p))
        name = key[len(op) :]
        have: Any = person.id if name == "id" else person.created if name == "createdTime" else None
        if name == "createdTime":  # the portal keeps whole seconds: a finer filter time is cut to one
            value = datetime.fromisoformat(value).replace(microsecond=0)
        ok = {
            ">=": lambda: have >= value,
            "<=": lambda: have <= value,
            ">": lambda: have > value,
            "<": lambda: have < value,
            "@": lambda: have in {int(v) for v in value},
        }.get(op, lambda: have == value)()
        if not ok:
            return False
    return True


@dataclass
class FakeBitrix24(FakeCrm):
    created_fields: ClassVar[tuple[str, ...]] = ("createdTime",)
    user: str = "1"
    secret: str = "b24-webhook-secret"
    limit_status: int = 503

    def limited(self) -> Response:
        if self.limit_status == 429:
            return problem(
                429,
                error="OPERATION_TIME_LIMIT",
                error_description="Method is blocked due to operation time limit.",
            )
        return problem(503, error="QUERY_LIMIT_EXCEEDED", error_description="Too many requests")

    def routes(self, app: FastAPI) -> None:
        @app.post("/rest/{user}/{secret}/crm.item.list")
        async def item_list(user: str, secret: str, request: Request) -> Response:
            if (user, secret) != (self.user, self.secret):
                return problem(
                    401, error="INVALID_CREDENTIALS", error_description="Invalid request credentials"
                )
            body = await request.json()
            if int(body.get("entityTypeId", 0)) != 3:
                return problem(400, error="NOT_FOUND", error_description="entityTypeId")
            given = body.get("filter") or {}
            found = [
                p
                for p in self.listed()
                if _matches(p, {k: v for k, v in given.items() if k != ">id" or not self.deaf})
            ]
            order = body.get("order") or {}
            if "id" in order:
                found.sort(key=lambda p: p.id, reverse=str(order["id"]).upper() == "DESC")
            start = int(body.get("start", 0))
            now = datetime.now().isoformat()
            timing = {
                "start": 0,
                "finish": 0,
                "duration": 0.01,
                "processing": 0,
                "date_start": now,
                "date_finish": now,
                "operating": 0,
            }
            if start == -1:
                items = [self.shown(p, item(p)) for p in found[:PAGE]]
                return JSONResponse({"result": {"items": items}, "time": timing})
            chunk = found[start : start + PAGE]
            answer: dict[str, Any] = {
                "result": {"items": [self.shown(p, item(p)) for p in chunk]},
                "total": len(found),
                "time": timing,
            }
            if start + PAGE < len(found):
                answer["next"] = start + PAGE
            return JSONResponse(answer)
