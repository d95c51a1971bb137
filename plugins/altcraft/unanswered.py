"""Why a request to Altcraft got no answer, in words that name the connection field to fix.

A bare ``SSLError`` or ``ConnectionError`` told the user nothing: a Platform URL without a scheme is read
as ``https://``, and an emulator or an on-premises host serving plain HTTP then fails the TLS handshake.
`why_unanswered` reads the exception chain's types and OpenSSL's reason code, never the exceptions' text
(it may quote what the server sent), and names only the platform's origin (``scheme://host:port``), which
the connection check keeps free of credentials and of the token.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests

URL_FIELD = "Platform URL (host)"
#: OpenSSL's reasons for a handshake answered by something that is not TLS (plain HTTP, mostly).
_NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
    }
)


def why_unanswered(exc: BaseException, url: str) -> str:
    """A request without an answer, for the probe's table: ``no answer: <what to change>``."""
    advice = explained(exc, url)
    return f"no answer: {advice}" if advice else f"no answer ({type(exc).__name__})"


def explained(exc: BaseException, url: str) -> str | None:
    """What a failed request's exception ``exc`` says about the platform ``url``, and what to change; None
    when it says nothing a user can act on (a timeout, an answer cut off)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    chain = list(_chain(exc))
    tls_errors = [e for e in chain if isinstance(e, ssl.SSLError)]  # aiohttp's wrappers are SSLErrors too
    reason = next((e.reason for e in tls_errors if getattr(e, "reason", None)), None)
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"the proxy gave no connection to {origin} (check the `proxies` extra or HTTPS_PROXY)"
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in tls_errors):
        return (
            f"the TLS certificate of {origin} is not trusted (certificate verify failed): "
            "give its CA bundle in the `verify` extra"
        )
    if reason in _NOT_TLS:
        return (
            f"{origin} does not speak TLS, plain HTTP perhaps (a {URL_FIELD} without a scheme "
            f"is read as https://): write http://{parts.netloc} in that field if the server serves HTTP"
        )
    if tls_errors:
        return f"the TLS handshake with {origin} failed ({reason or 'SSLError'})"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"{parts.netloc} refused the connection: check the host and port of the {URL_FIELD}"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"the name {parts.hostname} does not resolve: check the {URL_FIELD}"
    closed = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError)
    if parts.scheme == "http" and any(isinstance(e, closed) for e in chain):
        return (
            f"{origin} closed the connection without an HTTP answer: if it serves HTTPS, write "
            f"https://{parts.netloc} in the {URL_FIELD}"
        )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exceptions it was raised from, and those among their arguments (urllib3 wraps the
    socket's error in a ``ProtocolError``'s args and a ``MaxRetryError``'s ``reason``)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
