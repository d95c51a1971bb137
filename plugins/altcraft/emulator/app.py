"""HTTP side of the emulator: the FastAPI app (Altcraft API + ``/_emulator/`` control API) and the pure
ASGI :class:`FaultLayer` that wraps it.

The fault layer sits outside FastAPI so it can do what an app cannot: answer before routing, swallow a
finished response, and abort the TCP connection. Aborting uses uvicorn's own ``send`` bound method
(``send.__self__.transport.abort()``), which exists for both the h11 and httptools protocol classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import html
import json
import os
import uuid
from collections.abc import Generator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from altcraft.emulator.replay import Replay
from altcraft.emulator.state import ENDPOINTS, TASK_ENDPOINT, ApiError, Config, Emulator
from altcraft.webhooks.kinds import strict_json

API_PREFIX = "/api/v1.1/"
_API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_HTML_PAGE = (
    "<html><head><title>{status} {phrase}</title></head><body><center><h1>{status} {phrase}</h1></center>"
    "<hr><center>nginx</center></body></html>"
)


def build_app(emulator: Emulator, replay: Replay | None = None) -> ASGIApp:
    """The application to give to uvicorn: the fault layer around the FastAPI app.

    With ``replay``, every API answer takes the shape recorded for its endpoint (see
    :mod:`altcraft.emulator.replay`); the emulator still does the work, so state and journal stay true.
    """
    return FaultLayer(create_app(emulator, replay), emulator)


def json_response(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def error_response(config: Config, error: ApiError) -> Response:
    """An Altcraft error answer: HTTP status = its code (200 with ``error_http_status=always_200``)."""
    return json_response(error.envelope(), 200 if config.error_http_status == "always_200" else error.code)


def scenario_html(emulator: Emulator, scenario_id: int) -> Response:
    """The emulator's stand-in for a scenario page of the Altcraft UI (404 for an unknown scenario)."""
    scenario = emulator.scenarios.get(scenario_id)
    if scenario is None:
        return HTMLResponse(f"<h1>No scenario {scenario_id} in the emulator</h1>", status_code=404)
    launches = len(emulator.launches(scenario_id))
    state = "active" if scenario.is_active else "inactive"
    return HTMLResponse(
        f"<!doctype html><title>Scenario {scenario.id}</title>"
        f"<h1>Scenario {scenario.id}: {html.escape(scenario.name)}</h1>"
        f"<p>Altcraft API emulator: database {scenario.db_id}, {state}, {launches} launches so far. "
        f'<a href="/_emulator/journal?scenario_id={scenario.id}">Launch journal</a></p>'
    )


def create_app(emulator: Emulator, replay: Replay | None = None) -> FastAPI:
    app = FastAPI(
        title="Altcraft API emulator",
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        redoc_url=None,
    )
    jobs: set[asyncio.Task[None]] = set()

    @app.exception_handler(ValueError)
    async def bad_control_request(request: Request, exc: ValueError) -> Response:  # ruff: ignore[unused-async]
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.api_route(API_PREFIX + "{method:path}", methods=_API_METHODS, include_in_schema=False)
    async def api(method: str, request: Request) -> Response:
        endpoint = method.strip("/")
        recorded_error = replay.error_for(endpoint) if replay else None
        if recorded_error is not None:
            return json_response(recorded_error.response, recorded_error.status)
        try:
            arguments = await _api_request(request, endpoint, emulator.config)
            with _frozen_after():
                answer = emulator.call(endpoint, *arguments)
                del arguments  # the request's body, garbage now: freed before the pass, never frozen
        except ApiError as exc:
            return error_response(emulator.config, exc)
        if endpoint == TASK_ENDPOINT:
            job = asyncio.create_task(_run_task(emulator, answer["data"]["task_id"]))
            jobs.add(job)
            job.add_done_callback(jobs.discard)
        return json_response(replay.shape(endpoint, answer) if replay else answer)

    @app.get("/workflows/{scenario_id}", include_in_schema=False)
    async def scenario_page(scenario_id: int) -> Response:
        """What the connection's default scenario link opens: a small page about the scenario."""
        return scenario_html(emulator, scenario_id)

    @app.get("/_emulator/state")
    async def state() -> Response:
        # the pid tells `altcraft.testing` that the server on its port is the one it started
        return json_response({**emulator.snapshot(), "pid": os.getpid()})

    @app.get("/_emulator/journal")
    async def journal(scenario_id: int | None = None) -> Response:
        return json_response({"launches": emulator.launches(scenario_id)})

    @app.get("/_emulator/profiles")
    async def profiles(db_id: int | None = None) -> Response:
        return json_response({"profiles": emulator.profiles(db_id)})

    @app.post("/_emulator/reset")
    async def reset() -> Response:
        for job in list(jobs):
            job.cancel()
        emulator.reset()
        gc.unfreeze()  # what the reset dropped is the collector's again (see `_frozen_after`)
        return json_response({"ok": True})

    @app.post("/_emulator/seed")
    async def seed(request: Request) -> Response:
        emulator.apply_seed(await _control_body(request))
        return json_response({"ok": True})

    @app.post("/_emulator/config")
    async def config(request: Request) -> Response:
        return json_response({"config": emulator.configure(await _control_body(request)).public()})

    @app.post("/_emulator/faults")
    async def add_faults(request: Request) -> Response:
        body = await _control_body(request)
        random_seed = body.get("random_seed")
        if random_seed is not None and (isinstance(random_seed, bool) or not isinstance(random_seed, int)):
            raise ValueError("'random_seed' must be an integer")
        emulator.faults.add(body.get("rules"), random_seed)
        return json_response({"faults": emulator.faults.snapshot()})

    @app.delete("/_emulator/faults")
    async def clear_faults() -> Response:
        emulator.faults.rules.clear()
        return json_response({"faults": []})

    return app


