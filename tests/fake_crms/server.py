"""What every fake CRM shares: its contacts, a request log, a limit storm, and serving over HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

EPOCH = datetime(2024, 3, 1, tzinfo=UTC)


@dataclass
class Person:
    """One contact, CRM-neutral; each fake renders it in its own shape."""

    id: int
    created: datetime
    email: str
    first_name: str
    last_name: str
    phone: str | None = None
    modified: datetime | None = None
    """When it was last updated, if not 5 minutes after its creation."""

    @property
    def updated(self) -> datetime:
        return self.modified or self.created + timedelta(minutes=5)


def people(count: int, *, start: int = 1, every: timedelta = timedelta(hours=1)) -> list[Person]:
    """``count`` contacts with ids from ``start``, created ``every`` apart from `EPOCH`."""
    return [
        Person(
            id=start + n,
            created=EPOCH + every * (start + n - 1),
            email=f"c{start + n}@example.org",
            first_name=f"First{start + n}",
            last_name=f"Last{start + n}",
            phone=f"+7900{start + n:07d}",
        )
        for n in range(count)
    ]


@dataclass
class FakeCrm:
    """State of one fake account; subclasses add the routes (`routes`)."""

    #: the fields of an item holding the contact's creation time (``properties.createdate``: nested)
    created_fields: ClassVar[tuple[str, ...]]

    contacts: list[Person] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    storm: int = 0
    """The next ``storm`` requests get the CRM's limit answer."""
    instead: list[Response] = field(default_factory=list)
    """Answers given, in turn, to the next requests in place of the CRM's (after a `storm`)."""
    deaf: bool = False
    """The account ignores the paging parameter (page, ``>id`` cursor, ``after``): every page is the first."""
    url: str = ""
    broken: dict[int, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    """Contacts answered malformed: contact id -> what the answer holds instead, given its item."""
    hidden: set[int] = field(default_factory=set)
    """Contacts that exist (fetched by id) but are not yet in listings and searches: committed after a
    higher id was listed, or not yet in the search index."""
    then: list[Callable[[], Any] | None] = field(default_factory=list)
    """Changes made to the account, in turn, after each of the next requests is answered (None: none)."""

    def by_id(self) -> dict[int, Person]:
        return {p.id: p for p in self.contacts}

    def listed(self) -> list[Person]:
        """The contacts a listing or search shows (not `hidden`)."""
        return [p for p in self.contacts if p.id not in self.hidden]

    def delete(self, contact_id: int) -> None:
        self.contacts = [p for p in self.contacts if p.id != contact_id]

    def shown(self, person: Person, item: dict[str, Any]) -> Any:
        """The item answered for ``person``: its rendered ``item``, unless it is `broken`."""
        breaking = self.broken.get(person.id)
        return item if breaking is None else breaking(item)

    def limited(self) -> Response:
        raise NotImplementedError

    def routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def log_and_limit(request: Request, call_next: Any) -> Response:
            body = await request.body()
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "headers": dict(request.headers),
                    "body": body,
                    "port": request.client and request.client.port,  # the client's end of the connection
                }
            )
            if self.storm > 0:
                self.storm -= 1
                return self.limited()
            if self.instead:
                return self.instead.pop(0)
            answer = await call_next(request)
            if self.then and (change := self.then.pop(0)) is not None:
                change()
            return answer

        self.routes(app)
        return app


def without(*names: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A `FakeCrm.broken` value: the item without these fields (``properties.createdate``: nested)."""

    def broken(item: dict[str, Any]) -> dict[str, Any]:
        item = json.loads(json.dumps(item))
        for name in names:
            *parents, last = name.split(".")
            target = item
            for parent in parents:
                target = target[parent]
            target.pop(last)
        return item

    return broken


def problem(code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


@contextmanager
def serving(crm: FakeCrm) -> Generator[FakeCrm]:
    """Serve ``crm`` on a free local port (``crm.url``) until the block ends."""
    with serving_app(crm.app()) as crm.url:
        yield crm


@contextmanager
def serving_app(app: FastAPI) -> Generator[str]:
    """Serve ``app`` with uvicorn on a free local port until the block ends; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
