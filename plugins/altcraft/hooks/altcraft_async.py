"""AltcraftAsyncHook: the aiohttp transport of :class:`~altcraft.hooks.altcraft.AltcraftHook`, for triggers.

Same wire format (:mod:`altcraft.api.protocol`), same retry policy (:mod:`altcraft.api.retry`), same
classification of transport failures (:mod:`altcraft.api.transport`); no blocking call anywhere. It names
only the call triggers make (``tasks/status``); :meth:`AltcraftAsyncHook.call` posts any other method.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret

from altcraft import __version__
from altcraft.answer_size import AnswerTooLarge, aread_capped
from altcraft.api.calls import task_status_call
from altcraft.api.errors import AltcraftAnswerTooLarge, AltcraftError
from altcraft.api.models import TaskStatus
from altcraft.api.protocol import (
    api_path,
    encode_body,
    parse_answer,
    parse_response,
    request_headers,
)
from altcraft.api.result_identity import texts_about
from altcraft.api.retry import as_uncertain
from altcraft.api.transport import Observed, transport_error
from altcraft.hooks.connection import AltcraftConnectionSettings, read_connection, tls_context
from altcraft.http_environment import platform_proxy
from altcraft.unanswered import explained

T = TypeVar("T")


class AltcraftAsyncHook(BaseHook):
    """Asynchronous access to the Altcraft API (use ``async with`` or call :meth:`close`)."""

    conn_name_attr = "altcraft_conn_id"
    default_conn_name = "altcraft_default"
    conn_type = "altcraft"
    hook_name = "Altcraft (async)"

    def __init__(self, altcraft_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.altcraft_conn_id = altcraft_conn_id
        self.settings = AltcraftConnectionSettings()
        self.base_url = ""
        self._token = ""
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | bool = True
        self._proxy: str | None = None
        self._headers: dict[str, str] = {}

    async def __aenter__(self) -> AltcraftAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self.settings, self.base_url, self._token = read_connection(
                self.altcraft_conn_id, await self.aget_connection(self.altcraft_conn_id)
            )
            await amask_secret(self._token)
            self._tls = tls_context(self.settings.verify, self.settings.cert)
            loop = asyncio.get_running_loop()  # the sync hook's proxy; its NO_PROXY check may read files
            self._proxy = await loop.run_in_executor(
                None, platform_proxy, self.base_url, self.settings.proxies
            )
            # the token's headers go with each request, not as the session's: aiohttp adds a session's
            # headers to those for the proxy and sent its Authorization there as Proxy-Authorization
            # (on an HTTPS platform's CONNECT too, which the proxy otherwise never sees the token in)
            self._headers = request_headers(self._token, __version__)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        return self._session

    async def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        *,
        raw_data: bytes | None = None,
        launching: bool = False,
        keys: Sequence[str] = (),
        parse: Callable[[dict[str, Any]], T] | None = None,
    ) -> Any:
        """POST one API method; the async counterpart of :meth:`AltcraftHook.call`."""
        session = await self._get_session()
        payload = encode_body(
            body, token=self._token if self.settings.token_in_body else None, raw_data=raw_data
        )
        url = self.base_url + api_path(endpoint)
        # a request about one contact: its values masked in the answer; about several: in an error's text
        known, about = texts_about(keys, body, raw_data)

        async def attempt() -> dict[str, Any]:
            try:
                async with session.post(
                    url,
                    data=payload,
                    headers=self._headers,
                    ssl=self._tls,
                    proxy=self._proxy,
                    allow_redirects=False,
                ) as response:
                    content = await aread_capped(response, self.settings.max_answer_bytes)
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure: AltcraftError = transport_error(
                    _observed(exc, self.base_url), endpoint=endpoint, timeout=self.settings.timeout
                )
            except AnswerTooLarge as exc:
                failure = AltcraftAnswerTooLarge(exc.limit, endpoint=endpoint)
            else:
                status, headers = response.status, response.headers
                return parse_response(
                    endpoint, status, headers, content, secret=self._token, known=known, about=about
                )
            raise failure  # outside `except`: see `altcraft.api.transport.transport_error`

        try:
            answer = await self.settings.retry_policy.async_retrying(launching=launching)(attempt)
            return answer if parse is None else parse_answer(endpoint, parse, answer)
        except AltcraftError as exc:
            if launching and (uncertain := as_uncertain(exc, endpoint, keys)) is not exc:
                raise uncertain from exc
            raise  # unchanged (not its own cause)

    async def get_task_status(self, task_id: str) -> TaskStatus:
        """Read an asynchronous task's state (``tasks/status``)."""
        endpoint, body, parse = task_status_call(task_id)
        return await self.call(endpoint, body, parse=parse)


def _observed(exc: BaseException, url: str) -> Observed:
    """The transport adapter of aiohttp: what a failure says about the exchange (altcraft.api.transport).

    ``ClientTimeout(total=...)`` is one deadline for connect + the whole answer: a plain timeout may have
    struck after sending.
    """
    return Observed(
        built=not isinstance(exc, aiohttp.InvalidURL),
        connected=not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError),
        timed_out=isinstance(exc, TimeoutError),
        kind=type(exc).__name__,
        why=None if isinstance(exc, TimeoutError) else explained(exc, url),
    )