async def _api_request(
    request: Request, endpoint: str, config: Config
) -> tuple[dict[str, Any], Any, str, tuple[str, ...]]:
    """Body, token, request id and where the token was (header, body, query) of an API call, after the
    transport-level checks (405/404/400; the fault layer answered 413 already)."""
    if request.method != "POST":
        raise ApiError(405, "only POST is allowed")
    if endpoint not in ENDPOINTS:
        raise ApiError(404, f"unknown API method '{endpoint}'")
    # "Some parameters can be sent in URL (API key, format)" … "We do not recommend passing a token in the
    # URL of your request. This method is insecure and will not be supported by the platform in the
    # future." (api-interaction): accepted, refused only with --strict.
    if config.strict and "token" in request.query_params:
        raise ApiError(400, "the API token must not be sent in the URL query string")
    raw = await request.body()  # already buffered (and its size checked) by the fault layer
    try:
        # "A description of the JSON format can be found in RFC 7159" (api-interaction): no NaN, no
        # Infinity, no number beyond the float range; nesting too deep to parse is refused too
        body = strict_json(raw, named_twice=False) if raw.strip() else {}  # a key named twice: its last value
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    # "create a header with the Authorization key, and in its value specify Bearer <token>" or
    # "specifying it in the body of the request" (api-interaction)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else None
    places = {"header": bearer, "body": body.get("token"), "query": request.query_params.get("token")}
    token = (bearer if bearer is not None else body.get("token")) or places["query"]
    token_in = tuple(place for place, value in places.items() if value)
    return body, token, request.state.request_id, token_in


@contextlib.contextmanager
def _frozen_after() -> Generator[None]:
    """Run an API call (or a part of a task), then put what it left into the permanent generation
    (unless it failed).

    The state only grows between resets (profiles, journal): frozen, it is not walked again by every full
    collection (at 100,000 profiles those passes made a batch call 1.6x as costly). The call's own cyclic
    garbage is collected first, in one pass over what is not frozen (what the call made); reference
    counting frees what is dropped later; reset unfreezes. No automatic pass runs during the call: a
    batch of 1,000 contacts made 31, each walking the call's new objects again (1.8 us of CPU per
    contact, measured with `gc.callbacks`); the calls make no cyclic garbage for them to find.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.collect()
        gc.freeze()
    finally:
        if enabled:
            gc.enable()


async def _control_body(request: Request) -> dict[str, Any]:
    body = strict_json(await request.body())  # ValueError (400) as for an API body
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


async def _run_task(emulator: Emulator, task_id: str) -> None:
    """Background life of a batch task: ``queued`` for the delay (and while ``tasks_held``), then ``running``
    in ten steps."""
    delay = emulator.config.task_delay_seconds
    await asyncio.sleep(delay)
    while emulator.config.tasks_held:
        await asyncio.sleep(0.01)
    while _advance(emulator, task_id):
        await asyncio.sleep(delay / 10)


def _advance(emulator: Emulator, task_id: str) -> bool:
    """`Emulator.advance_task` by a tenth of the task, its state frozen after it as an API call's."""
    with _frozen_after():
        return emulator.advance_task(task_id, steps=10)


