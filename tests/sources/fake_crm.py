"""A fake CRM contact API over real HTTP, with one endpoint per pagination style.

Every endpoint answers GET (query string) and POST (JSON body) alike: it lists `CONTACTS` filtered by
``created_from`` / ``created_to`` (``[from, to)``, ISO 8601 or epoch seconds), in id order, PAGE_SIZE
per page unless the client asks for another ``limit``:

* ``/v1/pages?page=N``           -> ``{"data": {"items": [...], "total_pages": T}}``
* ``/v1/offset?offset=&limit=``  -> ``{"items": [...], "total": T}``
* ``/v1/cursor?cursor=``         -> ``{"data": {"items": [...]}, "next_cursor": "..." | null}``
* ``/v1/link?page=N``            -> ``{"items": [...]}`` and a ``Link: <...>; rel="next"`` header
* ``/v1/link-in-body?page=N``    -> ``{"items": [...], "next": "<relative link>" | null}``
* ``/v1/escaping-link``          -> ``{"items": [...], "next": "http://elsewhere.invalid/steal"}``
* ``/v1/unavailable``            -> HTTP 503 (``Retry-After: 0``) whose body mentions a contact
* ``/v1/limited?page=N``         -> ``/v1/pages``, but HTTP 429 (``Retry-After: 0``) to the first two requests
  of each page
* ``/v1/looping-link``           -> ``{"items": [...]}``, pages 1 and 2 alternately linking to each other
* ``/v1/looping-cursor``         -> ``{"items": [...], "next_cursor": ...}``: cursors a, b, a, b ...
* ``/v1/echo-link?next=``        -> ``{"items": [...], "next": "<the link given>"}``
* ``/v1/odd-paging?odd=``       -> ``{"items": [...], "total", "total_pages", "next", "next_cursor"}``:
  pages by ``page`` or ``offset``, each paging value the JSON given in ``odd`` (``absent``: left out)
* ``/v1/empty-pages?cursor=``    -> ``{"items": [], "next_cursor": "<cursor + 1>"}``, for 200 pages
* ``/v1/mixed``                  -> ``{"items": [...]}``: two contacts with items that are not objects between
* ``/v1/deaf``                   -> the first contacts whatever page, offset, cursor or window is asked
* ``/v1/odd-bytes``              -> ``{"items": [...]}``: three contacts, the second's email with a byte that
  is not UTF-8
* ``/v1/odd-units``              -> ``/v1/odd-bytes`` in UTF-16, the second's email with a lone surrogate
* ``/v1/odd-length``             -> ``{"items": [...]}``: two contacts, ``Content-Length: ²`` (no number)
* ``/v1/inclusive``              -> ``{"items": [...]}``: the contacts of ``[from, to]`` (the end included)
* ``/v1/odd-times``              -> ``{"items": [...]}``: the first three contacts, created at a time that is
  not one, at epoch seconds and at naive text
* ``/v1/cookie``                 -> ``{"items": [...]}`` and ``Set-Cookie``: the first contacts of the window,
  none to a request that sends a cookie back

``running_crm(keep_alive=True)`` answers in HTTP/1.1, keeping a connection open between requests;
``connections`` counts those accepted, ``closed`` is released as each ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

PAGE_SIZE = 4
EPOCH = datetime(2024, 3, 1, tzinfo=UTC)
CONTACTS = [
    {"id": i, "email": f"user{i}@example.org", "created_at": (EPOCH + timedelta(hours=2 * i)).isoformat()}
    for i in range(25)
]


def _instant(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        return datetime.fromisoformat(text)


def contacts_between(
    start: datetime | None, end: datetime | None, *, end_included: bool = False
) -> list[dict[str, Any]]:
    def inside(contact: dict[str, Any]) -> bool:
        ts = datetime.fromisoformat(contact["created_at"])
        return (start is None or ts >= start) and (end is None or ts < end or (end_included and ts == end))

    return [c for c in CONTACTS if inside(c)]


class _Handler(BaseHTTPRequestHandler):
    server: FakeCrm

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._answer(url.path, {k: v[0] for k, v in parse_qs(url.query).items()})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(urlsplit(self.path).path, {k: str(v) for k, v in body.items()})

    def _answer(self, path: str, query: dict[str, str]) -> None:
        self.server.requests.append((path, query))
        start, end = (query.get(name) for name in ("created_from", "created_to"))
        found = contacts_between(start and _instant(start), end and _instant(end))
        page = int(query.get("page", 1))
        limit = int(query.get("limit", PAGE_SIZE))
        by_page = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        total_pages = -(-len(found) // PAGE_SIZE)
        following = {**query, "page": page + 1}
        more = page < total_pages
        if path == "/v1/pages":
            self._send({"data": {"items": by_page, "total_pages": total_pages}})
        elif path == "/v1/offset":
            offset = int(query["offset"])
            self._send({"items": found[offset : offset + limit], "total": len(found)})
        elif path == "/v1/cursor":
            offset = int(query.get("cursor", "c0")[1:])
            cursor = f"c{offset + PAGE_SIZE}" if offset + PAGE_SIZE < len(found) else None
            self._send({"data": {"items": found[offset : offset + PAGE_SIZE]}, "next_cursor": cursor})
        elif path == "/v1/link":
            link = f'<{self.server.url}/v1/link?{urlencode(following)}>; rel="next"'
            self._send({"items": by_page}, headers={"Link": link} if more else {})
        elif path == "/v1/link-in-body":
            self._send({"items": by_page, "next": f"link-in-body?{urlencode(following)}" if more else None})
        elif path == "/v1/escaping-link":
            self._send({"items": found[:1], "next": "http://elsewhere.invalid/steal"})
        elif path == "/v1/looping-link":
            other = 2 if page == 1 else 1
            self._send({"items": by_page, "next": f"{self.server.url}/v1/looping-link?page={other}"})
        elif path == "/v1/looping-cursor":
            at = " ab".index(query.get("cursor", " "))
            items = found[at * PAGE_SIZE : (at + 1) * PAGE_SIZE]
            self._send({"items": items, "next_cursor": "b" if at == 1 else "a"})
        elif path == "/v1/echo-link":
            self._send({"items": found[:1], "next": query["next"]})
        elif path == "/v1/deaf":
            self._send({"items": CONTACTS[:PAGE_SIZE], "next": "deaf?page=2", "next_cursor": "more"})
        elif path == "/v1/odd-paging":  # by page or offset; every paging value is the JSON in ``odd``
            items = found[int(query["offset"]) :][:limit] if "offset" in query else by_page
            keys = () if query["odd"] == "absent" else ("total", "total_pages", "next", "next_cursor")
            self._send({"items": items, **{key: json.loads(query["odd"]) for key in keys}})
        elif path == "/v1/odd-length":  # a Content-Length of digits that are not ASCII (latin-1 on the wire)
            self._send({"items": found[:2]}, length="\u00b2")
        elif path == "/v1/empty-pages":  # empty pages, each with a new cursor; the 200th has none
            at = int(query.get("cursor", 0))
            self._send({"items": [], "next_cursor": str(at + 1) if at < 199 else None})
        elif path == "/v1/mixed":
            self._send({"items": [found[0], "a string", None, [1, 2], 7, found[1]]})
        elif path == "/v1/odd-bytes":
            odd = {**CONTACTS[1], "email": "ODD"}
            body = json.dumps({"items": [CONTACTS[0], odd, CONTACTS[2]]}).encode()
            self._send(body.replace(b'"ODD"', b'"user1\xff@example.org"'))
        elif path == "/v1/odd-units":  # UTF-16, the second contact's email with a lone surrogate
            odd = {**CONTACTS[1], "email": "ODD"}
            body = json.dumps({"items": [CONTACTS[0], odd, CONTACTS[2]]}).encode("utf-16-le")
            self._send(
                body.replace('"ODD"'.encode("utf-16-le"), '"user1'.encode("utf-16-le") + b'\x00\xd8"\x00')
            )
        elif path == "/v1/twice":  # the second contact names "email" twice, nested "city" too
            first, last = (json.dumps(c) for c in (CONTACTS[0], CONTACTS[2]))
            twice = '{"id": 1, "email": "user1@example.org", "email": "other@example.org"}'
            nested = '{"id": 3, "email": "x@example.org", "address": {"city": "A", "city": "B"}}'
            self._send(f'{{"items": [{first}, {twice}, {nested}, {last}]}}'.encode())
        elif path == "/v1/twice-envelope":  # which cursor counts is ambiguous
            self._send(
                f'{{"items": {json.dumps(CONTACTS[:1])}, "next_cursor": "a", "next_cursor": null}}'.encode()
            )
        elif path == "/v1/inclusive":
            self._send({"items": contacts_between(_instant(start), _instant(end), end_included=True)})
        elif path == "/v1/odd-times":
            times = [
                "soon",
                EPOCH.timestamp() + 1,
                (EPOCH + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
            ]
            self._send({"items": [{**c, "created_at": t} for c, t in zip(CONTACTS, times, strict=False)]})
        elif path == "/v1/cookie":
            self._send(
                {"items": [] if "Cookie" in self.headers else found[:PAGE_SIZE]},
                headers={"Set-Cookie": "seen=1"},
            )
        elif path == "/v1/deep":  # nested deeper than any JSON parser of Python's recursion limit reads
            self._send(b"[" * 100_000 + b"]" * 100_000)
        elif path == "/v1/unavailable":
            self._send({"error": "down, try user1@example.org later"}, 503, {"Retry-After": "0"})
        elif path == "/v1/limited":  # HTTP 429 to the first two requests of each page, then the page
            asked = sum(1 for seen, q in self.server.requests if seen == path and q == query)
            if asked <= 2:
                self._send({"error": "rate limit"}, 429, {"Retry-After": "0"})
            else:
                self._send({"data": {"items": by_page, "total_pages": total_pages}})
        else:
            self._send({"error": "not found"}, status=404)

    def _send(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None, length: str | None = None
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)) if length is None else length)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # the connection stays open for the client's next request


class FakeCrm(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, keep_alive: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler if keep_alive else _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self.closed = threading.Semaphore(0)

    def get_request(self) -> tuple[Any, Any]:
        accepted = super().get_request()
        self.connections += 1
        return accepted

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@contextmanager
def running_crm(keep_alive: bool = False) -> Generator[FakeCrm]:
    server = FakeCrm(keep_alive)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick to shut down
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
