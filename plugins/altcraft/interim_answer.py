"""An interim HTTP answer where a final one was awaited: a transport error, since the request was sent."""

from __future__ import annotations

import requests


class InterimAnswer(requests.RequestException):
    """The server's first answer was an interim one (1xx: ``102 Processing``, ``103 Early Hints``), which
    http.client, unlike aiohttp, takes for the final answer (only ``100 Continue`` is skipped). The final
    answer is still to come on its connection, which is closed: kept alive, its next request would read
    that answer as its own. The request reached the server and may have been processed."""

    def __init__(self, status: int):
        self.status = status
        super().__init__(f"an interim HTTP {status} answer")
