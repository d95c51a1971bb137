"""A proxy in front of the emulator that rewrites the answers of chosen API methods: Altcraft answering in
ways the emulator never does (a task id reused, another task's status)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

#: (request body, upstream answer, HTTP status) -> (HTTP status, answer: JSON, or bytes sent as they are)
Rewrite = Callable[[dict[str, Any], dict[str, Any], int], tuple[int, dict[str, Any] | bytes]]


class AnswerProxy:
    """Forwards every POST to ``upstream``; an answer of a method in :attr:`rewrite` goes through it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite: dict[str, Rewrite] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                skip = ("host", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = requests.post(proxy.upstream + self.path, data=raw, headers=headers, timeout=30)
                status, content = answer.status_code, answer.content
                method = self.path.split("/api/v1.1/")[-1].split("?")[0].strip("/")
                if rewrite := proxy.rewrite.get(method):
                    status, changed = rewrite(json.loads(raw or b"{}"), answer.json(), status)
                    content = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
