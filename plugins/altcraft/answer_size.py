"""A cap on every HTTP answer we read: a broken or hostile server cannot fill a worker's memory.

A call's deadline (`altcraft.deadline`) bounds how long an answer may take, not how large it is: on a fast
link a minute is gigabytes. Every HTTP client here -- both Altcraft hooks, the probe, the REST and CRM
sources -- opens the answer as a stream and reads it through :func:`read_capped` / :func:`aread_capped`,
which stop one chunk past the limit. The limit counts decoded bytes, so a small gzip answer that inflates
beyond it is refused as well. :func:`read_capped` also refuses an interim answer (`InterimAnswer`).
"""

from __future__ import annotations

from typing import Any

#: The default limit: far above any documented answer (a 10,000-profile batch's per-profile results are a
#: few MiB), far below what would hurt a worker.
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """The answer's body is larger than the limit; what was read of it is dropped."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"the answer is larger than {limit:,} bytes")


def _declared_too_large(headers: Any, limit: int) -> bool:
    """``Content-Length`` already says the body is too large (only for an unencoded body). Read without
    ``int()`` of the whole header: past 4,300 digits it raises, and ``isdigit()`` takes "²"."""
    length = (headers.get("Content-Length") or "").lstrip("0")
    if headers.get("Content-Encoding") or not (length.isascii() and length.isdigit()):
        return False
    return len(length) > len(str(limit)) or int(length) > limit


def read_capped(response: Any, limit: int) -> bytes:
    """The decoded body of a `requests` answer opened with ``stream=True``; `AnswerTooLarge` beyond
    ``limit`` bytes, `InterimAnswer` for a 1xx. Afterwards ``response.content`` and ``response.json()``
    work as usual."""
    if response.status_code < 200:
        from altcraft.interim_answer import InterimAnswer  # here: importing requests costs DAG parsing 50 ms

        response.close()  # its connection, with the final answer still to come, is not reused
        raise InterimAnswer(response.status_code)
    try:
        if _declared_too_large(response.headers, limit):
            raise AnswerTooLarge(limit)
        chunks, size = [], 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(limit)
            chunks.append(chunk)
    except AnswerTooLarge:
        response.close()
        raise
    body = b"".join(chunks)
    response._content = body  # what requests itself stores once it has read a body
    return body


async def aread_capped(response: Any, limit: int) -> bytes:
    """The decoded body of an `aiohttp` answer; `AnswerTooLarge` beyond ``limit`` bytes."""
    if _declared_too_large(response.headers, limit):
        response.close()
        raise AnswerTooLarge(limit)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            response.close()
            raise AnswerTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
