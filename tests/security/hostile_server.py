"""A real local HTTP server that answers whatever a test scripts: redirects, drips, odd bodies.

Each request is read in full (headers and ``Content-Length`` body) and recorded; the answer is a list
of ``(bytes, delay_seconds)`` pieces written in order, then the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TOKEN = "TOKEN-hostile-5b1e0c"


def run_async(coro_factory):
    """Run ``coro_factory(hook)`` with a fresh async hook on the default connection."""
    from altcraft.hooks.altcraft_async import AltcraftAsyncHook

    async def main():
        async with AltcraftAsyncHook() as hook:
            return await coro_factory(hook)

    return asyncio.run(main())


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = list[tuple[bytes, float]]


def http_answer(
    status: int, body: bytes | dict | list | str = b"", headers: dict[str, str] | None = None
) -> Answer:
    """One complete HTTP/1.1 answer, sent at once (a dict or list is sent as JSON)."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if isinstance(body, bytes) and body[:1] in (b"{", b"["):
        lines.append("Content-Type: application/json")
    return [(("\r\n".join(lines) + "\r\n\r\n").encode() + body, 0.0)]


def drip(status: int, body: bytes, every: float) -> Answer:
    """Headers at once, then the body one byte every ``every`` seconds."""
    head = f"HTTP/1.1 {status} OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    return [(head, 0.0)] + [(body[i : i + 1], every) for i in range(len(body))]


@dataclass
class HostileServer:
    answer: Callable[[Seen], Answer] = field(default=lambda seen: http_answer(200, {"error": 0}))
    seen: list[Seen] = field(default_factory=list)
    keep_alive: bool = False  # answer each request of a connection (answers without Connection: close)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def connection(self, token: str, **extra: Any) -> str:
        return json.dumps({"conn_type": "altcraft", "host": self.url, "password": token, "extra": extra})

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                while (seen := _read_request(conn)) is not None:
                    self.seen.append(seen)
                    for piece, delay in self.answer(seen):
                        if delay:
                            time.sleep(delay)
                        if self._stop.is_set():
                            return
                        conn.sendall(piece)
                    if not self.keep_alive:
                        return
            except OSError:
                return


def _read_request(conn: socket.socket) -> Seen | None:
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    method, path, _ = request_line.split(" ", 2)
    return Seen(method, path, headers, body)