# ------------------------------------------------------------------------------------------ fault layer


class FaultLayer:
    """Pure ASGI layer: ``X-Request-Id`` on every response, latency, and the request-level faults."""

    def __init__(self, app: ASGIApp, emulator: Emulator):
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        reply = _with_request_id(send, request_id)
        config = self.emulator.config
        api = scope["path"].startswith(API_PREFIX)
        limit = config.max_body_bytes if api else CONTROL_MAX_BODY_BYTES
        try:
            body = await _read_body(scope, receive, limit)
        except _TooLarge:  # answered at once, the rest unread ("connection: close" drops it)
            text = f"request body is larger than {limit} bytes"
            answer = (
                error_response(config, ApiError(413, text)) if api else JSONResponse({"detail": text}, 413)
            )
            answer.headers["connection"] = "close"
            await answer(scope, receive, reply)
            return
        if not api:
            if body is not None:
                await self.app(scope, _replay(body, receive), reply)
            return
        if body is None:  # the client left before its request was complete: nothing to process
            return
        plan = self.emulator.faults.plan(scope["path"][len(API_PREFIX) :].strip("/"))
        delay_ms = self.emulator.config.latency_ms + plan.latency_ms
        if delay_ms:  # the request is processed after the delay even if the client has given up by then
            generation = self.emulator.generation
            try:
                await asyncio.sleep(delay_ms / 1000)
            except asyncio.CancelledError:  # the server is stopping (after 1 s of grace): drop the request
                return
            if generation != self.emulator.generation:  # reset meanwhile: it belongs to a state now gone
                await _abort(send, receive)
                return
        rule, app_receive = plan.action, _replay(body, receive)
        if rule is None:
            await self.app(scope, app_receive, reply)
        elif rule.kind == "drop_before":
            await _abort(send, receive)
        elif rule.kind == "status":
            headers = [] if rule.retry_after is None else [(b"retry-after", f"{rule.retry_after:g}".encode())]
            envelope = {"error": rule.status, "error_text": rule.text or _phrase(rule.status)}
            await _send(reply, rule.status, b"application/json", json.dumps(envelope).encode(), headers)
        elif rule.kind == "html":
            page = _HTML_PAGE.format(status=rule.status, phrase=_phrase(rule.status)).encode()
            await _send(reply, rule.status, b"text/html", page)
        else:
            answer = await _run_captured(self.app, scope, app_receive)
            if rule.kind == "drop_after":
                await _abort(send, receive)
            else:  # malformed: processed, then a cut JSON body with HTTP 200
                await _send(reply, 200, b"application/json", answer[: max(1, len(answer) // 2)])


#: The largest body the control API reads (a seed, config or fault rules): it has no other limit.
CONTROL_MAX_BODY_BYTES = 64 * 1024 * 1024


class _TooLarge(Exception):
    """A request body longer than the limit (announced by Content-Length, or found while reading it)."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when the client disconnects first; `_TooLarge` as soon as it is
    known to be longer than ``limit`` bytes, so no more than ``limit`` is ever held."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already read body, then passes through (disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _request_id(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` when it is short and printable, else a new one."""
    for name, value in scope["headers"]:
        if (
            name == b"x-request-id"
            and 0 < len(value) <= 128
            and value.isascii()
            and value.decode().isprintable()
        ):
            return value.decode()
    return uuid.uuid4().hex


def _with_request_id(send: Send, request_id: str) -> Send:
    header = (b"x-request-id", request_id.encode())

    async def reply(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), header]}
        await send(message)

    return reply


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _send(
    send: Send, status: int, content_type: bytes, body: bytes, headers: list | None = None
) -> None:
    base = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _run_captured(app: ASGIApp, scope: Scope, receive: Receive) -> bytes:
    """Run the app to completion, keeping its response body instead of sending it."""
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:  # ruff: ignore[unused-async]
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return b"".join(chunks)


async def _abort(send: Send, receive: Receive) -> None:
    """Abort the TCP connection (RST, no response), then wait until uvicorn has seen it go."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("connection faults need uvicorn's own send() (send.__self__.transport)")
    transport.abort()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while (await receive())["type"] != "http.disconnect":
                pass
